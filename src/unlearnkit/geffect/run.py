"""G-effects over a run directory's checkpoints, and live during training.

    geffect_run("runs/npo")     # reads runs/npo/config.yaml and runs/npo/checkpoints/step-N/
    → runs/npo/geffect/geffect.csv     checkpoint, step, group, kind (unlearn|retain), value
      runs/npo/geffect/instances.csv   checkpoint, step, index, unlearn, retain, weight
      runs/npo/geffect/summary.json    settings, per-step losses/risks, params without gradient, timings
      runs/npo/plots/geffect_*.png

Everything `config.yaml` would supply (θ_ini `model`, `forget`/`retain` data specs, `method`, `params`) can
be passed explicitly instead, so a folder of `step-N` checkpoints from anywhere can be measured. The eval
slices are fixed: the first `n_forget` forget records and `n_retain` retain records (from `retain_offset`).
An objective with a retain regulariser (term='total') reads `n_forget` other retain records, disjoint from
the measured ones: from row 400 on (TOFU: the G-effect authors keep the first 400 retain rows apart), or
right after the measured slice when the retain set is shorter; `regulariser_offset` sets the first row.
geffect.csv then holds kinds `unlearn`/`retain` (total loss) and `unlearn_forget`/`retain_forget` (the
forget term alone); their difference is the regulariser's share.

Model handling: θ_ini is loaded once (eager attention, for the per-instance `torch.func` path); one working
copy receives each checkpoint's weights in place (`load_state_dict` from its safetensors, or the LoRA adapter
weights with `set_peft_model_state_dict`), so the model is built once per run, not per checkpoint. The
reference log-probs of the fixed forget slice are computed once (`CachedReference`), not per checkpoint.

`GEffectCallback` computes the same numbers every N optimiser steps inside an HF `Trainer` (it imports
nothing from `unlearnkit.train`).
"""
from __future__ import annotations

import copy
import csv
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from transformers import TrainerCallback

from ..data.collate import PromptFormat, QADataset
from ..data.records import QARecord
from ..objectives import DisabledAdapterReference, FrozenModelReference, build_objective
from ..objectives.reference import build_reference, cached_splits, reference_tables
from ..runs import RunDir, atomic_write_text, list_checkpoints, read_run_record, write_json
from .compute import EMA, EvalSlices, GEffect, GEffectError, compute_geffect, make_slices
from .groups import parameter_groups
from .instance import instance_geffects

log = logging.getLogger(__name__)
CURVE_FIELDS = ("checkpoint", "step", "group", "kind", "value")
INSTANCE_FIELDS = ("checkpoint", "step", "index", "unlearn", "retain", "weight")
SMOOTHING = ("none", "ema")
IDK_ANSWER = "I don't know."
HELD_OUT = 400  # TOFU retain rows the G-effect authors keep apart from the rows they draw (`iloc[400:]`)


