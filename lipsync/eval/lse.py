"""LSE-D / LSE-C of one video under the two published protocols.

* ``lrs2``: Wav2Lip's LRS2 protocol (``evaluation/scores_LSE/calculate_scores_LRS.py`` calling
  ``SyncNetInstance_calc_scores.py``): every JPEG round-tripped frame, whole, resized to 224x224 with
  ``cv2.resize`` (bilinear). LRS2 clips are already face crops.
* ``tracked``: the real-video protocol (Wav2Lip's ``calculate_scores_real_videos.sh``: syncnet_python's
  ``run_pipeline.py``, then the same scoring): the face is tracked, cropped square around the track and
  resized to 224, and the crop video is scored. Our face tracking (`build_face_track`, S3FD keyframes plus
  tracking) replaces its S3FD-every-frame + IoU tracker; the crop follows ``run_pipeline.py crop_video``
  (joonson/syncnet_python @ 6efbb1c): box centre and half-size ``max(w, h) / 2`` median-filtered over 13 frames
  (``scipy.signal.medfilt``), the frame padded by ``int(s * (1 + 2 * 0.4))`` pixels of grey 110, rows
  ``y - s .. y + 1.8 s`` and columns ``x - 1.4 s .. x + 1.4 s`` (a square reaching further below the centre,
  to include the chin), resized to 224. Not reproduced: its intermediate lossy encodes (the 25 fps MPEG-4
  ``video.avi``, ``-qscale:v 2`` JPEGs and the XVID crop video), its 100-frame minimum track and 100-pixel
  minimum face: the whole video is one track, its gaps interpolated and its ends held.

Both then go through :class:`~syncnet.SyncNetScorer` (``SyncNetInstance.evaluate`` step for step), on the
frames after the reference's JPEG round trip (:mod:`lipsync.eval.extract`).

Axis legend: t frames (25 fps), h height, w width, c channels.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from lipsync.errors import LipSyncError
from lipsync.eval.extract import (JpegRoundTrip, SyncNetFrame, VideoStreamInfo, extract_audio, probe_video,
                                  syncnet_frames)
from lipsync.face.gaps import fill_gaps
from lipsync.io.video import to_bgr
from syncnet import SyncNetScorer
from syncnet.fast_encoders import FRAME_SIZE
from syncnet.median_filter import median_filter
from syncnet.mfcc import MFCC_SAMPLE_RATE

__all__ = ["PROTOCOLS", "ClipFrames", "ClipScore", "PreparedClip", "box_geometry", "crop_geometry", "face_crops",
           "fill_track", "iter_face_crops", "lrs2_crop", "prepare_clip", "score_clip", "score_frames",
           "tracked_crop"]

logger = logging.getLogger(__name__)

PROTOCOLS = ("lrs2", "tracked")
CROP_SCALE = 0.40          # run_pipeline.py --crop_scale default
CROP_MEDIAN_FRAMES = 13    # run_pipeline.py crop_video: signal.medfilt(..., kernel_size=13)
CROP_PAD_VALUE = 110       # run_pipeline.py crop_video: np.pad(..., constant_values=(110, 110))


def lrs2_crop(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The whole frame at 224x224, as ``SyncNetInstance_calc_scores.py`` resizes it (cv2's default bilinear)."""
    if image.shape[:2] == (FRAME_SIZE, FRAME_SIZE):
        return image
    return cv2.resize(image, (FRAME_SIZE, FRAME_SIZE))


