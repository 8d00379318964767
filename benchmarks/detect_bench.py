"""Face detection stage vs generator stage, per frame, on 720p and 1080p video (printed figures, not a test).

The clips are ../shared/data/video/marlin_video01_30fps.mp4 (480x360, one talking face) upscaled with PyAV to
the frame height and pillarboxed to 1280x720 and 1920x1080. Pass 1 then runs as in `lipsync infer`: every
frame decoded, shrunk and followed, S3FD on keyframes (every k-th frame, cuts, lost faces) in batches.

S3FD has seeded (random) weights: the network costs exactly what the real one does, but its boxes are
noise, and noise boxes would send the tracker into frame-by-frame detection that a real face never causes.
So the detector used here runs seeded S3FD on the very batches the tracker hands it (the cost) and answers
with the reference boxes of ../shared/data/annotations scaled to the clip (the behaviour of a detector that
finds the face). Random weights also make hundreds of boxes above the threshold per frame where real ones
make one, so the "detect" time (network, box decoding and NMS) is a slight upper bound. The S3FD forward pass
is also timed alternately with the fp32 generator as `lipsync infer` runs it (batch norms folded, batch 8,
96x96 crops) in one process, fastest of several rounds each, so that load from other processes on shared
cores hits both alike. The generator alone is also timed in fp32 and bf16.

    python benchmarks/detect_bench.py                          # 720p and 1080p, k=5, detect-max-side 256
    python benchmarks/detect_bench.py --max-sides 256 320 --frames 100

Each measurement runs in its own process so that its peak RSS is its own (pass 1's peak is taken before
the generator is timed). Absolute CPU timings are noisy when other processes share the cores.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from peak_memory import peak_rss_mb   # benchmarks/peak_memory.py

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STEM = "marlin_video01_30fps"
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def build_clip(size: tuple[int, int], num_frames: int, path: Path) -> tuple[float, int]:
    """Upscale and pillarbox the shared clip; returns (scale, x offset) applied to its pixels."""
    import av
    import cv2

    width, height = size
    with av.open(str(SHARED / "data" / "video" / f"{STEM}.mp4")) as source:
        stream = source.streams.video[0]
        scale = height / stream.codec_context.height
        inner = (round(stream.codec_context.width * scale), height)
        offset = (width - inner[0]) // 2
        with av.open(str(path), "w") as output:
            video = output.add_stream("libx264", rate=30, options={"crf": "18", "preset": "ultrafast"})
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            for index, frame in enumerate(source.decode(stream)):
                if index == num_frames:
                    break
                canvas = np.zeros((height, width, 3), np.uint8)
                canvas[:, offset:offset + inner[0]] = cv2.resize(frame.to_ndarray(format="bgr24"), inner,
                                                                 interpolation=cv2.INTER_CUBIC)
                picture = av.VideoFrame.from_ndarray(canvas, format="bgr24")
                picture.pts = index
                output.mux(video.encode(picture))
            output.mux(video.encode(None))
    return scale, offset


def seeded_torch_home(folder: Path) -> Path:
    """A TORCH_HOME whose hub cache holds S3FD weights from the conformance seed (random, deterministic)."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from lipsync.face.detect import S3FD_FILE

    spec = importlib.util.spec_from_file_location("seeded_weights", SHARED / "conformance" / "seeded_weights.py")
    seeded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeded)
    shapes = {key: tuple(value.shape) for key, value in s3fd().state_dict().items()}
    home = folder / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(seeded.seeded_state_dict(shapes), home / "hub" / "checkpoints" / S3FD_FILE)
    return home


GENERATOR_BATCH = 8   # lipsync infer's CPU default (lipsync.utils.device.default_batch_size)


def pipeline_synthesizer(dtype):
    """The Wav2Lip generator as `lipsync infer` runs it (random weights cost what real ones do)."""
    import torch

    from lipsync.models import Wav2Lip
    from lipsync.models.inference import fold_batch_norms
    from lipsync.synthesis import Wav2LipSynthesizer

    return Wav2LipSynthesizer(fold_batch_norms(Wav2Lip()), torch.device("cpu"), dtype)


