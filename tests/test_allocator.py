"""`keep_freed_memory`: glibc malloc keeps freed blocks, so a process that allocates and frees the same large
tensors step after step stops taking page faults (checked in a child process: the setting is process-wide)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from unlearnkit import allocator

CHILD = """
import resource, sys
from unlearnkit.allocator import keep_freed_memory
print(keep_freed_memory())
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = bytearray(64 * 2**20)          # a 64 MiB block, above glibc's largest mmap threshold
    block[::4096] = b"x" * len(block[::4096])
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[3:]))
"""


def _child(env_value: str) -> tuple[str, int]:
    import os

    env = {**os.environ, allocator.ENV: env_value}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(allocator._libc() is None or not hasattr(allocator._libc(), "gnu_get_libc_version"),
                    reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults():
    applied, faults = _child("1")
    assert applied == "True" and faults < 100                     # the later blocks reuse the first one's pages
    applied, faults = _child("0")                                 # opted out: each block is new mmap'd pages
    assert applied == "False" and faults > 3 * 64 * 2**20 // 4096 // 2


def test_does_nothing_without_glibc(monkeypatch):
    class NotGlibc:                                               # e.g. macOS's libc: no gnu_get_libc_version
        def mallopt(self, *a):
            raise AssertionError("mallopt called")

    monkeypatch.setattr(allocator, "_libc", lambda: NotGlibc())
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    assert allocator.keep_freed_memory() is False


def test_sets_no_mmap_and_the_largest_trim_threshold(monkeypatch):
    calls = []

    class Glibc:
        def gnu_get_libc_version(self):
            return b"2.36"

        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_libc", lambda: Glibc())
    monkeypatch.delenv(allocator.ENV, raising=False)
    assert allocator.keep_freed_memory() is True
    assert calls == [(allocator.M_MMAP_MAX, 0), (allocator.M_TRIM_THRESHOLD, 2**31 - 1)]
    monkeypatch.setenv(allocator.ENV, "0")
    assert allocator.keep_freed_memory() is False and len(calls) == 2