def crop_geometry(boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    """The crop centre and half-size per frame, smoothed as ``run_pipeline.py crop_video`` smooths them.

    Args:
        boxes: (t, 4) [x1, y1, x2, y2] face boxes, no NaN.

    Returns:
        (t, 3) float64 [centre x, centre y, half-size s]; each column median-filtered over 13 frames with zero
        padding at both ends (``scipy.signal.medfilt``, as the reference: its first and last 6 frames shrink
        towards the smallest nearby values).
    """
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    half_size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    return np.stack([median_filter(column, CROP_MEDIAN_FRAMES)
                     for column in (centre_x, centre_y, half_size)], axis=1)


def box_geometry(box: Sequence[float]) -> NDArray[np.float64]:
    """`crop_geometry` of one fixed [x1, y1, x2, y2] box (constant, so the median filter leaves it as is): (1, 3)."""
    x1, y1, x2, y2 = (float(value) for value in box)
    return np.array([[(x1 + x2) / 2, (y1 + y2) / 2, max(y2 - y1, x2 - x1) / 2]])


def tracked_crop(image: NDArray[np.uint8], centre_x: float, centre_y: float, half_size: float) -> NDArray[np.uint8]:
    """The real-video protocol's face crop at 224x224.

    Same pixels as padding the frame by ``int(s * 1.8)`` grey-110 pixels and slicing
    ``[int(y' - s):int(y' + 1.8 s), int(x' - 1.4 s):int(x' + 1.4 s)]`` in padded coordinates (x' = x + pad), but
    only the window is copied. A window running past the padded frame is cut there, as numpy slicing cuts it.
    """
    height, width = image.shape[:2]
    pad = int(half_size * (1 + 2 * CROP_SCALE))
    y, x = centre_y + pad, centre_x + pad          # padded coordinates, as the reference computes them
    top, bottom = int(y - half_size), int(y + half_size * (1 + 2 * CROP_SCALE))
    left, right = int(x - half_size * (1 + CROP_SCALE)), int(x + half_size * (1 + CROP_SCALE))
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height + 2 * pad), min(right, width + 2 * pad)
    if bottom <= top or right <= left:
        raise LipSyncError(f"face crop is empty (centre {centre_x:.0f},{centre_y:.0f}, half-size {half_size:.1f})")
    top, bottom, left, right = top - pad, bottom - pad, left - pad, right - pad    # back to frame coordinates
    inner = image[max(top, 0):min(bottom, height), max(left, 0):min(right, width)]
    if inner.size == 0:
        window = np.full((bottom - top, right - left, 3), CROP_PAD_VALUE, np.uint8)
    else:
        window = cv2.copyMakeBorder(inner, max(0, -top), max(0, bottom - height), max(0, -left),
                                    max(0, right - width), cv2.BORDER_CONSTANT, value=(CROP_PAD_VALUE,) * 3)
    return cv2.resize(window, (FRAME_SIZE, FRAME_SIZE))


def fill_track(boxes: NDArray[np.float64], what: str) -> NDArray[np.float64]:
    """One box per frame: gaps inside the video interpolated, leading and trailing gaps holding the nearest box.

    Raises:
        LipSyncError: no frame has a face.
    """
    present = ~np.isnan(boxes[:, 0])
    if not present.any():
        raise LipSyncError(f"no face found in {what}; the tracked protocol needs one (try --protocol lrs2)")
    filled, _ = fill_gaps(boxes, max_gap=len(boxes))
    found = np.flatnonzero(~np.isnan(filled[:, 0]))
    filled[:found[0]] = filled[found[0]]
    filled[found[-1] + 1:] = filled[found[-1]]
    missing = int((~present).sum())
    if missing:
        logger.info("%s: %d of %d frames without a detected face take an interpolated or held box",
                    what, missing, len(boxes))
    return filled


@dataclass
class PreparedClip:
    """What SyncNet scores for one video, and the face crops FID may use.

    Attributes:
        frames: (t, 224, 224, 3) uint8 BGR crops after the JPEG round trip, 25 fps.
        audio: (num_samples,) int16 mono 16 kHz.
        info: the video's frame rate and whether it was resampled.
        faces: (n, 224, 224, 3) uint8 BGR crops before the JPEG round trip, every `face_step`-th frame (empty
            when not asked for).
        source_frames: decoded frames that were shown (t counts duplicates from resampling).
    """

    frames: NDArray[np.uint8]
    audio: NDArray[np.int16]
    info: VideoStreamInfo
    faces: NDArray[np.uint8]
    source_frames: int