class CostlyReference:
    """Runs seeded S3FD on every batch (the cost), answers with the reference boxes (the behaviour)."""

    def __init__(self, s3fd, video: Path, view_size: tuple[int, int], scale: float, offset: int) -> None:
        import cv2

        from lipsync.io.video import VideoReader

        reference = np.load(SHARED / "data" / "annotations" / f"{STEM}.npz")
        reader = VideoReader(video)
        to_view = np.array([view_size[0] / reader.info.width, view_size[1] / reader.info.height] * 2)
        self.s3fd = s3fd
        self.answers: dict[str, np.ndarray] = {}
        for frame in reader:
            view = cv2.resize(frame.image, view_size, interpolation=cv2.INTER_AREA)
            rows = np.flatnonzero(reference["face_frame"] == frame.index)
            boxes = reference["face_box"][rows] * scale + np.array([offset, 0, offset, 0])
            answer = np.concatenate([boxes * to_view, reference["face_score"][rows, None]], axis=1)
            self.answers[hashlib.sha1(view.tobytes()).hexdigest()] = answer.astype(np.float32)

    def detect(self, images):
        self.s3fd.detect(images)                                  # the real cost; its noise boxes are dropped
        return [self.answers[hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()] for image in images]


def interleaved_ms(view_size: tuple[int, int], rounds: int) -> tuple[float, float]:
    """(S3FD forward ms per image at the detector's size, fp32 generator ms per frame), fastest of `rounds`.

    The two alternate, so that load from other processes hits both alike: their ratio is what counts.
    """
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    network = s3fd().eval()
    images = torch.rand(8, 3, view_size[1], view_size[0]) * 255
    synthesizer = pipeline_synthesizer(torch.float32)
    faces = np.random.default_rng(0).integers(0, 255, (GENERATOR_BATCH, 96, 96, 3), dtype=np.uint8)
    mels = np.random.default_rng(1).standard_normal((GENERATOR_BATCH, 80, 16)).astype(np.float32)
    network_seconds = generator_seconds = math.inf
    with torch.inference_mode():
        network(images[:1])
        synthesizer(faces[:8], mels[:8])
        for _ in range(rounds):
            start = time.perf_counter()
            network(images)
            network_seconds = min(network_seconds, (time.perf_counter() - start) / len(images))
            start = time.perf_counter()
            synthesizer(faces, mels)
            generator_seconds = min(generator_seconds, (time.perf_counter() - start) / len(faces))
    return 1000 * network_seconds, 1000 * generator_seconds


def run_detection(size_name: str, num_frames: int, detect_every: int, max_side: int, runs: int) -> dict:
    import os
    import types

    import torch

    from lipsync.config import InferenceConfig
    from lipsync.face.locate import IdentifiedDetector, build_face_track
    from lipsync.face.track import detector_view_size
    from lipsync.io.video import VideoReader

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        os.environ["TORCH_HOME"] = str(seeded_torch_home(folder))
        os.environ["LIPSYNC_HOME"] = str(folder / "lipsync_home")      # never real weights, never the real cache
        video = folder / f"{size_name}.mp4"
        scale, offset = build_clip(SIZES[size_name], num_frames, video)
        view = detector_view_size(*SIZES[size_name], max_side)
        detector = CostlyReference(IdentifiedDetector("cpu", threshold=0.5), video, view, scale, offset)
        rss_before_mb = peak_rss_mb()
        config = InferenceConfig(detect_every=detect_every, detect_max_side=max_side, detection_cache=False)
        # The least disturbed of a few runs: other processes sharing the cores only ever add time.
        best: dict[str, float] = {}
        for _ in range(runs):
            clock = types.SimpleNamespace(seconds={})
            start = time.perf_counter()
            track = build_face_track(VideoReader(video), 1e9, config, detector, clock)
            wall = time.perf_counter() - start
            frames = track.coverage.num_frames
            figures = {"detect_ms": 1000 * clock.seconds["detect"] / frames,
                       "track_ms": 1000 * clock.seconds["track"] / frames,
                       "decode_ms": 1000 * clock.seconds["detect_decode"] / frames, "pass1_ms": 1000 * wall / frames}
            best = {key: min(value, best.get(key, value)) for key, value in figures.items()}
        peak_rss_mb_pass1 = peak_rss_mb()
        network_ms, generator_ms = interleaved_ms(view, rounds=2 * runs)
        return {
            **best, "network_ms": network_ms * track.coverage.detector_frames / frames,
            "generator_fp32_ms": generator_ms, "size": size_name,
            "frames": frames, "k": detect_every, "max_side": max_side,
            "detector_frames": track.coverage.detector_frames, "coverage": track.coverage.coverage,
            "peak_rss_mb": peak_rss_mb_pass1, "rss_before_mb": rss_before_mb,
        }