@dataclass
class GEffectConfig:
    """G-effects of every checkpoint of an unlearning run (`unlearnkit geffect run=<dir>`)."""

    run: str = field(default="", metadata={"help": "run directory (config.yaml + checkpoints/step-N/)"})
    groups: str = field(default="3", metadata={"help": "decoder blocks in k equal buckets (3 = shallow/middle/deep) or 'each'"})
    n_forget: int = field(default=16, metadata={"help": "forget records in the fixed eval slice"})
    n_retain: int = field(default=16, metadata={"help": "retain records in the fixed eval slice"})
    retain_offset: int = field(default=0, metadata={"help": "first retain record of the measured slice"})
    regulariser_offset: int = field(default=-1, metadata={"help": "first retain record the objective's retain "
                                    "regulariser reads (n_forget rows, disjoint from the measured slice); -1: row "
                                    f"{HELD_OUT}, or right after the measured slice when the retain set is shorter"})
    batch_size: int = field(default=0, metadata={"help": "rows per batch (0: each slice in one batch, one shared forward)"})
    smooth: str = field(default="none", metadata={"help": "none | ema (0.6·old + 0.4·new across checkpoints, the authors' constant)"})
    term: str = field(default="total", metadata={"help": "L_u = the objective's 'total' loss, or its 'forget' term only"})
    per_instance: bool = field(default=True, metadata={"help": "also compute per-sample PG-effects"})
    instance_method: str = field(default="auto", metadata={"help": "auto | vmap | loop"})
    plots: bool = field(default=True, metadata={"help": "write plots to <run>/plots/"})
    method: str = field(default="", metadata={"help": "objective name (default: from config.yaml)"})
    model: str = field(default="", metadata={"help": "θ_ini spec (default: from config.yaml)"})
    forget: str = field(default="", metadata={"help": "forget data spec (default: from config.yaml)"})
    retain: str = field(default="", metadata={"help": "retain data spec (default: from config.yaml)"})
    device: str = field(default="", metadata={"help": "torch device (default: cuda if available, else cpu)"})
    params: Optional[dict[str, Any]] = field(default=None, metadata={"help": "the method's hyper-parameters "
                                                                               "(default: from config.yaml)"})
    checkpoints: list[str] = field(default_factory=list, metadata={"help": "checkpoint folders to measure (default: "
                                                                           "every checkpoints/step-N of the run)"})
    out: str = field(default="", metadata={"help": "output folder (default: <run>/geffect)"})

    def __post_init__(self):
        if self.smooth not in SMOOTHING:
            raise ValueError(f"smooth={self.smooth!r}: expected one of {SMOOTHING}")
        for name in ("n_forget", "n_retain"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.batch_size < 0 or self.retain_offset < 0:
            raise ValueError("batch_size and retain_offset must be >= 0")
        if self.regulariser_offset < -1:
            raise ValueError(f"regulariser_offset={self.regulariser_offset}: must be >= 0, or -1 (automatic)")


def parse_groups(groups: int | str) -> int | str:
    if isinstance(groups, int) or groups == "each":
        return groups
    if isinstance(groups, str) and groups.isdigit():
        return int(groups)
    raise ValueError(f"groups={groups!r}: expected a number of block buckets (e.g. 3) or 'each'")


def _step_of(path: Path, fallback: int) -> int:
    m = re.search(r"(\d+)$", Path(path).name)
    return int(m.group(1)) if m else fallback


def resolve_checkpoints(run_dir: str | Path, checkpoints: Sequence[str | Path] | None = None) -> list[tuple[int, Path]]:
    """(step, path) to measure: the explicit paths, or every `checkpoints/step-N` of the run."""
    if checkpoints:
        out = [(_step_of(Path(c), i), Path(c)) for i, c in enumerate(checkpoints)]
        missing = [str(p) for _, p in out if not p.is_dir()]
        if missing:
            raise GEffectError(f"checkpoint {missing[0]} is not a directory")
        return out

    found = list_checkpoints(Path(run_dir) / "checkpoints")
    if not found:
        raise GEffectError(f"run dir {run_dir} has no checkpoints: expected {Path(run_dir) / 'checkpoints'}/step-N/ "
                           f"folders (save them during unlearning, e.g. save_steps=5), or pass checkpoints=[...]")
    return found


class CheckpointLoader:
    """One working model; each checkpoint's weights are loaded into it in place."""

    def __init__(self, base, needs_reference: bool):
        self.base = base
        self.needs_reference = needs_reference
        self.model = None
        self.lora = None

    def load(self, path: Path):
        path = Path(path)
        if (path / "adapter_config.json").is_file():
            return self._load_adapter(path)
        if self.lora:
            raise GEffectError(f"{path}: a full checkpoint among LoRA ones; measure them in separate runs")
        self.lora = False
        if self.model is None:
            self.model = copy.deepcopy(self.base) if self.needs_reference else self.base
        state = _read_safetensors(path, exclude=("adapter_model",))
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = {n for n, names in _aliases(self.model).items() for n in names}
        bad = [m for m in missing if m not in tied]
        if bad or unexpected:
            raise GEffectError(f"{path}: weights do not match θ_ini's architecture (missing {bad[:3]}, unexpected "
                               f"{list(unexpected)[:3]}); is config.yaml's `model` the run's θ_ini?")
        return self.model

    def _load_adapter(self, path: Path):
        from peft import PeftModel, set_peft_model_state_dict

        if self.lora is False:
            raise GEffectError(f"{path}: a LoRA checkpoint among full ones; measure them in separate runs")
        if self.model is None:
            self.lora = True
            self.model = PeftModel.from_pretrained(self.base, str(path), is_trainable=True)
        else:
            set_peft_model_state_dict(self.model, _read_safetensors(path, only=("adapter_model",)))
        return self.model

    def reference(self, objective, slices: EvalSlices):
        """θ_ini for `objective` by the one policy (`build_reference`): its adapters disabled (LoRA) or the base
        model, with the forget / IdK log-probs computed once (they are the same at every checkpoint)."""
        if not objective.needs_reference:
            return None
        source = DisabledAdapterReference(self.model) if self.lora else FrozenModelReference(self.base)
        batches = {"forget": slices.forget, "idk": slices.idk}
        tables = reference_tables(source, {s: batches[s] for s in cached_splits(objective) if batches[s]})
        return build_reference(objective, self.model, frozen=None if self.lora else self.base, tables=tables).provider


def _aliases(model) -> dict[str, list[str]]:
    by_id: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(n)
    return {v[0]: v[1:] for v in by_id.values() if len(v) > 1}


def _read_safetensors(path: Path, exclude: Sequence[str] = (), only: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(f for f in path.glob("*.safetensors")
                   if not any(f.stem.startswith(x) for x in exclude) and (not only or any(f.stem.startswith(x) for x in only)))
    if not files:
        raise GEffectError(f"{path}: no safetensors weights found")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _records(spec: str, start: int, n: int, what: str) -> list[QARecord]:
    from ..data.specs import load_records

    return _window(load_records(spec), start, n, spec, what)


def _window(recs: list[QARecord], start: int, n: int, spec: str, what: str = "retain") -> list[QARecord]:
    out = recs[start:start + n]
    if not out:
        raise GEffectError(f"{what} data {spec!r} has no records at [{start}:{start + n}]")
    return out


def regulariser_rows(n_records: int, retain_offset: int, n_retain: int, n: int, offset: int = -1) -> tuple[int, int]:
    """[start, end) of the retain records the regulariser reads, disjoint from the measured [retain_offset, +n_retain).

    offset -1: row HELD_OUT (400, as the G-effect authors on TOFU) when the retain set holds n rows from there and
    the measured slice ends before it; else the rows right after the measured slice.
    """
    measured = (retain_offset, retain_offset + n_retain)
    if offset < 0:
        offset = HELD_OUT if measured[1] <= HELD_OUT and n_records >= HELD_OUT + n else measured[1]
    start, end = offset, min(offset + n, n_records)
    if start >= end:
        raise GEffectError(f"the retain set has {n_records} records, none left for the retain regulariser at "
                           f"[{start}:{start + n}]: pass a longer retain spec, a smaller n_retain, or term=forget")
    if start < measured[1] and measured[0] < end:
        raise GEffectError(f"regulariser_offset={offset}: rows [{start}:{end}] overlap the measured retain slice "
                           f"[{measured[0]}:{measured[1]}], which adds α·‖∇R(D_r)‖² to e_r; pick rows outside it")
    return start, end


def _regulariser_plan(objective, term: str, retain: str, measured: tuple[int, int], n: int,
                      offset: int) -> tuple[int, int] | None:
    """`regulariser_rows` for a run whose L_u has a retain regulariser (term='total'), else None; logged."""
    if term != "total" or not objective.needs_retain:
        return None
    from ..data.specs import load_records

    rows = regulariser_rows(len(load_records(retain)), measured[0], measured[1], n, offset)
    log.info("geffect: retain regulariser reads retain rows [%d:%d]; e_r is measured on [%d:%d]", *rows,
             measured[0], measured[0] + measured[1])
    return rows


def build_slices(tokenizer, forget: str, retain: str, n_forget: int, n_retain: int, retain_offset: int = 0,
                 batch_size: int = 0, fmt: PromptFormat | None = None, idk_answer: str | None = None,
                 regulariser: tuple[int, int] | None = None) -> EvalSlices:
    """Fixed eval slices from data specs: the first n_forget forget and n_retain retain records (from
    retain_offset); `regulariser` = [start, end) of the retain records the retain regulariser reads."""
    from ..data.specs import load_records

    fmt = fmt or PromptFormat()
    f = QADataset(_records(forget, 0, n_forget, "forget"), tokenizer, fmt)
    retain_recs = load_records(retain)
    r = QADataset(_window(retain_recs, retain_offset, n_retain, retain), tokenizer, fmt)
    reg = QADataset(_window(retain_recs, regulariser[0], regulariser[1] - regulariser[0], retain), tokenizer, fmt) \
        if regulariser else None
    idk = None
    if idk_answer is not None:
        idk = QADataset([QARecord(question=x.question, answer=idk_answer) for x in f.records], tokenizer, fmt)
    items = lambda ds: [ds[i] for i in range(len(ds))]
    return make_slices(items(f), items(r), tokenizer.pad_token_id, batch_size or None,
                       items(idk) if idk is not None else None, items(reg) if reg is not None else None)


def geffect_run(cfg: GEffectConfig | str | Path, **settings) -> dict[str, Any]:
    """G-effects (per group, and per forget instance) of every checkpoint; writes CSVs, a summary and plots.

    `cfg`: a `GEffectConfig`, or a run directory with the config's fields as keywords (`geffect_run("runs/npo",
    n_forget=4)`). Returns the summary dict (also `<out>/summary.json`; `out` defaults to `<run>/geffect`).
    """
    if not isinstance(cfg, GEffectConfig):
        cfg = GEffectConfig(run=str(cfg), **{k: "" if v is None and k in _OPTIONAL_STR else v
                                             for k, v in settings.items()})
    elif settings:
        raise TypeError(f"geffect_run(GEffectConfig, ...): set {sorted(settings)} on the config instead")
    from ..models.loading import load_model

    run = RunDir(Path(cfg.run))
    if not run.path.is_dir():
        raise GEffectError(f"run directory {run.path} does not exist")
    spec = _run_inputs(cfg, run)
    ckpts = resolve_checkpoints(run.path, cfg.checkpoints)
    objective = build_objective(spec["method"], spec["params"])
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base, tok = load_model(spec["model"], attn_implementation="eager", device=device)
    base.eval()
    idk_answer = spec["idk_answer"] if objective.needs_idk else None
    reg_rows = _regulariser_plan(objective, cfg.term, spec["retain"], (cfg.retain_offset, cfg.n_retain), cfg.n_forget,
                                 cfg.regulariser_offset)
    slices = build_slices(tok, spec["forget"], spec["retain"], cfg.n_forget, cfg.n_retain, cfg.retain_offset,
                          cfg.batch_size, spec["format"], idk_answer, reg_rows).to(device)
    out = Path(cfg.out) if cfg.out else run.path / "geffect"
    rows = _measure(cfg, ckpts, CheckpointLoader(base, objective.needs_reference), objective, slices, out, run)
    summary = {"run": str(run.path), "method": spec["method"], "params": spec["params"], "model": spec["model"],
               "forget": spec["forget"], "retain": spec["retain"], "groups": rows["groups"],
               "blocks": parse_groups(cfg.groups), "n_forget": cfg.n_forget, "n_retain": cfg.n_retain,
               "retain_offset": cfg.retain_offset, "regulariser_rows": list(reg_rows) if reg_rows else None,
               "smooth": cfg.smooth, "term": cfg.term, "risk": "mean answer-token NLL", "steps": rows["steps"],
               "csv": str(out / "geffect.csv"),
               "instances_csv": str(out / "instances.csv") if rows["instances"] else None}
    write_json(out / "summary.json", summary)
    if cfg.plots:
        from .plots import plot_curves, plot_instances

        title = f"{run.path.name} ({spec['method']})"
        summary["plots"] = [str(plot_curves(rows["curve"], run.plots / "geffect_curves.png", title))]
        if rows["instances"]:
            summary["plots"] += [str(p) for p in plot_instances(rows["instances"], run.plots, title)]
        write_json(out / "summary.json", summary)
    return summary


_OPTIONAL_STR = ("method", "model", "forget", "retain", "device", "out")


def _run_inputs(cfg: GEffectConfig, run: RunDir) -> dict[str, Any]:
    """method, params, θ_ini, data specs and prompt format: the config's, else the run's record."""
    rec = read_run_record(run.path, missing_ok=True)
    if rec.kind not in (None, "unlearn"):
        log.warning("%s: config.yaml has kind=%r, not 'unlearn'", run.path, rec.kind)
    # θ_ini: the trainer's resolved path first (config.model may be relative to another cwd)
    spec = {"method": cfg.method or rec.method, "model": cfg.model or rec.theta_ini,
            "forget": cfg.forget or rec.forget, "retain": cfg.retain or rec.retain}
    missing = [name for name, value in spec.items() if not value]
    if missing:
        raise GEffectError(f"{run.path}: no {missing[0]!r} in config.yaml's `config` and none passed; pass "
                           f"{missing[0]}=... explicitly")
    params = dict(rec.params) if cfg.params is None else dict(cfg.params)
    return {**spec, "params": params, "format": rec.prompt_format(),
            "idk_answer": rec.config.get("idk_answer", IDK_ANSWER)}


def _measure(cfg: GEffectConfig, ckpts: list[tuple[int, Path]], loader: CheckpointLoader, objective,
             slices: EvalSlices, out: Path, run: RunDir) -> dict[str, list]:
    """Every checkpoint's G-effects into `out` (the CSVs rewritten after each one, so a kill keeps the rest)."""
    blocks = parse_groups(cfg.groups)
    ema = EMA(0.6) if cfg.smooth == "ema" else None
    curve_rows, inst_rows, per_step, names = [], [], [], []
    ref = None
    for step, path in ckpts:
        t0 = time.perf_counter()
        m = loader.load(path)
        if ref is None:
            ref = loader.reference(objective, slices)
        pgroups = parameter_groups(m, blocks)
        names = pgroups.names
        eff = compute_geffect(m, objective, slices, ref, groups=pgroups, term=cfg.term)
        t_eff = time.perf_counter() - t0
        shown = ema.smooth(eff) if ema else eff
        curve_rows += [{"checkpoint": path.name, "step": step, **r} for r in shown.rows()]
        info = {"checkpoint": path.name, "step": step, "loss": eff.loss, "loss_forget_term": eff.loss_forget,
                "risk_forget": eff.risk_forget, "risk_retain": eff.risk_retain, "seconds": round(t_eff, 3)}
        if eff.no_grad:
            info["no_grad"] = eff.no_grad
        if cfg.per_instance:
            inst = instance_geffects(m, objective, slices.forget, slices.retain, ref, groups=pgroups,
                                     method=cfg.instance_method)
            inst_rows += [{"checkpoint": path.name, "step": step, **r} for r in inst.rows()]
            info["instance_method"] = inst.method
            info["instance_seconds"] = round(time.perf_counter() - t0 - t_eff, 3)
        per_step.append(info)
        log.info("geffect %s step %d: e_u=%.4g e_r=%.4g (%.1fs)", run.path.name, step, eff.unlearn["total"],
                 eff.retain["total"], t_eff)
        write_csv(out / "geffect.csv", CURVE_FIELDS, curve_rows)
        if inst_rows:
            write_csv(out / "instances.csv", INSTANCE_FIELDS, inst_rows)
    return {"curve": curve_rows, "instances": inst_rows, "steps": per_step, "groups": names}


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[dict]) -> Path:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a G-effect CSV with `step` as int and `value`/`unlearn`/`retain`/`weight` as float."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("step", "index"):
            if k in r:
                r[k] = int(r[k])
        for k in ("value", "unlearn", "retain", "weight"):
            if k in r:
                r[k] = float(r[k]) if r[k] not in ("", None) else float("nan")
    return rows


class GEffectCallback(TrainerCallback):
    """Compute G-effects every `every_n_steps` optimiser steps of an HF `Trainer` (model at that step).

    `slices` are fixed eval batches (`make_slices` / `build_slices`); `ref` the objective's reference provider
    (the trainer's). Rows accumulate in `self.rows` (checkpoint `live`, the step, group, kind, value) and, with
    a `run_dir`, in `<run_dir>/geffect/live.csv` (and `live_instances.csv` with `per_instance=True`).
    """

    def __init__(self, objective, slices: EvalSlices, ref=None, every_n_steps: int = 5, run_dir: str | Path | None = None,
                 groups: int | str = 3, per_instance: bool = False, smooth: str = "none", term: str = "total"):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps}: must be >= 1")
        if smooth not in SMOOTHING:
            raise ValueError(f"smooth={smooth!r}: expected one of {SMOOTHING}")
        self.objective, self.slices, self.ref = objective, slices, ref
        self.every, self.blocks, self.per_instance, self.term = every_n_steps, parse_groups(groups), per_instance, term
        self.out = Path(run_dir) / "geffect" if run_dir else None
        self.ema = EMA(0.6) if smooth == "ema" else None
        self.rows: list[dict] = []
        self.instance_rows: list[dict] = []
        self._on_device = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step % self.every:
            return
        self.measure(model, state.global_step)

    def measure(self, model, step: int) -> GEffect:
        device = next(model.parameters()).device
        if self._on_device is None or self._on_device[0] != device:
            self._on_device = (device, self.slices.to(device))
        slices = self._on_device[1]
        pgroups = parameter_groups(model, self.blocks)
        eff = compute_geffect(model, self.objective, slices, self.ref, groups=pgroups, term=self.term)
        shown = self.ema.smooth(eff) if self.ema else eff
        self.rows += [{"checkpoint": "live", "step": step, **r} for r in shown.rows()]
        if self.per_instance:
            inst = instance_geffects(model, self.objective, slices.forget, slices.retain, self.ref, groups=pgroups)
            self.instance_rows += [{"checkpoint": "live", "step": step, **r} for r in inst.rows()]
        if self.out is not None:
            write_csv(self.out / "live.csv", CURVE_FIELDS, self.rows)
            if self.instance_rows:
                write_csv(self.out / "live_instances.csv", INSTANCE_FIELDS, self.instance_rows)
        return eff
