"""End-to-end `lipsync infer` speed and memory on a long clip (printed figures, not a test).

Builds a clip by looping ../shared/data/video/retalk_face2_25fps.mp4 (844x844, 25 fps) and speech by
chaining the shared recordings, then runs the pipeline with a fixed face box and seeded Wav2Lip weights
(random weights cost exactly what real ones do). Each duration runs in its own process so that its peak RSS
is its own.

    python benchmarks/infer_bench.py                      # 10 s and 60 s, precision auto
    python benchmarks/infer_bench.py --durations 60 --precision fp32

Reference on the same 60 s clip (issue 2): the official Wav2Lip inference.py took 205 s and 5.6 GB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from peak_memory import peak_rss_mb, tune_allocator_like_cli   # benchmarks/peak_memory.py

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VIDEO = SHARED / "data" / "video" / "retalk_face2_25fps.mp4"
SPEECH = ["latentsync_demo1_16k_mono.wav", "pcavs_681600002_wav_named_mp3.mp3", "sadtalker_chinese_news_48k.wav",
          "sadtalker_radio34_16k_stereo.wav", "retalk_audio1_44k_stereo.wav"]


def build_inputs(duration: float, folder: Path) -> tuple[Path, Path]:
    """A looped video at least `duration` long and `duration` seconds of chained speech."""
    import av

    from lipsync.audio import load_audio

    video_path = folder / f"looped_{duration:g}s.mp4"
    with av.open(str(VIDEO)) as source:
        frames = [frame.to_ndarray(format="yuv420p") for frame in source.decode(video=0)]
    repeats = int(np.ceil(duration * 25 / len(frames)))
    with av.open(str(video_path), "w") as output:
        stream = output.add_stream("libx264", rate=25, options={"crf": "18", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 844, 844, "yuv420p"
        for index in range(repeats * len(frames)):
            frame = av.VideoFrame.from_ndarray(frames[index % len(frames)], format="yuv420p")
            frame.pts = index
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    speech = np.concatenate([load_audio(SHARED / "data" / "audio" / name) for name in SPEECH])
    speech = np.tile(speech, int(np.ceil(duration * 16000 / len(speech))))[: int(duration * 16000)]
    audio_path = folder / f"speech_{duration:g}s.wav"
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_wav

    write_wav(audio_path, speech, 16000)
    return video_path, audio_path


def seeded_checkpoint(folder: Path) -> Path:
    import torch

    from lipsync.models import Wav2Lip

    keys = SHARED / "conformance" / "keys" / "wav2lip_generator.json"
    if keys.exists():
        sys.path.insert(0, str(SHARED / "conformance"))
        from seeded_weights import seeded_state_dict

        state = seeded_state_dict({key: shape for key, shape in json.loads(keys.read_text()).items()})
    else:
        state = Wav2Lip().state_dict()
    path = folder / "seeded_wav2lip.pth"
    torch.save(state, path)
    return path


def run_one(video: Path, audio: Path, checkpoint: Path, output: Path, precision: str, batch_size: int | None,
            preset: str) -> dict:
    """Time one `lipsync infer` in this (fresh) process; its peak RSS is the pipeline's alone."""
    from lipsync import InferenceConfig, LipSyncPipeline, RuntimeConfig

    allocator = tune_allocator_like_cli()
    rss_before_mb = peak_rss_mb()
    start = time.perf_counter()
    pipeline = LipSyncPipeline.from_pretrained(checkpoint, runtime=RuntimeConfig(precision=precision))
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cpu_start = time.process_time()
    result = pipeline(video, audio, output,
                      InferenceConfig(box=(209.0, 278.0, 549.0, 618.0), batch_size=batch_size, preset=preset))
    seconds = time.perf_counter() - start
    return {
        "frames": result.num_frames, "wall_s": round(seconds, 2), "fps": round(result.num_frames / seconds, 2),
        "cpu_s": round(time.process_time() - cpu_start, 2), "model_load_s": round(load_seconds, 2),
        "stages_s": {stage: round(value, 2) for stage, value in result.stage_seconds.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_imports_mb": round(rss_before_mb, 1),
        "allocator": allocator,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--child", nargs=4, metavar=("VIDEO", "AUDIO", "CHECKPOINT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        video, audio, checkpoint, output = map(Path, args.child)
        print(json.dumps(run_one(video, audio, checkpoint, output, args.precision, args.batch_size, args.preset)))
        return
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        checkpoint = seeded_checkpoint(folder)
        for duration in args.durations:
            video, audio = build_inputs(duration, folder)
            command = [sys.executable, __file__, "--child", str(video), str(audio), str(checkpoint),
                       str(folder / "out.mp4"), "--precision", args.precision, "--preset", args.preset]
            if args.batch_size:
                command += ["--batch-size", str(args.batch_size)]
            completed = subprocess.run(command, capture_output=True, text=True, check=True)
            figures = json.loads(completed.stdout.strip().splitlines()[-1])
            stages = ", ".join(f"{stage} {value:.1f}" for stage, value in figures["stages_s"].items())
            print(f"{duration:>5.0f} s clip, {figures['frames']} frames, precision {args.precision}: "
                  f"{figures['wall_s']:.1f} s wall = {figures['fps']:.1f} frames/s (cpu {figures['cpu_s']:.1f} s); "
                  f"peak RSS {figures['peak_rss_mb']:.0f} MB ({figures['rss_after_imports_mb']:.0f} MB after "
                  f"imports); stages (s): {stages}; {figures['allocator']}")


if __name__ == "__main__":
    main()
