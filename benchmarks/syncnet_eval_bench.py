"""Wall time of syncnet.evaluate_clip (LSE-D / LSE-C) on the 174-frame conformance clip.

Uses the seeded stand-in weights and the reference run's own JPEG frames (decoded with cv2, checked against the
stored sha256), so the numbers are the conformance numbers. Prints: cold (first call, includes oneDNN primitive
creation) and warm wall times, seconds per minute of 25 fps video, the speedup over the reference evaluation
(5.9 s for this clip on the project machine, ffmpeg frame extraction included) and peak RSS.

    python benchmarks/syncnet_eval_bench.py [--repeats 5] [--threads 2] [--reference-style]

The process tunes glibc malloc as the ``lipsync`` command does (``lipsync.utils.allocator``; set
``LIPSYNC_SYSTEM_MALLOC=1`` for glibc's defaults) and says which it ran with.

``--reference-style`` also times, in this process, interleaved with the warm runs (same load, same allocator),
the reference's way of running the network (float64 frame tensor, batches of 20 copied 5-frame windows through
the Conv3d model, per-window ``calc_pdist`` loop). It leaves out the reference's ffmpeg/JPEG file I/O, so it is
a lower bound on the reference's time; the ratio to it is robust to other processes sharing the CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from syncnet import SyncNetV2, evaluate_clip, mfcc  # noqa: E402

from peak_memory import peak_rss_mb, tune_allocator_like_cli   # benchmarks/peak_memory.py

SHARED_ROOT = Path(os.environ.get("LIPSYNC_SHARED", PROJECT_ROOT.parent / "shared"))
REFERENCE_SECONDS = 5.9   # SyncNetInstance.evaluate on this clip, this machine (brief), ffmpeg extraction included
VIDEO_FPS = 25


def load_inputs() -> tuple[SyncNetV2, np.ndarray, np.ndarray, dict]:
    import cv2  # benchmark/test-only dependency: decodes the reference's JPEGs exactly as its cv2.imread did

    conformance = SHARED_ROOT / "conformance"
    spec = importlib.util.spec_from_file_location("seeded_weights", conformance / "seeded_weights.py")
    seeded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeded)
    with open(conformance / "keys" / "syncnet_v2.json") as handle:
        shapes = json.load(handle)
    model = SyncNetV2()
    model.load_state_dict(seeded.seeded_state_dict(shapes), strict=True)
    model.eval()

    z = np.load(conformance / "vectors" / "syncnet_eval.npz")
    data, offsets = z["jpeg_bytes"], z["jpeg_offsets"]
    frames = np.stack([cv2.imdecode(data[a:b], cv2.IMREAD_COLOR) for a, b in zip(offsets, offsets[1:])])
    digests = [hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest() for f in frames]
    if digests != list(z["frame_sha256"]):
        print("warning: decoded frames differ from the reference's (another libjpeg); timings still valid")
    return model, frames, z["audio_int16"], {key: z[key] for key in ("minval", "conf", "offset")}


def reference_style(model: SyncNetV2, frames: np.ndarray, audio: np.ndarray, batch_size: int = 20) -> None:
    """The reference's network pass (no file I/O): float64 clip, copied windows, Conv3d, per-window distances."""
    clip = torch.from_numpy(frames.transpose(3, 0, 1, 2)[None].astype(float)).float()    # 1 3 t h w
    features = torch.from_numpy(mfcc(audio, 16000))[None, None]                          # 1 1 13 s
    num_windows = min(len(frames), len(audio) // 640) - 5
    lip, aud = [], []
    with torch.no_grad():
        for start in range(0, num_windows, batch_size):
            stop = min(num_windows, start + batch_size)
            lip.append(model.forward_lip(torch.cat([clip[:, :, v : v + 5] for v in range(start, stop)])))
            aud.append(model.forward_aud(torch.cat([features[..., 4 * v : 4 * v + 20] for v in range(start, stop)])))
    lip, aud = torch.cat(lip), torch.cat(aud)
    padded = torch.nn.functional.pad(aud, (0, 0, 15, 15))
    dists = [torch.nn.functional.pairwise_distance(lip[[v]].repeat(31, 1), padded[v : v + 31]) for v in range(len(lip))]
    torch.median(torch.stack(dists, 1).mean(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="warm runs after the first (cold) one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-style", action="store_true", help="also time the reference's network pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator = tune_allocator_like_cli()

    model, frames, audio, expected = load_inputs()
    clip_seconds = len(frames) / VIDEO_FPS

    start = time.perf_counter()
    result = evaluate_clip(frames, audio, model)
    cold = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    warm, warm_cpu, reference = [], [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = evaluate_clip(frames, audio, model)
        warm.append(time.perf_counter() - start)
        warm_cpu.append(time.process_time() - cpu_start)
        if not reference:
            peak_mb = peak_rss_mb()   # evaluate_clip's own peak, before any reference-style pass
        if args.reference_style:   # interleaved, so both see the same share of a busy machine
            start = time.perf_counter()
            reference_style(model, frames, audio)
            reference.append(time.perf_counter() - start)
    best, median = min(warm), statistics.median(warm)

    print(f"clip: {len(frames)} frames ({clip_seconds:.2f} s at {VIDEO_FPS} fps), torch threads {args.threads}, "
          f"{allocator}, load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    print(f"LSE-D {result['min_dist']:.4f} (ref {float(expected['minval']):.4f}), "
          f"LSE-C {result['confidence']:.4f} (ref {float(expected['conf']):.4f}), "
          f"offset {result['offset']} (ref {int(expected['offset'])})")
    print(f"evaluate_clip wall: cold {cold:.3f} s, warm best {best:.3f} s, median {median:.3f} s "
          f"(cpu {statistics.median(warm_cpu):.3f} s)")
    print(f"per minute of video: {best / clip_seconds * 60:.2f} s (best), {median / clip_seconds * 60:.2f} s (median)")
    print(f"speedup vs reference {REFERENCE_SECONDS} s: {REFERENCE_SECONDS / best:.2f}x (best), "
          f"{REFERENCE_SECONDS / median:.2f}x (median), {REFERENCE_SECONDS / cold:.2f}x (cold)")
    print(f"peak RSS (evaluate_clip, inputs and weights included): "
          f"{peak_mb:.0f} MiB")
    if args.reference_style:
        ratios = [ref / ours for ref, ours in zip(reference, warm)]
        print(f"reference-style network pass in-process (no ffmpeg/JPEG I/O), interleaved: "
              f"best {min(reference):.3f} s, median {statistics.median(reference):.3f} s")
        print(f"paired speedup (reference-style / evaluate_clip, same round): "
              f"median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x; "
              f"best vs best {min(reference) / best:.2f}x")


if __name__ == "__main__":
    main()
