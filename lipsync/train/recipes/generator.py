"""Training a lip-sync generator: the classic Wav2Lip (5-frame windows) or the MARLIN generator (16).

Losses and schedule follow Wav2Lip's `hq_wav2lip_train.py` / `wav2lip_train.py`:
    loss = w_sync * sync + w_disc * adversarial + (1 - w_sync - w_disc) * L1
with w_sync = 0 until the validation sync loss falls below 0.75, then 0.03 with the visual-quality
discriminator (w_disc = 0.07) or 0.01 without it; Adam at 1e-4 with betas (0.5, 0.999) when training
with the discriminator. The switch is state, saved in checkpoints and restored on resume.

The frozen sync expert: Wav2Lip never called `.eval()` on it, so its BatchNorm normalised with each
batch's statistics (and kept updating its running statistics). `expert_batchnorm="running"` (default)
uses the stored statistics: the expert is then a fixed function of its input, its loss does not depend on
what else is in the batch, and the expert's weights are never modified. `"batch"` reproduces the reference
(batch statistics) without modifying the stored statistics (momentum 0).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lipsync.config import OptimConfig
from lipsync.models.marlin_lipsync import PRESETS, MarlinLipSync, MarlinLipSyncConfig, tiny_config
from lipsync.models.wav2lip import Wav2Lip, Wav2LipDiscQual
from lipsync.train.data import GeneratorWindowDataset, split_clips
from lipsync.train.recipe import Models, StepOutput, frozen
from lipsync.weights import load_into, load_state_dict, resolve_checkpoint
from syncnet import SyncNetColor, default_mel_steps, sync_loss

logger = logging.getLogger(__name__)

GENERATOR_ARCHITECTURES = ("wav2lip", "marlin")


@dataclass(frozen=True)
class GeneratorRecipeConfig:
    """Attributes:
        data: preprocessed dataset root.
        model: "wav2lip" or "marlin".
        marlin: for "marlin": a preset ("vit_small", "vit_base", "vit_large", "tiny") ...
        marlin_overrides: ... and MarlinLipSyncConfig fields replacing the preset's.
        marlin_checkpoint: MARLIN encoder weights to start from (file or manifest name); None trains the
            encoder from scratch (the paper's "Wav2Lip + ViT" baseline).
        init_checkpoint: generator weights to start from (fine-tuning), or None.
        expert_checkpoint: the frozen sync expert (SyncNetColor with the generator's window length); None
            trains without the sync loss.
        expert_batchnorm: "running" or "batch" (see the module docstring).
        discriminator: train with Wav2Lip's visual-quality discriminator (the GAN variant).
        sync_threshold: validation sync loss below which the sync loss is switched on.
        sync_weight: its weight once on; None means 0.03 with the discriminator, 0.01 without.
        disc_weight: weight of the adversarial loss (with the discriminator).
        optim, disc_optim: optimiser settings; the default betas are the GAN recipe's (0.5, 0.999).
    """

    data: str
    model: str = "wav2lip"
    marlin: str = "vit_base"
    marlin_overrides: dict[str, Any] = field(default_factory=dict)
    marlin_checkpoint: str | None = None
    init_checkpoint: str | None = None
    expert_checkpoint: str | None = None
    expert_batchnorm: str = "running"
    discriminator: bool = True
    sync_threshold: float = 0.75
    sync_weight: float | None = None
    disc_weight: float = 0.07
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, betas=(0.5, 0.999)))
    disc_optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, betas=(0.5, 0.999)))

    def __post_init__(self) -> None:
        if self.model not in GENERATOR_ARCHITECTURES:
            raise ValueError(f"model must be one of {GENERATOR_ARCHITECTURES}, got {self.model!r}")
        if self.expert_batchnorm not in ("running", "batch"):
            raise ValueError(f"expert_batchnorm must be running or batch, got {self.expert_batchnorm!r}")

    def marlin_config(self) -> MarlinLipSyncConfig:
        from dataclasses import replace

        base = tiny_config() if self.marlin == "tiny" else PRESETS[self.marlin]
        return replace(base, **self.marlin_overrides)

    @property
    def num_frames(self) -> int:
        return 5 if self.model == "wav2lip" else self.marlin_config().num_frames


def build_generator(config: GeneratorRecipeConfig) -> nn.Module:
    if config.model == "wav2lip":
        generator: nn.Module = Wav2Lip()
    elif config.marlin_checkpoint:
        marlin_state = load_state_dict(resolve_checkpoint(config.marlin_checkpoint))
        generator = MarlinLipSync.from_marlin(config.marlin_config(), marlin_state)
    else:
        generator = MarlinLipSync(config.marlin_config())
    if config.init_checkpoint:
        load_into(generator, load_state_dict(resolve_checkpoint(config.init_checkpoint)), what=config.init_checkpoint)
    return generator


def generator_metadata(config: GeneratorRecipeConfig) -> dict[str, Any]:
    """What inference needs to rebuild the generator from its safetensors file."""
    if config.model == "wav2lip":
        return {"arch": "wav2lip", "config": {}}
    return {"arch": "marlin_lipsync", "config": config.marlin_config().to_dict()}


class GeneratorRecipe:
    name = "generator"

    def __init__(self, config: GeneratorRecipeConfig) -> None:
        self.config = config
        self.sync_on = False          # the schedule's state (saved with checkpoints)

    @property
    def sync_weight(self) -> float:
        if not self.sync_on:
            return 0.0
        if self.config.sync_weight is not None:
            return self.config.sync_weight
        return 0.03 if self.config.discriminator else 0.01

    @property
    def disc_weight(self) -> float:
        return self.config.disc_weight if self.config.discriminator else 0.0

    def build_models(self, device: torch.device) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {"generator": build_generator(self.config).to(device).train()}
        if self.config.discriminator:
            models["disc"] = Wav2LipDiscQual().to(device).train()
        if self.config.expert_checkpoint:
            expert = SyncNetColor(num_frames=self.config.num_frames)
            path = resolve_checkpoint(self.config.expert_checkpoint)
            load_into(expert, load_state_dict(path), what=str(path))
            expert.requires_grad_(False)
            if self.config.expert_batchnorm == "running":
                expert.eval()
            else:
                for module in expert.modules():
                    if isinstance(module, nn.BatchNorm2d):
                        module.momentum = 0.0      # batch statistics, stored statistics untouched
                expert.train()
            models["expert"] = expert.to(device)
        return models

    def optimizers(self) -> dict[str, tuple[list[str], OptimConfig]]:
        optimizers = {"generator": (["generator"], self.config.optim)}
        if self.config.discriminator:
            optimizers["disc"] = (["disc"], self.config.disc_optim)
        return optimizers

    def datasets(self, seed: int):
        train, val = split_clips(Path(self.config.data))
        # The expert's audio window covers the generator's whole window (16 steps per 5 frames at 25 fps).
        make = lambda clips: GeneratorWindowDataset(clips, self.config.num_frames,  # noqa: E731
                                                    default_mel_steps(self.config.num_frames), seed)
        return make(train), (make(val) if val else None)

    def _expert_loss(self, generated: torch.Tensor, expert_mel: torch.Tensor, expert: nn.Module) -> torch.Tensor:
        # Lower halves of the window's frames stacked frame-major, as the expert was trained.
        lower = generated[:, :, :, generated.shape[3] // 2 :]
        faces = rearrange(lower, "b c t h w -> b (t c) h w")
        audio_embedding, face_embedding = expert(expert_mel, faces)
        target = torch.ones(faces.shape[0], 1, device=faces.device)
        return sync_loss(audio_embedding.float(), face_embedding.float(), target)

    def _losses(self, batch: dict[str, torch.Tensor], models: Models, generator: nn.Module
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        generated = generator(batch["frame_mels"], batch["input"])
        losses = {"l1": F.l1_loss(generated.float(), batch["target"])}
        if "expert" in models.raw:
            losses["sync"] = self._expert_loss(generated, batch["expert_mel"], models.raw["expert"])
        if "disc" in models.raw:
            with frozen(models.raw["disc"]):
                losses["adversarial"] = models.raw["disc"].perceptual_forward(generated).float()
        return generated, losses

    def training_step(self, batch: dict[str, torch.Tensor], models: Models, step: int) -> StepOutput:
        generated, losses = self._losses(batch, models, models.train["generator"])
        sync_weight, disc_weight = self.sync_weight, self.disc_weight
        total = (1 - sync_weight - disc_weight) * losses["l1"]
        if sync_weight:
            total = total + sync_weight * losses["sync"]
        if disc_weight:
            total = total + disc_weight * losses["adversarial"]
        objectives = [("generator", total)]
        metrics = {name: value.detach() for name, value in losses.items()}
        if "disc" in models.raw:
            # Real and generated frames through the discriminator in one call (DDP: one forward per step).
            both = torch.cat((batch["target"], generated.detach()), dim=0)
            probabilities = rearrange(models.train["disc"](both), "(t b) 1 -> b t", b=both.shape[0])
            real, fake = probabilities.float().chunk(2, dim=0)
            with torch.autocast(device_type=real.device.type, enabled=False):   # BCE is not autocast-safe
                disc_loss = (F.binary_cross_entropy(real, torch.ones_like(real))
                             + F.binary_cross_entropy(fake, torch.zeros_like(fake)))
            objectives.append(("disc", disc_loss))
            metrics["disc"] = disc_loss.detach()
        metrics["sync_weight"] = sync_weight
        return StepOutput(objectives=objectives, metrics=metrics)

    def validation_step(self, batch: dict[str, torch.Tensor], models: Models) -> dict[str, Any]:
        _, losses = self._losses(batch, models, models.raw["generator"])
        return losses

    def on_validation(self, metrics: dict[str, float], step: int) -> None:
        if not self.sync_on and "sync" in metrics and metrics["sync"] < self.config.sync_threshold:
            self.sync_on = True
            logger.info("validation sync loss %.3f < %.2f at step %d: sync loss on with weight %.2f",
                        metrics["sync"], self.config.sync_threshold, step, self.sync_weight)

    def write_samples(self, batch: dict[str, torch.Tensor], models: Models, directory: Path, step: int) -> None:
        generated = models.raw["generator"](batch["frame_mels"][:4], batch["input"][:4]).float()
        rows = []
        for sample in range(generated.shape[0]):
            tiles = [batch["target"][sample], batch["input"][sample, :3], batch["input"][sample, 3:],
                     generated[sample]]
            # One row per sample: target | masked input | reference | generated, frames side by side.
            row = [rearrange(tile, "c t h w -> h (t w) c") for tile in tiles]
            rows.append(torch.cat(row, dim=0))
        image = (torch.cat(rows, dim=0).clamp(0, 1) * 255).round().byte().cpu().numpy()
        directory.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(directory / f"step_{step:07d}.png"), np.ascontiguousarray(image))

    def state_dict(self) -> dict[str, Any]:
        return {"sync_on": self.sync_on}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sync_on = bool(state["sync_on"])

    def export_metadata(self) -> dict[str, dict[str, Any]]:
        metadata: dict[str, dict[str, Any]] = {"generator": generator_metadata(self.config)}
        if self.config.discriminator:
            metadata["disc"] = {"arch": "wav2lip_disc_qual", "config": {}}
        if self.config.expert_checkpoint:
            metadata["expert"] = {"arch": "syncnet_color", "num_frames": self.config.num_frames,
                                  "mel_steps": default_mel_steps(self.config.num_frames)}
        return metadata
