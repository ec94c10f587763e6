"""Keep freed heap memory in the process instead of handing it back to the kernel (glibc malloc settings).

PyTorch on CPU allocates every activation, gradient and logits tensor anew with `malloc`. glibc serves blocks
above its mmap threshold (at most 32 MB) with fresh pages from `mmap` and unmaps them on free, and it trims
the top of its heap when much of it is free. So each training step keeps asking the kernel for pages it
just gave back, and every first touch of such a page is a page fault the kernel must zero: on SmolLM2, a
GradDiff step of 2.1–2.8 s took 140k–225k minor faults and 0.35–0.8 s of system time (measured). With mmap
off and the trim threshold at 2 GiB, freed blocks are reused: after a few steps a step takes no page fault
and is 10–15% faster (`benchmarks/row_packing.py`). The price: the process keeps its peak heap until it exits,
which a training or evaluation process holds anyway.

The `unlearnkit` command switches this on for its own process (`cli.main`, the console entry); a Python user can call
`keep_freed_memory()` once at the start of a script. `UNLEARNKIT_KEEP_FREED_MEMORY=0` leaves malloc as it is.
Only glibc has these settings; elsewhere (macOS, musl, Windows) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

#: glibc's `mallopt` parameter numbers (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: free heap top kept before trimming: the largest value `mallopt` takes (an int)
TRIM_THRESHOLD = 2**31 - 1
ENV = "UNLEARNKIT_KEEP_FREED_MEMORY"


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse in this process: no `mmap` for large blocks, no heap
    trimming. Returns True when the settings took effect; False where `ENV` is "0", or without glibc."""
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    try:
        libc = _libc()
        mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    except OSError:
        return False
    if mallopt is None or not callable(getattr(libc, "gnu_get_libc_version", None)):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
