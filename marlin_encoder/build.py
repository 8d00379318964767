"""Builders for the released MARLIN models (one function per variant) and the checkpoint filter.

Each builder returns a random-init model, or loads `checkpoint` strictly through `Marlin.from_file` with the
variant's architecture. Weights are never downloaded here: the toolkit's `lipsync download` fills the cache
that `Marlin.from_pretrained` reads.
"""
from __future__ import annotations

import os

from .checkpoint import filter_marlin_checkpoint
from .config import MARLIN_VIT_BASE_YTF, MARLIN_VIT_LARGE_YTF, MARLIN_VIT_SMALL_YTF, MarlinConfig
from .model import Marlin

__all__ = ["marlin_vit_small", "marlin_vit_base", "marlin_vit_large", "filter_marlin_checkpoint"]


def _build(cfg: MarlinConfig, checkpoint: str | os.PathLike | None, as_feature_extractor: bool | None) -> Marlin:
    if checkpoint is None:
        return Marlin(cfg, as_feature_extractor=True if as_feature_extractor is None else as_feature_extractor)
    return Marlin.from_file(checkpoint, config=cfg, as_feature_extractor=as_feature_extractor)


def marlin_vit_small(checkpoint: str | os.PathLike | None = None, as_feature_extractor: bool | None = None) -> Marlin:
    """MARLIN ViT-S/16 (YTF): encoder 384 wide, 12 blocks, 6 heads; decoder 192/4/3.

    Args:
        checkpoint: optional `.encoder.pt`/`.full.pt`/`.safetensors` to load strictly.
        as_feature_extractor: None follows the checkpoint (encoder only without one).
    """
    return _build(MARLIN_VIT_SMALL_YTF, checkpoint, as_feature_extractor)


def marlin_vit_base(checkpoint: str | os.PathLike | None = None, as_feature_extractor: bool | None = None) -> Marlin:
    """MARLIN ViT-B/16 (YTF): encoder 768/12/12; decoder 384/4/6. Args as `marlin_vit_small`."""
    return _build(MARLIN_VIT_BASE_YTF, checkpoint, as_feature_extractor)


def marlin_vit_large(checkpoint: str | os.PathLike | None = None, as_feature_extractor: bool | None = None) -> Marlin:
    """MARLIN ViT-L/16 (YTF): encoder 1024/24/16; decoder 512/12/8. Args as `marlin_vit_small`."""
    return _build(MARLIN_VIT_LARGE_YTF, checkpoint, as_feature_extractor)
