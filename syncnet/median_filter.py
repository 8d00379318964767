"""``scipy.signal.medfilt`` for 1-D arrays, without importing ``scipy.signal`` (about a second per process).

The reference smooths framewise confidences (``SyncNetInstance.evaluate``) and face-track crops
(``run_pipeline.py``) with ``scipy.signal.medfilt``: an odd window, zeros beyond both ends, and the middle
value of each sorted window. With an odd count the median is one of the window's values, so this is exact.
"""
from __future__ import annotations

import numpy as np

__all__ = ["median_filter"]


def median_filter(values: np.ndarray, kernel_size: int) -> np.ndarray:
    """Median of each ``kernel_size`` window centred on every element, zero-padded at both ends.

    Args:
        values: (n,) real array, no NaN; n may be shorter than the window.
        kernel_size: odd window length.

    Returns:
        (n,) array of ``values``' dtype, equal to ``scipy.signal.medfilt(values, kernel_size)``.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {values.shape}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    padded = np.pad(values, kernel_size // 2)
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel_size)
    middle = kernel_size // 2
    return np.partition(windows, middle, axis=1)[:, middle].astype(values.dtype, copy=False)
