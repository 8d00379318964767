"""Checkpoints: the manifest, the cache, verified downloads, and the one strict loading path.

Every checkpoint goes through `load_state_dict` (weights_only=True, containers unwrapped, leading prefixes
stripped) and `load_into` (strict; a mismatch names the keys). Our own checkpoints are safetensors with
their configuration in the metadata.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from checkpoint_io import (
    CheckpointMismatchError,
    CheckpointReadError,
    load_strict,
    read_safetensors_metadata,
    read_state_dict,
    strip_prefixes,
)
from lipsync.errors import LipSyncError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "CheckpointEntry", "checkpoints_dir", "download", "lipsync_home", "load_into", "load_manifest",
    "load_state_dict", "manifest_entry", "read_safetensors_metadata", "resolve_checkpoint", "save_safetensors",
    "sha256_file", "strip_prefixes",
]

logger = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).with_name("manifest.toml")
_CHUNK_BYTES = 1 << 20


def lipsync_home() -> Path:
    """The cache root: `$LIPSYNC_HOME`, default `~/.cache/lipsync`."""
    return Path(os.environ.get("LIPSYNC_HOME") or Path.home() / ".cache" / "lipsync").expanduser()


def checkpoints_dir() -> Path:
    """Where downloaded weights land."""
    return lipsync_home() / "checkpoints"


@dataclass(frozen=True)
class CheckpointEntry:
    """One downloadable checkpoint (see checkpoints/manifest.toml for the field meanings)."""

    name: str
    file: str
    urls: tuple[str, ...]
    sha256: str
    bytes: int
    licence: str
    source: str
    architecture: str
    format: str

    @property
    def path(self) -> Path:
        return checkpoints_dir() / self.file


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, CheckpointEntry]:
    """Read the manifest into {name: entry}."""
    with open(path, "rb") as handle:
        table = tomllib.load(handle)
    return {
        name: CheckpointEntry(name=name, file=fields["file"], urls=tuple(fields["urls"]), sha256=fields["sha256"],
                              bytes=int(fields["bytes"]), licence=fields["licence"], source=fields["source"],
                              architecture=fields["architecture"], format=fields["format"])
        for name, fields in table.items()
    }


def manifest_entry(name: str) -> CheckpointEntry:
    entries = load_manifest()
    if name not in entries:
        raise LipSyncError(f"unknown checkpoint {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A file path as given, or a manifest name resolved to its cached file.

    Raises:
        LipSyncError: the file does not exist, or the named checkpoint is not downloaded (the message gives
            the exact command that fetches it).
    """
    candidate = Path(name_or_path)
    if candidate.exists():
        if candidate.is_dir():
            raise LipSyncError(f"checkpoint path is a directory: {candidate}")
        return candidate
    entries = load_manifest()
    if str(name_or_path) in entries:
        entry = entries[str(name_or_path)]
        if entry.path.exists():
            return entry.path
        raise LipSyncError(f"checkpoint {entry.name!r} is not downloaded; run: lipsync download {entry.name}")
    raise LipSyncError(f"checkpoint not found: {name_or_path} (neither a file nor a name in the manifest)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def download(entry: CheckpointEntry, *, tqdm_class: Any = None, allow_unverified: bool = False,
             timeout: float = 30.0) -> Path:
    """Fetch `entry` into the cache, resuming a partial download, and verify its size and sha256.

    Args:
        entry: the manifest entry.
        tqdm_class: a tqdm class for a progress bar, or None for none.
        allow_unverified: accept an entry with no published sha256 (its computed hash is logged).
        timeout: socket timeout in seconds.

    Returns:
        The cached file.

    Raises:
        LipSyncError: no URL worked (e.g. offline), or the file does not match its hash.
    """
    target = entry.path
    if target.exists() and (not entry.sha256 or sha256_file(target) == entry.sha256):
        return target
    if not entry.sha256 and not allow_unverified:
        raise LipSyncError(f"{entry.name} has no published sha256 to verify against; "
                           f"rerun with --allow-unverified to accept it unverified")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".download")
    failures = []
    for url in entry.urls:
        try:
            _fetch(url, partial, entry.bytes, tqdm_class, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        digest = sha256_file(partial)
        if entry.sha256 and digest != entry.sha256:
            partial.unlink(missing_ok=True)
            failures.append(f"{url}: sha256 {digest[:12]}… does not match the manifest's {entry.sha256[:12]}…")
            continue
        if not entry.sha256:
            logger.warning("%s accepted unverified; its sha256 is %s", entry.name, digest)
        os.replace(partial, target)
        return target
    raise LipSyncError(f"could not download {entry.name} ({'; '.join(failures)}); check the network, or place "
                       f"{entry.file} in {target.parent} yourself")


def _fetch(url: str, partial: Path, expected_bytes: int, tqdm_class: Any, timeout: float) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    if expected_bytes and have >= expected_bytes:
        return
    request = urllib.request.Request(url, headers={"User-Agent": "marlin-lipsync"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = response.status == 206
        if not resumed:
            have = 0   # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else (expected_bytes or None)
        bar = tqdm_class(total=total, initial=have, unit="B", unit_scale=True, desc=partial.name) if tqdm_class else None
        with open(partial, "ab" if resumed else "wb") as handle:
            while block := response.read(_CHUNK_BYTES):
                handle.write(block)
                if bar is not None:
                    bar.update(len(block))
        if bar is not None:
            bar.close()


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without executing code (see `checkpoint_io.read_state_dict`): our
    safetensors, TorchScript archives, and weights-only torch pickles, bare or in a training container;
    leading `module.` / `_orig_mod.` prefixes stripped.

    Raises:
        LipSyncError: unreadable or not a checkpoint (one line).
    """
    try:
        return read_state_dict(path)
    except CheckpointReadError as error:
        raise LipSyncError(str(error)) from None


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], what: str, assign: bool = False) -> None:
    """Strictly load `state` into `model`; any mismatch is one LipSyncError line naming the keys.

    Args:
        what: how the user knows this checkpoint (its path), for the message.
        assign: adopt the loaded tensors (for a model built on the meta device: no second copy).
    """
    try:
        load_strict(model, state, what, assign=assign)
    except CheckpointMismatchError as error:
        raise LipSyncError(str(error)) from None


def save_safetensors(path: str | Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Write `state` atomically as safetensors; metadata values are stored as JSON strings."""
    from safetensors.torch import save_file

    from lipsync.io.atomic import atomic_path

    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    encoded = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    with atomic_path(path, fsync=True) as temporary:
        save_file(tensors, str(temporary), metadata=encoded)


