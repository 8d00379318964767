"""Which face to lip-sync: one person, followed through the tracks of a whole video.

The first track is chosen by a rule (the largest face where faces first appear, the N-th from the left
there, or the one that overlaps a user's box most). The person is then followed:

* within a shot, when their track ends, by a later track of the same shot that starts near where they were
  and at a similar size (a face the detector lost for longer than the tracker waits);
* across a scene cut, by the face of the next shot nearest in position and size to their last box, among
  the faces present where that shot's faces first appear (an editor keeps the subject in place).

Faces of other people are never taken within a shot, so frames where the person is not found have no box
and the missing-face policy decides about them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lipsync.errors import LipSyncError
from lipsync.face.track import FaceTracks, box_distance, box_iou

Box = tuple[float, float, float, float]

# A later track in the same shot continues the person when its first box is this close to their last one.
_SAME_SHOT_MAX_SHIFT = 1.0     # centre distance in face sizes
_SAME_SHOT_MAX_SCALE = 2.0     # size ratio


@dataclass(frozen=True)
class Target:
    """The chosen person, frame by frame.

    Attributes:
        boxes: (n, 4) float64 boxes with NaN rows where the person has no box.
        detected: (n,) bool: the detector found the box of that frame (else tracked or interpolated).
        track_ids: the tracks that make up the person, in time order.
    """

    boxes: NDArray[np.float64]
    detected: NDArray[np.bool_]
    track_ids: tuple[int, ...]


@dataclass(frozen=True)
class _Span:
    track_id: int
    frames: NDArray[np.int64]
    boxes: NDArray[np.float64]
    detected: NDArray[np.bool_]

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])


def select_target(tracks: FaceTracks, face_index: int | None = None, select_box: Box | None = None) -> Target:
    """Follow one person through `tracks`.

    Args:
        tracks: every face of the video (`FaceTracker` output).
        face_index: take the N-th face from the left (0-based, by box centre) on the first frame with faces.
        select_box: take the track overlapping this [x1, y1, x2, y2] box most (highest IoU in any frame).
            With neither, the largest face on the first frame with faces.

    Raises:
        LipSyncError: `face_index` beyond the faces of that frame, or `select_box` overlapping no face.
    """
    boxes = np.full((tracks.num_frames, 4), np.nan)
    detected = np.zeros(tracks.num_frames, dtype=bool)
    spans = _spans(tracks)
    if not spans:
        return Target(boxes, detected, ())
    shots = np.searchsorted(np.array(tracks.cuts, dtype=np.int64), np.arange(tracks.num_frames), side="right")
    first = _first_span(spans, face_index, select_box)
    chain = _follow(spans, first, shots, backward=True)[::-1] + [first] + _follow(spans, first, shots, backward=False)
    for span in chain:
        boxes[span.frames] = span.boxes
        detected[span.frames] = span.detected
    return Target(boxes, detected, tuple(span.track_id for span in chain))


def _spans(tracks: FaceTracks) -> list[_Span]:
    spans = [_Span(track_id, tracks.frames[rows], tracks.boxes[rows], tracks.detected[rows])
             for track_id, rows in tracks.rows_by_track()]
    return sorted(spans, key=lambda span: (span.first, span.track_id))


def _box_at(span: _Span, frame: int) -> NDArray[np.float64]:
    return span.boxes[int(np.searchsorted(span.frames, frame))]


def _first_span(spans: list[_Span], face_index: int | None, select_box: Box | None) -> _Span:
    if select_box is not None:
        overlaps = [float(box_iou(np.array([select_box]), span.boxes).max()) for span in spans]
        best = int(np.argmax(overlaps))
        if overlaps[best] <= 0:
            raise LipSyncError(f"--select-box {list(select_box)} overlaps none of the detected faces")
        return spans[best]
    frame = spans[0].first
    present = [span for span in spans if span.first == frame]
    boxes = np.stack([_box_at(span, frame) for span in present])
    if face_index is not None:
        if face_index >= len(present):
            raise LipSyncError(f"--face-index {face_index}: frame {frame}, the first with faces, has only "
                               f"{len(present)} face(s) (indices 0 to {len(present) - 1}, left to right)")
        order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2, kind="stable")
        return present[int(order[face_index])]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return present[int(np.argmax(areas))]


def _follow(spans: list[_Span], start: _Span, shots: NDArray[np.int64], backward: bool) -> list[_Span]:
    """The spans that continue `start` forwards (or backwards) in time, nearest first."""
    chain: list[_Span] = []
    current = start
    while True:
        edge = current.first if backward else current.last
        edge_box = current.boxes[0] if backward else current.boxes[-1]
        later = [span for span in spans if (span.last < edge if backward else span.first > edge)]
        if not later:
            return chain
        in_shot = [shots[span.last if backward else span.first] == shots[edge] for span in later]
        following = _nearest_in_shot([span for span, same in zip(later, in_shot) if same], edge_box, backward)
        if following is None:
            other_shots = [span for span, same in zip(later, in_shot) if not same]
            if not other_shots:
                return chain
            following = _nearest_after_cut(other_shots, edge_box, backward)
        chain.append(following)
        current = following


def _nearest_in_shot(candidates: list[_Span], box: NDArray[np.float64], backward: bool) -> _Span | None:
    """The earliest (latest, backwards) candidate starting near `box` at a similar size."""
    fitting = []
    for span in candidates:
        shift, scale = box_distance(box[None], (span.boxes[-1] if backward else span.boxes[0])[None])
        if shift[0, 0] <= _SAME_SHOT_MAX_SHIFT and scale[0, 0] <= _SAME_SHOT_MAX_SCALE:
            fitting.append(span)
    if not fitting:
        return None
    return max(fitting, key=lambda span: span.last) if backward else min(fitting, key=lambda span: span.first)


def _nearest_after_cut(candidates: list[_Span], box: NDArray[np.float64], backward: bool) -> _Span:
    """Among the faces where the next (previous) faces appear, the nearest in position and size to `box`."""
    frame = max(span.last for span in candidates) if backward else min(span.first for span in candidates)
    present = [span for span in candidates if (span.last if backward else span.first) == frame]
    boxes = np.stack([_box_at(span, frame) for span in present])
    shift, scale = box_distance(box[None], boxes)
    # Centre distance in face sizes plus the size difference in octaves: both are "how far" in face terms.
    cost = shift[0] + np.log2(scale[0])
    return present[int(np.argmin(cost))]
