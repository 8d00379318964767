"""Run by `torchrun --nproc-per-node 2` in tests: train the SyncNet recipe, then let every rank write a
checksum of its parameters so the test can check that DDP kept the ranks identical."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def main() -> None:
    data, run_dir = sys.argv[1], Path(sys.argv[2])
    from lipsync.config import TrainConfig
    from lipsync.train.loop import Trainer
    from lipsync.train.recipes import SyncNetRecipe, SyncNetRecipeConfig

    torch.set_num_threads(1)
    trainer = Trainer(SyncNetRecipe(SyncNetRecipeConfig(data=data)),
                      TrainConfig(run_dir=str(run_dir), max_steps=3, batch_size=4, num_workers=0, log_every=1,
                                  val_every=0, checkpoint_every=0, device="cpu", precision="fp32"))
    trainer.fit()
    parameters = torch.cat([p.detach().flatten() for p in trainer.models.raw["syncnet"].parameters()])
    rank = int(os.environ["RANK"])
    (run_dir / f"rank{rank}.json").write_text(json.dumps({
        "sum": parameters.double().sum().item(), "abs_sum": parameters.double().abs().sum().item(),
        "world_size": trainer.context.world_size, "first": parameters[:5].tolist()}))


if __name__ == "__main__":
    main()
