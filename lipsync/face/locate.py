"""Pass 1 of the pipeline: the lip-synced face's box in every source frame, and a coverage report.

detect and track every face (or reuse cached tracks) -> follow one person -> missing-face policy ->
smoothing -> pads and clipping. Boxes given with `--boxes` skip the first three steps (and smoothing: they
are the user's exact boxes) but follow the missing-face policy.
"""
from __future__ import annotations

import logging
import math
from collections.abc import MutableMapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from lipsync.config import InferenceConfig
from lipsync.face.boxes import clip_to_frame, pad_and_clip
from lipsync.face.cache import DetectionCache, cache_key
from lipsync.face.coverage import CoverageReport, TrackSummary
from lipsync.face.detect import FaceDetector, S3FDDetector, find_s3fd_weights
from lipsync.face.gaps import check_no_gaps, fill_gaps, find_gaps
from lipsync.face.select import select_target
from lipsync.face.smooth import smooth_boxes
from lipsync.face.track import FaceTracker, FaceTracks, TrackerSettings
from lipsync.io.video import VideoReader
from lipsync.playback import source_frames
from lipsync.weights import sha256_file

logger = logging.getLogger(__name__)


class StageClock(Protocol):
    """Wall seconds per named stage (the pipeline's clock)."""

    seconds: MutableMapping[str, float]


@dataclass(frozen=True)
class FaceTrack:
    """The result of pass 1.

    Attributes:
        boxes: (n, 4) float64 crop boxes per source frame (padded, clipped), NaN rows: pass the frame through.
        coverage: what was found where.
    """

    boxes: NDArray[np.float64]
    coverage: CoverageReport


