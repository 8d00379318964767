"""Reading MARLIN checkpoints: one strict path for official `.pt` files and our safetensors.

Official `marlin_vit_*_ytf.{encoder,full}.pt` files are bare flat state dicts (`torch.save(state_dict)`);
the reference's Lightning training checkpoints wrap one under "state_dict" and add `discriminator.*` keys.
Everything is loaded with `weights_only=True` on CPU and checked key by key before it reaches a module.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping

from torch import Tensor

from checkpoint_io import CheckpointMismatchError, check_state_dict, read_state_dict, strip_prefixes

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

def default_checkpoint_dir() -> Path:
    """`$LIPSYNC_HOME/checkpoints`, with LIPSYNC_HOME defaulting to ~/.cache/lipsync (the toolkit's cache)."""
    home = os.environ.get("LIPSYNC_HOME") or "~/.cache/lipsync"
    return Path(home).expanduser() / "checkpoints"


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A checkpoint's {key: tensor}, read without executing code and with leading wrapper prefixes removed
    (`checkpoint_io.read_state_dict`: official `.pt` files, Lightning containers, our `.safetensors`)."""
    return read_state_dict(path)


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


