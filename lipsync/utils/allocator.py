"""Let glibc's malloc keep and reuse freed multi-megabyte blocks instead of handing them back to the kernel.

Why: by default glibc serves every block above ``M_MMAP_THRESHOLD`` (128 KiB, adaptively raised to at most
32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and it trims free memory at the top of the heap above
``M_TRIM_THRESHOLD``. Every activation tensor of a CPU forward pass is such a block, so each one starts with
one page fault per 4 KiB page. Measured on the project machine (a 2-vCPU VM, where faults are expensive):
``syncnet.evaluate_clip`` on a 7 s clip took 70-150 thousand minor faults per call; with both thresholds
raised, under 10 thousand, and 5-25% less time (the machine's load varies), with identical results. The
reference network pass speeds up too (torch allocates the same way there), so benchmarks say which allocator
setting they ran with.

The price: up to 256 MiB of freed memory stays in the process, and heap fragmentation can raise the peak:
``lipsync evaluate`` peaked at 1.02 / 1.08 GB with glibc's defaults and 1.02-1.05 / 1.19-1.22 GB tuned (7 s /
63 s clip), ``lipsync infer`` at 0.98-0.99 GB either way. That suits a command that runs one job and exits,
and a server that runs the same job repeatedly, so the ``lipsync`` command (and with it the demo) calls
:func:`reuse_freed_memory` at start; library users decide for their own process. ``LIPSYNC_SYSTEM_MALLOC=1``
keeps glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ["reuse_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from (and return to) the heap; larger ones (whole-clip arrays) are still mmapped
# and unmapped when freed. Every per-batch activation of the networks here is smaller. A fixed threshold also
# switches off glibc's adaptive one.
KEEP_BLOCKS_UP_TO = 64 << 20
# Free memory at the top of the heap kept rather than returned to the kernel. The SyncNet scorer frees and
# reallocates ~100 MB per chunk of windows: 64 MiB here still left ~100 thousand faults per 7 s clip, 256 MiB
# none.
KEEP_FREE_UP_TO = 256 << 20

_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls return the first result).

    Returns:
        True when the thresholds are set; False where the C library is not glibc, where mallopt refuses, or
        when ``LIPSYNC_SYSTEM_MALLOC`` is set to a non-empty value other than 0. Never raises.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("LIPSYNC_SYSTEM_MALLOC", "") not in ("", "0"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success and 0 when a value is out of range (glibc before 2.35 caps the mmap threshold
    # at 32 MiB on 64-bit); the capped value still covers nearly every activation.
    if not mallopt(_M_MMAP_THRESHOLD, KEEP_BLOCKS_UP_TO) and not mallopt(_M_MMAP_THRESHOLD, 32 << 20):
        return False
    mallopt(_M_TRIM_THRESHOLD, KEEP_FREE_UP_TO)
    logger.debug("glibc malloc keeps freed blocks for reuse")
    _applied = True
    return True
