"""syncnet.median_filter against the scipy.signal.medfilt the reference smooths with."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.signal

from syncnet.median_filter import median_filter


@pytest.mark.parametrize("length", [1, 4, 9, 13, 170])
@pytest.mark.parametrize("kernel_size", [1, 9, 13])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_filter_equals_scipy_medfilt(length, kernel_size, dtype):
    values = np.random.default_rng(length * kernel_size).normal(0, 3, length).astype(dtype)
    values[length // 2 :] += 5   # a step, and repeated values, as confidences and crop sizes have
    values[: length // 3] = values[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # scipy warns when the window is longer than the array
        expected = scipy.signal.medfilt(values, kernel_size=kernel_size)
    result = median_filter(values, kernel_size)
    assert result.dtype == values.dtype
    np.testing.assert_array_equal(result, expected)


def test_median_filter_rejects_even_windows_and_matrices():
    with pytest.raises(ValueError, match="odd"):
        median_filter(np.zeros(5), 4)
    with pytest.raises(ValueError, match="1-D"):
        median_filter(np.zeros((5, 2)), 3)
