"""Wall time of `lipsync evaluate` (lrs2 protocol, seeded SyncNet weights) per clip and per minute of video.

Runs on the shared 7 s conformance clip (pcavs_00015_224_25fps.mp4, 174 frames) and on a ~60 s clip made by
looping it 9 times (re-encoded once, H.264 + AAC). Prints, for each:

* the whole command as a user runs it (a fresh process: Python and torch start-up, weight loading, frame
  and audio extraction with the JPEG round trip, SyncNet, report writing) and its peak RSS;
* `Evaluator.evaluate` in a process that has the model loaded (cold: first call; warm: best of the repeats),
  split into extraction (decode, JPEG round trip, audio) and scoring;
* the speed-up over the reference syncnet_python evaluation, which took 5.9 s for the 7 s clip on the project
  machine (ffmpeg frame and audio extraction, JPEG writing and reading, and the network), and whether the
  scores equal the reference run's (conformance/vectors/syncnet_eval.npz).

    python benchmarks/evaluate_bench.py [--repeats 3] [--threads 2] [--loops 9]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from lipsync.eval import EvalConfig, Evaluator  # noqa: E402
from lipsync.eval.extract import extract_audio  # noqa: E402
from lipsync.eval.lse import prepare_clip, score_clip  # noqa: E402

from peak_memory import peak_rss_mb, tune_allocator_like_cli   # benchmarks/peak_memory.py

SHARED_ROOT = Path(os.environ.get("LIPSYNC_SHARED", PROJECT_ROOT.parent / "shared"))
CLIP = SHARED_ROOT / "data" / "video" / "pcavs_00015_224_25fps.mp4"
REFERENCE_SECONDS = 5.9   # syncnet_python's evaluation of CLIP on the project machine (brief)


def seeded_syncnet(folder: Path) -> Path:
    """The conformance vectors' seeded SyncNet weights, saved in syncnet_python's bare format."""
    from syncnet_eval_bench import load_inputs   # benchmarks/ is on sys.path when this script runs

    path = folder / "syncnet_v2_seeded.model"
    torch.save(load_inputs()[0].state_dict(), path)
    return path


def looped_clip(folder: Path, loops: int) -> Path:
    """CLIP played `loops` times in a row (frames and audio), written as H.264 + AAC."""
    import av

    from lipsync.io.writer import VideoWriter

    audio = np.tile(extract_audio(CLIP), loops)
    wav = folder / "looped.wav"
    with av.open(str(wav), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with av.open(str(CLIP)) as container:
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]
    path = folder / f"looped_{loops}x.mp4"
    writer = VideoWriter(path, width=224, height=224, frame_rate=Fraction(25), time_base=Fraction(1, 25), crf=18,
                         audio=wav)
    for index in range(loops * len(frames)):
        writer.write(frames[index % len(frames)], index / 25)
    writer.close()
    return path


def run_command(video: Path, weights: Path, out: Path, threads: int) -> tuple[float, float, dict]:
    """`lipsync evaluate VIDEO` in a fresh process: (wall seconds, peak RSS MiB of that process, report)."""
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "LIPSYNC_HOME": str(out.parent / "home")}
    # The child reports its own peak (see peak_memory.py: wait4's ru_maxrss would include this process's).
    program = ("import sys; sys.path.insert(0, sys.argv[1]); from peak_memory import peak_rss_mb; "
               "from lipsync.cli import main; code = main(sys.argv[2:]); print(peak_rss_mb()); sys.exit(code)")
    command = [sys.executable, "-c", program, str(Path(__file__).parent),
               "evaluate", str(video), "--syncnet-weights", str(weights), "--quiet", "--out", str(out)]
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"lipsync evaluate failed on {video}: {completed.stderr.strip()[-500:]}")
    return wall, float(completed.stdout.split()[-1]), json.loads(out.with_suffix(".json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm in-process runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--loops", type=int, default=9, help="how many times the 7 s clip is looped (~60 s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The in-process runs tune malloc as the lipsync command does (LIPSYNC_SYSTEM_MALLOC=1: glibc defaults).
    allocator = tune_allocator_like_cli()
    expected = np.load(SHARED_ROOT / "conformance" / "vectors" / "syncnet_eval.npz")

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        weights = seeded_syncnet(scratch)
        long_clip = looped_clip(scratch, args.loops)
        print(f"torch threads {args.threads}, {os.cpu_count()} CPUs, {allocator}, load average "
              f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}")

        for label, video in (("7 s clip", CLIP), (f"{args.loops}x loop", long_clip)):
            wall, rss, report = run_command(video, weights, scratch / f"report_{label[0]}", args.threads)
            (score,) = report["videos"]
            seconds = score["frames"] / 25
            print(f"[{label}] lipsync evaluate (fresh process): {wall:.2f} s for {seconds:.2f} s of video = "
                  f"{wall / seconds * 60:.1f} s per minute; peak RSS {rss:.0f} MiB; "
                  f"LSE-D {score['lse_d']:.6f}, LSE-C {score['lse_c']:.6f}, offset {score['offset']}")
            if video == CLIP:
                same = (abs(score["lse_d"] - float(expected["minval"])) < 1e-3
                        and abs(score["lse_c"] - float(expected["conf"])) < 1e-3
                        and score["offset"] == int(expected["offset"]))
                print(f"[{label}] reference: LSE-D {float(expected['minval']):.6f}, LSE-C "
                      f"{float(expected['conf']):.6f}, offset {int(expected['offset'])} -> "
                      f"{'identical' if same else 'DIFFERENT'}; speed-up of the command over the reference's "
                      f"{REFERENCE_SECONDS} s: {REFERENCE_SECONDS / wall:.2f}x")

        evaluator = Evaluator(weights, config=EvalConfig())
        for label, video in (("7 s clip", CLIP), (f"{args.loops}x loop", long_clip)):
            times, extract_times, score_times = [], [], []
            for _ in range(1 + args.repeats):
                start = time.perf_counter()
                clip = prepare_clip(video, "lrs2")
                middle = time.perf_counter()
                score = score_clip(evaluator.scorer, clip, video.name)
                end = time.perf_counter()
                times.append(end - start)
                extract_times.append(middle - start)
                score_times.append(end - middle)
                del clip
            seconds = score.num_frames / 25
            best = int(np.argmin(times[1:])) + 1
            print(f"[{label}] Evaluator, model loaded: cold {times[0]:.2f} s, warm best {times[best]:.2f} s "
                  f"(extraction {extract_times[best]:.2f} s, SyncNet {score_times[best]:.2f} s) = "
                  f"{times[best] / seconds * 60:.1f} s per minute of video")
            if video == CLIP:
                print(f"[{label}] speed-up over the reference's {REFERENCE_SECONDS} s: "
                      f"{REFERENCE_SECONDS / times[best]:.2f}x warm, {REFERENCE_SECONDS / times[0]:.2f}x cold")
        print(f"peak RSS of this process (both clips, model loaded): "
              f"{peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
