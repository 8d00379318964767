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
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lipsync.errors import LipSyncError

FORMAT_VERSION = 1
META = "meta.json"


class ClipWriter:
    """Build a clip in a temporary sibling directory; `commit` writes meta.json and renames it into place.

    Large arrays are created with `open_memmap` and filled frame by frame, so a long video never sits in RAM.
    Leaving the `with` block without `commit` (an error) deletes the partial directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.temporary = self.directory.with_name(f".{self.directory.name}.partial")

    def __enter__(self) -> "ClipWriter":
        shutil.rmtree(self.temporary, ignore_errors=True)
        self.temporary.mkdir(parents=True)
        self._committed = False
        return self

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.memmap:
        """A zero-filled array on disk to fill in place."""
        return np.lib.format.open_memmap(self.temporary / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

    def save(self, name: str, value: NDArray) -> None:
        np.save(self.temporary / f"{name}.npy", np.ascontiguousarray(value))

    def commit(self, meta: dict[str, Any]) -> None:
        (self.temporary / META).write_text(json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2) + "\n")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.temporary.rename(self.directory)
        self._committed = True

    def __exit__(self, exc_type, exc, traceback) -> None:
        if not self._committed:
            shutil.rmtree(self.temporary, ignore_errors=True)


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
