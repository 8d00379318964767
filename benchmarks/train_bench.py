"""Seconds per training step and peak memory of each recipe on this machine (printed, not a test).

Preprocesses four shared talking-head clips (reference boxes and landmarks from ../shared/data/annotations
stand in for the detector), then runs a few steps of each recipe through the real `Trainer`, each in its
own process so that its peak RSS is its own. Seeded random weights cost what real ones do.

    python benchmarks/train_bench.py                     # every configuration, fp32 on this CPU
    python benchmarks/train_bench.py --only marlin_small --device cuda --precision bf16 --batch-size 8
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import peak_rss_mb   # benchmarks/peak_memory.py

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STEMS = ("retalk_face3_25fps", "retalk_face5_25fps", "pcavs_00015_224_25fps", "liveportrait_d20_25fps")

# name -> (recipe, recipe settings, batch size on CPU)
CONFIGS = {
    "syncnet_5": ("syncnet", {"num_frames": 5}, 16),
    "syncnet_16": ("syncnet", {"num_frames": 16}, 8),
    "wav2lip_gan": ("generator", {"model": "wav2lip", "expert": 5}, 4),
    "marlin_tiny": ("generator", {"model": "marlin", "marlin": "tiny", "expert": 4}, 4),
    "marlin_small": ("generator", {"model": "marlin", "marlin": "vit_small", "expert": 16}, 1),
    "marlin_base": ("generator", {"model": "marlin", "marlin": "vit_base", "expert": 16}, 1),
    "pretrain_small": ("marlin", {"config": "vit_small"}, 2),
}


def prepare(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from oracles import AnnotationLandmarkerFactory, AnnotationTrackerFactory

    from lipsync.train.preprocess import preprocess

    videos = folder / "videos"
    videos.mkdir()
    for stem in STEMS:
        (videos / f"{stem}.mp4").symlink_to(SHARED / "data" / "video" / f"{stem}.mp4")
    annotations = SHARED / "data" / "annotations"
    preprocess(videos, folder / "clips", AnnotationTrackerFactory(annotations), AnnotationLandmarkerFactory(annotations))
    return folder / "clips"


def run_one(name: str, data: Path, folder: Path, device: str, precision: str, batch_size: int | None,
            steps: int) -> dict:
    import torch

    from lipsync.config import TrainConfig
    from lipsync.train.loop import Trainer
    from lipsync.train.recipes import RECIPES
    from syncnet import SyncNetColor

    recipe_name, settings, default_batch = CONFIGS[name]
    settings = dict(settings)
    batch = batch_size or default_batch
    train = TrainConfig(run_dir=str(folder / name), max_steps=steps, batch_size=batch, num_workers=1, log_every=1,
                        val_every=0, checkpoint_every=0, device=device, precision=precision)
    recipe_class, config_class = RECIPES[recipe_name]
    if "expert" in settings:
        expert = folder / f"expert{settings['expert']}.pth"
        torch.save(SyncNetColor(num_frames=settings.pop("expert")).state_dict(), expert)
        settings["expert_checkpoint"] = str(expert)
    config = config_class(data=str(data), **settings)
    recipe = recipe_class(config, train) if recipe_name == "marlin" else recipe_class(config)
    trainer = Trainer(recipe, train)
    started = time.perf_counter()
    trainer.fit()
    total = time.perf_counter() - started
    records = [json.loads(line) for line in (folder / name / "metrics.jsonl").read_text().splitlines()]
    per_step = [record["seconds_per_step"] for record in records if record["split"] == "train"][1:]
    return {"config": name, "batch": batch, "device": device, "precision": precision,
            "seconds_per_step": round(statistics.median(per_step), 3), "total_s": round(total, 1),
            "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=tuple(CONFIGS), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, data = args.child
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(run_one(name, Path(data), Path(folder), args.device, args.precision, args.batch_size,
                                     args.steps)))
        return
    with tempfile.TemporaryDirectory() as folder:
        data = prepare(Path(folder))
        for name in args.only or CONFIGS:
            command = [sys.executable, __file__, "--child", name, str(data), "--device", args.device,
                       "--precision", args.precision, "--steps", str(args.steps)]
            if args.batch_size:
                command += ["--batch-size", str(args.batch_size)]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode:
                print(f"{name}: failed: {completed.stderr.strip().splitlines()[-1]}")
                continue
            figures = json.loads(completed.stdout.strip().splitlines()[-1])
            print(f"{name:<15} batch {figures['batch']:>2} {figures['device']} {figures['precision']}: "
                  f"{figures['seconds_per_step']:.2f} s/step, peak RSS {figures['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
