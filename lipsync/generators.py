"""Which generator a checkpoint holds, and how to build its synthesizer for the pipeline."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from lipsync.errors import LipSyncError
from lipsync.models.inference import fold_batch_norms
from lipsync.models.marlin_lipsync import MarlinLipSync, MarlinLipSyncConfig
from lipsync.models.wav2lip import Wav2Lip
from lipsync.synthesis import FaceSynthesizer, Wav2LipSynthesizer, WindowedSynthesizer
from lipsync.weights import load_into, load_manifest, load_state_dict, read_safetensors_metadata, resolve_checkpoint

logger = logging.getLogger(__name__)

GENERATOR_MODELS = ("wav2lip", "marlin")
# The architecture names written into our safetensors metadata, by model.
_ARCHITECTURES = {"wav2lip": "wav2lip", "marlin": "marlin_lipsync"}
# Cached checkpoints tried, in order, when --checkpoint is not given.
DEFAULT_CHECKPOINTS = {"wav2lip": ("wav2lip_gan", "wav2lip")}


def default_checkpoint(model: str) -> Path:
    """The first default checkpoint of `model` found in the cache, or an error naming the download command."""
    if model not in DEFAULT_CHECKPOINTS:
        raise LipSyncError(f"--model {model} has no published weights; pass --checkpoint FILE "
                           f"(from lipsync train generator --model {model})")
    entries = load_manifest()
    for name in DEFAULT_CHECKPOINTS[model]:
        if entries[name].path.exists():
            return entries[name].path
    first = DEFAULT_CHECKPOINTS[model][0]
    raise LipSyncError(f"no {model} checkpoint in the cache; run: lipsync download {first} "
                       f"(or pass --checkpoint FILE)")


def _metadata(path: Path) -> dict[str, str]:
    return read_safetensors_metadata(path) if path.suffix == ".safetensors" else {}


def load_generator(model: str | None, checkpoint: str | Path | None) -> nn.Module:
    """Build the generator and load `checkpoint` strictly (a path, a manifest name, or the default).

    Args:
        model: "wav2lip" or "marlin"; None takes it from the checkpoint's metadata (our safetensors files
            record it), else "wav2lip".
        checkpoint: weights; None uses the default cached checkpoint of `model`.
    """
    if model is not None and model not in GENERATOR_MODELS:
        raise LipSyncError(f"unknown model {model!r}; available: {', '.join(GENERATOR_MODELS)}")
    path = resolve_checkpoint(checkpoint) if checkpoint is not None else default_checkpoint(model or "wav2lip")
    metadata = _metadata(path)
    recorded = {arch: name for name, arch in _ARCHITECTURES.items()}.get(metadata.get("arch", ""))
    if model is not None and recorded is not None and recorded != model:
        raise LipSyncError(f"{path} holds a {recorded} generator, not {model}; use --model {recorded}")
    model = model or recorded or "wav2lip"
    if model == "marlin" and "config" not in metadata:
        raise LipSyncError(f"{path} has no MARLIN generator config in its metadata; use a checkpoint "
                           f"written by lipsync train generator --model marlin")
    # Half-precision checkpoints exist in the wild; assigned tensors keep their dtype, so widen them here.
    state = {key: value.float() if value.is_floating_point() else value
             for key, value in load_state_dict(path).items()}
    # Built without storage, then given the loaded tensors: the weights are in memory once, not twice.
    with torch.device("meta"):
        if model == "marlin":
            generator: nn.Module = MarlinLipSync(MarlinLipSyncConfig.from_dict(json.loads(metadata["config"])))
        else:
            generator = Wav2Lip()
    load_into(generator, state, what=f"checkpoint {path}", assign=True)
    return generator


def load_synthesizer(model: str | None, checkpoint: str | Path | None, device: torch.device, dtype: torch.dtype
                     ) -> FaceSynthesizer | WindowedSynthesizer:
    # This generator is ours alone and only runs inference, so its batch norms can go.
    generator = fold_batch_norms(load_generator(model, checkpoint))
    logger.info("%s generator on %s in %s", type(generator).__name__, device, str(dtype).removeprefix("torch."))
    if isinstance(generator, MarlinLipSync):
        return WindowedSynthesizer(generator, device, dtype)
    return Wav2LipSynthesizer(generator, device, dtype)
