"""What a training recipe provides; the `Trainer` does everything else.

A recipe owns its models, datasets and losses. Its `training_step` returns objectives, each a loss paired
with the optimiser that minimises it. Contract: each loss only produces gradients for its own optimiser's
parameters (compute a generator's adversarial loss with the discriminator's parameters frozen, see
`frozen`), and a DDP-wrapped module is called once per step (batch real and fake through a discriminator
together).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from lipsync.config import OptimConfig


@dataclass
class StepOutput:
    """Objectives to minimise, as (optimiser name, scalar loss), and metrics to log."""

    objectives: list[tuple[str, torch.Tensor]]
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass
class Models:
    """The recipe's modules: `raw` as built, `train` the versions to call in a training step (DDP-wrapped
    for trainable modules when distributed, the raw module otherwise)."""

    raw: dict[str, nn.Module]
    train: dict[str, nn.Module]


class Recipe(Protocol):
    """One kind of training (SyncNet expert, lip-sync generator, MARLIN pretraining)."""

    name: str
    config: Any          # a frozen dataclass: saved to config.json and into every checkpoint

    def build_models(self, device: torch.device) -> dict[str, nn.Module]:
        """Every module, on `device`; frozen ones have requires_grad False."""
        ...

    def optimizers(self) -> dict[str, tuple[list[str], OptimConfig]]:
        """Optimiser name -> (names of the modules it trains, its settings)."""
        ...

    def datasets(self, seed: int) -> tuple[Dataset, Dataset | None]:
        """(training, validation) datasets whose items are keyed by `(index, epoch)` (see sampler); per-sample
        randomness comes from `numpy.random.default_rng([seed, epoch, index])`."""
        ...

    def training_step(self, batch: Any, models: Models, step: int) -> StepOutput:
        ...

    def validation_step(self, batch: Any, models: Models) -> dict[str, torch.Tensor | float]:
        ...

    def on_validation(self, metrics: dict[str, float], step: int) -> None:
        """React to averaged validation metrics (e.g. switch a loss weight on). Called on every rank."""
        ...

    def write_samples(self, batch: Any, models: Models, directory: Path, step: int) -> None:
        """Rank 0 only: write qualitative samples (e.g. PNG grids) for one validation batch."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Schedule state that is not configuration (loss-weight switches); saved in every checkpoint."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    def export_metadata(self) -> dict[str, dict[str, Any]]:
        """Per module, what to store in its safetensors metadata (arch, config) so it loads for inference."""
        ...


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily stop gradients into `module`'s parameters (they still flow through it to its input)."""
    flags = [parameter.requires_grad for parameter in module.parameters()]
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    try:
        yield module
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)
