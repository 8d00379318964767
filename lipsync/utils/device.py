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


def _cpu_has_amx() -> bool:
    # Linux reports the AMX tile units in /proc/cpuinfo; elsewhere assume none.
    try:
        with open("/proc/cpuinfo") as handle:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in handle)
    except OSError:
        return False


def fast_bf16_available(device: torch.device) -> bool:
    """Whether bf16 runs faster than fp32 here: CUDA with bf16, or a CPU with AMX.

    AVX-512 BF16 alone is not enough: on such a CPU without AMX (a Xeon VM without AMX exposed) Wav2Lip's
    generator ran at 15-17 frames/s in bf16 against 19-22 in fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
                    and _cpu_has_amx())
    return False


def default_batch_size(device: torch.device) -> int:
    """Frames per generator call when none is given: small on CPUs (cache-bound), large on accelerators."""
    return 8 if device.type == "cpu" else 128


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