def run_generator(precision: str, repeats: int) -> dict:
    import torch

    torch.set_num_threads(2)
    synthesizer = pipeline_synthesizer({"fp32": torch.float32, "bf16": torch.bfloat16}[precision])
    generator = np.random.default_rng(0)
    faces = generator.integers(0, 255, (GENERATOR_BATCH, 96, 96, 3), dtype=np.uint8)
    mels = generator.standard_normal((GENERATOR_BATCH, 80, 16)).astype(np.float32)
    synthesizer(faces, mels)                                       # warm-up
    seconds = math.inf
    for _ in range(repeats):                                       # the least disturbed batch
        start = time.perf_counter()
        synthesizer(faces, mels)
        seconds = min(seconds, time.perf_counter() - start)
    return {"precision": precision, "generator_ms": 1000 * seconds / GENERATOR_BATCH,
            "peak_rss_mb": peak_rss_mb()}


def _child(*arguments: str) -> dict:
    completed = subprocess.run([sys.executable, __file__, "--child", *arguments], capture_output=True, text=True,
                               check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--frames", type=int, default=100, help="frames of each clip")
    parser.add_argument("--detect-every", type=int, default=5)
    parser.add_argument("--max-sides", type=int, nargs="+", default=[256])
    parser.add_argument("--repeats", type=int, default=3, help="generator batches timed (the fastest counts)")
    parser.add_argument("--runs", type=int, default=2, help="pass-1 runs per clip (the fastest counts)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        figures = (run_detection(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4])) if kind == "detect"
                   else run_generator(rest[0], int(rest[1])))
        print(json.dumps(figures))
        return
    for precision in ("fp32", "bf16"):
        figures = _child("generate", precision, str(args.repeats))
        print(f"generator {precision}: {figures['generator_ms']:.1f} ms/frame (96x96, batch {GENERATOR_BATCH}, fastest of "
              f"{args.repeats}); peak RSS {figures['peak_rss_mb']:.0f} MB")
    for size in args.sizes:
        for max_side in args.max_sides:
            figures = _child("detect", size, str(args.frames), str(args.detect_every), str(max_side), str(args.runs))
            generator = figures["generator_fp32_ms"]
            network = figures["network_ms"] + figures["track_ms"]
            upper = figures["detect_ms"] + figures["track_ms"]
            print(f"{size} k={figures['k']} detect-max-side {max_side}: detector on {figures['detector_frames']} of "
                  f"{figures['frames']} frames, coverage {figures['coverage']:.0%}. Per frame, amortised: S3FD "
                  f"network {figures['network_ms']:.1f} ms + tracking {figures['track_ms']:.1f} ms = {network:.1f} ms "
                  f"= {network / generator:.2f}x the fp32 generator ({generator:.1f} ms, timed alternately with "
                  f"S3FD); the whole detect stage (network, box decoding, NMS of random-weight candidates) "
                  f"+ tracking {upper:.1f} ms = {upper / generator:.2f}x. Pass-1 decode {figures['decode_ms']:.1f} ms, pass-1 "
                  f"wall {figures['pass1_ms']:.1f} ms. Peak RSS {figures['peak_rss_mb']:.0f} MB "
                  f"({figures['rss_before_mb']:.0f} MB before pass 1)")


if __name__ == "__main__":
    main()
