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


# S3FD's output decoding, as face-alignment 1.5 does it (detection/sfd/detect.py, bbox.py): six score /
# regression map pairs with strides 4, 8, ..., 128; one anchor per cell, centred, of side 4 x stride;
# regressions decoded with variances (0.1, 0.2); candidates above 0.05; NMS at overlap 0.3 with areas
# counted as (x2 - x1 + 1)(y2 - y1 + 1); boxes above the threshold kept. Input: BGR minus these means.
S3FD_MEAN_BGR = (104.0, 117.0, 123.0)
S3FD_VARIANCES = (0.1, 0.2)
S3FD_CANDIDATE_SCORE = 0.05
S3FD_NMS_OVERLAP = 0.3


class S3FDDetector:
    """face-alignment's S3FD network on downscaled, batched frames, with vectorised box decoding.

    face-alignment's own decoding visits every candidate cell in a Python loop, once per image of the batch
    for every cell that any image marks; its cost grows with the number of weak candidates (with untrained
    weights, tens of thousands per batch). Here candidates are gathered with array operations and only those
    above the threshold reach non-maximum suppression. The boxes are the same: a candidate below the
    threshold can only suppress boxes scored lower still, which the threshold removes anyway.

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
        self.network = self._detector.face_detector
        if torch.device(device).type == "cuda":
            # face-alignment's own detection switched this on; S3FD sees one frame size per video.
            torch.backends.cudnn.benchmark = True
        self.device = torch.device(device)
        self.max_side = max_side
        self.threshold = threshold
        self._mean = torch.tensor(S3FD_MEAN_BGR, device=self.device).view(1, 3, 1, 1)

    def detect(self, images: Sequence[NDArray[np.uint8]]) -> list[NDArray[np.float32]]:
        if not images:
            return []
        height, width = images[0].shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = [cv2.resize(image, small_size, interpolation=cv2.INTER_AREA) if scale < 1 else image
                 for image in images]
        batch = torch.from_numpy(np.stack(small)).to(self.device).permute(0, 3, 1, 2).float() - self._mean
        with torch.inference_mode():
            outputs = self.network(batch)
        per_image = decode_s3fd(outputs, max(self.threshold, S3FD_CANDIDATE_SCORE))
        scale_back = np.array([width / small_size[0], height / small_size[1]] * 2 + [1.0], dtype=np.float32)
        return [detections.astype(np.float32) * scale_back for detections in per_image]


def decode_s3fd(outputs: Sequence[torch.Tensor], min_score: float) -> list[NDArray[np.float64]]:
    """Boxes from S3FD's raw outputs, per image: (k, 5) [x1, y1, x2, y2, score] after NMS, best first.

    Args:
        outputs: the network's (score, regression) maps, alternating, level by level: (b, 2, h, w), (b, 4, h, w).
        min_score: candidates must score above this.
    """
    from face_alignment.detection.sfd.bbox import nms

    batch = outputs[0].shape[0]
    candidates: list[list[NDArray[np.float64]]] = [[] for _ in range(batch)]
    for level in range(len(outputs) // 2):
        scores = torch.softmax(outputs[2 * level].float(), dim=1)[:, 1]                 # (b, h, w)
        # Compared in float64 as face-alignment does (its scores reach the threshold test as float64): a
        # float32 comparison would treat a score equal to float32(0.1) differently for a threshold of 0.1.
        image, row, col = torch.nonzero(scores.double() > min_score, as_tuple=True)
        if len(image) == 0:
            continue
        stride = 2 ** (level + 2)
        score = scores[image, row, col].cpu().numpy()
        regression = outputs[2 * level + 1].float()[image, :, row, col].cpu().numpy()     # (k, 4) float32
        # Same dtypes and operations as face-alignment's per-candidate decode, so the same numbers.
        row, col, image = row.cpu().numpy(), col.cpu().numpy(), image.cpu().numpy()
        side = np.full(len(row), stride * 4.0)
        priors = np.stack([stride / 2 + col * stride, stride / 2 + row * stride, side, side], axis=1) / 1.0
        boxes = np.concatenate((priors[:, :2] + regression[:, :2] * S3FD_VARIANCES[0] * priors[:, 2:],
                                priors[:, 2:] * np.exp(regression[:, 2:] * S3FD_VARIANCES[1])), axis=1)
        boxes[:, :2] -= boxes[:, 2:] / 2
        boxes[:, 2:] += boxes[:, :2]
        detections = np.concatenate((boxes, score[:, None].astype(np.float64)), axis=1)
        for index in np.unique(image):
            candidates[index].append(detections[image == index])
    results = []
    for found in candidates:
        detections = np.concatenate(found) if found else np.zeros((0, 5))
        results.append(detections[nms(detections, S3FD_NMS_OVERLAP)] if len(detections) else detections)
    return results
