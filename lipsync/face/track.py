"""Every face of a video as tracks, from detections on a few keyframes (streaming, bounded memory).

Axis legend: n frames, r rows (one per face per frame), k detections in one frame, t tracks.

1. Each decoded frame is shrunk once to the detector's size (longer side `detect_max_side`) and to grey.
2. Keyframes are frame 0, every `detect_every`-th frame, both sides of a scene cut and the last frame. They
   are detected in batches of `batch_size`; the frames between keyframes wait in a queue that holds only
   their shrunk copies (at most `batch_size * detect_every` of them).
3. Between two keyframes A and B every face of A is followed by template matching: a grey template of about
   40 pixels cut from A, searched around the face's last position with normalised cross-correlation,
   whose peak is the tracking confidence. When the faces of B are those of A (one to one, by IoU or by
   position and size) and the confidence stayed high, the boxes in between are interpolated from A to B
   plus the tracked deviation from that straight line.
4. Otherwise (a face appeared or vanished, or the matching lost confidence) the frames in between are
   detected too, frame by frame, so that faces start and end on their exact frame.

Tracks never cross a scene cut. A face missed by the detector for up to `max_lost_seconds` continues its
track when it is found again near where it was lost (the frames between stay without a box: the
missing-face policy decides about them).
"""
from __future__ import annotations

import logging
import math
from time import perf_counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from lipsync.face.cuts import SceneCutDetector
from lipsync.face.detect import FaceDetector

logger = logging.getLogger(__name__)

TRACKER_VERSION = 1          # part of the detection-cache key: bump when tracking results change
_TEMPLATE_SIDE = 40          # pixels: enough texture for a stable correlation peak, cheap to search
_SEARCH_MARGIN = 0.5         # search this fraction of the face size around its last position
_DRIFT_LIMIT = 0.25          # tracking that misses the next detection by more (in face sizes) is ignored
_MIN_TEMPLATE_STD = 2.0      # grey levels: a flatter template has no correlation peak to follow


@dataclass(frozen=True)
class TrackerSettings:
    """What changes the tracks (and so keys the detection cache).

    The first three come from `InferenceConfig` (the one source of their defaults); the rest are tuning.

    Attributes:
        detect_every: a keyframe every this many frames (k).
        detect_max_side: the detector sees frames shrunk so that their longer side is at most this.
        cut_threshold: see `lipsync.face.cuts.SceneCutDetector`.
        batch_size: keyframes per detector call.
        min_confidence: template-matching correlation (0-1) below which frames are re-detected.
        max_faces: at most this many detections per frame are kept (highest scores first).
        max_lost_seconds: how long a track may go undetected and still continue.
        min_iou: association by overlap: a face continues a track when the boxes overlap at least this.
        max_shift: association by position: otherwise the centres may differ by this fraction of the size...
        max_scale: ...and the sizes by this factor.
    """

    detect_every: int
    detect_max_side: int
    cut_threshold: float
    batch_size: int = 8
    min_confidence: float = 0.6
    max_faces: int = 16
    max_lost_seconds: float = 1.0
    min_iou: float = 0.3
    max_shift: float = 0.5
    max_scale: float = 1.5


