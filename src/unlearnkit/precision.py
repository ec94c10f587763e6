"""Run-time choice of precision: bf16 autocast only where the hardware makes it fast.

On CPUs with `avx512_bf16` or `amx_bf16` a bf16 matmul is ~6x fp32; on AVX2-only CPUs it is 15-100x
*slower*. So `auto` looks at the device instead of assuming.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str = "auto", device: str | None = None) -> str:
    """'auto' -> 'bf16' on a bf16-capable GPU or CPU, else 'fp32'."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision != "auto":
        return precision
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(precision: str, device_type: str = "cpu"):
    """Context manager: bf16 autocast when `precision == 'bf16'`, no-op otherwise.

    Autocast caches the bf16 copy of each weight for the length of the region: weights changed in place
    inside one region (e.g. trying several UIPE α) are not seen. Enter a fresh region after each change."""
    import contextlib

    if resolve_precision(precision, device_type) == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
