"""`Evaluator`: LSE-D / LSE-C (and FID) of a folder of generated videos, with models loaded once.

    evaluator = Evaluator(device="cpu")                       # syncnet_v2 from the cache (lipsync download)
    report = evaluator.evaluate("out/", reference_dir="real/", protocol="lrs2", fid=True, progress=tqdm)
    write_report(report, "out/eval")                          # out/eval.json and out/eval.md

The CLI (`lipsync evaluate`) and the demo's per-frame sync plot (`frame_confidence`) call it.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from lipsync.config import InferenceConfig
from lipsync.errors import LipSyncError
from lipsync.eval.extract import extract_audio
from lipsync.eval.fid import (FID_BATCH_SIZE, FeatureBatcher, FIDFeatures, FIDStats, FIDStatsCache, frechet_distance,
                              stats_key)
from lipsync.eval.lse import (CROP_SCALE, PROTOCOLS, ClipFrames, box_geometry, crop_geometry, fill_track,
                              iter_face_crops, score_frames)
from lipsync.eval.report import EvaluationReport, VideoScore, WeightsInfo
from lipsync.face.detect import FaceDetector
from lipsync.io.video import VIDEO_EXTENSIONS
from lipsync.utils.device import resolve_device
from lipsync.weights import load_into, load_state_dict, resolve_checkpoint, sha256_file
from syncnet import SyncNetScorer, SyncNetV2

__all__ = ["EvalConfig", "Evaluator", "VideoPair", "cached_sync_scorer", "find_videos", "match_videos"]

logger = logging.getLogger(__name__)

# The containers `lipsync preprocess` reads (lipsync.train.preprocess.VIDEO_EXTENSIONS; not imported from there
# to keep the training stack out of `lipsync evaluate`'s start-up).
T = TypeVar("T")
# Bumped whenever extraction or cropping changes, so that cached FID statistics are not reused across versions.
EXTRACTION_VERSION = 1


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an evaluation that are not per call.

    Attributes:
        vshift: largest audio offset tried, in frames (demo_syncnet.py / calculate_scores_LRS.py default 15).
        batch_size: SyncNet windows per forward pass (speed and memory only).
        fid_frame_step: FID uses every n-th 25 fps face crop of each video (1: all of them).
        fid_batch_size: Inception images per forward pass.
        face: face tracking for the tracked protocol (detector keyframes and tracking as `lipsync infer`'s pass 1;
            unpadded and unsmoothed boxes, since the protocol smooths and enlarges them itself). Frames left
            without a face are interpolated between their neighbours, or hold the first / last box.
    """

    vshift: int = 15
    batch_size: int = 20
    fid_frame_step: int = 1
    fid_batch_size: int = FID_BATCH_SIZE
    face: InferenceConfig = field(default_factory=lambda: InferenceConfig(pads=(0, 0, 0, 0), smooth="off",
                                                                          on_missing_face="interpolate"))

    def __post_init__(self) -> None:
        for name in ("vshift", "batch_size", "fid_frame_step", "fid_batch_size"):
            if getattr(self, name) < 1:
                raise LipSyncError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class VideoPair:
    """A generated video and the reference video it is compared with (FID)."""

    name: str
    path: Path
    reference_name: str | None = None
    reference: Path | None = None


def find_videos(folder: str | Path, what: str = "generated") -> dict[str, Path]:
    """Videos under `folder` by their relative POSIX path, sorted; a single file is its own set.

    Raises:
        LipSyncError: the folder does not exist or holds no video.
    """
    folder = Path(folder)
    if folder.is_file():
        return {folder.name: folder}
    if not folder.is_dir():
        raise LipSyncError(f"{what} folder not found: {folder}")
    videos = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*"))
              if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS}
    if not videos:
        raise LipSyncError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {what} folder {folder}")
    return videos