@dataclass(frozen=True)
class FaceTracks:
    """All faces of the frames one pass saw, as rows (one per face per frame).

    Attributes:
        times: (n,) float64 seconds of each frame, relative to the first.
        cuts: frame indices that start a new shot (never 0), ascending.
        track_ids: (r,) int64 track of each row; rows are sorted by frame.
        frames: (r,) int64 frame of each row.
        boxes: (r, 4) float64 [x1, y1, x2, y2] pixels of the full frame.
        detected: (r,) bool: the detector found this box (else it was tracked or interpolated).
        detector_frames: frames the detector ran on.
        covered_until: the pass saw every frame earlier than this time (inf: the whole video).
    """

    times: NDArray[np.float64]
    cuts: tuple[int, ...]
    track_ids: NDArray[np.int64]
    frames: NDArray[np.int64]
    boxes: NDArray[np.float64]
    detected: NDArray[np.bool_]
    detector_frames: int
    covered_until: float

    @property
    def num_frames(self) -> int:
        return len(self.times)

    def rows_by_track(self) -> list[tuple[int, NDArray[np.int64]]]:
        """(track id, its row indices in frame order) per track, in track-id order."""
        order = np.lexsort((self.frames, self.track_ids))
        ids, starts = np.unique(self.track_ids[order], return_index=True)
        return [(int(track_id), rows) for track_id, rows in zip(ids, np.split(order, starts[1:]))]

    def truncated(self, duration: float) -> "FaceTracks":
        """The frames earlier than `duration` seconds (what a shorter run would have seen)."""
        count = int(np.searchsorted(self.times, duration, side="left"))
        keep = self.frames < count
        return replace(self, times=self.times[:count], cuts=tuple(cut for cut in self.cuts if cut < count),
                       track_ids=self.track_ids[keep], frames=self.frames[keep], boxes=self.boxes[keep],
                       detected=self.detected[keep], covered_until=min(self.covered_until, duration))


def detector_view_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) of the shrunk frame the detector sees: longer side at most `max_side`, never enlarged."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def box_iou(first: NDArray[np.float64], second: NDArray[np.float64]) -> NDArray[np.float64]:
    """Intersection over union of every pair.

    Args:
        first: (a, 4) [x1, y1, x2, y2] boxes.
        second: (b, 4) boxes.

    Returns:
        (a, b) float64 in [0, 1].
    """
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(first[:, None, 2], second[None, :, 2]) - np.maximum(first[:, None, 0], second[None, :, 0])
    height = np.minimum(first[:, None, 3], second[None, :, 3]) - np.maximum(first[:, None, 1], second[None, :, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    union = area_first[:, None] + area_second[None, :] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def box_distance(first: NDArray[np.float64], second: NDArray[np.float64]) -> tuple[NDArray[np.float64],
                                                                                  NDArray[np.float64]]:
    """Position and size differences of every pair of boxes, relative to the face size.

    Returns:
        shift: (a, b) centre distance divided by the mean side of the two boxes.
        scale: (a, b) size ratio, >= 1 (the larger side over the smaller, by sqrt(area)).
    """
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    centre_first = (first[:, :2] + first[:, 2:]) / 2
    centre_second = (second[:, :2] + second[:, 2:]) / 2
    side_first = np.sqrt(np.clip((first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1]), 1e-6, None))
    side_second = np.sqrt(np.clip((second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1]), 1e-6, None))
    distance = np.linalg.norm(centre_first[:, None] - centre_second[None], axis=-1)
    shift = distance / ((side_first[:, None] + side_second[None, :]) / 2)
    ratio = side_first[:, None] / side_second[None, :]
    return shift, np.maximum(ratio, 1 / ratio)


def associate(previous: NDArray[np.float64], current: NDArray[np.float64], min_iou: float = 0.3,
              max_shift: float = 0.5, max_scale: float = 1.5) -> list[tuple[int, int]]:
    """Match boxes of one frame to boxes of another, one to one.

    Greedy on IoU first (faces rarely overlap, so the greedy order is the optimal one in practice), then,
    for what is left, greedy on centre distance among pairs of similar size: a fast-moving or a briefly
    lost face overlaps little but is still near and as large.

    Args:
        previous: (a, 4) boxes (e.g. where the tracks are expected).
        current: (b, 4) boxes (e.g. this frame's detections).
        min_iou: pairs overlapping at least this much match first.
        max_shift: otherwise, the largest centre distance in mean face sides.
        max_scale: otherwise, the largest size ratio.

    Returns:
        (index in previous, index in current) pairs.
    """
    if len(previous) == 0 or len(current) == 0:
        return []
    overlap = box_iou(previous, current)
    shift, scale = box_distance(previous, current)
    pairs: list[tuple[int, int]] = []
    used_previous: set[int] = set()
    used_current: set[int] = set()
    candidates = [(-overlap[i, j], i, j) for i, j in zip(*np.nonzero(overlap >= min_iou))]
    candidates += [(1.0 + shift[i, j], i, j) for i, j in zip(*np.nonzero((overlap < min_iou) & (shift <= max_shift)
                                                                        & (scale <= max_scale)))]
    for _, i, j in sorted(candidates):
        if i not in used_previous and j not in used_current:
            pairs.append((int(i), int(j)))
            used_previous.add(i)
            used_current.add(j)
    return pairs


