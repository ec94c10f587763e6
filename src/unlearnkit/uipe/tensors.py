"""The UIPE rule for one tensor, and the check that two checkpoints hold the same tensors.

    θ_uipe = θ_un + α·(θ_un − θ_ini)          (UIPE, arXiv 2503.04693; form as given in the project brief)

Computed as `torch.lerp(θ_ini, θ_un, 1 + α)`, which is the same expression (θ_ini + (1+α)(θ_un − θ_ini))
fused into one kernel: for bf16/fp16 inputs PyTorch upcasts to fp32 inside the kernel and rounds
once to the storage dtype (tested bit-identical to `lerp` on fp32 copies, then cast), so nothing
bigger than the inputs is materialised. fp32 stays fp32 and fp64 stays fp64; other float types
(fp8) are upcast to fp32 explicitly. The function is elementwise, so chunked (streaming) and whole
tensor (in-memory) evaluation give bit-identical results. Against the unfused three-op form the
result differs by at most one unit in the last place (that form rounds three times).

α == 0 returns θ_un itself: no arithmetic, bit-exact.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

_NATIVE_LERP = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class CheckpointMismatchError(ValueError):
    """θ_ini and θ_un do not hold the same tensors (names, shapes, dtypes)."""


def extrapolate_tensor(ini: torch.Tensor, un: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ_un + α·(θ_un − θ_ini) in un's dtype (fp32 arithmetic for half types); `un` itself when α == 0.

    Non-floating tensors (integer buffers) cannot be extrapolated and are returned as θ_un.
    """
    if alpha == 0 or not un.is_floating_point():
        return un
    ini = ini.to(un.device)
    if un.dtype in _NATIVE_LERP:
        return torch.lerp(ini, un, 1.0 + alpha)
    return torch.lerp(ini.float(), un.float(), 1.0 + alpha).to(un.dtype)


def check_matching(base: Mapping[str, tuple[str, tuple[int, ...]]], unlearned: Mapping[str, tuple[str, tuple[int, ...]]],
                   base_label: str = "base", unlearned_label: str = "unlearned") -> None:
    """Raise `CheckpointMismatchError` naming each tensor whose presence, dtype or shape differs.

    Both arguments map tensor name → (dtype name, shape).
    """
    problems = []
    for name in unlearned:
        if name not in base:
            problems.append(f"tensor {name!r} is in {unlearned_label} but missing from {base_label}")
    for name in base:
        if name not in unlearned:
            problems.append(f"tensor {name!r} is in {base_label} but missing from {unlearned_label}")
    for name, (dtype, shape) in unlearned.items():
        if name not in base:
            continue
        bdtype, bshape = base[name]
        if tuple(bshape) != tuple(shape):
            problems.append(f"tensor {name!r}: shape {tuple(bshape)} in {base_label} vs {tuple(shape)} in "
                            f"{unlearned_label}")
        if bdtype != dtype:
            problems.append(f"tensor {name!r}: dtype {bdtype} in {base_label} vs {dtype} in {unlearned_label}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise CheckpointMismatchError(
            "θ_ini and θ_un must hold the same tensors with the same shapes and dtypes, since UIPE extrapolates "
            "along their difference: " + "; ".join(problems[:10]) + more +
            ". Check that both checkpoints come from the same model (and were saved in the same dtype).")
