"""Peak resident memory of the current process, as every benchmark here reports it, and the malloc setting."""
from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """This process's own peak RSS in MiB.

    Not `ru_maxrss` alone: Linux carries the parent's high-water mark into a child across fork + exec, so a
    benchmark child started by a parent holding torch and a model would report the parent's peak when its
    own is lower. /proc's VmHWM belongs to this process's address space only.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024          # reported in kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024   # bytes on macOS, KiB elsewhere


def tune_allocator_like_cli() -> str:
    """Tune glibc malloc as the ``lipsync`` command does (``LIPSYNC_SYSTEM_MALLOC=1``: keep the defaults).

    Returns the setting in words, for the benchmark's printout: it changes both time and peak RSS.
    """
    from lipsync.utils.allocator import reuse_freed_memory

    return "glibc malloc tuned as by the lipsync command" if reuse_freed_memory() else "system malloc defaults"
