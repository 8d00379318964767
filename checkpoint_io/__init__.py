"""Reading and strictly loading checkpoints, shared by `lipsync`, `marlin_encoder` and `syncnet`.

A leaf package (torch and safetensors only) so that the two model packages, which may not import `lipsync`,
use the same single loading path: no code executes while reading (`weights_only=True`, safetensors,
TorchScript's own format), wrapper prefixes are removed only at the start of keys, and a model only ever
receives a state dict whose keys and shapes were checked, with every problem named on one line.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "WRAPPER_PREFIXES",
    "CheckpointMismatchError",
    "CheckpointReadError",
    "check_state_dict",
    "load_strict",
    "read_safetensors_metadata",
    "read_state_dict",
    "strip_prefixes",
]

# Added in front of every key by DataParallel / DistributedDataParallel and by torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Training checkpoints that wrap the weights: Wav2Lip's {"state_dict", "optimizer", "global_step", ...},
# Lightning's {"state_dict", ...}, and {"model": ...} as many trainers write.
CONTAINER_KEYS = ("state_dict", "model")


class CheckpointReadError(ValueError):
    """The file cannot be read as a checkpoint (one-line message)."""


class CheckpointMismatchError(ValueError):
    """A state dict's keys or shapes do not match the model (one-line message naming them)."""


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read the tensors of a checkpoint, without executing code, and strip wrapper prefixes.

    Accepts safetensors files, TorchScript archives (their parameters and buffers) and torch pickles read
    with `weights_only=True`: bare {key: tensor} dicts or containers holding one under "state_dict"/"model".

    Raises:
        CheckpointReadError: unreadable, or not a mapping of names to tensors.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:   # torch, zipfile, pickle and safetensors raise many unrelated types
        text = str(error).strip()
        raise CheckpointReadError(f"cannot read checkpoint {path}: {text.splitlines()[0] if text else type(error).__name__}"
                                  ) from None
    if isinstance(state, Mapping):
        for key in CONTAINER_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointReadError(f"{path} is not a checkpoint: expected a mapping of names to tensors")
    return strip_prefixes(state)


def strip_prefixes(state: Mapping[str, Tensor], prefixes: Iterable[str] = WRAPPER_PREFIXES) -> dict[str, Tensor]:
    """Remove wrapper prefixes at the start of keys only (repeatedly: `module._orig_mod.x` -> `x`).

    A substring replace would also rewrite legitimate inner names (`face.module.weight`); this never does.

    Raises:
        CheckpointReadError: two keys become one.
    """
    prefixes = tuple(prefixes)
    stripped: dict[str, Tensor] = {}
    for key, value in state.items():
        new_key = key
        while new_key.startswith(prefixes):
            new_key = next(new_key[len(prefix):] for prefix in prefixes if new_key.startswith(prefix))
        if new_key in stripped:
            raise CheckpointReadError(f"stripping {prefixes} makes key {key!r} collide with another key")
        stripped[new_key] = value
    return stripped


def _listed(items: list[str], limit: int = 5) -> str:
    more = f", … {len(items) - limit} more" if len(items) > limit else ""
    return f"({len(items)}) [{', '.join(items[:limit])}{more}]"


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Raise one line naming every missing, unexpected and wrongly shaped key, before anything is copied.

    Args:
        source: what the user calls the checkpoint (usually its path).

    Raises:
        CheckpointMismatchError
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [f"{key} {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
                   for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    problems = [f"{label} {_listed(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)) if keys]
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}")


def load_strict(model: nn.Module, state: Mapping[str, Tensor], source: str, assign: bool = False) -> nn.Module:
    """`check_state_dict`, then `load_state_dict(strict=True)`; returns the model.

    Args:
        assign: make the loaded tensors the model's own instead of copying them in. With a model built on
            the meta device this loads without a second copy of the weights in memory.
    """
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=assign)
    left_on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left_on_meta:
        raise CheckpointMismatchError(f"{source} leaves {len(left_on_meta)} tensor(s) of {type(model).__name__} "
                                      f"unset: {', '.join(left_on_meta[:5])}")
    return model


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata in a safetensors header (our checkpoints keep their architecture and config there)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