@dataclass
class _QueuedFrame:
    index: int
    time: float
    view: NDArray[np.uint8]                 # (h', w', 3) BGR at the detector's size
    gray: NDArray[np.uint8]                 # (h', w')
    keyframe: bool = False
    cut: bool = False
    detections: NDArray[np.float64] | None = None   # (k, 4) full-frame boxes, once detected


@dataclass
class _Track:
    track_id: int
    box: NDArray[np.float64]                # last box, full-frame pixels
    last_time: float
    alive: bool = True                      # found on the last processed frame
    template: NDArray[np.uint8] | None = None
    template_centre: NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))   # view pixels
    template_scale: float = 1.0             # template pixels per view pixel


class FaceTracker:
    """Builds `FaceTracks` from frames pushed one at a time.

    Args:
        detector: any `FaceDetector`; it receives shrunk frames and its boxes are mapped back.
        settings: keyframe spacing, sizes, thresholds.
        width, height: the full frame size.
    """

    def __init__(self, detector: FaceDetector, settings: TrackerSettings, width: int, height: int) -> None:
        self.detector = detector
        self.settings = settings
        self.view_size = detector_view_size(width, height, settings.detect_max_side)
        # Full-frame pixels per view pixel, [x, y, x, y].
        self._to_full = np.array([width / self.view_size[0], height / self.view_size[1]] * 2)
        self._cuts = SceneCutDetector(settings.cut_threshold)
        self._queue: list[_QueuedFrame] = []
        self._anchor: _QueuedFrame | None = None
        self._last_keyframe = -1
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._rows: list[tuple[int, int, NDArray[np.float64], bool]] = []
        self._times: list[float] = []
        self._cut_frames: list[int] = []
        self.detector_frames = 0
        self.detect_seconds = 0.0     # in detector calls
        self.track_seconds = 0.0      # everything else: shrinking, cuts, matching, association

    @property
    def queued_frames(self) -> int:
        """Frames held for detection and tracking: at most `batch_size * detect_every` (shrunk copies only)."""
        return len(self._queue)

    # -- input --------------------------------------------------------------------------------------

    def push(self, index: int, time: float, image: NDArray[np.uint8]) -> None:
        """Add the next frame.

        Args:
            index: its position in the video, from 0, consecutive.
            time: its presentation time in seconds.
            image: (h, w, 3) uint8 BGR at the full frame size.
        """
        self._timed_tracking(self._push, index, time, image)

    def _push(self, index: int, time: float, image: NDArray[np.uint8]) -> None:
        if image.shape[1::-1] != self.view_size:
            view = cv2.resize(image, self.view_size, interpolation=cv2.INTER_AREA)
        else:
            view = image
        gray = cv2.cvtColor(view, cv2.COLOR_BGR2GRAY)
        frame = _QueuedFrame(index, time, view, gray)
        cut = self._cuts(gray)
        if not self._times:
            frame.keyframe = True
        elif cut:
            # Both sides of a cut are keyframes, so that no interpolation spans two shots.
            frame.keyframe = frame.cut = True
            self._cut_frames.append(index)
            if self._queue:
                self._queue[-1].keyframe = True
        elif index - self._last_keyframe >= self.settings.detect_every:
            frame.keyframe = True
        if frame.keyframe:
            self._last_keyframe = index
        self._times.append(time)
        self._queue.append(frame)
        if sum(queued.keyframe and queued.detections is None for queued in self._queue) >= self.settings.batch_size:
            self._process()

    def finish(self, covered_until: float = math.inf) -> FaceTracks:
        """Process what is queued (the last frame becomes a keyframe) and return the tracks.

        Args:
            covered_until: the pass saw every frame earlier than this time (inf: the whole video).
        """
        if self._queue:
            self._queue[-1].keyframe = True
            self._timed_tracking(self._process)
        rows = sorted(self._rows, key=lambda row: (row[1], row[0]))
        return FaceTracks(
            times=np.array(self._times, dtype=np.float64),
            cuts=tuple(self._cut_frames),
            track_ids=np.array([row[0] for row in rows], dtype=np.int64),
            frames=np.array([row[1] for row in rows], dtype=np.int64),
            boxes=np.array([row[2] for row in rows], dtype=np.float64).reshape(-1, 4),
            detected=np.array([row[3] for row in rows], dtype=bool),
            detector_frames=self.detector_frames,
            covered_until=covered_until,
        )

    # -- detection ----------------------------------------------------------------------------------

    def _timed_tracking(self, function: Any, *args: Any) -> None:
        # Detector calls happen inside: count them as "detect" only.
        start, detect_before = perf_counter(), self.detect_seconds
        function(*args)
        self.track_seconds += perf_counter() - start - (self.detect_seconds - detect_before)

    def _detect(self, frames: Sequence[_QueuedFrame]) -> None:
        """Fill in `detections` of `frames`, `batch_size` frames per detector call."""
        size = self.settings.batch_size
        for first in range(0, len(frames), size):
            chunk = frames[first:first + size]
            began = perf_counter()
            results = self.detector.detect([frame.view for frame in chunk])
            self.detect_seconds += perf_counter() - began
            self.detector_frames += len(chunk)
            for frame, detections in zip(chunk, results):
                frame.detections = self._to_boxes(detections)

    def _to_boxes(self, detections: NDArray[np.float32]) -> NDArray[np.float64]:
        detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
        valid = np.isfinite(detections).all(axis=1)
        valid &= (detections[:, 2] - detections[:, 0] >= 1) & (detections[:, 3] - detections[:, 1] >= 1)
        detections = detections[valid]
        # A crowd of low-scoring faces would only cost time: a lip-sync target is among the clearest faces.
        detections = detections[np.argsort(-detections[:, 4], kind="stable")[: self.settings.max_faces]]
        return detections[:, :4] * self._to_full

    # -- segments between keyframes -----------------------------------------------------------------

    def _process(self) -> None:
        undetected = [frame for frame in self._queue if frame.keyframe and frame.detections is None]
        self._detect(undetected)
        start = 0
        for position, frame in enumerate(self._queue):
            if frame.keyframe:
                self._segment(self._queue[start:position], frame)
                self._anchor = frame
                start = position + 1
        self._queue = self._queue[start:]

    def _segment(self, middle: list[_QueuedFrame], key: _QueuedFrame) -> None:
        """Resolve the frames after the anchor keyframe up to and including `key`."""
        anchor = self._anchor
        if anchor is None or key.cut:
            # A new shot (or the first frame): nothing continues. `middle` is empty here, because the frame
            # before a cut is a keyframe too.
            self._tracks = []
            self._step(key)
            self._refresh_templates(key)
            return
        alive = [track for track in self._tracks if track.alive]
        offsets, confident = self._follow(alive, middle + [key])
        stable = self._stable_match(alive, offsets, key) if confident else None
        if stable is not None:
            self._interpolate(alive, offsets, stable, anchor, middle, key)
        else:
            self._detect([frame for frame in middle if frame.detections is None])
            for frame in middle + [key]:
                self._step(frame)
        self._refresh_templates(key)

    def _stable_match(self, alive: list[_Track], offsets: dict[int, NDArray[np.float64]], key: _QueuedFrame
                      ) -> dict[int, int] | None:
        """{track id: detection row} when the faces at `key` are exactly the tracked ones, else None.

        Equal counts with every track matched leave no detection over for a new or a returning face.
        """
        detections = key.detections
        assert detections is not None
        if len(detections) != len(alive):
            return None
        if not alive:
            return {}
        predicted = np.stack([track.box + np.tile(offsets[track.track_id][-1], 2) for track in alive])
        pairs = associate(predicted, detections, self.settings.min_iou, self.settings.max_shift,
                          self.settings.max_scale)
        if len(pairs) != len(alive):
            return None
        return {alive[i].track_id: j for i, j in pairs}

    def _interpolate(self, alive: list[_Track], offsets: dict[int, NDArray[np.float64]], matches: dict[int, int],
                     anchor: _QueuedFrame, middle: list[_QueuedFrame], key: _QueuedFrame) -> None:
        detections = key.detections
        assert detections is not None
        span = key.time - anchor.time
        for track in alive:
            start, end = track.box, detections[matches[track.track_id]]
            start_centre, end_centre = (start[:2] + start[2:]) / 2, (end[:2] + end[2:]) / 2
            start_size, end_size = start[2:] - start[:2], end[2:] - end[:2]
            tracked = offsets[track.track_id]                      # (len(middle) + 1, 2) full-frame pixels
            error = end_centre - (start_centre + tracked[-1])
            if np.linalg.norm(error) > _DRIFT_LIMIT * float(np.sqrt(np.prod((start_size + end_size) / 2))):
                tracked = np.zeros_like(tracked)                   # tracking disagrees: a straight line
                error = end_centre - start_centre
            for position, frame in enumerate(middle):
                alpha = (frame.time - anchor.time) / span if span > 0 else (position + 1) / (len(middle) + 1)
                centre = start_centre + tracked[position] + error * alpha
                size = start_size + (end_size - start_size) * alpha
                self._rows.append((track.track_id, frame.index, np.concatenate([centre - size / 2,
                                                                                centre + size / 2]), False))
            self._rows.append((track.track_id, key.index, end.copy(), True))
            track.box = end.copy()
            track.last_time = key.time
        self._forget_lost(key.time)

    def _step(self, frame: _QueuedFrame) -> None:
        """Associate the detections of one frame with the tracks (frame-by-frame mode)."""
        detections = frame.detections
        assert detections is not None
        self._forget_lost(frame.time)
        previous = np.stack([track.box for track in self._tracks]) if self._tracks else np.zeros((0, 4))
        pairs = associate(previous, detections, self.settings.min_iou, self.settings.max_shift,
                          self.settings.max_scale)
        matched_tracks = {i for i, _ in pairs}
        matched_detections = {j for _, j in pairs}
        for i, j in pairs:
            track = self._tracks[i]
            track.box, track.last_time, track.alive = detections[j].copy(), frame.time, True
            self._rows.append((track.track_id, frame.index, detections[j].copy(), True))
        for i, track in enumerate(self._tracks):
            if i not in matched_tracks:
                track.alive = False
        for j, box in enumerate(detections):
            if j not in matched_detections:
                self._tracks.append(_Track(self._next_id, box.copy(), frame.time))
                self._rows.append((self._next_id, frame.index, box.copy(), True))
                self._next_id += 1

    def _forget_lost(self, time: float) -> None:
        self._tracks = [track for track in self._tracks
                        if track.alive or time - track.last_time <= self.settings.max_lost_seconds]

    # -- template matching --------------------------------------------------------------------------

    def _refresh_templates(self, frame: _QueuedFrame) -> None:
        for track in self._tracks:
            if track.alive:
                self._cut_template(track, frame.gray)
            else:
                track.template = None

    def _cut_template(self, track: _Track, gray: NDArray[np.uint8]) -> None:
        height, width = gray.shape
        x1, y1, x2, y2 = track.box / self._to_full
        x1, y1 = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
        x2, y2 = min(width, int(math.ceil(x2))), min(height, int(math.ceil(y2)))
        track.template = None
        if x2 - x1 < 4 or y2 - y1 < 4:
            return
        scale = min(1.0, _TEMPLATE_SIDE / max(x2 - x1, y2 - y1))
        size = (max(4, round((x2 - x1) * scale)), max(4, round((y2 - y1) * scale)))
        template = cv2.resize(gray[y1:y2, x1:x2], size, interpolation=cv2.INTER_AREA)
        if float(template.std()) < _MIN_TEMPLATE_STD:
            return
        track.template = template
        track.template_centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        track.template_scale = scale

    def _follow(self, tracks: list[_Track], frames: list[_QueuedFrame]
                ) -> tuple[dict[int, NDArray[np.float64]], bool]:
        """Template-match each track through `frames`.

        Returns:
            {track id: (len(frames), 2) centre offsets from the anchor, full-frame pixels}, and whether every
            match stayed above `min_confidence` (False stops early: the frames will be detected anyway).
        """
        offsets: dict[int, NDArray[np.float64]] = {}
        for track in tracks:
            if track.template is None:
                return offsets, False
            centre = track.template_centre.copy()
            path = np.zeros((len(frames), 2))
            for position, frame in enumerate(frames):
                centre, confidence = _match(frame.gray, track.template, track.template_scale, centre)
                if confidence < self.settings.min_confidence:
                    return offsets, False
                path[position] = (centre - track.template_centre) * self._to_full[:2]
            offsets[track.track_id] = path
        return offsets, True


