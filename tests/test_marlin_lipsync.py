"""The MARLIN lip-sync generator: shapes, initialisation from MARLIN, learning on real clips, resume,
windowed inference with blending, and `lipsync infer --model marlin` end to end."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from conftest import face_boxes, one_thread, probe
from lipsync.cli import main
from lipsync.config import TrainConfig
from lipsync.models.marlin_lipsync import MARLIN_LIPSYNC_L, MARLIN_LIPSYNC_S, MarlinLipSync, tiny_config
from lipsync.synthesis import WindowedSynthesizer
from lipsync.train.loop import Trainer
from lipsync.train.recipe import Models
from lipsync.train.recipes import GeneratorRecipe, GeneratorRecipeConfig
from lipsync.weights import load_state_dict, save_safetensors
from marlin_encoder import MarlinEncoder
from syncnet import SyncNetColor

@pytest.mark.parametrize("config", [MARLIN_LIPSYNC_S, MARLIN_LIPSYNC_L], ids=["vit_small", "vit_large"])
def test_released_sizes_forward_and_backward_shapes(config):
    # On the meta device: the shapes of the full-size models without their cost.
    with torch.device("meta"):
        model = MarlinLipSync(config)
        output = model(torch.zeros(2, 16, 1, 80, 16), torch.zeros(2, 6, 16, 96, 96))
        output.sum().backward()
    assert output.shape == (2, 3, 16, 96, 96)
    width = config.marlin.encoder_embed_dim
    assert model.encoder.patch_embedding.projection.weight.grad.shape == (width, 6, 2, 16, 16)
    assert model.bottleneck.conv_block[0].in_channels == width // 2 + width // 2 + 6   # 774 for ViT-B


def test_tiny_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = MarlinLipSync(tiny_config(num_frames=4))
    faces = torch.rand(2, 6, 4, 96, 96)
    output = model(torch.randn(2, 4, 1, 80, 16), faces)
    assert output.shape == (2, 3, 4, 96, 96) and 0 <= output.min() and output.max() <= 1
    output.mean().backward()
    assert all(parameter.grad is not None for parameter in model.parameters() if parameter.requires_grad)
    with pytest.raises(ValueError, match="windows of 4 frames"):
        model(torch.randn(1, 5, 1, 80, 16), torch.rand(1, 6, 5, 96, 96))


def test_bf16_autocast_when_the_decoder_ends_above_the_face_size():
    # Like the released sizes (decoder ends at 224, faces are 96), shrinking the output under bf16 autocast:
    # CPU's antialiased resize has no bf16 kernel.
    torch.manual_seed(0)
    tiny = tiny_config(num_frames=4)
    config = replace(tiny, encoder_overrides={**tiny.encoder_overrides, "img_size": 64},
                     decoder_widths=(32, 16, 16, 8, 8))                 # 4x4 tokens -> 128 px -> 96 px
    model = MarlinLipSync(config).eval()
    mel, faces = torch.randn(1, 4, 1, 80, 16), torch.rand(1, 6, 4, 96, 96)
    with torch.inference_mode():
        full = model(mel, faces)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(mel, faces)
    assert half.shape == full.shape == (1, 3, 4, 96, 96)
    assert (half.float() - full).abs().max() < 0.05


@pytest.mark.parametrize("pretrained_half", ["masked", "reference"])
def test_zero_initialised_channels_keep_the_pretrained_features(pretrained_half):
    config = replace(tiny_config(num_frames=4), pretrained_half=pretrained_half)
    torch.manual_seed(1)
    pretrained = MarlinEncoder(config.marlin, in_channels=3).eval()
    state = {f"encoder.{key}": value for key, value in pretrained.state_dict().items()}
    model = MarlinLipSync.from_marlin(config, state).eval()
    faces = torch.rand(2, 6, 4, 96, 96)                    # BGR: masked target, then reference
    faces[:, :3, :, 48:] = 0
    with torch.no_grad():
        ours = model.encoder.forward_features(model.encoder_clip(faces))
        half = faces[:, :3] if pretrained_half == "masked" else faces[:, 3:]
        rgb = torch.nn.functional.interpolate(half.flip(1).permute(0, 2, 1, 3, 4).flatten(0, 1), size=(32, 32),
                                              mode="bilinear", align_corners=False)
        clip = rgb.unflatten(0, (2, 4)).permute(0, 2, 1, 3, 4)
        expected = pretrained.forward_features(clip)
    assert torch.allclose(ours, expected, atol=1e-5)
    # ... and the other half does influence them once its weights move away from zero.
    with torch.no_grad():
        extra = model.encoder.patch_embedding.projection.weight[:, 3:]
        extra += 0.05 * torch.randn_like(extra)
        assert not torch.allclose(model.encoder.forward_features(model.encoder_clip(faces)), expected, atol=1e-4)


@pytest.fixture(scope="module")
def dataset(training_clips) -> Path:
    return training_clips


@pytest.fixture(scope="module")
def tiny_expert(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("expert") / "expert4.pth"
    torch.save(SyncNetColor(num_frames=4).state_dict(), path)
    return path


def _recipe_config(dataset: Path, expert: Path, **overrides) -> GeneratorRecipeConfig:
    settings = dict(data=str(dataset), model="marlin", marlin="tiny", expert_checkpoint=str(expert),
                    discriminator=False)
    settings.update(overrides)
    return GeneratorRecipeConfig(**settings)


@pytest.mark.slow
def test_tiny_generator_overfits_a_fixed_batch_with_the_sync_loss(dataset, tiny_expert):
    torch.manual_seed(0)
    recipe = GeneratorRecipe(_recipe_config(dataset, tiny_expert))
    recipe.sync_on = True                                   # the sync loss is computed and weighted
    built = recipe.build_models(torch.device("cpu"))
    models = Models(raw=built, train=built)
    train_set, _ = recipe.datasets(seed=0)
    batch = default_collate([train_set[(index * 53 % len(train_set), 0)] for index in range(2)])
    optimizer = torch.optim.Adam(built["generator"].parameters(), lr=2e-3)
    l1 = []
    for step in range(40):
        output = recipe.training_step(batch, models, step)
        assert torch.isfinite(output.metrics["sync"]) and output.metrics["sync_weight"] == 0.01
        optimizer.zero_grad()
        output.objectives[0][1].backward()
        optimizer.step()
        l1.append(float(output.metrics["l1"]))
    assert l1[-1] <= 0.5 * l1[0], l1


@pytest.mark.slow
@one_thread()   # Adam turns last-bit reduction-order noise in ~0 gradients (a bias before BatchNorm) into steps
def test_generator_resume_is_exact_and_keeps_the_schedule(dataset, tiny_expert, tmp_path):
    def config(run: Path, steps: int) -> TrainConfig:
        return TrainConfig(run_dir=str(run), max_steps=steps, batch_size=1, num_workers=0, log_every=1,
                           val_every=2, val_batches=1, checkpoint_every=2, device="cpu", precision="fp32", seed=5)

    # A threshold every validation passes: the sync switch flips at step 2 and must survive the resume.
    recipe = lambda: GeneratorRecipe(_recipe_config(dataset, tiny_expert, sync_threshold=1e9,  # noqa: E731
                                                    discriminator=True))
    Trainer(recipe(), config(tmp_path / "straight", 4)).fit()
    Trainer(recipe(), config(tmp_path / "resumed", 2)).fit()
    resumed = Trainer(recipe(), config(tmp_path / "resumed", 4))
    resumed.fit()
    assert resumed.recipe.sync_on

    def losses(run: Path) -> dict[int, dict]:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {record["step"]: record for record in records if record["split"] == "train"}

    straight, again = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    for step in (3, 4):
        for key in ("l1", "sync", "adversarial", "disc", "sync_weight"):
            assert again[step][key] == straight[step][key], (step, key)
    assert straight[3]["sync_weight"] == 0.03
    for name in ("generator", "disc"):
        first = load_state_dict(tmp_path / "straight" / "checkpoints" / "step_0000004" / f"{name}.safetensors")
        second = load_state_dict(tmp_path / "resumed" / "checkpoints" / "step_0000004" / f"{name}.safetensors")
        for key in first:
            assert torch.equal(first[key], second[key]), (name, key)


class _WindowLevelModel(torch.nn.Module):
    """A temporal model whose whole output window takes one value (the window's mean face colour): without
    blending its output jumps exactly at window borders, which makes seams measurable."""

    num_frames = 4

    class config:
        face_size = 96

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        level = faces[:, 3:].mean(dim=(2, 3, 4), keepdim=True)        # reference half: the unmasked frames
        return level.expand(-1, -1, faces.shape[2], faces.shape[3], faces.shape[4]).clone()


def _crops_and_mels(shared_data, count: int) -> tuple[np.ndarray, np.ndarray]:
    from lipsync.face.paste import crop_face
    from lipsync.io import VideoReader

    boxes = face_boxes(shared_data, "retalk_face3_25fps")
    frames = zip(VideoReader(shared_data / "video" / "retalk_face3_25fps.mp4"), range(count))
    crops = np.stack([crop_face(frame.image, tuple(int(round(v)) for v in boxes[frame.index]), 96)
                      for frame, _ in frames])
    return crops, np.random.default_rng(0).uniform(-4, 1, (count, 80, 16)).astype(np.float32)


def _run_windows(model: torch.nn.Module, crops: np.ndarray, mels: np.ndarray, stride: int) -> np.ndarray:
    synthesizer = WindowedSynthesizer(model, torch.device("cpu"), torch.float32, stride=stride)
    outputs = synthesizer.push(crops[:7], mels[:7]) + synthesizer.push(crops[7:], mels[7:])
    outputs += synthesizer.end_segment()
    assert len(outputs) == len(crops)
    frames = np.stack(outputs).astype(np.float32)
    return np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))      # mean step from frame to frame


def test_window_blending_leaves_no_seams(shared_data):
    crops, mels = _crops_and_mels(shared_data, 26)
    borders = np.arange(3, len(crops) - 1, 4)                          # steps from frame 4k-1 to 4k
    inside = np.setdiff1d(np.arange(len(crops) - 1), borders)
    butted = _run_windows(_WindowLevelModel(), crops, mels, stride=4)
    assert butted[inside].max() == 0 and butted[borders].min() > 0     # seams, only at window borders
    blended = _run_windows(_WindowLevelModel(), crops, mels, stride=2)
    # Overlapping windows cross-fade: the largest step is a fraction of the seam it replaces.
    assert blended.max() <= 0.75 * butted.max()
    # The real (tiny) generator: no step at a window border is larger than the steps inside windows.
    torch.manual_seed(3)
    real = _run_windows(MarlinLipSync(tiny_config(num_frames=4)), crops, mels, stride=2)
    assert real[borders].max() <= real[inside].max() + 1e-6


@pytest.mark.slow
def test_infer_with_a_tiny_marlin_checkpoint(shared_data, tmp_path):
    torch.manual_seed(4)
    config = tiny_config(num_frames=4)
    checkpoint = tmp_path / "tiny_marlin.safetensors"
    save_safetensors(checkpoint, MarlinLipSync(config).state_dict(), {"arch": "marlin_lipsync",
                                                                      "config": config.to_dict()})
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(face_boxes(shared_data, "vexpress_radio10_2997fps")))
    output = tmp_path / "marlin.mp4"
    assert main(["infer", "--quiet", "--precision", "fp32", "--face",
                 str(shared_data / "video" / "vexpress_radio10_2997fps.mp4"), "--audio",
                 str(shared_data / "audio" / "retalk_audio1_44k_stereo.wav"), "--checkpoint", str(checkpoint),
                 "--boxes", str(boxes), "--outfile", str(output)]) == 0
    info = probe(output)
    # 5.0155 s at 30000/1001 fps (the source's timestamp gap included), continued by pingpong.
    assert info["num_frames"] == 150
    assert abs(info["video_duration"] - 5.0155) <= 1001 / 30000
    assert info["audio_duration"] == pytest.approx(5.0155, abs=0.03)
    assert (info["width"], info["height"]) == (512, 512)
    # The checkpoint says what it is: asking for the other architecture is a one-line error.
    assert main(["infer", "--quiet", "--model", "wav2lip", "--face", str(shared_data / "image" / "hallo_6.jpg"),
                 "--audio", str(shared_data / "audio" / "retalk_audio1_44k_stereo.wav"), "--checkpoint",
                 str(checkpoint), "--box", "1", "1", "50", "50", "--outfile", str(tmp_path / "x.mp4")]) == 2
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_train_generator_command(dataset, tiny_expert, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "generator", "--model", "marlin", "--config", "tiny", "--data", str(dataset), "--run-dir",
                 str(run), "--expert", str(tiny_expert), "--steps", "1", "--batch-size", "1", "--workers", "0",
                 "--val-every", "1", "--val-batches", "1", "--device", "cpu", "--precision", "fp32", "--quiet"]) == 0
    exported = run / "checkpoints" / "step_0000001" / "generator.safetensors"
    # The export is what `lipsync infer --checkpoint` reads: it names its architecture and config.
    from lipsync.generators import load_generator

    assert isinstance(load_generator(None, exported), MarlinLipSync)
    assert (run / "samples" / "step_0000001.png").exists()
