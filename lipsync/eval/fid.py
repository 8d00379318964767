"""FID between the face crops of generated and reference videos (pytorch-fid's Inception and distance).

pytorch-fid's ``InceptionV3`` downloads its weights when built, so the same network is assembled here from
its public pieces: torchvision's Inception-v3 (1008 classes, no auxiliary head) with the FID blocks
``FIDInceptionA/C/E_1/E_2`` in the places ``pytorch_fid.inception.fid_inception_v3`` puts them (mseitzer/pytorch-fid
0.3.0). The module tree, and so the state-dict keys, are those of ``pt_inception-2015-12-05-6726825d.pth``
(manifest name ``fid_inception``), which is read with ``weights_only=True`` and loaded strictly.

Features follow ``InceptionV3(output_blocks=[3])``: input RGB in [0, 1], resized to 299x299 (bilinear,
``align_corners=False``), scaled to [-1, 1], the blocks up to ``Mixed_7c``, global average pool: 2048-d.
Statistics are ``np.mean`` and ``np.cov(rowvar=False)`` of those features, as ``calculate_activation_statistics``;
the distance is ``pytorch_fid.fid_score.calculate_frechet_distance``.

The reference set's statistics are cached in ``$LIPSYNC_HOME/fid_stats/<key>.npz``, the key hashing the
reference files' bytes and every setting that changes the features.

Axis legend: b batch, c channels, h height, w width, d feature width.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from lipsync.errors import LipSyncError
from lipsync.io.atomic import atomic_path
from lipsync.weights import lipsync_home

__all__ = ["FID_FEATURE_DIM", "FIDFeatures", "FIDStats", "FIDStatsCache", "build_fid_inception", "frechet_distance",
           "stats_key"]

logger = logging.getLogger(__name__)

FID_FEATURE_DIM = 2048     # pool_3 features (pytorch-fid's default --dims)
FID_INPUT_SIZE = 299       # pytorch-fid InceptionV3(resize_input=True)
FID_BATCH_SIZE = 50        # pytorch-fid's default --batch-size


def build_fid_inception() -> nn.Module:
    """torchvision's Inception-v3 patched with pytorch-fid's FID blocks, without weights.

    The same modules, in the same places, as ``pytorch_fid.inception.fid_inception_v3``; its ``state_dict()``
    keys are those of the released FID weights.
    """
    import torchvision
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    inception = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    # Block widths as in pytorch_fid.inception.fid_inception_v3 (the TF graph inception-2015-12-05).
    inception.Mixed_5b = FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = FIDInceptionE_1(1280)
    inception.Mixed_7c = FIDInceptionE_2(2048)
    return inception.eval()


# pytorch-fid's blocks 0-3 of InceptionV3, by torchvision attribute name ("pool" marks its 3x3 stride-2 max pools).
_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "pool", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "pool",
           "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
           "Mixed_7a", "Mixed_7b", "Mixed_7c")


class FIDFeatures(nn.Module):
    """2048-d FID features of RGB images: (b, 3, h, w) float in [0, 1] -> (b, 2048).

    Args:
        inception: `build_fid_inception()`, loaded.
    """

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for name in _LAYERS:
            x = F.max_pool2d(x, kernel_size=3, stride=2) if name == "pool" else getattr(self.inception, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> "FIDFeatures":
        """Load the FID Inception weights (``pt_inception-2015-12-05-6726825d.pth`` or a file of the same keys).

        Raises:
            LipSyncError: unreadable file, or keys / shapes that do not fit (named).
        """
        from lipsync.weights import load_into, load_state_dict

        inception = build_fid_inception()
        load_into(inception, load_state_dict(path), str(path))
        return cls(inception.eval()).to(device).eval()

    @torch.inference_mode()
    def features(self, faces_bgr: NDArray[np.uint8], batch_size: int = FID_BATCH_SIZE) -> NDArray[np.float64]:
        """FID features of (n, h, w, 3) uint8 BGR face crops, as pytorch-fid's ``ToTensor`` images (RGB / 255).

        Returns:
            (n, 2048) float64 (pytorch-fid keeps them as float32 and ``np.cov`` computes in float64).
        """
        device = next(self.parameters()).device
        out = np.empty((len(faces_bgr), FID_FEATURE_DIM), np.float32)
        for start in range(0, len(faces_bgr), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(faces_bgr[start:start + batch_size, :, :, ::-1]))
            images = batch.to(device).permute(0, 3, 1, 2).float().div_(255)
            out[start:start + len(batch)] = self(images).cpu().numpy()
        return out.astype(np.float64)


class FeatureBatcher:
    """FID features of face crops handed over one at a time, holding at most one batch of crops.

    Crops are batched exactly as `FIDFeatures.features` batches a stacked array, so the features are the same.
    """

    def __init__(self, model: FIDFeatures, batch_size: int = FID_BATCH_SIZE) -> None:
        self.model = model
        self.batch_size = batch_size
        self._pending: list[NDArray[np.uint8]] = []
        self._features: list[NDArray[np.float64]] = []

    def add(self, face_bgr: NDArray[np.uint8]) -> None:
        self._pending.append(face_bgr)
        if len(self._pending) == self.batch_size:
            self._flush()

    def result(self) -> NDArray[np.float64]:
        """(n, 2048) float64 features of every crop added so far."""
        self._flush()
        return np.concatenate(self._features) if self._features else np.zeros((0, FID_FEATURE_DIM))

    def _flush(self) -> None:
        if self._pending:
            self._features.append(self.model.features(np.stack(self._pending), self.batch_size))
            self._pending = []


@dataclass(frozen=True)
class FIDStats:
    """Mean and covariance of a set's features.

    Attributes:
        mu: (2048,) float64.
        sigma: (2048, 2048) float64.
        num_images: images the statistics are over.
    """

    mu: NDArray[np.float64]
    sigma: NDArray[np.float64]
    num_images: int

    @classmethod
    def from_features(cls, features: NDArray[np.float64]) -> "FIDStats":
        """``calculate_activation_statistics``: mean and ``np.cov(rowvar=False)``.

        Raises:
            LipSyncError: fewer than 2 images (no covariance).
        """
        if len(features) < 2:
            raise LipSyncError(f"FID needs at least 2 face crops per set, got {len(features)}")
        return cls(np.mean(features, axis=0), np.cov(features, rowvar=False), len(features))


def frechet_distance(first: FIDStats, second: FIDStats) -> float:
    """pytorch-fid's Fréchet distance between two sets' statistics.

    With fewer images than 2048 the covariances are singular; pytorch-fid then adds 1e-6 to their diagonals
    where the matrix square root is not finite.

    Raises:
        LipSyncError: the square root has a large imaginary part (pytorch-fid's ValueError), which happens
            with very few images.
    """
    import warnings

    from pytorch_fid.fid_score import calculate_frechet_distance

    try:
        with warnings.catch_warnings(record=True) as caught:
            # scipy >= 1.16 deprecates sqrtm's `disp` argument, which pytorch-fid 0.3.0 still passes; and with
            # fewer images than features the product of covariances is singular, which scipy warns about.
            warnings.simplefilter("always")
            distance = float(calculate_frechet_distance(first.mu, first.sigma, second.mu, second.sigma))
        for warning in caught:
            if not issubclass(warning.category, DeprecationWarning):
                logger.info("FID (%d and %d images): %s", first.num_images, second.num_images, warning.message)
        return distance
    except ValueError as error:
        raise LipSyncError(f"FID is not defined for these sets ({error}); use more frames "
                           f"({first.num_images} and {second.num_images} face crops here)") from None


def stats_key(files: Sequence[tuple[str, Path]], settings: Mapping[str, object]) -> str:
    """Cache key of a reference set: sha256 of the files' relative names and bytes, and the settings.

    Args:
        files: (relative name, path) of every reference video, in evaluation order.
        settings: everything that changes the features (protocol, crops, frame step, weights' sha256, ...).
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(settings), sort_keys=True).encode())
    for name, path in files:
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


class FIDStatsCache:
    """Reference statistics under ``$LIPSYNC_HOME/fid_stats/<key>.npz``, written atomically.

    Args:
        root: the folder (default: ``$LIPSYNC_HOME/fid_stats``).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else lipsync_home() / "fid_stats"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> FIDStats | None:
        """The cached statistics, or None (absent or unreadable: then they are computed again)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                return FIDStats(stored["mu"], stored["sigma"], int(stored["num_images"]))
        except (OSError, KeyError, ValueError) as error:
            logger.warning("ignoring unreadable FID statistics %s: %s", path, error)
            return None

    def store(self, key: str, stats: FIDStats, settings: Mapping[str, object]) -> Path:
        path = self.path(key)
        with atomic_path(path, fsync=True) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, mu=stats.mu, sigma=stats.sigma, num_images=np.int64(stats.num_images),
                         settings=np.array(json.dumps(dict(settings), sort_keys=True)))
        return path