def _face_crop(item: SyncNetFrame, protocol: str, geometry: NDArray[np.float64] | None, path: Path
               ) -> NDArray[np.uint8]:
    """The 224x224 crop of one frame before any JPEG round trip."""
    if protocol == "lrs2":
        return lrs2_crop(to_bgr(item.frame))
    if len(geometry) == 1:
        row = geometry[0]
    elif item.source_index < len(geometry):
        row = geometry[item.source_index]
    else:
        raise LipSyncError(f"{path}: frame {item.source_index} has no face box (the track has {len(geometry)} frames)")
    return tracked_crop(to_bgr(item.frame), *row)


def _check(protocol: str, geometry: NDArray[np.float64] | None) -> None:
    if protocol not in PROTOCOLS:
        raise LipSyncError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if protocol == "tracked" and geometry is None:
        raise ValueError("the tracked protocol needs the crop geometry of every frame")


class ClipFrames:
    """A video's SyncNet frames (25 fps 224x224 crops, JPEG round-tripped) as blocks, decoded as they are used.

    Iterating decodes the video once; afterwards `faces` and `source_frames` describe what was seen. Only one
    block of frames is held at a time, so a long video is scored in bounded memory.

    Args: as `prepare_clip`; `block_size` frames per block; `on_face` receives each kept face crop (every
        `face_step`-th, before the round trip) instead of `faces` collecting them.
    """

    def __init__(self, path: str | Path, protocol: str, geometry: NDArray[np.float64] | None = None,
                 face_step: int = 0, block_size: int = 32,
                 on_face: Callable[[NDArray[np.uint8]], None] | None = None) -> None:
        self.path = Path(path)
        self.on_face = on_face
        _check(protocol, geometry)
        self.protocol = protocol
        self.geometry = geometry
        self.face_step = face_step
        self.block_size = block_size
        self.info = probe_video(self.path)
        self.faces = _stack([])
        self.source_frames = 0

    def __iter__(self) -> Iterator[NDArray[np.uint8]]:
        round_trip = JpegRoundTrip(self.info.sample_aspect_ratio)
        block: list[NDArray[np.uint8]] = []
        faces: list[NDArray[np.uint8]] = []
        shown: set[int] = set()
        count = 0
        for item in syncnet_frames(self.path, self.info):
            shown.add(item.source_index)
            keep = self.face_step > 0 and item.index % self.face_step == 0
            if self.protocol == "lrs2":
                # The reference encodes and decodes the whole frame, then resizes the decoded JPEG.
                block.append(lrs2_crop(round_trip(item.frame)))
                crop = _face_crop(item, self.protocol, self.geometry, self.path) if keep else None
            else:
                # The reference writes the crop to a video and extracts that to JPEG: the round trip is on the crop.
                crop = _face_crop(item, self.protocol, self.geometry, self.path)
                block.append(round_trip(crop))
            if keep:
                if self.on_face is not None:
                    self.on_face(crop)
                else:
                    faces.append(crop)
            count += 1
            if len(block) == self.block_size:
                yield np.stack(block)
                block = []
        if block:
            yield np.stack(block)
        self.faces, self.source_frames = _stack(faces), len(shown)
        if count == 0:
            raise LipSyncError(f"no decodable frame in {self.path}")


def prepare_clip(path: str | Path, protocol: str, geometry: NDArray[np.float64] | None = None,
                 face_step: int = 0) -> PreparedClip:
    """Decode a whole video into SyncNet's 25 fps 224x224 crops (JPEG round-tripped) and its 16 kHz int16 audio.

    Holds every frame; `Evaluator.score_video` streams `ClipFrames` instead.

    Args:
        path: the video.
        protocol: "lrs2" (whole frame) or "tracked" (needs `geometry`).
        geometry: `crop_geometry` rows for "tracked": (n, 3), one per decoded (source) frame (a resampled frame
            uses the row of the source frame it shows), or (1, 3) for one fixed crop.
        face_step: also keep every `face_step`-th crop before the round trip (for FID); 0 keeps none.

    Raises:
        LipSyncError: unreadable video, no audio track, or a tracked crop without geometry for a frame.
    """
    frames = ClipFrames(path, protocol, geometry, face_step)
    stacked = np.concatenate(list(frames))
    return PreparedClip(frames=stacked, audio=extract_audio(path), info=frames.info, faces=frames.faces,
                        source_frames=frames.source_frames)


