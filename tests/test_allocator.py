"""glibc malloc tuning: freed multi-megabyte tensors are reused instead of faulted in again."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt"
)

# 5 times a 32 MiB tensor allocated, written and freed, after three warm-up rounds (glibc settles its heap top in
# the first two or three); prints (applied, minor faults).
CHILD = """
import resource, torch
from lipsync.utils.allocator import reuse_freed_memory
applied = reuse_freed_memory()
for _ in range(3):
    x = torch.ones(8 << 20); del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.ones(8 << 20); del x
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(system_malloc: bool) -> tuple[bool, int]:
    env = {**os.environ, "LIPSYNC_SYSTEM_MALLOC": "1" if system_malloc else ""}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_freed_tensors_are_reused_without_page_faults():
    applied, faults = _run(system_malloc=False)
    assert applied
    # 32 MiB is 8192 pages: the block is reused, not mapped afresh each time (at most one late re-fault seen).
    assert faults < 8192 + 2000


def test_system_malloc_opt_out_keeps_glibc_defaults():
    applied, faults = _run(system_malloc=True)
    assert not applied
    assert faults > 4 * 8192   # each 32 MiB block is mmapped and faulted in again
