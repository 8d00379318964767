"""MARLIN facial video encoder (CVPR 2023): official-layout model, features, masking, pretraining losses.

A leaf package: it depends on torch, einops and numpy only (and the shared `checkpoint_io` loader).
"""
from .build import marlin_vit_base, marlin_vit_large, marlin_vit_small
from .checkpoint import CheckpointMismatchError, filter_marlin_checkpoint, load_state_dict, strip_prefixes
from .config import MARLIN_CONFIGS, MarlinConfig, resolve_config
from .features import FeatureExtractor, WindowFeatures
from .layers import PatchEmbed3d, patchify, sincos_table
from .model import Marlin, MarlinDecoder, MarlinEncoder, select_tokens
from .regions import landmarks_to_label_map, landmarks_to_label_maps
from . import masking

__all__ = [
    "Marlin",
    "MarlinEncoder",
    "MarlinDecoder",
    "MarlinConfig",
    "MARLIN_CONFIGS",
    "resolve_config",
    "marlin_vit_small",
    "marlin_vit_base",
    "marlin_vit_large",
    "FeatureExtractor",
    "WindowFeatures",
    "PatchEmbed3d",
    "patchify",
    "sincos_table",
    "select_tokens",
    "filter_marlin_checkpoint",
    "load_state_dict",
    "strip_prefixes",
    "CheckpointMismatchError",
    "landmarks_to_label_map",
    "landmarks_to_label_maps",
    "masking",
]
