"""Frames without a face: find the gaps, fill the short ones, or name them in an error.

`--on-missing-face passthrough` leaves such frames untouched, `interpolate` draws boxes straight across gaps
of at most `--max-gap` frames between two faces of the same shot (longer gaps, gaps at either end of the
video and gaps at a cut pass through), and `fail` stops with the frame ranges.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from lipsync.errors import LipSyncError

_RANGES_SHOWN = 5     # an error message names this many ranges, then counts the rest


def find_gaps(present: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Runs of frames without a face.

    Args:
        present: (n,) bool, True where a frame has a box.

    Returns:
        Inclusive (first, last) frame ranges, in order.
    """
    missing = np.concatenate([[False], ~np.asarray(present, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(missing.astype(np.int8)))
    return [(int(start), int(stop) - 1) for start, stop in zip(edges[::2], edges[1::2])]


def fill_gaps(boxes: NDArray[np.float64], max_gap: int, cuts: Sequence[int] = ()
              ) -> tuple[NDArray[np.float64], list[tuple[int, int]]]:
    """Interpolate boxes linearly across short gaps inside a shot.

    Args:
        boxes: (n, 4) float64 with NaN rows for frames without a face.
        max_gap: the longest gap (in frames) that is filled.
        cuts: frame indices that start a new shot; a gap is filled only if both its neighbours are in one shot.

    Returns:
        The filled copy of `boxes` and the ranges that were filled.
    """
    filled = boxes.copy()
    shots = np.searchsorted(np.asarray(cuts, dtype=np.int64), np.arange(len(boxes)), side="right")
    done = []
    for first, last in find_gaps(~np.isnan(boxes[:, 0])):
        before, after = first - 1, last + 1
        if last - first + 1 > max_gap or before < 0 or after >= len(boxes) or shots[before] != shots[after]:
            continue
        alpha = (np.arange(first, last + 1) - before)[:, None] / (after - before)
        filled[first:last + 1] = boxes[before] + (boxes[after] - boxes[before]) * alpha
        done.append((first, last))
    return filled, done


def format_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    """'3-7, 12, 40-51 and 6 more ranges' (inclusive frame ranges)."""
    shown = [f"{first}" if first == last else f"{first}-{last}" for first, last in ranges[:_RANGES_SHOWN]]
    text = ", ".join(shown)
    if len(ranges) > _RANGES_SHOWN:
        text += f" and {len(ranges) - _RANGES_SHOWN} more range(s)"
    return text


def check_no_gaps(boxes: NDArray[np.float64], source: str) -> None:
    """The `fail` policy: raise if any frame has no face.

    Args:
        boxes: (n, 4) with NaN rows for frames without a face.
        source: the video, for the message.

    Raises:
        LipSyncError: naming the frame ranges without a face.
    """
    gaps = find_gaps(~np.isnan(boxes[:, 0]))
    if gaps:
        count = sum(last - first + 1 for first, last in gaps)
        raise LipSyncError(f"no face in {count} of {len(boxes)} frames of {source} (frames {format_ranges(gaps)}); "
                           f"use --on-missing-face passthrough or interpolate, or give --box / --boxes")
