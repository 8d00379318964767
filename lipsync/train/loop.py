"""The one training loop. Recipes differ only in models, data and the training step.

The Trainer owns: torchrun/DDP (gloo on CPU, NCCL on GPU), bf16 autocast, gradient accumulation, learning-
rate schedules, validation, atomic checkpoints and exact resume (models, optimisers, step, data position,
RNG, the recipe's schedule state), metrics.jsonl and a tqdm bar on rank 0.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from lipsync.config import OptimConfig, TrainConfig
from lipsync.errors import LipSyncError
from lipsync.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_json,
)
from lipsync.train.recipe import Models, Recipe
from lipsync.train.sampler import ResumableSampler
from lipsync.utils.device import autocast, resolve_device
from lipsync.utils.distributed import DistributedContext, all_reduce_mean, barrier, init_distributed

logger = logging.getLogger(__name__)


def learning_rate(optim: OptimConfig, step: int, max_steps: int) -> float:
    """Warm-up then constant or cosine decay; `step` counts optimiser steps from 0."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return optim.lr * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * cosine)


def _training_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float32


class Trainer:
    """Runs `recipe` according to `config`; call `fit()`.

    Args:
        recipe: models, data and losses.
        config: loop settings.
        progress: a tqdm class for rank 0's progress bar, or None.
    """

    def __init__(self, recipe: Recipe, config: TrainConfig, progress: Any = None) -> None:
        self.recipe = recipe
        self.config = config
        self.recipe_config = recipe.config
        self.progress = progress
        self.run_dir = Path(config.run_dir)
        self.context: DistributedContext = init_distributed(resolve_device(config.device))
        self.device = self.context.device
        self.dtype = _training_dtype(config.precision, self.device)
        torch.manual_seed(config.seed)     # identical initial weights on every rank
        raw = recipe.build_models(self.device)
        self.optimizer_specs = recipe.optimizers()
        trainable = {name for names, _ in self.optimizer_specs.values() for name in names}
        wrapped = {}
        for name, module in raw.items():
            if name in trainable and self.context.is_distributed:
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                wrapped[name] = DistributedDataParallel(module, device_ids=device_ids)
            else:
                wrapped[name] = module
        self.models = Models(raw=raw, train=wrapped)
        self.optimizers = {
            name: torch.optim.AdamW([p for module in names for p in raw[module].parameters() if p.requires_grad],
                                    lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)
            for name, (names, optim) in self.optimizer_specs.items()
        }
        self.train_set, self.val_set = recipe.datasets(config.seed)
        self.sampler = ResumableSampler(len(self.train_set), self.context.rank, self.context.world_size,
                                        seed=config.seed)
        self.step = 0
        self.epoch = 0
        self.samples_into_epoch = 0

    # -- data -------------------------------------------------------------------------------------

    def _loader(self, dataset: Dataset, sampler: ResumableSampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler,
                          num_workers=self.config.num_workers, drop_last=False,
                          pin_memory=self.device.type == "cuda", persistent_workers=False)

    def _batches(self):
        """Endless training batches, tracking (epoch, samples into epoch) for resume."""
        while True:
            self.sampler.set_epoch(self.epoch, skip=self.samples_into_epoch)
            for batch in self._loader(self.train_set, self.sampler):
                self.samples_into_epoch += _batch_size(batch)
                yield batch
            self.epoch += 1
            self.samples_into_epoch = 0

    # -- checkpoints ------------------------------------------------------------------------------

    def _training_state(self) -> dict[str, Any]:
        states = [rng_state()]
        if self.context.is_distributed:
            gathered: list[Any] = [None] * self.context.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        return {
            "step": self.step, "epoch": self.epoch, "samples_into_epoch": self.samples_into_epoch,
            "world_size": self.context.world_size,
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "recipe": self.recipe.state_dict(), "rng": states,
            "config": json.dumps(asdict(self.config)), "recipe_config": json.dumps(_as_dict(self.recipe_config)),
        }

    def save(self) -> None:
        state = self._training_state()     # collective: every rank takes part
        if self.context.is_main:
            metadata = {name: {**meta, "step": self.step}
                        for name, meta in self.recipe.export_metadata().items()}
            save_checkpoint(self.run_dir, self.step, self.models.raw, metadata, state, self.config.keep_checkpoints)
        barrier(self.context)

    def resume(self) -> bool:
        """Continue from `run_dir`'s latest checkpoint, if there is one."""
        directory = latest_checkpoint(self.run_dir)
        if directory is None:
            return False
        state = load_checkpoint(directory, self.models.raw)
        if state["world_size"] != self.context.world_size:
            raise LipSyncError(f"{directory} was written by {state['world_size']} processes; resume with the same "
                               f"number (now {self.context.world_size}) to continue exactly")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            # Loaded tensors can share storage at unaligned offsets, and the vectorised optimiser kernels
            # round differently on those (seen: 1e-8 after one step); fresh copies make resume bit-exact.
            for parameter_state in optimizer.state.values():
                for key, value in parameter_state.items():
                    if isinstance(value, torch.Tensor):
                        parameter_state[key] = value.clone()
        self.recipe.load_state_dict(state["recipe"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.samples_into_epoch = state["samples_into_epoch"]
        set_rng_state(state["rng"][self.context.rank])
        logger.info("resumed from %s at step %d", directory, self.step)
        return True

    # -- loop -------------------------------------------------------------------------------------

    def fit(self) -> dict[str, float]:
        """Train up to `max_steps`, resuming if a checkpoint exists. Returns the last logged metrics."""
        config = self.config
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", {"train": asdict(config), "recipe": _as_dict(self.recipe_config),
                                                      "recipe_name": self.recipe.name,
                                                      "world_size": self.context.world_size})
        self.resume()
        bar = None
        if self.progress is not None and self.context.is_main:
            bar = self.progress(total=config.max_steps, initial=self.step, unit="step", desc=self.recipe.name)
        batches = self._batches()
        last_metrics: dict[str, float] = {}
        started = time.perf_counter()
        while self.step < config.max_steps:
            metrics = self._optimizer_step(batches)
            self.step += 1
            if bar is not None:
                bar.update(1)
            if self.step % config.log_every == 0 or self.step == config.max_steps:
                last_metrics = all_reduce_mean(metrics, self.context)
                last_metrics["seconds_per_step"] = (time.perf_counter() - started) / max(1, config.log_every)
                started = time.perf_counter()
                self._log({"step": self.step, "split": "train", **last_metrics})
                if bar is not None:
                    bar.set_postfix({key: f"{value:.4g}" for key, value in list(last_metrics.items())[:3]})
            if config.val_every and self.val_set is not None and self.step % config.val_every == 0:
                self.validate()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save()
        if not (config.checkpoint_every and self.step % config.checkpoint_every == 0):
            self.save()
        if bar is not None:
            bar.close()
        return last_metrics

    def _optimizer_step(self, batches) -> dict[str, float]:
        config = self.config
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(config.grad_accum_steps):
            batch = _to_device(next(batches), self.device)
            last = micro == config.grad_accum_steps - 1
            # DDP decides at forward time whether this backward all-reduces: one context for both.
            with self._no_sync(not last):
                with autocast(self.device, self.dtype):
                    output = self.recipe.training_step(batch, self.models, self.step)
                loss = sum(objective for _, objective in output.objectives) / config.grad_accum_steps
                loss.backward()
            for key, value in output.metrics.items():
                totals[key] = totals.get(key, 0.0) + float(value) / config.grad_accum_steps
        for name, optimizer in self.optimizers.items():
            modules, optim = self.optimizer_specs[name]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(optim, self.step, config.max_steps)
            if optim.grad_clip:
                parameters = [p for module in modules for p in self.models.raw[module].parameters()]
                torch.nn.utils.clip_grad_norm_(parameters, optim.grad_clip)
            optimizer.step()
        return totals

    def _no_sync(self, skip_sync: bool):
        if not skip_sync or not self.context.is_distributed:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for module in self.models.train.values():
            if isinstance(module, DistributedDataParallel):
                stack.enter_context(module.no_sync())
        return stack

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Average the recipe's validation metrics over the first `val_batches` batches and all ranks."""
        assert self.val_set is not None
        sampler = ResumableSampler(len(self.val_set), self.context.rank, self.context.world_size,
                                   seed=self.config.seed, shuffle=False)
        modes = {name: module.training for name, module in self.models.raw.items()}
        for name, module in self.models.raw.items():
            if any(p.requires_grad for p in module.parameters()):
                module.eval()
        totals: dict[str, float] = {}
        count = 0
        first_batch = None
        for batch in self._loader(self.val_set, sampler):
            batch = _to_device(batch, self.device)
            first_batch = first_batch if first_batch is not None else batch
            with autocast(self.device, self.dtype):
                metrics = self.recipe.validation_step(batch, self.models)
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            count += 1
            if self.config.val_batches and count >= self.config.val_batches:
                break
        averaged = all_reduce_mean({key: value / max(1, count) for key, value in totals.items()}, self.context)
        self.recipe.on_validation(averaged, self.step)
        if self.context.is_main and first_batch is not None:
            with autocast(self.device, self.dtype):
                self.recipe.write_samples(first_batch, self.models, self.run_dir / "samples", self.step)
        for name, module in self.models.raw.items():
            module.train(modes[name])
        self._log({"step": self.step, "split": "val", **averaged})
        return averaged

    def _log(self, record: dict[str, Any]) -> None:
        if not self.context.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        logger.info("%s", record)


def _as_dict(config: Any) -> Any:
    from dataclasses import is_dataclass

    return asdict(config) if is_dataclass(config) else (config or {})


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_size(batch[0])
    raise TypeError(f"cannot tell the size of a batch of type {type(batch).__name__}")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch
