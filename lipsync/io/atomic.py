"""Write files so that a reader never sees a half-written one: a temporary sibling, then `os.replace`."""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on any failure it is deleted.

    The temporary name keeps the suffix so that tools which pick a format by extension (the mp4 muxer,
    safetensors) still do. The directory is created if needed.

    Args:
        path: the final file.
        fsync: flush the file to disk before the rename (checkpoints: a crash must leave the old or the new
            file, never an empty one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")
    try:
        yield temporary
        if fsync:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (with fsync)."""
    with atomic_path(path, fsync=True) as temporary:
        temporary.write_bytes(data)
