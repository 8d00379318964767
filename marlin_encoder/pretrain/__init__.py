"""MARLIN pretraining pieces (no training loop): masking strategies and MAE + WGAN objectives."""
from . import masking
from ..checkpoint import filter_marlin_checkpoint
from .objectives import (
    PatchDiscriminator,
    PretrainLossConfig,
    discriminator_loss,
    discriminator_objective,
    generator_adversarial_loss,
    generator_objective,
    gradient_penalty,
    masked_patch_targets,
    reconstruction_loss,
)

__all__ = [
    "masking",
    "filter_marlin_checkpoint",
    "PatchDiscriminator",
    "PretrainLossConfig",
    "discriminator_loss",
    "discriminator_objective",
    "generator_adversarial_loss",
    "generator_objective",
    "gradient_penalty",
    "masked_patch_targets",
    "reconstruction_loss",
]
