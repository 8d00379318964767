"""MARLIN pretraining objectives: masked-patch reconstruction (MAE) plus a WGAN patch critic.

Axis legend: b batch, nm masked tokens, p = 3·pt·ph·pw values of one patch in (c, pt, ph, pw) order.

Reference: ControlNet/MARLIN model/marlin.py (`step`, `g_step`, `d_step`, `g_loss_fn`, `d_loss_fn`,
`gradient_penalty_fn`) and config/pretrain/marlin_vit_*.yaml (adv_weight 0.01, gp_weight 0.0, d_steps 1,
g_steps 1). No training loop lives here; a recipe calls these from its `training_step`.

Lipschitz constraint of the critic. WGAN needs one; we offer a gradient penalty (WGAN-GP, Gulrajani et al.
2017) rather than weight clipping, because clipping caps the critic's capacity and makes training hinge on
the clip range. The released MARLIN configs set gp_weight = 0.0 and the reference never clips weights, i.e. the
published models were trained with an unconstrained critic, kept in check only by the small adversarial
weight (0.01) and one critic step per generator step. `PretrainLossConfig` defaults to that released setting
for parity; set `gp_weight` (e.g. 10, the WGAN-GP default) for a properly constrained critic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MarlinConfig
from ..layers import Mlp, patchify
from ..model import select_tokens

__all__ = [
    "PretrainLossConfig",
    "PatchDiscriminator",
    "masked_patch_targets",
    "reconstruction_loss",
    "discriminator_loss",
    "generator_adversarial_loss",
    "gradient_penalty",
    "generator_objective",
    "discriminator_objective",
]


@dataclass(frozen=True)
class PretrainLossConfig:
    """Loss weights of MARLIN pretraining (released values, config/pretrain/marlin_vit_*.yaml).

    Args:
        adv_weight: λ_W, weight of the generator's adversarial term.
        gp_weight: weight of the critic's gradient penalty (0 = released setting, unconstrained critic).
        d_steps: critic updates per batch.
        g_steps: encoder/decoder updates per batch.
    """

    adv_weight: float = 0.01
    gp_weight: float = 0.0
    d_steps: int = 1
    g_steps: int = 1


class PatchDiscriminator(Mlp):
    """Per-patch critic: Linear(p, hidden) -> LeakyReLU(0.01) -> Linear(hidden, 1).

    Its keys `layers.{0,1}.linear.*` match the reference's `discriminator.*` (an MLP with
    build_activation=LeakyReLU), whose hidden width is int(decoder_embed_dim · mlp_ratio).

    Args:
        patch_dim: values per patch p = 3·tubelet·patch².
        hidden_dim: hidden width.
    """

    def __init__(self, patch_dim: int, hidden_dim: int) -> None:
        super().__init__(patch_dim, hidden_dim, 1, activation=nn.LeakyReLU)

    @classmethod
    def from_config(cls, cfg: MarlinConfig) -> "PatchDiscriminator":
        """The reference's critic size for a MARLIN architecture."""
        return cls(cfg.patch_dim, int(cfg.decoder_embed_dim * cfg.mlp_ratio))

    def forward(self, patches: Tensor) -> Tensor:
        """(..., p) patches -> (...) unbounded critic scores (higher = judged real)."""
        return super().forward(patches).squeeze(-1)


def masked_patch_targets(video: Tensor, visible_mask: Tensor, patch_size: int, tubelet_size: int) -> Tensor:
    """Training target: the pixels of the masked patches (reference `step`).

    Args:
        video: (b, 3, t, h, w) clip in [0, 1] (the same tensor fed to the model).
        visible_mask: (b, n) bool, True = visible.
        patch_size: spatial patch side.
        tubelet_size: frames per patch.

    Returns:
        (b, nm, p) in ascending masked-token order, aligned with `Marlin(video, visible_mask)` rows.
    """
    return select_tokens(patchify(video, patch_size, tubelet_size), ~visible_mask)


def reconstruction_loss(pred_patches: Tensor, target_patches: Tensor) -> Tensor:
    """Mean squared error over every value of every masked patch (reference `MSELoss()`), a scalar.

    Args:
        pred_patches: (b, nm, p) decoder output.
        target_patches: (b, nm, p) from `masked_patch_targets`.
    """
    if pred_patches.shape != target_patches.shape:
        raise ValueError(f"prediction {tuple(pred_patches.shape)} and target {tuple(target_patches.shape)} differ")
    return F.mse_loss(pred_patches.float(), target_patches.float())


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """WGAN critic loss E[D(fake)] − E[D(real)]; minimising it maximises E[D(real)] − E[D(fake)].

    Args:
        real_scores: critic scores of real patches, any shape.
        fake_scores: critic scores of reconstructed patches (detached from the generator), any shape.
    """
    return fake_scores.float().mean() - real_scores.float().mean()


def generator_adversarial_loss(fake_scores: Tensor) -> Tensor:
    """WGAN generator loss −E[D(fake)] (unweighted; multiply by `adv_weight`).

    Args:
        fake_scores: critic scores of reconstructed patches, with the graph to the generator.
    """
    return -fake_scores.float().mean()


def gradient_penalty(
    discriminator: nn.Module, real_patches: Tensor, fake_patches: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP term E[(‖∇D(x̂)‖₂ − 1)²] on random interpolates x̂ of real and fake patches.

    One mixing coefficient per patch (the reference draws a single one per batch; per-patch covers the
    segment between the two distributions better for the same cost).

    Args:
        discriminator: the critic.
        real_patches: (b, nm, p).
        fake_patches: (b, nm, p), detached from the generator.
        generator: RNG for the mixing coefficients.
    """
    generator_device = generator.device if generator is not None else "cpu"
    alpha = torch.rand(real_patches.shape[:-1] + (1,), generator=generator, device=generator_device)
    alpha = alpha.to(device=real_patches.device, dtype=real_patches.dtype)
    mixed = (alpha * real_patches.detach() + (1 - alpha) * fake_patches.detach()).requires_grad_(True)
    scores = discriminator(mixed)
    (gradients,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((gradients.flatten(0, -2).norm(2, dim=1) - 1) ** 2).mean()


def generator_objective(
    pred_patches: Tensor, target_patches: Tensor, discriminator: nn.Module, cfg: PretrainLossConfig
) -> dict[str, Tensor]:
    """Encoder/decoder loss: reconstruction + adv_weight · (−E[D(pred)]) (reference `g_step`).

    Returns:
        {"loss", "rec_loss", "adv_loss"}; "adv_loss" is already weighted, as the reference logs it.
    """
    rec = reconstruction_loss(pred_patches, target_patches)
    adv = cfg.adv_weight * generator_adversarial_loss(discriminator(pred_patches))
    return {"loss": rec + adv, "rec_loss": rec, "adv_loss": adv}


def discriminator_objective(
    pred_patches: Tensor,
    target_patches: Tensor,
    discriminator: nn.Module,
    cfg: PretrainLossConfig,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Critic loss on detached reconstructions, plus the gradient penalty when `gp_weight > 0` (`d_step`).

    Returns:
        {"loss", "d_loss"} and, with a penalty, "gp".
    """
    fake = pred_patches.detach()
    d_loss = discriminator_loss(discriminator(target_patches), discriminator(fake))
    if cfg.gp_weight > 0:
        penalty = gradient_penalty(discriminator, target_patches, fake, generator)
        return {"loss": d_loss + cfg.gp_weight * penalty, "d_loss": d_loss, "gp": penalty}
    return {"loss": d_loss, "d_loss": d_loss}