def _match(gray: NDArray[np.uint8], template: NDArray[np.uint8], scale: float, centre: NDArray[np.float64]
           ) -> tuple[NDArray[np.float64], float]:
    """Find `template` near `centre` (view pixels) in `gray`; returns the new centre and the correlation peak."""
    template_height, template_width = template.shape
    half = np.array([template_width, template_height]) / scale / 2
    reach = half * (1 + 2 * _SEARCH_MARGIN)
    height, width = gray.shape
    x1, y1 = (max(0, int(math.floor(value))) for value in centre - reach)
    x2, y2 = int(min(width, math.ceil(centre[0] + reach[0]))), int(min(height, math.ceil(centre[1] + reach[1])))
    size = (round((x2 - x1) * scale), round((y2 - y1) * scale))
    if size[0] < template_width + 2 or size[1] < template_height + 2:
        return centre, 0.0
    region = cv2.resize(gray[y1:y2, x1:x2], size, interpolation=cv2.INTER_AREA) if scale < 1 else gray[y1:y2, x1:x2]
    scores = cv2.matchTemplate(region, template, cv2.TM_CCOEFF_NORMED)
    _, peak, _, (best_x, best_y) = cv2.minMaxLoc(scores)
    if not math.isfinite(peak):
        return centre, 0.0
    # Sub-pixel peak: a parabola through the peak and its two neighbours, per axis.
    dx = _parabola_peak(scores[best_y, best_x - 1:best_x + 2]) if 0 < best_x < scores.shape[1] - 1 else 0.0
    dy = _parabola_peak(scores[best_y - 1:best_y + 2, best_x]) if 0 < best_y < scores.shape[0] - 1 else 0.0
    scale_x, scale_y = size[0] / (x2 - x1), size[1] / (y2 - y1)
    new_centre = np.array([x1 + (best_x + dx + template_width / 2) / scale_x,
                           y1 + (best_y + dy + template_height / 2) / scale_y])
    return new_centre, float(peak)


def _parabola_peak(values: NDArray[np.float32]) -> float:
    left, middle, right = (float(value) for value in values)
    curvature = left - 2 * middle + right
    if curvature >= 0 or not math.isfinite(curvature):
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
