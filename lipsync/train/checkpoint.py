"""Training checkpoints: model weights as safetensors (config in the metadata) and the rest of the training
state (optimisers, step, data position, RNG, recipe schedule) as a weights-only torch file.

A checkpoint is a directory `step_000123/`; `latest` (a one-line text file) names the newest complete one
and is replaced atomically after every file of the directory is on disk, so a crash leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lipsync.io.atomic import atomic_path, atomic_write_bytes
from lipsync.weights import load_into, load_state_dict, save_safetensors

LATEST = "latest"


def rng_state() -> dict[str, Any]:
    """Every RNG this process draws from, in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def save_checkpoint(run_dir: Path, step: int, models: dict[str, nn.Module], model_metadata: dict[str, dict],
                    training_state: dict[str, Any], keep: int) -> Path:
    """Write `run_dir/checkpoints/step_XXXXXXX/` and point `latest` at it; prune old step directories.

    Args:
        models: unwrapped modules to store as `<name>.safetensors`.
        model_metadata: per model, metadata stored in its safetensors header (arch, config, step).
        training_state: weights-only-safe state (tensors, numbers, strings, lists, dicts).
        keep: step directories to keep besides the newest.
    """
    root = run_dir / "checkpoints"
    directory = root / f"step_{step:07d}"
    directory.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        save_safetensors(directory / f"{name}.safetensors", model.state_dict(), model_metadata.get(name, {}))
    with atomic_path(directory / "training_state.pt", fsync=True) as temporary:
        torch.save(training_state, temporary)
    atomic_write_bytes(root / LATEST, f"{directory.name}\n".encode())
    steps = sorted(path for path in root.glob("step_*") if path.is_dir())
    for old in steps[: max(0, len(steps) - 1 - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.exists():
        return None
    directory = run_dir / "checkpoints" / pointer.read_text().strip()
    return directory if directory.is_dir() else None


def load_checkpoint(directory: Path, models: dict[str, nn.Module]) -> dict[str, Any]:
    """Load model weights strictly into `models` and return the training state."""
    for name, model in models.items():
        path = directory / f"{name}.safetensors"
        load_into(model, load_state_dict(path), what=str(path))
    return torch.load(directory / "training_state.pt", map_location="cpu", weights_only=True)


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())
