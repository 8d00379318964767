"""Run by `torchrun --nproc-per-node 2` in tests: a few MARLIN pretraining steps (tiny model, 32 px), then every
rank writes checksums of both models so the test can check that DDP kept the ranks identical."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def _checksum(module: torch.nn.Module) -> dict[str, object]:
    parameters = torch.cat([p.detach().flatten() for p in module.parameters()]).double()
    return {"sum": parameters.sum().item(), "abs_sum": parameters.abs().sum().item(), "first": parameters[:5].tolist()}


def main() -> None:
    data, run_dir = sys.argv[1], Path(sys.argv[2])
    from lipsync.config import OptimConfig, TrainConfig
    from lipsync.train.loop import Trainer
    from lipsync.train.recipes import MarlinPretrainConfig, MarlinPretrainRecipe

    torch.set_num_threads(1)
    optim = OptimConfig(lr=0.1, betas=(0.9, 0.95))       # base lr per 256 samples; 4 samples per step here
    recipe_config = MarlinPretrainConfig(data=data, config="tiny", marlin_overrides={"img_size": 32}, optim=optim,
                                         discriminator_optim=optim)
    train_config = TrainConfig(run_dir=str(run_dir), max_steps=3, batch_size=2, num_workers=0, log_every=1,
                               val_every=0, checkpoint_every=0, device="cpu", precision="fp32")
    trainer = Trainer(MarlinPretrainRecipe(recipe_config, train_config), train_config)
    initial = {name: _checksum(module) for name, module in trainer.models.raw.items()}
    trainer.fit()
    final = {name: _checksum(module) for name, module in trainer.models.raw.items()}
    rank = int(os.environ["RANK"])
    (run_dir / f"rank{rank}.json").write_text(json.dumps({
        **{name: checksum for name, checksum in final.items()},
        **{f"{name}_changed": final[name]["sum"] != initial[name]["sum"] for name in final},
        "lr": trainer.optimizer_specs["marlin"][1].lr, "world_size": trainer.context.world_size}))


if __name__ == "__main__":
    main()
