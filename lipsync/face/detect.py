"""Face detectors behind one small interface, and the S3FD detector of face-alignment.

Detection runs on a downscaled copy of each frame (S3FD's cost grows with the pixel count, and talking
faces are large), and boxes are mapped back to full-resolution pixels.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from lipsync.errors import LipSyncError

logger = logging.getLogger(__name__)

S3FD_FILE = "s3fd-619a316812.pth"   # face-alignment's file name; torch hub caches it under this name


class FaceDetector(Protocol):
    """Finds faces in a batch of frames."""

    def detect(self, images: Sequence[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        """Detect faces.

        Args:
            images: frames of one size, (h, w, 3) uint8 BGR.

        Returns:
            Per image a (k, 5) float32 array of [x1, y1, x2, y2, score] in the image's pixels.
        """
        ...


def find_s3fd_weights(explicit: str | Path | None = None) -> Path:
    """Locate the S3FD weights: an explicit path, our cache, or torch hub's cache (face-alignment's own)."""
    from lipsync.weights import checkpoints_dir

    candidates = [Path(explicit)] if explicit else []
    candidates += [checkpoints_dir() / S3FD_FILE, Path(torch.hub.get_dir()) / "checkpoints" / S3FD_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LipSyncError("S3FD face detector weights not found; run: lipsync download s3fd "
                       "(or give the face position with --box / --boxes)")


class S3FDDetector:
    """face-alignment's S3FD on downscaled, batched frames.

    Args:
        weights: S3FD state dict file; found with `find_s3fd_weights` when None.
        device: torch device.
        max_side: frames are shrunk so that their longer side is at most this many pixels.
        threshold: minimum detection score (face-alignment's `filter_threshold`).
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu",
                 max_side: int = 640, threshold: float = 0.5) -> None:
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        path = find_s3fd_weights(weights)
        try:
            # face-alignment reads the file with torch.load(weights_only=True) and loads it strictly.
            self._detector = SFDDetector(device=str(device), path_to_detector=str(path), filter_threshold=threshold)
        except (RuntimeError, OSError, EOFError) as error:
            raise LipSyncError(f"cannot load S3FD weights {path}: {str(error).splitlines()[0]}") from None
        self.device = torch.device(device)
        self.max_side = max_side

    def detect(self, images: Sequence[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        if not images:
            return []
        height, width = images[0].shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = [cv2.resize(image, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else image
                 for image in images]
        # face-alignment takes RGB and flips it back to BGR itself.
        batch = torch.from_numpy(np.stack(small)[..., ::-1].copy()).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            per_image = self._detector.detect_from_batch(batch.to(self.device))
        scale_back = np.array([width / small_size[0], height / small_size[1]] * 2 + [1.0], dtype=np.float32)
        results = []
        for detections in per_image:
            detections = np.asarray(detections, dtype=np.float32).reshape(-1, 5)
            results.append(detections * scale_back)
        return results
