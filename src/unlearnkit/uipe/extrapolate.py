"""`extrapolate(base, unlearned, alpha)`: UIPE, θ_uipe = θ_un + α·(θ_un − θ_ini), one API, three back ends.

UIPE (Wang, Zhang et al., "Enhancing LLM Unlearning by Removing Knowledge Related to Forgetting
Targets", arXiv 2503.04693, Findings of EMNLP 2025) pushes the parameters further along the update of
any base unlearning run, so that knowledge related to the forget set, which the model could use to
reconstruct it, is removed too. The exact form and the choice of α follow the project brief; the
paper's own equation could not be checked (shared/reference/methods.md §A.3).

Back ends, chosen by what `unlearned` is:

* state dict / `nn.Module` → in memory (`extrapolate_state_dict`, `extrapolate_module`);
* peft model, or an adapter directory → LoRA: lora_B rescaled by (1+α) (`lora.py`);
* a safetensors checkpoint directory → streaming, tensor chunk by chunk (`stream.py`).

All take the same `select` (regex or list: only matching tensors move; the rest stay at θ_un) and
`group_alphas` ([(regex, α), …]: first match wins, others get `alpha`); see `plan.py`. Arithmetic
is fp32 (fp64 stays fp64), the result keeps each tensor's dtype, and α = 0 returns θ_un bit-exactly.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .lora import extrapolate_lora, is_adapter_dir
from .plan import AlphaPlan
from .stream import extrapolate_stream
from .tensors import check_matching, extrapolate_tensor


def _specs(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in sd.items()}


def _state_dict(obj, what: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        return obj
    raise TypeError(f"{what}: expected a state dict, an nn.Module, a peft model or a checkpoint directory, "
                    f"got {type(obj).__name__}")


def extrapolate_state_dict(base: Mapping[str, torch.Tensor], unlearned: Mapping[str, torch.Tensor], alpha: float,
                           *, select=None, group_alphas=None, plan: AlphaPlan | None = None) -> dict[str, torch.Tensor]:
    """A new state dict θ_un + α·(θ_un − θ_ini); tensors that do not move are cloned from θ_un."""
    plan = plan or AlphaPlan.build(alpha, select, group_alphas)
    check_matching(_specs(base), _specs(unlearned))
    alphas = plan.assign(unlearned)
    out = {}
    for name, un in unlearned.items():
        res = extrapolate_tensor(base[name], un, alphas[name])
        out[name] = res.clone() if res is un else res
    return out


def extrapolate_module(base, model: torch.nn.Module, alpha: float, *, select=None, group_alphas=None,
                       plan: AlphaPlan | None = None, inplace: bool = False) -> torch.nn.Module:
    """θ_uipe as a model: a deep copy of `model` (θ_un), or `model` itself when `inplace=True`.

    Works one tensor at a time, so beyond the copy it needs memory for one tensor. Tied weights
    (same storage under two names) are extrapolated once.
    """
    plan = plan or AlphaPlan.build(alpha, select, group_alphas)
    base_sd = _state_dict(base, "base")
    check_matching(_specs(base_sd), _specs(model.state_dict()))
    alphas = plan.assign(model.state_dict())
    target = model if inplace else copy.deepcopy(model)
    seen = set()
    with torch.no_grad():
        for name, t in target.state_dict(keep_vars=False).items():
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
            if key in seen:
                continue
            seen.add(key)
            res = extrapolate_tensor(base_sd[name], t, alphas[name])
            if res is not t:
                t.copy_(res)
    return target


def extrapolate_checkpoint(base_dir: str | Path | None, unlearned_dir: str | Path, out_dir: str | Path, alpha: float,
                           select=None, group_alphas=None, *, overwrite: bool = False, **stream_kwargs) -> Path:
    """θ_uipe on disk: an adapter dir → LoRA back end; a safetensors checkpoint dir → streaming back end.

    For an adapter, θ_ini is the frozen base the adapter sits on, so `base_dir` is not read (it may
    be None). Returns `out_dir`, which is written atomically and records the settings in `uipe.json`.
    """
    plan = AlphaPlan.build(alpha, select, group_alphas)
    unlearned_dir = Path(unlearned_dir)
    if is_adapter_dir(unlearned_dir):
        if stream_kwargs:
            raise TypeError(f"{sorted(stream_kwargs)}: streaming options do not apply to an adapter directory")
        return extrapolate_lora(unlearned_dir, out_dir=out_dir, plan=plan, overwrite=overwrite)
    if base_dir is None:
        raise ValueError(f"{unlearned_dir} is a full checkpoint, so base_dir (θ_ini) is required")
    return extrapolate_stream(base_dir, unlearned_dir, out_dir, plan, overwrite=overwrite, **stream_kwargs)


def extrapolate(base, unlearned, alpha: float, *, select=None, group_alphas=None, out_dir: str | Path | None = None,
                inplace: bool = False, overwrite: bool = False, adapter_name: str = "default"):
    """UIPE: θ_un + α·(θ_un − θ_ini), dispatched on the type of `unlearned`.

    ==========================  ===============================  ==========================================
    unlearned                   base (θ_ini)                     returns
    ==========================  ===============================  ==========================================
    state dict                  state dict or model              new state dict
    nn.Module                   state dict or model              model (copy; `inplace=True`: the same)
    peft model (LoRA)           None (the adapter's own base)    model with B·(1+α); with `out_dir`: path
    checkpoint dir (path)       checkpoint dir                   `out_dir` (streamed, atomic)
    adapter dir (path)          None or any path (not read)      `out_dir` (new adapter dir)
    ==========================  ===============================  ==========================================
    """
    plan = AlphaPlan.build(alpha, select, group_alphas)
    if isinstance(unlearned, (str, os.PathLike)):
        if out_dir is None:
            raise ValueError(f"unlearned={str(unlearned)!r} is a directory, so out_dir is required")
        if inplace:
            raise ValueError("inplace=True applies to in-memory models only; checkpoints are written to out_dir")
        return extrapolate_checkpoint(base, unlearned, out_dir, alpha, select, group_alphas, overwrite=overwrite)
    if hasattr(unlearned, "peft_config"):
        if base is not None:
            raise ValueError("for a peft (LoRA) model θ_ini is the frozen base inside it: pass base=None")
        return extrapolate_lora(unlearned, out_dir=out_dir, plan=plan, adapter_name=adapter_name, inplace=inplace,
                                overwrite=overwrite)
    if out_dir is not None:
        raise ValueError("out_dir applies to checkpoint directories and LoRA adapters; for an in-memory result call "
                         "save_pretrained on the returned model (or extrapolate the saved checkpoints directly)")
    if isinstance(unlearned, torch.nn.Module):
        return extrapolate_module(base, unlearned, alpha, plan=plan, inplace=inplace)
    if inplace:
        raise ValueError("inplace=True needs an nn.Module; a state dict result is always new")
    return extrapolate_state_dict(_state_dict(base, "base"), _state_dict(unlearned, "unlearned"), alpha, plan=plan)
