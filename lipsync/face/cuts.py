"""Scene cuts found in the decoded frames themselves, one frame at a time.

A cut is a frame whose 64-pixel grey thumbnail differs from the previous frame's by at least `threshold`
grey levels on average. Thumbnails that small average out head motion and sensor noise, while a cut
changes most of the picture at once. On the shared clips a cut scores 27-30 and the largest change
without a cut 15 (a fast head turn in a 224-pixel close-up), hence `InferenceConfig.cut_threshold` = 20.
"""
from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

THUMBNAIL_SIDE = 64       # longer side of the thumbnail compared between frames


class SceneCutDetector:
    """Says, frame after frame, whether a frame starts a new shot.

    Args:
        threshold: mean absolute grey-level difference (0-255) between consecutive thumbnails that counts
            as a cut. A missed cut costs more than a false one: a false cut only costs one extra detection,
            and the face is re-associated across it by position and size.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: NDArray[np.float32] | None = None

    def __call__(self, gray: NDArray[np.uint8]) -> bool:
        """Args: gray (h, w) uint8, any size (frames of one video share theirs). Returns True on a cut."""
        height, width = gray.shape[:2]
        scale = min(1.0, THUMBNAIL_SIDE / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        thumbnail = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self._previous = self._previous, thumbnail
        if previous is None:
            return False
        return float(np.abs(thumbnail - previous).mean()) >= self.threshold