class IdentifiedDetector:
    """face-alignment's S3FD with a `cache_id`: the detection cache keys on the weights and the threshold.

    Frames reach it already shrunk to the configured detection size, so it never resizes them again.

    Args:
        device: torch device.
        threshold: minimum detection score.
    """

    def __init__(self, device: torch.device | str, threshold: float) -> None:
        import face_alignment

        weights = find_s3fd_weights()
        self.threshold = threshold
        self.detector = S3FDDetector(weights=weights, device=device, max_side=1 << 16, threshold=threshold)
        self.cache_id = (f"s3fd sha256={sha256_file(weights)} threshold={threshold} "
                         f"face_alignment={face_alignment.__version__}")

    def detect(self, images: list[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        return self.detector.detect(images)


def build_face_track(reader: VideoReader, duration: float, config: InferenceConfig, detector: FaceDetector | None,
                     clock: StageClock | None = None, progress: Any = None) -> FaceTrack:
    """Find the face to lip-sync in every source frame shown before `duration` seconds.

    Args:
        reader: the face video (or photo).
        duration: the audio's duration in seconds.
        config: detection, tracking, selection, smoothing and missing-face options (`config.box` is handled
            by the caller: one fixed box needs no pass).
        detector: used unless `config.boxes` is given (then it may be None) or the cache has the tracks; a
            detector with a `cache_id` string attribute has its tracks cached (others are never cached).
        clock: receives "detect", "track", "detect_decode" and "detect_cache" seconds.
        progress: a tqdm class for a progress bar, or None.

    Raises:
        LipSyncError: `fail` policy with frames without a face (naming them), or a bad --face-index /
            --select-box.
    """
    width, height = reader.info.width, reader.info.height
    if config.boxes is not None:
        given = np.array([row if row is not None else (np.nan,) * 4 for row in config.boxes], dtype=np.float64)
        boxes = clip_to_frame(given.reshape(-1, 4), width, height)
        filled: list[tuple[int, int]] = []
        if config.on_missing_face == "interpolate":
            boxes, filled = fill_gaps(boxes, config.max_gap)
        if config.on_missing_face == "fail":
            check_no_gaps(boxes, str(reader.path))
        detected = np.zeros(len(boxes), dtype=bool)
        coverage = _report("boxes", config, boxes, detected, filled, (), (), frozenset(), 0)
        return FaceTrack(boxes, coverage)

    if detector is None:
        raise ValueError("build_face_track needs a detector unless config.boxes is given")
    settings = TrackerSettings(detect_every=config.detect_every, detect_max_side=config.detect_max_side,
                               cut_threshold=config.cut_threshold)
    tracks, source = _tracks(reader, duration, settings, config.detection_cache, detector, clock, progress)
    target = select_target(tracks, face_index=config.face_index, select_box=config.select_box)
    boxes, filled = target.boxes, []
    if config.on_missing_face == "interpolate":
        boxes, filled = fill_gaps(boxes, config.max_gap, tracks.cuts)
    boxes = smooth_boxes(boxes, tracks.times, config.smooth, tracks.cuts)
    boxes = pad_and_clip(boxes, config.pads, width, height)
    if config.on_missing_face == "fail":
        check_no_gaps(boxes, str(reader.path))
    coverage = _report(source, config, boxes, target.detected, filled, tracks.cuts, _summaries(tracks),
                       frozenset(target.track_ids), 0 if source == "cache" else tracks.detector_frames)
    logger.info("%s", coverage.summary())
    return FaceTrack(boxes, coverage)


def _tracks(reader: VideoReader, duration: float, settings: TrackerSettings, use_cache: bool,
            detector: FaceDetector, clock: StageClock | None, progress: Any) -> tuple[FaceTracks, str]:
    """Every face of the frames shown, from the cache or the detector; and which of the two it was."""
    detector_id = getattr(detector, "cache_id", None)
    cache = key = None
    if use_cache and isinstance(detector_id, str) and reader.path.is_file():
        start = perf_counter()
        cache, key = DetectionCache(), cache_key(reader.path, detector_id, settings)
        cached = cache.load(key, duration)
        _add(clock, "detect_cache", perf_counter() - start)
        if cached is not None:
            logger.info("face tracks of %s reused from the detection cache", reader.path)
            return cached, "cache"
    tracks = _detect_and_track(reader, duration, settings, detector, clock, progress)
    if cache is not None and key is not None:
        start = perf_counter()
        cache.store(key, tracks)
        _add(clock, "detect_cache", perf_counter() - start)
    return tracks, "detector"


def _detect_and_track(reader: VideoReader, duration: float, settings: TrackerSettings, detector: FaceDetector,
                      clock: StageClock | None, progress: Any) -> FaceTracks:
    tracker = FaceTracker(detector, settings, reader.info.width, reader.info.height)
    bar = progress(total=_expected_frames(reader, duration), unit="frame", desc="detect") if progress else None
    start = perf_counter()
    pushed = 0
    try:
        for frame in source_frames(reader, duration):
            tracker.push(frame.index, frame.time, frame.image)
            pushed += 1
            if bar is not None:
                bar.update(1)
        # `num_frames` is set once the reader has decoded to the end: then every frame was seen.
        tracks = tracker.finish(math.inf if reader.num_frames == pushed else duration)
    finally:
        if bar is not None:
            bar.close()
    _add(clock, "detect", tracker.detect_seconds)
    _add(clock, "track", tracker.track_seconds)
    _add(clock, "detect_decode", perf_counter() - start - tracker.detect_seconds - tracker.track_seconds)
    return tracks


def _expected_frames(reader: VideoReader, duration: float) -> int | None:
    """Frames pass 1 will see, for the progress bar: those before the audio ends, at most the header's count."""
    counts = [reader.info.num_frames_hint] if reader.info.num_frames_hint > 0 else []
    if math.isfinite(duration):
        counts.append(max(1, math.ceil(duration * float(reader.info.frame_rate))))
    return min(counts) if counts else None


def _add(clock: StageClock | None, stage: str, seconds: float) -> None:
    if clock is not None:
        clock.seconds[stage] = clock.seconds.get(stage, 0.0) + seconds


def _summaries(tracks: FaceTracks) -> tuple[tuple[int, int, int, int], ...]:
    """(track id, first frame, last frame, frames) per track."""
    return tuple((track_id, int(tracks.frames[rows[0]]), int(tracks.frames[rows[-1]]), len(rows))
                 for track_id, rows in tracks.rows_by_track())


def _report(source: str, config: InferenceConfig, boxes: NDArray[np.float64], detected: NDArray[np.bool_],
            filled: list[tuple[int, int]], cuts: tuple[int, ...], tracks: tuple[tuple[int, int, int, int], ...],
            selected: frozenset[int], detector_frames: int) -> CoverageReport:
    present = ~np.isnan(boxes[:, 0])
    return CoverageReport(
        source=source, policy=config.on_missing_face, num_frames=len(boxes), frames_with_face=int(present.sum()),
        frames_detected=int((present & detected).sum()),
        frames_filled=sum(last - first + 1 for first, last in filled), detector_frames=detector_frames,
        gaps=tuple(find_gaps(present)), filled=tuple(filled), cuts=tuple(cuts),
        tracks=tuple(TrackSummary(track_id, first, last, count, track_id in selected)
                     for track_id, first, last, count in tracks))
