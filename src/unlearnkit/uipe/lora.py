"""UIPE for a LoRA unlearning run: rescale the adapter instead of touching the base model.

If the unlearning run trained a LoRA adapter on a frozen base θ_ini, then θ_un − θ_ini is, for each
adapted module, ΔW = s·B·A (s = lora_alpha / r, or / √r with rsLoRA). UIPE becomes

    θ_uipe = θ_un + α·ΔW = θ_ini + (1+α)·s·B·A,

i.e. the same adapter with B multiplied by (1+α). The result is a new adapter directory
(`adapter_config.json` + `adapter_model.safetensors`, a few MB): no merge, no copy of the base model.

Why B, and not A or both: scaling either factor alone rescales B·A exactly. Both by √(1+α) fails for
α < −1 (a negative factor has no real square root) and rounds twice. Between the two, B is the
factor that starts at zero in peft's default init, so its value *is* the learned update while A
keeps the scale of its random init; scaling B leaves A — the input subspace the adapter reads —
untouched. That matters downstream: O-LoRA (Reveal-and-Release's iterative unlearning) constrains
successive adapters through their A matrices (‖A_iᵀA_j‖), and rank-stabilised training assumes A at
init scale; both are unchanged by UIPE. For embedding adapters the same holds for
`lora_embedding_B`. α = −1 zeroes B (θ_ini exactly); α = 0 leaves the adapter bit-identical.

Refused, because the delta is then not s·B·A on the saved base: DoRA (magnitude vector), trained
biases (`bias != "none"`), `modules_to_save` / trainable tokens (full trained copies whose θ_ini lives
in the base model), and non-zero-B initialisations that modify the base (PiSSA, OLoRA, LoftQ,
CorDA, EVA…; convert such adapters to plain LoRA first with peft's
`path_initial_model_for_weight_conversion`).

Regex selection / per-group α work on the *base* parameter names the adapter modifies
(`model.layers.0.self_attn.q_proj.weight`), the same names the full-checkpoint back ends see, so one
`select` / `group_alphas` means the same thing for a LoRA run and for a full fine-tuning run.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch

from .plan import AlphaPlan
from .safetensors_io import SafetensorsWriter, save_tensors
from .stream import atomic_output_dir, copy_side_files, write_provenance

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
# key → (module path, role); the adapter name may sit between the role and ".weight" in memory
_KEY_RE = re.compile(r"^(?P<module>.+)\.(?P<role>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)*$")
_OK_INITS = (True, False, "gaussian")


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def check_lora_config(cfg: dict, where: str) -> None:
    """Raise `ValueError` when the adapter's delta is not s·B·A on its base (see module docstring)."""
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{where}: peft_type={cfg.get('peft_type')!r}; UIPE by rescaling B needs a LoRA adapter")
    problems = []
    if cfg.get("use_dora"):
        problems.append("use_dora=True (the DoRA magnitude rescales the whole weight, not only B·A)")
    if cfg.get("bias", "none") != "none":
        problems.append(f"bias={cfg['bias']!r} (trained biases are deltas outside B·A)")
    if cfg.get("modules_to_save"):
        problems.append(f"modules_to_save={cfg['modules_to_save']!r} (full trained copies: extrapolating them "
                        f"needs the base weights; use the merged checkpoint with the streaming back end)")
    if cfg.get("trainable_token_indices"):
        problems.append("trainable_token_indices is set (trained token rows are deltas outside B·A)")
    if cfg.get("init_lora_weights", True) not in _OK_INITS:
        problems.append(f"init_lora_weights={cfg['init_lora_weights']!r} (this init changes the base weights; convert "
                        f"the adapter to plain LoRA with peft's path_initial_model_for_weight_conversion)")
    if problems:
        raise ValueError(f"{where}: cannot apply UIPE by rescaling lora_B: " + "; ".join(problems))


def base_param_name(key: str) -> tuple[str, str] | None:
    """('model.layers.0.self_attn.q_proj.weight', 'lora_B') for a LoRA key; None for other keys."""
    m = _KEY_RE.match(key)
    if not m:
        return None
    module = m.group("module")
    if module.startswith(_PREFIX):
        module = module[len(_PREFIX):]
    return module + ".weight", m.group("role")


def _alphas_for(keys, plan: AlphaPlan, where: str) -> dict[str, float]:
    """α for each lora_B key (by the base parameter it modifies); raises on keys that are not LoRA factors."""
    modules: dict[str, list[str]] = {}
    for k in keys:
        parsed = base_param_name(k)
        if parsed is None:
            if k.endswith(".base_layer.weight"):  # saved copy of a base embedding (peft save_embedding_layers)
                continue
            raise ValueError(f"{where}: tensor {k!r} is not a LoRA factor (lora_A/lora_B); the delta of this adapter "
                             f"is not s·B·A, so rescaling B would not implement UIPE")
        base_name, role = parsed
        if role.endswith("B"):
            modules.setdefault(base_name, []).append(k)
    by_module = plan.assign(modules, what="adapted module")
    return {k: by_module[m] for m, ks in modules.items() for k in ks}


