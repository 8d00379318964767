"""`lipsync preprocess`: videos -> preprocessed clips (face crops at 96 and 224 px, 16 kHz audio, mel,
optional 68-point landmarks) in the format of `lipsync.train.clips`.

Inputs: a folder of videos (searched recursively), a text file listing videos (one per line, relative to
the list's folder), or the LRS2 layout (`main/` and `pretrain/` with the official `train.txt`, `val.txt`,
`test.txt`, `pretrain.txt` lists), whose splits become `OUT/<split>/...`. Work runs in parallel worker
processes, is resumable (finished clips are skipped) and never stops on a bad video: its error is recorded
in `OUT/failures.jsonl`.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from lipsync.audio import load_audio, melspectrogram
from lipsync.config import InferenceConfig
from lipsync.errors import LipSyncError
from lipsync.face.boxes import integer_box
from lipsync.face.paste import crop_face
from lipsync.io.video import VIDEO_EXTENSIONS, VideoReader
from lipsync.playback import source_frames
from lipsync.train.clips import META, ClipWriter

logger = logging.getLogger(__name__)

LRS2_LISTS = {"train": "main", "val": "main", "test": "main", "pretrain": "pretrain"}
CROP_SIZES = (96, 224)

# Per video: (reader, duration) -> (num_frames, 4) float boxes with NaN rows where there is no face.
FaceTracker = Callable[[VideoReader, float], NDArray[np.float64]]


class Landmarker(Protocol):
    def __call__(self, frame: NDArray[np.uint8], box: tuple[int, int, int, int], *, index: int, source: Path
                 ) -> NDArray[np.float32] | None:
        """(68, 2) landmarks in frame pixels for the face in `box` of frame `index` of `source`, or None."""
        ...


@dataclass(frozen=True)
class VideoJob:
    """One video to preprocess and where its clip goes."""

    source: Path
    clip_dir: Path
    split: str


def discover(input_path: Path, out: Path) -> list[VideoJob]:
    """Turn a folder, a list file or an LRS2 tree into jobs with stable output locations."""
    input_path = Path(input_path)
    if not input_path.exists():
        raise LipSyncError(f"preprocess input not found: {input_path}")
    if input_path.is_file():
        root = input_path.parent
        lines = [line.strip() for line in input_path.read_text().splitlines()]
        sources = [(root / line).resolve() if not Path(line).is_absolute() else Path(line)
                   for line in lines if line and not line.startswith("#")]
        missing = [str(source) for source in sources if not source.is_file()]
        if missing:
            raise LipSyncError(f"{input_path} lists {len(missing)} missing file(s), e.g. {missing[0]}")
        return [VideoJob(source, out / _relative_stem(source, root), "") for source in sources]
    if any((input_path / f"{split}.txt").is_file() for split in LRS2_LISTS) and (input_path / "main").is_dir():
        return _lrs2_jobs(input_path, out)
    sources = sorted(path for path in input_path.rglob("*") if path.suffix.lower() in VIDEO_EXTENSIONS)
    if not sources:
        raise LipSyncError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {input_path}")
    return [VideoJob(source, out / _relative_stem(source, input_path), "") for source in sources]


def _relative_stem(source: Path, root: Path) -> Path:
    try:
        relative = source.resolve().relative_to(root.resolve())
    except ValueError:
        relative = Path(source.name)
    return relative.with_suffix("")


def _lrs2_jobs(root: Path, out: Path) -> list[VideoJob]:
    jobs = []
    for split, folder in LRS2_LISTS.items():
        listing = root / f"{split}.txt"
        if not listing.is_file():
            continue
        for line in listing.read_text().splitlines():
            if not line.strip():
                continue
            name = line.split()[0]            # test.txt lines carry extra tokens (e.g. "NF")
            jobs.append(VideoJob(root / folder / f"{name}.mp4", out / split / name, split))
    return jobs


def preprocess_video(job: VideoJob, tracker: FaceTracker, landmarker: Landmarker | None = None) -> dict[str, Any]:
    """Preprocess one video into `job.clip_dir`. Raises LipSyncError for an unusable video."""
    wav = load_audio(job.source)
    duration = len(wav) / 16000
    reader = VideoReader(job.source)
    boxes = np.asarray(tracker(reader, duration), dtype=np.float64)
    num_frames = len(boxes)
    if num_frames == 0:
        raise LipSyncError(f"{job.source}: no frames before the audio ends")
    has_face = ~np.isnan(boxes[:, 0])
    if not has_face.any():
        raise LipSyncError(f"{job.source}: no face in any frame")
    with ClipWriter(job.clip_dir) as writer:
        faces = {size: writer.array(f"faces{size}", (num_frames, size, size, 3), np.uint8) for size in CROP_SIZES}
        landmarks = np.full((num_frames, 68, 2), np.nan, dtype=np.float32) if landmarker else None
        times = np.zeros(num_frames)
        for frame in source_frames(reader, duration):
            if frame.index >= num_frames:
                break
            times[frame.index] = frame.time
            if not has_face[frame.index]:
                continue
            box = integer_box(boxes[frame.index])
            for size, array in faces.items():
                array[frame.index] = crop_face(frame.image, box, size)
            if landmarks is not None:
                points = landmarker(frame.image, box, index=frame.index, source=job.source)
                if points is not None:
                    # Into faces224 pixels: the crop is the box stretched to 224 x 224.
                    scale = np.array([224 / (box[2] - box[0]), 224 / (box[3] - box[1])], dtype=np.float32)
                    landmarks[frame.index] = (points - np.array(box[:2], dtype=np.float32)) * scale
        for array in faces.values():
            array.flush()
        writer.save("times", times)
        writer.save("has_face", has_face)
        writer.save("boxes", boxes.astype(np.float32))
        writer.save("audio16k", np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16))
        writer.save("mel", melspectrogram(wav))
        if landmarks is not None:
            writer.save("landmarks68", landmarks)
        meta = {"source": str(job.source), "split": job.split, "num_frames": num_frames,
                "fps": float(reader.info.frame_rate), "width": reader.info.width, "height": reader.info.height,
                "frames_with_face": int(has_face.sum()), "sample_rate": 16000, "crop_sizes": list(CROP_SIZES)}
        writer.commit(meta)
    return meta


class DetectionTrackerFactory:
    """Builds, in each worker process, the pipeline's own pass 1 (S3FD keyframes, tracking, target choice,
    missing-face policy, smoothing, pads) as the preprocessing face tracker.

    Args:
        config: the face-tracking fields of an `InferenceConfig` (detect_every, pads, smooth, ...).
        device: where S3FD runs.
    """

    def __init__(self, config: InferenceConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = device

    def __call__(self) -> FaceTracker:
        from lipsync.face.locate import IdentifiedDetector, build_face_track

        detector = IdentifiedDetector(self.device, self.config.detect_threshold)
        config = self.config

        def track(reader: VideoReader, duration: float) -> NDArray[np.float64]:
            return build_face_track(reader, duration, config, detector).boxes

        return track


# Worker processes build their tracker once (a detector loads weights) and reuse it for every video.
_WORKER: dict[str, Any] = {}


def _init_worker(tracker_factory: Callable[[], FaceTracker], landmarker_factory: Callable[[], Landmarker] | None,
                 threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    _WORKER["tracker"] = tracker_factory()
    _WORKER["landmarker"] = landmarker_factory() if landmarker_factory else None


def _run_job(job: VideoJob) -> tuple[VideoJob, str | None]:
    try:
        preprocess_video(job, _WORKER["tracker"], _WORKER["landmarker"])
        return job, None
    except LipSyncError as error:
        return job, str(error)


def preprocess(input_path: Path, out: Path, tracker_factory: Callable[[], FaceTracker],
               landmarker_factory: Callable[[], Landmarker] | None = None, workers: int = 1,
               progress: Any = None) -> dict[str, int]:
    """Preprocess every video under `input_path` into `out`, skipping finished clips.

    Args:
        tracker_factory: builds the per-process face tracker (picklable: it is sent to worker processes).
        landmarker_factory: builds a 68-point landmarker, or None to skip landmarks.
        workers: worker processes (1: in this process).
        progress: a tqdm class, or None.

    Returns:
        Counts: done (this run), skipped (already there), failed.
    """
    out = Path(out)
    jobs = discover(input_path, out)
    pending = [job for job in jobs if not (job.clip_dir / META).exists()]
    counts = {"done": 0, "skipped": len(jobs) - len(pending), "failed": 0}
    out.mkdir(parents=True, exist_ok=True)
    bar = progress(total=len(jobs), initial=counts["skipped"], unit="video", desc="preprocess") if progress else None
    for job, error in _execute(pending, tracker_factory, landmarker_factory, workers):
        if error is None:
            counts["done"] += 1
        else:
            counts["failed"] += 1
            logger.warning("skipping %s: %s", job.source, error)
            with open(out / "failures.jsonl", "a") as handle:
                handle.write(json.dumps({"source": str(job.source), "error": error}) + "\n")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return counts


def _execute(jobs: list[VideoJob], tracker_factory: Callable[[], FaceTracker],
             landmarker_factory: Callable[[], Landmarker] | None, workers: int
             ) -> Iterator[tuple[VideoJob, str | None]]:
    if workers <= 1:
        _init_worker(tracker_factory, landmarker_factory, threads=0)
        for job in jobs:
            yield _run_job(job)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                             initargs=(tracker_factory, landmarker_factory, threads)) as pool:
        futures = [pool.submit(_run_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
