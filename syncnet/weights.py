"""Strict loading of the official SyncNet checkpoint formats, through the shared `checkpoint_io` path.

* Wav2Lip ``lipsync_expert.pth``: ``{"state_dict": sd, "optimizer": ..., "global_step": int, "global_epoch": int}``,
  written from a ``DataParallel`` model in some releases, so keys may carry a leading ``module.``.
* syncnet_python ``syncnet_v2.model``: a bare ``{key: tensor}`` dict.

Everything is read with ``weights_only=True`` and loaded with ``strict=True``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

from torch import nn

from checkpoint_io import CheckpointMismatchError, load_strict, read_state_dict

__all__ = ["CheckpointMismatchError", "load_into"]

logger = logging.getLogger(__name__)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def load_into(model: ModuleT, path: str | Path) -> ModuleT:
    """Load a checkpoint file into ``model`` strictly and switch it to eval mode.

    Args:
        model: the freshly built model.
        path: checkpoint file (see the module docstring for the accepted formats).

    Returns:
        ``model``, loaded and in eval mode.

    Raises:
        CheckpointMismatchError: naming every missing, unexpected or wrongly shaped key on one line.
        CheckpointReadError: the file is not a readable checkpoint.
    """
    state_dict = read_state_dict(path)
    load_strict(model, state_dict, str(path))
    logger.info("loaded %d tensors from %s into %s", len(state_dict), path, type(model).__name__)
    return model.eval()
