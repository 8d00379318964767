"""Device and precision choice, shared by inference and training."""
from __future__ import annotations

import contextlib
import logging

import torch

from lipsync.errors import LipSyncError

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda, else mps, else cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LipSyncError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LipSyncError("--device mps was asked for but MPS is not available; use --device cpu")
    return device


def fast_bf16_available(device: torch.device) -> bool:
    """Whether bf16 runs natively fast here (CUDA with bf16, or a CPU with AVX-512 BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """"auto" -> bf16 where it is fast, else fp32; "bf16" where unsupported is an error."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if device.type == "mps":
            raise LipSyncError("--precision bf16 is not supported on mps; use fp32")
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if fast_bf16_available(device) else torch.float32
    raise LipSyncError(f"unknown precision {precision!r}; expected auto, fp32 or bf16")


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for `dtype` below fp32, a no-op context otherwise."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
