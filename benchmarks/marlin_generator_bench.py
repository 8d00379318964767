"""Frames per second of the MARLIN lip-sync generator at inference (printed, not a test).

Times the windowed synthesizer exactly as `lipsync infer --model marlin` runs it (16-frame windows every 8
frames, cross-faded; 96 px faces in and out) on random faces, for the tiny test configuration and ViT-S/B,
in fp32 and bf16 autocast, each in its own process for a clean peak RSS.

    python benchmarks/marlin_generator_bench.py
    python benchmarks/marlin_generator_bench.py --configs vit_base --device cuda --frames 512
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from peak_memory import peak_rss_mb   # benchmarks/peak_memory.py


def run_one(config_name: str, precision: str, device: str, frames: int) -> dict:
    import numpy as np
    import torch

    from lipsync.models.inference import fold_batch_norms
    from lipsync.models.marlin_lipsync import PRESETS, MarlinLipSync, tiny_config
    from lipsync.synthesis import WindowedSynthesizer

    config = tiny_config() if config_name == "tiny" else PRESETS[config_name]
    torch.manual_seed(0)
    model = fold_batch_norms(MarlinLipSync(config))       # as lipsync infer loads it
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    synthesizer = WindowedSynthesizer(model, torch.device(device), dtype)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (frames, 96, 96, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 1, (frames, 80, 16)).astype(np.float32)
    warm = synthesizer.fresh()
    warm.push(faces[: config.num_frames], mels[: config.num_frames])
    warm.end_segment()
    start = time.perf_counter()
    stream = synthesizer.fresh()
    produced = 0
    for first in range(0, frames, 32):
        produced += len(stream.push(faces[first : first + 32], mels[first : first + 32]))
    produced += len(stream.end_segment())
    seconds = time.perf_counter() - start
    assert produced == frames
    return {"config": config_name, "precision": precision, "device": device, "frames": frames,
            "window": config.num_frames, "fps": round(frames / seconds, 2), "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "vit_small"],
                        choices=["tiny", "vit_small", "vit_base", "vit_large"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1], args.device, args.frames)))
        return
    for config in args.configs:
        for precision in args.precisions:
            completed = subprocess.run([sys.executable, __file__, "--child", config, precision, "--device",
                                        args.device, "--frames", str(args.frames)],
                                       capture_output=True, text=True, check=True)
            figures = json.loads(completed.stdout.strip().splitlines()[-1])
            print(f"{config:<10} {precision} {figures['device']}: {figures['fps']:.2f} frames/s "
                  f"({figures['frames']} frames in {figures['seconds']} s, windows of {figures['window']}), "
                  f"peak RSS {figures['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