def face_crops(path: str | Path, protocol: str, geometry: NDArray[np.float64] | None = None,
               step: int = 1) -> NDArray[np.uint8]:
    """Every `step`-th 25 fps face crop of a video, before any JPEG round trip (FID's images), stacked.

    Args: as `prepare_clip` (`step` as its `face_step`, at least 1).

    Returns:
        (n, 224, 224, 3) uint8 BGR.
    """
    return _stack(list(iter_face_crops(path, protocol, geometry, step)))


def iter_face_crops(path: str | Path, protocol: str, geometry: NDArray[np.float64] | None = None,
                    step: int = 1) -> Iterator[NDArray[np.uint8]]:
    """`face_crops` one at a time, decoded as they are used."""
    path = Path(path)
    _check(protocol, geometry)
    info = probe_video(path)
    for item in syncnet_frames(path, info):
        if item.index % max(1, step) == 0:
            yield _face_crop(item, protocol, geometry, path)


def _stack(crops: list[NDArray[np.uint8]]) -> NDArray[np.uint8]:
    return np.stack(crops) if crops else np.zeros((0, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)


@dataclass(frozen=True)
class ClipScore:
    """SyncNet's verdict on one clip (``SyncNetInstance.evaluate``'s numbers).

    Attributes:
        offset: audio-visual offset in frames (positive: the audio leads).
        lse_d: LSE-D, the mean distance at the best offset (lower is better).
        lse_c: LSE-C, the median over offsets minus LSE-D (higher is better).
        fconfm: (v,) float32 framewise confidence at the best offset, median-filtered over 9 windows.
        num_frames: 25 fps frames scored.
        num_windows: 5-frame windows compared (the reference's min_length - 5).
        audio_seconds: length of the extracted audio.
    """

    offset: int
    lse_d: float
    lse_c: float
    fconfm: NDArray[np.float32]
    num_frames: int
    num_windows: int
    audio_seconds: float


def score_clip(scorer: SyncNetScorer, clip: PreparedClip, what: str, vshift: int = 15,
               batch_size: int = 20) -> ClipScore:
    """Score a prepared clip; see `score_frames`."""
    return score_frames(scorer, [clip.frames], clip.audio, what, vshift, batch_size)


def score_frames(scorer: SyncNetScorer, blocks: Iterable[NDArray[np.uint8]], audio: NDArray[np.int16], what: str,
                 vshift: int = 15, batch_size: int = 20) -> ClipScore:
    """Score a clip whose frames come in blocks (see `syncnet.evaluate_clip` for the statistics).

    Args:
        scorer: the loaded SyncNet.
        blocks: (n, 224, 224, 3) uint8 BGR 25 fps crops in order (`ClipFrames`, or one whole array).
        audio: (num_samples,) int16 mono 16 kHz.
        what: the video's name, for messages.
        vshift: largest offset tried, in frames (the reference's default 15).
        batch_size: windows per forward pass (speed and memory only).

    Raises:
        LipSyncError: a clip shorter than 6 frames (or 0.24 s of audio).
    """
    try:
        result: dict[str, Any] = scorer.score_stream(blocks, audio, vshift=vshift, batch_size=batch_size)
    except ValueError as error:
        raise LipSyncError(f"cannot score {what}: {error}") from None
    return ClipScore(offset=int(result["offset"]), lse_d=float(result["min_dist"]),
                     lse_c=float(result["confidence"]), fconfm=result["fconfm"], num_frames=int(result["num_frames"]),
                     num_windows=int(result["dists"].shape[0]),
                     audio_seconds=len(audio) / MFCC_SAMPLE_RATE)
