"""The preprocessed clip format: one directory per clip of memory-mappable arrays, read fast by loaders.

    CLIP_DIR/
      meta.json          source, fps, frame count, frame size, crop settings, format version
      times.npy          (t,) float64 frame times in seconds from the first frame
      has_face.npy       (t,) bool: the frame had a face (crops of other frames are zeros)
      boxes.npy          (t, 4) float32 crop boxes [x1, y1, x2, y2] in source pixels, NaN without a face
      faces96.npy        (t, 96, 96, 3) uint8 BGR: Wav2Lip's generator / expert input
      faces224.npy       (t, 224, 224, 3) uint8 BGR: MARLIN and syncnet_python input
      audio16k.npy       (s,) int16 16 kHz mono
      mel.npy            (80, m) float32 Wav2Lip mel of the whole clip (80 steps per second)
      landmarks68.npy    (t, 68, 2) float32 in faces224 pixels, NaN where unknown (optional)

Arrays are plain .npy, opened with mmap_mode="r": a loader touches only the frames it samples.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lipsync.errors import LipSyncError

FORMAT_VERSION = 1
META = "meta.json"


@dataclass(frozen=True)
class ClipArrays:
    """Everything preprocessing produced for one clip, before it is written."""

    times: NDArray[np.float64]
    has_face: NDArray[np.bool_]
    boxes: NDArray[np.float32]
    faces96: NDArray[np.uint8]
    faces224: NDArray[np.uint8]
    audio16k: NDArray[np.int16]
    mel: NDArray[np.float32]
    landmarks68: NDArray[np.float32] | None = None


def write_clip(directory: Path, arrays: ClipArrays, meta: dict[str, Any]) -> None:
    """Write a clip atomically: into a temporary sibling directory, renamed when complete."""
    directory = Path(directory)
    temporary = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    for name in ("times", "has_face", "boxes", "faces96", "faces224", "audio16k", "mel", "landmarks68"):
        value = getattr(arrays, name)
        if value is not None:
            np.save(temporary / f"{name}.npy", np.ascontiguousarray(value))
    full_meta = {"format_version": FORMAT_VERSION, "num_frames": int(len(arrays.times)), **meta}
    (temporary / META).write_text(json.dumps(full_meta, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    temporary.rename(directory)


class Clip:
    """Read-only, lazily memory-mapped view of one preprocessed clip."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META
        if not meta_path.exists():
            raise LipSyncError(f"{self.directory} is not a preprocessed clip (no {META})")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise LipSyncError(f"{self.directory}: clip format {self.meta.get('format_version')} is not "
                               f"{FORMAT_VERSION}; preprocess it again")

    def _array(self, name: str) -> NDArray:
        return np.load(self.directory / f"{name}.npy", mmap_mode="r")

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    @cached_property
    def times(self) -> NDArray[np.float64]:
        return np.asarray(self._array("times"))

    @cached_property
    def has_face(self) -> NDArray[np.bool_]:
        return np.asarray(self._array("has_face"))

    @cached_property
    def boxes(self) -> NDArray[np.float32]:
        return np.asarray(self._array("boxes"))

    @cached_property
    def faces96(self) -> NDArray[np.uint8]:
        return self._array("faces96")

    @cached_property
    def faces224(self) -> NDArray[np.uint8]:
        return self._array("faces224")

    @cached_property
    def audio16k(self) -> NDArray[np.int16]:
        return self._array("audio16k")

    @cached_property
    def mel(self) -> NDArray[np.float32]:
        return np.asarray(self._array("mel"))

    @cached_property
    def landmarks68(self) -> NDArray[np.float32] | None:
        path = self.directory / "landmarks68.npy"
        return np.load(path, mmap_mode="r") if path.exists() else None

    def window_starts(self, length: int) -> NDArray[np.int64]:
        """Frames where `length` consecutive frames all have a face."""
        if self.num_frames < length:
            return np.zeros(0, dtype=np.int64)
        counts = np.convolve(self.has_face.astype(np.int64), np.ones(length, dtype=np.int64), mode="valid")
        return np.flatnonzero(counts == length)


def find_clips(root: Path) -> list[Path]:
    """Clip directories under `root`, sorted (stable across runs and machines)."""
    root = Path(root)
    if not root.is_dir():
        raise LipSyncError(f"dataset directory not found: {root}")
    clips = sorted(path.parent for path in root.rglob(META) if not path.parent.name.startswith("."))
    if not clips:
        raise LipSyncError(f"no preprocessed clips under {root}; run: lipsync preprocess VIDEOS --out {root}")
    return clips
