"""Training a SyncNet expert (Wav2Lip's colour expert, 5 frames, or the 16-frame one for MARLIN).

Loss as Wav2Lip's `color_syncnet_train.py`: BCE of the cosine similarity between audio and face embeddings,
target 1 for in-sync pairs and 0 for off-sync ones; Adam at 1e-4 (hparams.syncnet_lr).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lipsync.config import OptimConfig
from lipsync.train.data import SyncWindowDataset, split_clips
from lipsync.train.recipe import Models, StepOutput
from lipsync.weights import load_into, load_state_dict
from syncnet import SyncNetColor, default_mel_steps, sync_loss


@dataclass(frozen=True)
class SyncNetRecipeConfig:
    """Attributes:
        data: preprocessed dataset root (`lipsync preprocess` output).
        num_frames: frames per face window (5: Wav2Lip's expert; 16: the MARLIN generator's).
        mel_steps: audio window in mel steps; None matches the frames (16 = 0.2 s for 5 frames, the released
            expert's; 51 for 16 frames).
        init_checkpoint: weights to start from (e.g. lipsync_expert.pth to fine-tune), or None.
        optim: optimiser settings.
    """

    data: str
    num_frames: int = 5
    mel_steps: int | None = None
    init_checkpoint: str | None = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))


class SyncNetRecipe:
    name = "syncnet"

    def __init__(self, config: SyncNetRecipeConfig) -> None:
        self.config = config

    def build_models(self, device: torch.device) -> dict[str, nn.Module]:
        model = SyncNetColor(num_frames=self.config.num_frames, mel_steps=self.config.mel_steps)
        if self.config.init_checkpoint:
            load_into(model, load_state_dict(self.config.init_checkpoint), what=self.config.init_checkpoint)
        return {"syncnet": model.to(device).train()}

    def optimizers(self) -> dict[str, tuple[list[str], OptimConfig]]:
        return {"syncnet": (["syncnet"], self.config.optim)}

    def datasets(self, seed: int):
        train, val = split_clips(Path(self.config.data))
        mel_steps = self.config.mel_steps or default_mel_steps(self.config.num_frames)
        make = lambda clips: SyncWindowDataset(clips, self.config.num_frames, mel_steps, seed)  # noqa: E731
        return make(train), (make(val) if val else None)

    def _loss(self, batch: dict[str, torch.Tensor], model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        audio_embedding, face_embedding = model(batch["mel"], batch["face"])
        loss = sync_loss(audio_embedding.float(), face_embedding.float(), batch["target"])
        similarity = F.cosine_similarity(audio_embedding.float(), face_embedding.float())
        accuracy = ((similarity > 0.5).float() == batch["target"][:, 0]).float().mean()
        return loss, accuracy

    def training_step(self, batch: dict[str, torch.Tensor], models: Models, step: int) -> StepOutput:
        loss, accuracy = self._loss(batch, models.train["syncnet"])
        return StepOutput(objectives=[("syncnet", loss)], metrics={"loss": loss.detach(), "accuracy": accuracy})

    def validation_step(self, batch: dict[str, torch.Tensor], models: Models) -> dict[str, Any]:
        loss, accuracy = self._loss(batch, models.raw["syncnet"])
        return {"loss": loss, "accuracy": accuracy}

    def on_validation(self, metrics: dict[str, float], step: int) -> None:
        pass

    def write_samples(self, batch: Any, models: Models, directory: Path, step: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def export_metadata(self) -> dict[str, dict[str, Any]]:
        return {"syncnet": {"arch": "syncnet_color", "config": asdict(self.config),
                            "num_frames": self.config.num_frames,
                            "mel_steps": self.config.mel_steps or default_mel_steps(self.config.num_frames)}}
