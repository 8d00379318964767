"""Crop faces for the generator and blend generated faces back with a feathered lower-face mask."""
from __future__ import annotations

import functools

import cv2
import numpy as np
from numpy.typing import NDArray

# The mask, as fractions of the box: where the blend starts rising and reaches full strength.
# Above ~45% of the face height the generator only copies its reference, so nothing is pasted there;
# every edge fades to zero so that no seam can appear at the box border.
_MASK_TOP = (0.42, 0.56)
_MASK_BOTTOM = (0.90, 1.0)
_MASK_SIDES = (0.04, 0.16)


def crop_face(frame: NDArray[np.uint8], box: tuple[int, int, int, int], size: int) -> NDArray[np.uint8]:
    """Cut `box` out of the frame and resize it to (size, size) as Wav2Lip does (bilinear)."""
    x1, y1, x2, y2 = box
    return cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_LINEAR)


def _ramp(length: int, rise: tuple[float, float], fall: tuple[float, float]) -> NDArray[np.float32]:
    # Smoothstep rise and fall over pixel centres: 0 outside, 1 in the middle.
    position = (np.arange(length, dtype=np.float32) + 0.5) / length

    def smoothstep(edge0: float, edge1: float, value: NDArray[np.float32]) -> NDArray[np.float32]:
        t = np.clip((value - edge0) / (edge1 - edge0), 0.0, 1.0)
        return t * t * (3 - 2 * t)

    return smoothstep(rise[0], rise[1], position) * (1 - smoothstep(fall[0], fall[1], position))


@functools.lru_cache(maxsize=64)
def lower_face_mask(height: int, width: int) -> NDArray[np.float32]:
    """(height, width, 1) blend weights in [0, 1]: 1 over mouth and chin, 0 above the nose and at every edge."""
    vertical = _ramp(height, _MASK_TOP, _MASK_BOTTOM)
    horizontal = _ramp(width, _MASK_SIDES, (1 - _MASK_SIDES[1], 1 - _MASK_SIDES[0]))
    mask = np.outer(vertical, horizontal)[:, :, None].astype(np.float32)
    mask.setflags(write=False)
    return mask


def paste_face(frame: NDArray[np.uint8], generated: NDArray[np.uint8], box: tuple[int, int, int, int]) -> None:
    """Blend a generated face into `frame` in place; pixels where the mask is 0 are left untouched.

    Args:
        frame: (h, w, 3) uint8 BGR, modified in place.
        generated: (s, s, 3) uint8 BGR generator output.
        box: integer [x1, y1, x2, y2] the face was cropped from.
    """
    x1, y1, x2, y2 = box
    height, width = y2 - y1, x2 - x1
    face = cv2.resize(generated, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = lower_face_mask(height, width)
    region = frame[y1:y2, x1:x2]
    # Only rows where the mask is non-zero are blended: the upper face is never rewritten.
    rows = slice(int(np.argmax(mask[:, width // 2, 0] > 0)), height)
    original = region[rows].astype(np.float32)
    blended = original + mask[rows] * (face[rows].astype(np.float32) - original)
    region[rows] = np.rint(blended).astype(np.uint8)
