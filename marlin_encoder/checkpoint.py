"""Reading MARLIN checkpoints: one strict path for official `.pt` files and our safetensors.

Official `marlin_vit_*_ytf.{encoder,full}.pt` files are bare flat state dicts (`torch.save(state_dict)`);
the reference's Lightning training checkpoints wrap one under "state_dict" and add `discriminator.*` keys.
Everything is loaded with `weights_only=True` on CPU and checked key by key before it reaches a module.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointMismatchError",
    "load_state_dict",
    "strip_prefixes",
    "filter_marlin_checkpoint",
    "encoder_subset",
    "check_state_dict",
    "default_checkpoint_dir",
]

logger = logging.getLogger(__name__)

# Wrappers added by DistributedDataParallel and torch.compile.
DEFAULT_PREFIXES = ("module.", "_orig_mod.")


class CheckpointMismatchError(ValueError):
    """A state dict whose keys or shapes do not match the model; the message names them on one line."""


def default_checkpoint_dir() -> Path:
    """`$LIPSYNC_HOME/checkpoints`, with LIPSYNC_HOME defaulting to ~/.cache/lipsync (the toolkit's cache)."""
    home = os.environ.get("LIPSYNC_HOME") or "~/.cache/lipsync"
    return Path(home).expanduser() / "checkpoints"


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a flat {key: tensor} dict from a `.pt`/`.pth`/`.ckpt` (torch) or `.safetensors` file.

    Torch files are read with `weights_only=True` and `map_location="cpu"`; a {"state_dict": {...}} container
    (Lightning, Wav2Lip-style) is unwrapped.

    Args:
        path: checkpoint file.

    Raises:
        ValueError: the file does not hold a flat mapping of tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: only needed for our own checkpoints

        return dict(load_file(str(path), device="cpu"))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(value, Tensor) for value in loaded.values()):
        raise ValueError(f"{path}: expected a flat {{key: tensor}} state dict, got {type(loaded).__name__}")
    return dict(loaded)


def strip_prefixes(state_dict: Mapping[str, Tensor], prefixes: Iterable[str] = DEFAULT_PREFIXES) -> dict[str, Tensor]:
    """Remove wrapper prefixes at the START of keys only (repeatedly, e.g. `module._orig_mod.`).

    A substring replace would also rewrite legitimate inner names; this never does.

    Args:
        state_dict: {key: tensor}.
        prefixes: leading strings to drop.
    """
    prefixes = tuple(prefixes)
    stripped: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = key
        while True:
            prefix = next((p for p in prefixes if new_key.startswith(p)), None)
            if prefix is None:
                break
            new_key = new_key[len(prefix):]
        if new_key in stripped:
            raise ValueError(f"stripping prefixes {prefixes} makes key {key!r} collide with another key")
        stripped[new_key] = value
    return stripped


def filter_marlin_checkpoint(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the WGAN critic (`discriminator.*`) that the reference's training checkpoints carry.

    The official Lightning module (model/marlin.py) keeps its patch discriminator beside encoder/decoder; the
    released `.full.pt`/`.encoder.pt` files do not have it, and `Marlin` has no such submodule.

    Args:
        state_dict: {key: tensor} with leading wrapper prefixes already stripped.
    """
    dropped = [key for key in state_dict if key.startswith("discriminator.")]
    if dropped:
        logger.info("dropping %d discriminator.* tensors from a MARLIN training checkpoint", len(dropped))
    return {key: value for key, value in state_dict.items() if not key.startswith("discriminator.")}


def encoder_subset(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A full checkpoint without `decoder.*` and `enc_dec_proj.*`: an official `.encoder.pt` (README, step 3).

    Only the known decoder-side keys are dropped, so any stray key still fails the strict check.
    """
    return {key: value for key, value in state_dict.items() if not key.startswith(("decoder.", "enc_dec_proj."))}


def _preview(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', … {len(items) - limit} more' if len(items) > limit else ''}]"


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Raise one readable line if `state_dict` does not match `model` in keys or shapes.

    `nn.Module.load_state_dict(strict=True)` reports size mismatches over many lines and only after a
    partial copy; this check names every problem key up front.

    Args:
        model: the module to load into.
        state_dict: candidate {key: tensor}.
        source: what to call the checkpoint in the message (usually its path).

    Raises:
        CheckpointMismatchError: missing or unexpected keys, or wrong shapes.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shapes {_preview(wrong_shape)}")
    if problems:
        raise CheckpointMismatchError(f"{source} does not match the model: " + "; ".join(problems))
