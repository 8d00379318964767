"""MARLIN pretraining: masked-patch reconstruction plus a WGAN critic on the reconstructed patches.

Axis legend: b batch, c channels (RGB), t frames, h/w pixels, n tokens, nm masked tokens, p patch values.

Objectives (model/marlin.py of ControlNet/MARLIN; weights from config/pretrain/marlin_vit_*.yaml):
  "marlin"         MSE(reconstructed masked patches, their pixels) + λ_W · (−E[D(reconstruction)]), λ_W = 0.01;
  "discriminator"  E[D(reconstruction)] − E[D(real patches)] (WGAN critic, no gradient penalty: gp_weight 0).

How the "alternating" discriminator/generator steps are realised. The reference, per batch, first updates
the critic on a reconstruction of the current encoder-decoder, then runs the encoder-decoder again and
updates it against the just-updated critic (d_steps = g_steps = 1). Here both updates come from ONE forward
pass, each computed from the pre-step weights and applied in the same optimiser step: the critic loss sees
the reconstruction detached, and the generator's adversarial term goes through the critic with its
parameters frozen (`frozen`), so each loss only reaches its own optimiser's parameters, as the loop's
contract asks. The only difference from the reference is that the generator is pushed by the critic of
step k instead of k+1; with λ_W = 0.01 and one small AdamW step between the two, that is a second-order
effect. In exchange a step costs one encoder-decoder forward and backward instead of two (the reference's
critic loss does not detach the reconstruction, so its backward also runs through the encoder-decoder and
those gradients are thrown away), and each DDP-wrapped module is called once per step. We judged that the
better trade.

Learning rate: every `OptimConfig.lr` here is a BASE rate per 256 samples. The rate used is
`scaled_learning_rate(base, effective batch)` = base × effective_batch / 256 with effective_batch =
batch_size × grad_accum_steps × world_size (train.py of the reference scales by batch × GPUs; accumulation
adds samples per step the same way). It is applied in `MarlinPretrainRecipe.optimizers()`, the one place
that knows the loop's TrainConfig and the world size.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import nn

from lipsync.config import OptimConfig, TrainConfig
from lipsync.errors import LipSyncError
from lipsync.train.data import MarlinWindowDataset, split_clips
from lipsync.train.recipe import Models, StepOutput, frozen
from marlin_encoder import Marlin, MarlinConfig, patchify
from marlin_encoder.config import MARLIN_VIT_BASE_YTF, MARLIN_VIT_LARGE_YTF, MARLIN_VIT_SMALL_YTF
from marlin_encoder.masking import MaskConfig
from marlin_encoder.pretrain import (
    PatchDiscriminator,
    PretrainLossConfig,
    discriminator_loss,
    generator_objective,
    masked_patch_targets,
    reconstruction_loss,
)

logger = logging.getLogger(__name__)

# Architectures by --config name. "tiny" is the conformance model (conformance/vectors/marlin_tiny.config.json):
# 64 px, encoder 96 wide / 2 blocks, decoder 48 / 1, for tests and smoke runs.
PRETRAIN_ARCHITECTURES: dict[str, MarlinConfig] = {
    "vit_small": MARLIN_VIT_SMALL_YTF,
    "vit_base": MARLIN_VIT_BASE_YTF,
    "vit_large": MARLIN_VIT_LARGE_YTF,
    "tiny": replace(MARLIN_VIT_BASE_YTF, img_size=64, encoder_embed_dim=96, encoder_depth=2, encoder_num_heads=3,
                    decoder_embed_dim=48, decoder_depth=1, decoder_num_heads=3),
}
MASK_STRATEGIES = ("fasking", "fasking_reverse", "tube", "random", "frame")
LR_REFERENCE_BATCH = 256      # lr = base × effective batch / 256 (MARLIN train.py, as MAE/VideoMAE)


def _marlin_optim() -> OptimConfig:
    # marlin_vit_*.yaml: AdamW, betas (0.9, 0.95), eps 1e-8, weight decay 0, base lr 1.5e-4, cosine to a minimum
    # of 1e-5 (scaled by the same batch rule, hence the ratio).
    return OptimConfig(lr=1.5e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, schedule="cosine",
                       min_lr_ratio=1e-5 / 1.5e-4)


@dataclass(frozen=True)
class MarlinPretrainConfig:
    """Attributes:
        data: preprocessed dataset root (`lipsync preprocess` output: faces224 and, for Fasking, landmarks68).
        config: architecture, one of `PRETRAIN_ARCHITECTURES` ("vit_small", "vit_base", "vit_large", "tiny").
        marlin_overrides: `MarlinConfig` fields replaced on top of `config`, e.g. {"img_size": 32}. n_frames
            must stay 16: the decoder's positional table is built for 16 frames.
        mask: "fasking" (facial regions masked first), "fasking_reverse", "tube", "random" or "frame".
        mask_ratio: fraction of tokens masked (mask_percentage_target 0.9).
        temporal_sample_rate: source frames between sampled frames (2 in marlin_vit_*.yaml).
        adv_weight: λ_W of the generator's adversarial term (0.01).
        optim: encoder-decoder optimiser; `lr` is the base rate per 256 samples (see the module docstring).
        discriminator_optim: critic optimiser (the reference uses the same settings for both).
        warmup_fraction: linear warm-up over this fraction of `max_steps` (40 of 2000 epochs = 0.02) when the
            optimiser's own `warmup_steps` is 0; an explicit `warmup_steps` wins.
        grad_checkpointing: recompute transformer blocks in backward (ViT-L on small GPUs).
        init_checkpoint: a MARLIN file to start from (`*.full.pt`, `*.encoder.pt`: encoder only, or our
            safetensors); its architecture must match `config` + `marlin_overrides`.
    """

    data: str
    config: str = "vit_base"
    marlin_overrides: dict[str, Any] = field(default_factory=dict)
    mask: str = "fasking"
    mask_ratio: float = 0.9
    temporal_sample_rate: int = 2
    adv_weight: float = 0.01
    optim: OptimConfig = field(default_factory=_marlin_optim)
    discriminator_optim: OptimConfig = field(default_factory=_marlin_optim)
    warmup_fraction: float = 0.02
    grad_checkpointing: bool = False
    init_checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.config not in PRETRAIN_ARCHITECTURES:
            raise LipSyncError(f"--config must be one of {', '.join(PRETRAIN_ARCHITECTURES)}, got {self.config!r}")
        if self.mask not in MASK_STRATEGIES:
            raise LipSyncError(f"--mask must be one of {', '.join(MASK_STRATEGIES)}, got {self.mask!r}")
        if not 0 <= self.mask_ratio < 1:
            raise LipSyncError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.temporal_sample_rate < 1:
            raise LipSyncError(f"temporal_sample_rate must be at least 1, got {self.temporal_sample_rate}")
        if not 0 <= self.warmup_fraction < 1:
            raise LipSyncError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        frames = self.architecture.n_frames      # building the architecture validates the overrides
        if frames != 16:
            raise LipSyncError(f"MARLIN pretraining needs n_frames 16 (the decoder's table), got {frames}")

    @property
    def architecture(self) -> MarlinConfig:
        """The MarlinConfig this run trains."""
        try:
            return MarlinConfig.from_dict({**PRETRAIN_ARCHITECTURES[self.config].to_dict(), **self.marlin_overrides})
        except ValueError as error:
            raise LipSyncError(f"marlin_overrides: {error}") from None

    @property
    def mask_config(self) -> MaskConfig:
        cfg = self.architecture
        return MaskConfig(strategy=self.mask, mask_ratio=self.mask_ratio, patch_size=cfg.patch_size,
                          tubelet_size=cfg.tubelet_size, n_frames=cfg.n_frames, img_size=cfg.img_size)


def effective_batch_size(train: TrainConfig, world_size: int) -> int:
    """Samples per optimiser step over all processes: batch_size × grad_accum_steps × world_size."""
    return train.batch_size * train.grad_accum_steps * world_size


def scaled_learning_rate(base_lr: float, effective_batch: int) -> float:
    """The linear scaling rule: base_lr × effective_batch / 256 (MARLIN train.py)."""
    return base_lr * effective_batch / LR_REFERENCE_BATCH


class MarlinPretrainRecipe:
    """MARLIN masked-autoencoder pretraining with the WGAN critic.

    Args:
        config: the recipe's settings.
        train: the loop's settings (batch size and accumulation enter the learning-rate rule); pass the same
            TrainConfig that the Trainer gets.
    """

    name = "marlin"

    def __init__(self, config: MarlinPretrainConfig, train: TrainConfig) -> None:
        self.config = config
        self.train = train
        self.architecture = config.architecture
        self.losses = PretrainLossConfig(adv_weight=config.adv_weight)

    # -- models and optimisers ----------------------------------------------------------------------

    def build_models(self, device: torch.device) -> dict[str, nn.Module]:
        marlin = self._initial_marlin()
        marlin.set_grad_checkpointing(self.config.grad_checkpointing)
        critic = PatchDiscriminator.from_config(self.architecture)
        return {"marlin": marlin.to(device).train(), "discriminator": critic.to(device).train()}

    def _initial_marlin(self) -> Marlin:
        path = self.config.init_checkpoint
        if not path:
            return Marlin(self.architecture, as_feature_extractor=False)
        try:
            loaded = Marlin.from_file(path, config=self.architecture)
        except (OSError, ValueError) as error:       # CheckpointMismatchError is a ValueError
            raise LipSyncError(f"--init {path}: {error}") from None
        if not loaded.as_feature_extractor:
            return loaded
        # An encoder-only release: its encoder, with a freshly initialised decoder and projection.
        marlin = Marlin(self.architecture, as_feature_extractor=False)
        marlin.encoder.load_state_dict(loaded.encoder.state_dict(), strict=True)
        logger.info("initialised the encoder from %s; decoder and projection start from scratch", path)
        return marlin

    def optimizers(self) -> dict[str, tuple[list[str], OptimConfig]]:
        world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        batch = effective_batch_size(self.train, world_size)
        specs = {"marlin": (["marlin"], self._for_run(self.config.optim, batch)),
                 "discriminator": (["discriminator"], self._for_run(self.config.discriminator_optim, batch))}
        logger.info("effective batch %d: lr %.3g (marlin), %.3g (discriminator), %d warm-up steps", batch,
                    specs["marlin"][1].lr, specs["discriminator"][1].lr, specs["marlin"][1].warmup_steps)
        return specs

    def _for_run(self, optim: OptimConfig, effective_batch: int) -> OptimConfig:
        warmup = optim.warmup_steps or round(self.config.warmup_fraction * self.train.max_steps)
        return replace(optim, lr=scaled_learning_rate(optim.lr, effective_batch), warmup_steps=warmup)

    # -- data -------------------------------------------------------------------------------------

    def datasets(self, seed: int):
        train, val = split_clips(Path(self.config.data))
        make = lambda clips: MarlinWindowDataset(clips, self.config.mask_config,  # noqa: E731
                                                 self.config.temporal_sample_rate, seed)
        return make(train), (make(val) if val else None)

    # -- steps ------------------------------------------------------------------------------------

    def _reconstruct(self, batch: dict[str, torch.Tensor], marlin: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) masked patches, each (b, nm, p)."""
        video, visible = batch["video"], batch["visible_mask"]
        predicted = marlin(video, visible)
        target = masked_patch_targets(video, visible, self.architecture.patch_size, self.architecture.tubelet_size)
        return predicted, target

    def training_step(self, batch: dict[str, torch.Tensor], models: Models, step: int) -> StepOutput:
        predicted, target = self._reconstruct(batch, models.train["marlin"])
        # Generator: reconstruction + λ_W · adversarial, through the critic with its parameters frozen.
        with frozen(models.raw["discriminator"]) as critic:
            generator = generator_objective(predicted, target, critic, self.losses)
        # Critic: one call on real and detached fake patches together (one DDP forward per step).
        scores = models.train["discriminator"](torch.cat([target, predicted.detach()]))
        real_scores, fake_scores = scores.split([target.shape[0], predicted.shape[0]])
        critic_loss = discriminator_loss(real_scores, fake_scores)
        return StepOutput(
            objectives=[("marlin", generator["loss"]), ("discriminator", critic_loss)],
            metrics={"rec_loss": generator["rec_loss"].detach(), "adv_loss": generator["adv_loss"].detach(),
                     "d_loss": critic_loss.detach()})

    def validation_step(self, batch: dict[str, torch.Tensor], models: Models) -> dict[str, Any]:
        predicted, target = self._reconstruct(batch, models.raw["marlin"])
        return {"rec_loss": reconstruction_loss(predicted, target)}

    def on_validation(self, metrics: dict[str, float], step: int) -> None:
        pass

    def write_samples(self, batch: dict[str, torch.Tensor], models: Models, directory: Path, step: int) -> None:
        """`directory/step_XXXXXXX.png`: rows original / masked input / reconstruction (visible patches kept),
        columns the first frame of every tubelet of the batch's first clip."""
        import cv2

        from lipsync.io.atomic import atomic_path

        cfg = self.architecture
        video, visible = batch["video"][:1].float(), batch["visible_mask"][:1]
        predicted = models.raw["marlin"](video, visible).float()
        patches = patchify(video, cfg.patch_size, cfg.tubelet_size)                    # (1, n, p)
        masked = patches.clone()
        masked[~visible] = 0.5                                                         # grey, as the reference
        reconstructed = patches.clone()
        reconstructed[~visible] = predicted.reshape(-1, patches.shape[-1])
        rows = [_unpatchify(grid, cfg) for grid in (patches, masked, reconstructed)]    # (1, c, t, h, w) each
        frames = slice(None, None, cfg.tubelet_size)
        image = torch.cat([rearrange(row[0, :, frames], "c t h w -> h (t w) c") for row in rows], dim=0)
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()[..., ::-1]    # RGB -> BGR
        if cfg.img_size < 112:
            # Small training sizes: enlarge (nearest) so the patches stay visible.
            scale = -(-112 // cfg.img_size)
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / f"step_{step:07d}.png") as temporary:
            if not cv2.imwrite(str(temporary), np.ascontiguousarray(image)):
                raise OSError(f"could not write {temporary}")

    # -- checkpoint state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def export_metadata(self) -> dict[str, dict[str, Any]]:
        # "config" is the MarlinConfig dict that `marlin_encoder.Marlin.from_file` reads from the safetensors;
        # the critic is `PatchDiscriminator.from_config` of the same config.
        architecture = self.architecture.to_dict()
        return {
            "marlin": {"arch": "marlin", "config": architecture, "as_feature_extractor": False,
                       "recipe": asdict(self.config)},
            "discriminator": {"arch": "marlin_patch_discriminator", "config": architecture},
        }


def _unpatchify(patches: torch.Tensor, cfg: MarlinConfig) -> torch.Tensor:
    """(b, n, c·pt·p·p) -> (b, c, t, h, w): the inverse of `marlin_encoder.patchify`."""
    side = cfg.grid_size
    return rearrange(patches, "b (nt nh nw) (c pt ph pw) -> b c (nt pt) (nh ph) (nw pw)", nh=side, nw=side,
                     pt=cfg.tubelet_size, ph=cfg.patch_size, pw=cfg.patch_size)
