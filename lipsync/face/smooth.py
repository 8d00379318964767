"""Steady face boxes: the one-euro filter on box centre and size, run forwards and backwards.

The one-euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter for
Noisy Input in Interactive Systems", CHI 2012) is a first-order low-pass filter whose cutoff rises with the
signal's speed: `cutoff = min_cutoff + beta * |speed|`. A still face gets a low cutoff (no jitter), a
moving one a high cutoff (little lag). Here the speed is measured in face sizes per second, so one preset
suits small and large faces alike.

The filter is causal and lags a moving face a little. The whole track is known before any frame is
rendered, so it runs once forwards and once backwards and the two are averaged: their lags have opposite
signs and cancel to first order. Each run of consecutive boxes inside one shot is filtered on its own.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lipsync.face.gaps import find_gaps


@dataclass(frozen=True)
class OneEuroSettings:
    """Args: min_cutoff (Hz) for a still face; beta (Hz per face size per second); derivative_cutoff (Hz)."""

    min_cutoff: float
    beta: float
    derivative_cutoff: float = 1.0


SMOOTHING_PRESETS: dict[str, OneEuroSettings | None] = {
    "off": None,
    "light": OneEuroSettings(min_cutoff=2.0, beta=2.0),
    "strong": OneEuroSettings(min_cutoff=0.5, beta=1.0),
}


def smooth_boxes(boxes: NDArray[np.float64], times: NDArray[np.float64], preset: str, cuts: Sequence[int] = ()
                 ) -> NDArray[np.float64]:
    """Smooth a face track.

    Args:
        boxes: (n, 4) float64 [x1, y1, x2, y2] with NaN rows for frames without a face.
        times: (n,) float64 frame times in seconds (the filter adapts to the real frame spacing).
        preset: "off", "light" or "strong" (see `SMOOTHING_PRESETS`).
        cuts: frame indices that start a new shot: the filter restarts there.

    Returns:
        (n, 4) float64, NaN rows kept.
    """
    settings = SMOOTHING_PRESETS[preset]
    smoothed = boxes.copy()
    if settings is None or len(boxes) == 0:
        return smoothed
    present = ~np.isnan(boxes[:, 0])
    starts = set(cuts)
    for first, last in find_gaps(~present):          # runs of frames *with* a face
        bounds = [first] + [cut for cut in sorted(starts) if first < cut <= last] + [last + 1]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            smoothed[start:stop] = _smooth_run(boxes[start:stop], times[start:stop], settings)
    return smoothed


def _smooth_run(boxes: NDArray[np.float64], times: NDArray[np.float64], settings: OneEuroSettings
                ) -> NDArray[np.float64]:
    if len(boxes) < 3:
        return boxes.copy()
    # Centre and size: a face moving without resizing changes two coordinates, not four.
    values = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)
    sizes = np.sqrt(np.clip(values[:, 2] * values[:, 3], 1e-6, None))
    forward = _one_euro(values, times, sizes, settings)
    backward = _one_euro(values[::-1], -times[::-1], sizes[::-1], settings)[::-1]
    filtered = (forward + backward) / 2
    centre, size = filtered[:, :2], filtered[:, 2:]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def _alpha(cutoff: NDArray[np.float64] | float, interval: float) -> NDArray[np.float64] | float:
    """Smoothing factor of a first-order low-pass filter (Casiez et al. 2012, eq. 4)."""
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / interval)


def _one_euro(values: NDArray[np.float64], times: NDArray[np.float64], sizes: NDArray[np.float64],
              settings: OneEuroSettings) -> NDArray[np.float64]:
    """Causal one-euro filter over rows of `values` (m, c), each column on its own."""
    output = np.empty_like(values)
    output[0] = values[0]
    speed = np.zeros(values.shape[1])
    for index in range(1, len(values)):
        # Equal timestamps (duplicated frames) would divide by zero: treat them as 1 ms apart.
        interval = max(float(times[index] - times[index - 1]), 1e-3)
        raw_speed = (values[index] - output[index - 1]) / interval
        speed = speed + _alpha(settings.derivative_cutoff, interval) * (raw_speed - speed)
        cutoff = settings.min_cutoff + settings.beta * np.abs(speed) / sizes[index]
        output[index] = output[index - 1] + _alpha(cutoff, interval) * (values[index] - output[index - 1])
    return output