def match_videos(generated: dict[str, Path], reference_dir: str | Path | None) -> list[VideoPair]:
    """Pair every generated video with a reference video: the same relative path, else the same relative path
    with another extension, else the only reference video with the same file stem anywhere.

    Raises:
        LipSyncError: generated videos without a reference, or with several candidates (all named).
    """
    if reference_dir is None:
        return [VideoPair(name, path) for name, path in generated.items()]
    references = find_videos(reference_dir, "reference")
    by_relative_stem: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}
    for name in references:
        by_relative_stem.setdefault(str(Path(name).with_suffix("")), []).append(name)
        by_stem.setdefault(Path(name).stem, []).append(name)
    pairs, missing, ambiguous = [], [], []
    for name, path in generated.items():
        candidates = ([name] if name in references else by_relative_stem.get(str(Path(name).with_suffix("")))
                      or by_stem.get(Path(name).stem, []))
        if len(candidates) == 1:
            pairs.append(VideoPair(name, path, candidates[0], references[candidates[0]]))
        elif candidates:
            ambiguous.append(f"{name} ({' or '.join(candidates)})")
        else:
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LipSyncError(f"no reference video in {reference_dir} for {len(missing)} generated video(s): {shown} "
                           f"(matched by relative path, then by file name without extension)")
    if ambiguous:
        raise LipSyncError(f"several reference videos match {', '.join(ambiguous[:3])}; keep one per name")
    return pairs


