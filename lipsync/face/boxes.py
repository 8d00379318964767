"""Face boxes per frame: user-given boxes, padding, clipping and temporal smoothing.

A face track is a float64 array (num_frames, 4) of [x1, y1, x2, y2] pixels with NaN rows where a frame
has no face. Such frames are passed through unchanged by the pipeline.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lipsync.errors import LipSyncError

Box = tuple[float, float, float, float]


def parse_box(values: list[float] | tuple[float, ...]) -> Box:
    """Validate an [x1, y1, x2, y2] box given by the user."""
    if len(values) != 4:
        raise LipSyncError(f"a box needs 4 numbers x1 y1 x2 y2, got {len(values)}")
    x1, y1, x2, y2 = (float(value) for value in values)
    if not all(math.isfinite(value) for value in (x1, y1, x2, y2)):
        raise LipSyncError(f"box {list(values)} has a non-finite coordinate")
    if x2 <= x1 or y2 <= y1:
        raise LipSyncError(f"box {list(values)} is empty: need x2 > x1 and y2 > y1 (x1 y1 x2 y2 order)")
    return (x1, y1, x2, y2)


def read_boxes_file(path: str | Path) -> NDArray[np.float64]:
    """Read a JSON list with one entry per decoded frame: null or [x1, y1, x2, y2] in pixels.

    Returns:
        (num_frames, 4) float64 with NaN rows for null entries.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise LipSyncError(f"boxes file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LipSyncError(f"boxes file {path} is not valid JSON: {error}") from None
    if not isinstance(entries, list) or not entries:
        raise LipSyncError(f"boxes file {path} must hold a non-empty JSON list (one entry per frame)")
    track = np.full((len(entries), 4), np.nan)
    for index, entry in enumerate(entries):
        if entry is None:
            continue
        if not isinstance(entry, list) or not all(isinstance(value, (int, float)) for value in entry):
            raise LipSyncError(f"boxes file {path}, entry {index}: expected null or [x1, y1, x2, y2]")
        try:
            track[index] = parse_box(entry)
        except LipSyncError as error:
            raise LipSyncError(f"boxes file {path}, entry {index}: {error}") from None
    return track


def pad_and_clip(track: NDArray[np.float64], pads: tuple[int, int, int, int], width: int, height: int
                 ) -> NDArray[np.float64]:
    """Grow detected boxes by Wav2Lip's pads and clip them to the frame.

    Args:
        track: (n, 4) boxes, NaN rows allowed.
        pads: (top, bottom, left, right) pixels, Wav2Lip's `--pads` order; the default (0, 10, 0, 0)
            includes the chin, which detectors tend to cut.
    """
    top, bottom, left, right = pads
    padded = track + np.array([-left, -top, right, bottom], dtype=np.float64)
    return clip_to_frame(padded, width, height)


def clip_to_frame(track: NDArray[np.float64], width: int, height: int) -> NDArray[np.float64]:
    clipped = track.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, height)
    empty = (clipped[:, 2] - clipped[:, 0] < 2) | (clipped[:, 3] - clipped[:, 1] < 2)
    clipped[empty] = np.nan
    return clipped


def integer_box(box: NDArray[np.float64]) -> tuple[int, int, int, int]:
    """Round a float box to whole pixels (the crop the generator sees)."""
    x1, y1, x2, y2 = (int(round(value)) for value in box)
    return x1, y1, x2, y2