def _scale(t: torch.Tensor, factor: float) -> torch.Tensor:
    return (t.float() * factor).to(t.dtype)  # fp32 arithmetic, original dtype


def _lora_from_dir(adapter_dir: Path, out_dir, plan: AlphaPlan, overwrite: bool) -> Path:
    from safetensors import safe_open

    cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    check_lora_config(cfg, str(adapter_dir))
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing (pickled adapter_model.bin is not read; re-save with "
                                f"safe_serialization=True)")
    with safe_open(weights, "pt") as f:
        keys = list(f.offset_keys())
        alphas = _alphas_for(keys, plan, str(adapter_dir))
        entries = []
        for k in keys:
            sl = f.get_slice(k)
            entries.append((k, sl.get_dtype(), tuple(sl.get_shape())))
        base = cfg.get("base_model_name_or_path")  # θ_ini (and its run) must survive an overwrite too
        with atomic_output_dir(out_dir, overwrite, protect=(adapter_dir, base)) as tmp:
            with SafetensorsWriter(tmp / ADAPTER_WEIGHTS, entries, metadata=f.metadata()) as w:
                for k in keys:
                    t = f.get_tensor(k)
                    a = alphas.get(k, 0.0)
                    w.write(k, _scale(t, 1.0 + a) if a != 0 else t)
            copy_side_files(adapter_dir, tmp)
            write_provenance(tmp, "lora", plan, cfg.get("base_model_name_or_path"), adapter_dir)
    return Path(out_dir)


def _lora_from_model(model, out_dir, plan: AlphaPlan, adapter_name: str, inplace: bool, overwrite: bool):
    if adapter_name not in model.peft_config:
        raise ValueError(f"adapter_name={adapter_name!r} not in this model (adapters: {list(model.peft_config)})")
    cfg = model.peft_config[adapter_name]
    check_lora_config(cfg.to_dict(), f"adapter {adapter_name!r}")
    if out_dir is not None:
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model, adapter_name=adapter_name)
        alphas = _alphas_for(state, plan, f"adapter {adapter_name!r}")
        scaled = {k: (_scale(t, 1.0 + alphas[k]) if alphas.get(k, 0.0) != 0 else t).detach().cpu().contiguous()
                  for k, t in state.items()}
        with atomic_output_dir(out_dir, overwrite) as tmp:
            cfg.save_pretrained(tmp)
            save_tensors(tmp / ADAPTER_WEIGHTS, scaled, metadata={"format": "pt"})
            write_provenance(tmp, "lora", plan, cfg.base_model_name_or_path, f"<in-memory adapter {adapter_name!r}>")
        return Path(out_dir)
    target = model if inplace else copy.deepcopy(model)
    tag = f".{adapter_name}"
    params = {n: p for n, p in target.named_parameters()
              if base_param_name(n) is not None and (n.endswith(tag) or f"{tag}." in n)}
    alphas = _alphas_for(params, plan, f"adapter {adapter_name!r}")
    with torch.no_grad():
        for n, a in alphas.items():
            if a != 0:
                params[n].copy_(_scale(params[n], 1.0 + a))
    return target


def extrapolate_lora(adapter, alpha: float | None = None, out_dir: str | Path | None = None, *, select=None,
                     group_alphas=None, plan: AlphaPlan | None = None, adapter_name: str = "default",
                     inplace: bool = False, overwrite: bool = False):
    """UIPE on a LoRA adapter: multiply every lora_B by (1+α) (per-module α from `select` / `group_alphas`).

    `adapter`: an adapter directory (→ writes `out_dir`, returns its path) or a peft model (→ writes
    `out_dir` when given, else returns a copy of the model with B rescaled — or the model itself,
    rescaled, when `inplace=True`).
    """
    if plan is None:
        if alpha is None:
            raise ValueError("extrapolate_lora: pass alpha (or a ready AlphaPlan as plan=)")
        plan = AlphaPlan.build(alpha, select, group_alphas)
    if isinstance(adapter, (str, Path)):
        path = Path(adapter)
        if not is_adapter_dir(path):
            raise FileNotFoundError(f"{path}: not a LoRA adapter directory (no {ADAPTER_CONFIG})")
        if out_dir is None:
            raise ValueError(f"extrapolate_lora({str(path)!r}): out_dir is required for an adapter directory")
        return _lora_from_dir(path, out_dir, plan, overwrite)
    if not hasattr(adapter, "peft_config"):
        raise TypeError(f"extrapolate_lora: expected a peft model or an adapter directory, got {type(adapter).__name__}")
    return _lora_from_model(adapter, out_dir, plan, adapter_name, inplace, overwrite)