class Evaluator:
    """Loads SyncNet (and, when asked, the FID Inception) once and evaluates folders or single videos.

    Args:
        syncnet_weights: syncnet_python's ``syncnet_v2.model`` (a file or a manifest name; default: the cached
            ``syncnet_v2``).
        fid_weights: the FID Inception weights (file or manifest name; default: the cached ``fid_inception``),
            loaded now if given, else on the first evaluation with FID.
        device: "auto", "cpu", "cuda", ...
        detector: face detector for the tracked protocol (default: S3FD, built on first use).
        config: see `EvalConfig`.

    Raises:
        LipSyncError: weights not downloaded (naming the `lipsync download` command), or not fitting.
    """

    def __init__(self, syncnet_weights: str | Path | None = None, fid_weights: str | Path | None = None, *,
                 device: str = "cpu", detector: FaceDetector | None = None,
                 config: EvalConfig | None = None) -> None:
        self.device = resolve_device(device)
        self.config = config or EvalConfig()
        path = resolve_checkpoint(syncnet_weights or "syncnet_v2")
        model = SyncNetV2()
        load_into(model, load_state_dict(path), str(path))
        self.scorer = SyncNetScorer(model.to(self.device).eval())
        self.weights = [WeightsInfo("syncnet_v2", str(path), sha256_file(path))]
        self._detector = detector
        self._fid: FIDFeatures | None = None
        self._fid_weights = fid_weights
        if fid_weights is not None:
            self._fid_model()

    # -- models -------------------------------------------------------------------------------------------

    def _fid_model(self) -> FIDFeatures:
        if self._fid is None:
            path = resolve_checkpoint(self._fid_weights or "fid_inception")
            self._fid = FIDFeatures.from_file(path, self.device)
            self.weights.append(WeightsInfo("fid_inception", str(path), sha256_file(path)))
        return self._fid

    def _face_detector(self) -> FaceDetector:
        if self._detector is None:
            from lipsync.face.locate import IdentifiedDetector

            try:
                self._detector = IdentifiedDetector(self.device, self.config.face.detect_threshold)
            except LipSyncError:
                raise LipSyncError("the tracked protocol finds faces with S3FD, which is not downloaded; run: "
                                   "lipsync download s3fd (or use --protocol lrs2)") from None
        return self._detector

    # -- one video ----------------------------------------------------------------------------------------

    def _geometry(self, path: Path, name: str) -> tuple[NDArray[np.float64], int]:
        """Crop centre and size per decoded frame from our face track, and the frames without a detected face."""
        from lipsync.face.locate import build_face_track
        from lipsync.io.video import VideoReader

        track = build_face_track(VideoReader(path), math.inf, self.config.face, self._face_detector())
        missing = int(np.isnan(track.boxes[:, 0]).sum())
        return crop_geometry(fill_track(track.boxes, name)), missing

    def score_video(self, path: str | Path, protocol: str = "lrs2", *, name: str | None = None,
                    box: Sequence[float] | None = None, face_step: int = 0,
                    on_face: Callable[[NDArray[np.uint8]], None] | None = None
                    ) -> tuple[VideoScore, NDArray[np.float32], NDArray[np.uint8]]:
        """LSE-D / LSE-C of one video.

        Args:
            path: the video (with its speech track).
            protocol: "lrs2" or "tracked".
            name: how the report names it (default: the file name).
            box: tracked protocol: one fixed [x1, y1, x2, y2] face box instead of tracking the face.
            face_step: also return every n-th face crop (before the JPEG round trip) for FID; 0: none.
            on_face: receives those crops one by one instead (then none are returned): bounded memory.

        Returns:
            (score, fconfm: (v,) float32 framewise confidence, faces: (n, 224, 224, 3) uint8 BGR).
        """
        path = Path(path)
        name = name or path.name
        if protocol not in PROTOCOLS:
            raise LipSyncError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        geometry, missing = None, 0
        if protocol == "tracked":
            if box is not None:
                geometry = box_geometry(box)
            else:
                geometry, missing = self._geometry(path, name)
        # Frames stream through SyncNet block by block: memory does not grow with the video's length.
        frames = ClipFrames(path, protocol, geometry, face_step=face_step, on_face=on_face)
        audio = extract_audio(path)
        clip_score = score_frames(self.scorer, frames, audio, name, self.config.vshift, self.config.batch_size)
        score = VideoScore(name=name, reference=None, offset=clip_score.offset, lse_d=clip_score.lse_d,
                           lse_c=clip_score.lse_c, frames=clip_score.num_frames, windows=clip_score.num_windows,
                           source_frames=frames.source_frames, source_fps=round(float(frames.info.frame_rate), 6),
                           resampled=frames.info.resampled, audio_seconds=round(clip_score.audio_seconds, 6),
                           face_frames_filled=missing)
        return score, clip_score.fconfm, frames.faces

    def frame_confidence(self, video: str | Path, box: Sequence[float] | None = None) -> NDArray[np.float32]:
        """SyncNet's framewise confidence (``fconfm``) over a video: the demo's per-frame sync plot.

        Args:
            video: e.g. a lip-synced output.
            box: the face box the caller knows (one for every frame): the tracked crop around it. Without one
                the face is tracked with the detector, or, where there is no detector, the whole frame is
                scored (lrs2).

        Returns:
            (v,) float32, one value per 5-frame window start at 25 fps.
        """
        protocol = "tracked"
        if box is None and self._detector is None:
            try:
                self._face_detector()
            except LipSyncError as error:
                logger.info("sync confidence over the whole frame: %s", error)
                protocol = "lrs2"
        return self.score_video(video, protocol, box=box)[1]

    # -- a folder -----------------------------------------------------------------------------------------

    def evaluate(self, generated_dir: str | Path, reference_dir: str | Path | None = None, *,
                 protocol: str = "lrs2", fid: bool = False, progress: Callable[..., Any] | None = None
                 ) -> EvaluationReport:
        """Score every video under `generated_dir`; with `fid`, also the FID of its face crops against the
        matching reference videos' (statistics of the reference set cached).

        Args:
            generated_dir: a folder of videos (searched recursively) or one video.
            reference_dir: the real videos, matched by relative path or file stem (needed for FID).
            protocol: "lrs2" (whole frame) or "tracked" (face-track crop).
            fid: compute FID.
            progress: a tqdm class for progress bars, or None.

        Raises:
            LipSyncError: missing folders or pairs, unreadable videos, videos without speech or too short,
                missing weights, no face (tracked).
        """
        if protocol not in PROTOCOLS:
            raise LipSyncError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        if fid and reference_dir is None:
            raise LipSyncError("FID compares with real videos: give --reference DIR")
        start = time.perf_counter()
        pairs = match_videos(find_videos(generated_dir), reference_dir)
        fid_model = self._fid_model() if fid else None       # fail on missing weights before any work
        if protocol == "tracked":
            self._face_detector()
        step = self.config.fid_frame_step if fid else 0
        scores: list[VideoScore] = []
        generated_features: list[NDArray[np.float64]] = []
        for pair in _with_progress(pairs, progress, f"evaluate ({protocol})", [pair.name for pair in pairs]):
            # One batcher per video: the crops are batched exactly as one video's stacked crops would be.
            batcher = FeatureBatcher(fid_model, self.config.fid_batch_size) if fid_model is not None else None
            score, _, _ = self.score_video(pair.path, protocol, name=pair.name, face_step=step,
                                           on_face=batcher.add if batcher is not None else None)
            scores.append(replace(score, reference=pair.reference_name))
            if batcher is not None:
                generated_features.append(batcher.result())
        fid_value = fid_images = cached = None
        if fid_model is not None:
            generated_stats = FIDStats.from_features(np.concatenate(generated_features))
            reference_stats, cached = self._reference_stats(pairs, protocol, fid_model, progress)
            fid_value = frechet_distance(generated_stats, reference_stats)
            fid_images = (generated_stats.num_images, reference_stats.num_images)
        return EvaluationReport(
            protocol=protocol, generated_dir=str(generated_dir),
            reference_dir=str(reference_dir) if reference_dir is not None else None, videos=tuple(scores),
            fid=fid_value, fid_images=fid_images, fid_stats_cached=cached, settings=self._settings(protocol, fid),
            weights=tuple(self.weights), seconds=round(time.perf_counter() - start, 3))

    def _reference_stats(self, pairs: list[VideoPair], protocol: str, fid_model: FIDFeatures,
                         progress: Callable[..., Any] | None) -> tuple[FIDStats, bool]:
        """The reference set's FID statistics, from the cache or computed (and cached)."""
        references = sorted({(pair.reference_name, pair.reference) for pair in pairs})
        settings = self._fid_settings(protocol)
        detector_id = getattr(self._detector, "cache_id", None) if protocol == "tracked" else ""
        cache = FIDStatsCache() if isinstance(detector_id, str) else None
        key = stats_key(references, settings) if cache is not None else None
        if cache is not None and (stats := cache.load(key)) is not None:
            logger.info("reference FID statistics from %s", cache.path(key))
            return stats, True
        features = []
        for name, path in _with_progress(references, progress, "FID reference", [name for name, _ in references]):
            geometry = self._geometry(path, name)[0] if protocol == "tracked" else None
            batcher = FeatureBatcher(fid_model, self.config.fid_batch_size)
            for face in iter_face_crops(path, protocol, geometry, self.config.fid_frame_step):
                batcher.add(face)
            features.append(batcher.result())
        stats = FIDStats.from_features(np.concatenate(features))
        if cache is not None:
            cache.store(key, stats, settings)
        else:
            logger.info("reference FID statistics not cached: the face detector has no cache_id")
        return stats, False

    def _fid_settings(self, protocol: str) -> dict[str, Any]:
        """Everything that changes the reference features (the FID statistics cache key)."""
        settings: dict[str, Any] = {"extraction": EXTRACTION_VERSION, "protocol": protocol, "crop": 224,
                                    "fid_frame_step": self.config.fid_frame_step,
                                    "fid_inception_sha256": self._fid_model_sha256()}
        if protocol == "tracked":
            settings["face"] = repr(self.config.face)
            settings["detector"] = getattr(self._face_detector(), "cache_id", None)
        return settings

    def _fid_model_sha256(self) -> str:
        return next((weights.sha256 for weights in self.weights if weights.name == "fid_inception"), "")

    def _settings(self, protocol: str, fid: bool) -> dict[str, Any]:
        import av
        import cv2

        settings: dict[str, Any] = {
            "protocol": protocol,
            "crop": ("whole frame, JPEG round trip, cv2.resize to 224x224" if protocol == "lrs2" else
                     f"face track, median 13, square crop scale {CROP_SCALE}, pad 110, 224x224, JPEG round trip"),
            "fps": "25 (other rates resampled: nearest frame by timestamp, as ffmpeg's fps filter)",
            "jpeg": "mjpeg yuvj420p, 200 kb/s rate control, q 2-31 (ffmpeg CLI defaults), cv2.imdecode",
            "audio": "mono 16 kHz s16 (libswresample, async=1:min_hard_comp=0.1:first_pts=0)",
            "vshift": self.config.vshift,
            "batch_size": self.config.batch_size,
            "device": str(self.device),
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "opencv": cv2.__version__,
            "torch": torch.__version__,
        }
        if protocol == "tracked":
            face = self.config.face
            settings["face_tracking"] = (f"detector every {face.detect_every} frames at {face.detect_max_side} px, "
                                         f"threshold {face.detect_threshold}, gaps interpolated, ends held")
            settings["detector"] = getattr(self._detector, "cache_id", type(self._detector).__name__)
        if fid:
            settings["fid"] = (f"pytorch-fid Inception pool3 (2048-d) on the protocol's face crops, every "
                               f"{self.config.fid_frame_step} frame(s)")
        return settings


def _with_progress(items: Sequence[T], progress: Callable[..., Any] | None, desc: str, names: Sequence[str]
                   ) -> Iterator[T]:
    """Yield `items`, advancing a progress bar (one step per video, the current one's name shown) if asked."""
    bar = progress(total=len(items), unit="video", desc=desc) if progress else None
    try:
        for item, name in zip(items, names):
            if bar is not None:
                bar.set_postfix_str(name)
            yield item
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def cached_sync_scorer(device: str = "auto") -> Callable[[Path, Sequence[float] | None], NDArray[np.float32]] | None:
    """The demo's per-frame sync confidence when ``syncnet_v2`` is in the cache, else None."""
    from lipsync.weights import manifest_entry

    if not manifest_entry("syncnet_v2").path.is_file():
        return None
    return Evaluator(device=device).frame_confidence
