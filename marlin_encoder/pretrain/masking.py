"""Alias of `marlin_encoder.masking`, so `marlin_encoder.pretrain.masking` also names the mask generators."""
from ..masking import *  # noqa: F401,F403 - a re-export, not a second implementation
from ..masking import __all__  # noqa: F401
