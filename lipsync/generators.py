"""Which generator a checkpoint holds, and how to build its synthesizer for the pipeline."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from lipsync.errors import LipSyncError
from lipsync.models.wav2lip import Wav2Lip
from lipsync.synthesis import FaceSynthesizer, Wav2LipSynthesizer
from lipsync.weights import load_into, load_manifest, load_state_dict, resolve_checkpoint

logger = logging.getLogger(__name__)

GENERATOR_MODELS = ("wav2lip",)
# Cached checkpoints tried, in order, when --checkpoint is not given.
DEFAULT_CHECKPOINTS = {"wav2lip": ("wav2lip_gan", "wav2lip")}


def default_checkpoint(model: str) -> Path:
    """The first default checkpoint of `model` found in the cache, or an error naming the download command."""
    entries = load_manifest()
    for name in DEFAULT_CHECKPOINTS[model]:
        if entries[name].path.exists():
            return entries[name].path
    first = DEFAULT_CHECKPOINTS[model][0]
    raise LipSyncError(f"no {model} checkpoint in the cache; run: lipsync download {first} "
                       f"(or pass --checkpoint FILE)")


def load_generator(model: str, checkpoint: str | Path | None) -> Wav2Lip:
    """Build the `model` generator and load `checkpoint` strictly (a path, a manifest name, or the default)."""
    if model not in GENERATOR_MODELS:
        raise LipSyncError(f"unknown model {model!r}; available: {', '.join(GENERATOR_MODELS)}")
    path = resolve_checkpoint(checkpoint) if checkpoint is not None else default_checkpoint(model)
    generator = Wav2Lip()
    load_into(generator, load_state_dict(path), what=f"checkpoint {path}")
    return generator


def load_synthesizer(model: str, checkpoint: str | Path | None, device: torch.device, dtype: torch.dtype
                     ) -> FaceSynthesizer:
    generator = load_generator(model, checkpoint)
    logger.info("%s generator on %s in %s", model, device, str(dtype).removeprefix("torch."))
    return Wav2LipSynthesizer(generator, device, dtype)
