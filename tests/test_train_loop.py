"""The one training loop with the SyncNet recipe on real preprocessed clips: learning, DDP, exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from lipsync.config import OptimConfig, TrainConfig
from lipsync.train.loop import Trainer, learning_rate
from lipsync.train.recipe import Models
from lipsync.train.recipes import SyncNetRecipe, SyncNetRecipeConfig
from lipsync.weights import load_state_dict, read_safetensors_metadata
from conftest import one_thread, run_torchrun

@pytest.fixture(scope="module")
def dataset(training_clips) -> Path:
    return training_clips


def _config(run_dir: Path, **overrides) -> TrainConfig:
    settings = dict(run_dir=str(run_dir), max_steps=4, batch_size=4, num_workers=1, log_every=1, val_every=2,
                    val_batches=1, checkpoint_every=2, device="cpu", precision="fp32", seed=3)
    settings.update(overrides)
    return TrainConfig(**settings)


def _train_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {record["step"]: record["loss"] for record in records if record["split"] == "train"}


@pytest.mark.slow
def test_syncnet_recipe_overfits_a_fixed_batch(dataset):
    torch.manual_seed(0)
    recipe = SyncNetRecipe(SyncNetRecipeConfig(data=str(dataset), optim=OptimConfig(lr=1e-3)))
    model = recipe.build_models(torch.device("cpu"))["syncnet"]
    models = Models(raw={"syncnet": model}, train={"syncnet": model})
    train_set, _ = recipe.datasets(seed=0)
    batch = default_collate([train_set[(index * 37 % len(train_set), 0)] for index in range(4)])
    assert 0 < float(batch["target"].sum()) < 4          # both in-sync and off-sync pairs
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(12):
        output = recipe.training_step(batch, models, step)
        optimizer.zero_grad()
        output.objectives[0][1].backward()
        optimizer.step()
        losses.append(float(output.metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
@one_thread()
def test_resume_continues_exactly(dataset, tmp_path):
    recipe = lambda: SyncNetRecipe(SyncNetRecipeConfig(data=str(dataset)))  # noqa: E731
    straight = tmp_path / "straight"
    Trainer(recipe(), _config(straight)).fit()
    interrupted = tmp_path / "interrupted"
    Trainer(recipe(), _config(interrupted, max_steps=2)).fit()        # "killed" after the step-2 checkpoint
    assert (interrupted / "checkpoints" / "latest").read_text().strip() == "step_0000002"
    resumed = Trainer(recipe(), _config(interrupted))
    resumed.fit()
    expected, got = _train_losses(straight), _train_losses(interrupted)
    assert got[3] == expected[3] and got[4] == expected[4]
    assert resumed.step == 4
    # Both runs end with the same weights.
    final_straight = load_state_dict(straight / "checkpoints" / "step_0000004" / "syncnet.safetensors")
    final_resumed = load_state_dict(interrupted / "checkpoints" / "step_0000004" / "syncnet.safetensors")
    for key in final_straight:
        assert torch.equal(final_straight[key], final_resumed[key]), key


def test_checkpoint_files_and_config(dataset, tmp_path):
    run = tmp_path / "run"
    Trainer(SyncNetRecipe(SyncNetRecipeConfig(data=str(dataset))),
            _config(run, max_steps=1, num_workers=0, val_every=1)).fit()
    metadata = read_safetensors_metadata(run / "checkpoints" / "step_0000001" / "syncnet.safetensors")
    assert metadata["arch"] == "syncnet_color" and json.loads(metadata["config"])["num_frames"] == 5
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["max_steps"] == 1 and config["recipe"]["data"] == str(dataset)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {record["split"] for record in records} == {"train", "val"}
    assert not list(run.rglob("*.partial*"))


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_identical(dataset, tmp_path):
    completed = run_torchrun(Path(__file__).with_name("ddp_train.py"), str(dataset), str(tmp_path), port=29533)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0] == ranks[1]


def test_learning_rate_schedule():
    optim = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert learning_rate(optim, 0, 110) == pytest.approx(0.1)
    assert learning_rate(optim, 9, 110) == pytest.approx(1.0)
    assert learning_rate(optim, 60, 110) == pytest.approx(0.55)
    assert learning_rate(optim, 110, 110) == pytest.approx(0.1)
    assert learning_rate(OptimConfig(lr=0.5), 1000, 10) == 0.5
