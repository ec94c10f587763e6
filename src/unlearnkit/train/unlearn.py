"""Unlearning: θ_ini + an objective + forget (and retain / IdK) data → checkpoints θ_un(t) and a final model.

The main path is linear: config → objective → data → θ_ini → reference (cached log-probs, and a frozen
copy or disabled adapters only where the objective needs more) → `UnlearnTrainer` → save.

    from unlearnkit.train.unlearn import UnlearnConfig, unlearn
    unlearn(UnlearnConfig(model="runs/target/model", forget="tofu:forget01", retain="tofu:retain99",
                          method="npo", params={"beta": 0.1}, run="runs/npo"))

or `unlearnkit unlearn method=npo model=runs/target/model forget=tofu:forget01 retain=tofu:retain99
params.beta=0.1`, which starts from the method's preset (`unlearnkit.presets`: the TOFU protocol, retain term
included) and overrides it key by key; a config built directly in Python, as above, is taken as given
(`presets.load_with_preset(UnlearnConfig, base={...})` adds the preset layer). Under `accelerate launch`
/ `torchrun` it runs data-parallel: each process takes its share of every forget batch (HF's sharded
sampler) and of every retain draw (`RetainStream`), so N processes with batch B match one with batch N·B.

What the run directory holds (shared/DESIGN.md §3):
    config.yaml           the config (with the preset it started from), plus `inputs`: θ_ini's resolved path,
                          ref model, method and its full hyper-parameters, the preset's file and the keys set
                          differently from it, forget/retain/IdK specs (UIPE and the G-effect read these)
    reference/logprobs.safetensors   reference log-probs of the forget / IdK rows (see reference_cache.py)
    checkpoints/step-N/   every `save_steps` (default: every epoch), all kept by default (a series for
                          G-effect and UIPE); LoRA runs hold adapter files. Optimizer state only in the newest
                          one unless keep_optimizer=all (resume needs only the newest).
    log.jsonl             per logged step: loss, each objective term (forget_loss, retain_loss, …), lr, grad norm
    model/ or adapter/    the final model (full fine-tuning) or LoRA adapter (+ tokenizer; the adapter's
                          config names its base, θ_ini), and unlearn.json (summary, written last)
A killed run resumes from its last complete checkpoint when the same command is run again.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from transformers import Trainer

from ..config import to_dict
from ..data.collate import PromptFormat, QADataset
from ..data.records import DataError, QARecord
from ..data.specs import load_records
from ..models.loading import load_model, load_tokenizer, resolve_model_path
from ..models.lora import LoraSettings, apply_lora
from ..objectives import RETAIN_TERMS, FrozenModelReference, Objective, UnlearnBatch, build_objective
from ..models.trainable import check_patterns, freeze_except
from ..objectives.reduce import global_batch
from ..objectives.reference import build_reference, cached_splits
from ..precision import resolve_precision
from ..presets import check_recorded, describe as describe_preset
from ..runs import RunDir, list_checkpoints, locked_run, write_json
from .checkpoints import AtomicCheckpointMixin
from .hooks import Penalty
from .hf_glue import (DivergenceGuardMixin, JsonlLogCallback, diverged, save_model_atomically, train_resuming,
                      training_arguments)
from .rerun import check_rerun_options, settle_rerun
from .settings import TrainingSettings, setting
from .reference_cache import model_fingerprint, reference_cache
from .throughput import throughput_callback
from .unlearn_data import (ForgetDataset, RetainStream, UnlearnCollator, idk_records, load_idk_answers,
                           resolve_idk_path)

log = logging.getLogger(__name__)

SUMMARY = "unlearn.json"
OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")


@dataclass
class UnlearnConfig(TrainingSettings):
    """Unlearn θ_ini with a registered objective on a forget set (+ retain / IdK data)."""

    model: str = setting("default", "θ_ini: a finetune run's model/ dir, a local dir, a hub id, a .gguf file or 'default' "
                                    "(SmolLM2-135M offline)")
    ref_model: str = setting("", "reference π_ref if not θ_ini (same tokenizer required); empty: π_ref = θ_ini")
    forget: str = setting("tofu:forget01", "forget data spec: tofu:<split>, synthetic:<part>,..., or a .jsonl path")
    retain: str = setting("", "retain data spec (same forms), or empty when the method needs none")
    idk: str = setting("auto", "refusal answers for idk_* methods, one per line; 'auto': idontknow.jsonl in the TOFU "
                               "folder ($UNLEARNKIT_TOFU_DIR or ../shared/data/tofu). Only read by methods that need it")
    method: str = setting("npo", "objective name (unlearnkit.objectives.OBJECTIVES): ga, grad_diff, kl, npo, simnpo, "
                                 "idk_nll, idk_dpo, wga, tnpo, wtnpo, rmu, undial")
    params: dict[str, Any] = setting({}, "the method's hyper-parameters, e.g. params.beta=0.1 params.retain=kl "
                                         "params.retain_weight=1 (unknown keys are refused, with the known ones)")
    preset: str = setting("none", "the preset under these values (unlearnkit/presets/methods/<method>.yaml): the CLI and "
                                  "sweeps take the method's own unless preset=none, and record its name here; a config "
                                  "built directly in Python is taken as given ('none')")
    run: str = setting("runs/unlearn", "run directory")
    epochs: float = setting(10.0, "epochs over the forget set")
    lr: float = setting(1e-5, "peak learning rate")
    forget_batch_size: int = setting(8, "forget rows per device per micro-step")
    retain_batch_size: int = setting(0, "retain rows per device per micro-step (0: same as forget_batch_size)")
    grad_accum: int = setting(4, "gradient accumulation steps (effective batch = forget_batch_size · grad_accum · processes)")
    lora: bool = setting(False, "train a LoRA adapter on θ_ini instead of all weights (saved as adapter/)")
    lora_r: int = setting(8, "LoRA rank")
    lora_alpha: int = setting(16, "LoRA alpha")
    lora_targets: list[str] = setting(["q_proj", "v_proj"], "LoRA target modules")
    trainable: list[str] = setting([], "train only the parameters matching these globs (or 're:' regexes) over "
                                       "parameter names, e.g. WMDP's model.layers.[567].mlp.down_proj.weight; empty: "
                                       "all (models/trainable.py)")
    keep_checkpoints: Optional[int] = setting(None, "keep only the newest N checkpoints (null: all, for G-effect/UIPE)")
    keep_optimizer: str = setting("last", "optimizer state in checkpoints: 'last' (only the newest, enough to resume) or 'all'")
    loss_bound: Optional[float] = setting(None, "divergence guard: stop when |loss| exceeds this (NaN/inf always stop)")
    logging_steps: int = setting(1, "log every N optimizer steps")
    max_length: int = setting(256, "truncate examples beyond this many tokens (reported)")
    template: str = setting("auto", "prompt template: auto | chat | plain")
    masking: str = setting("exact", "exact | open-unlearning (joint tokenisation, first answer token masked)")
    ref_batch_size: int = setting(16, "batch size of the one-off reference pass that fills the log-prob cache")
    seed: int = setting(0, "random seed (data order, retain draws, IdK answers, LoRA init)")
    overwrite: bool = setting(False, "delete what the run directory holds and start fresh")
    resume: str = setting("auto", "auto: resume (or reuse) only a run with the same settings | force: despite differences")

    def __post_init__(self):
        for name in ("epochs", "lr", "forget_batch_size", "grad_accum", "logging_steps", "ref_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be > 0")
        for name in ("retain_batch_size", "save_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 0")
        if self.keep_optimizer not in ("last", "all"):
            raise ValueError(f"keep_optimizer={self.keep_optimizer!r}: expected 'last' or 'all'")
        if self.loss_bound is not None and not self.loss_bound > 0:
            raise ValueError(f"loss_bound={self.loss_bound}: must be > 0 (or null for NaN/inf only)")
        resolve_precision(self.precision)
        check_recorded(self.preset)
        check_rerun_options(self.overwrite, self.resume)
        PromptFormat(template=self.template, masking=self.masking)
        if self.trainable and self.lora:
            raise ValueError("trainable= and lora=true both choose what trains: use one (LoRA trains its adapter)")
        check_patterns(self.trainable)
        self.objective()  # unknown method / hyper-parameter → error now, naming the known ones

    def objective(self) -> Objective:
        return build_objective(self.method, dict(self.params))

    @property
    def prompt_format(self) -> PromptFormat:
        return PromptFormat(template=self.template, masking=self.masking, max_length=self.max_length)


# -- the trainer ---------------------------------------------------------------------------------------
class UnlearnTrainer(DivergenceGuardMixin, AtomicCheckpointMixin, Trainer):
    """HF Trainer whose step is one objective call on (forget, retain, IdK) batches.

    The train dataset is the forget set (`ForgetDataset`); a retain batch is drawn per micro-step from
    `retain` (a `RetainStream`, independent of the forget order). `compute_loss` unpacks, calls the objective,
    guards against divergence and keeps each logged term; `log` adds their averages since the last log.
    Every training path runs this step (train/hooks.py): `penalty(model) -> (scalar, terms)` adds an extra term
    (Reveal's O-LoRA orthogonality; the objective's own loss is then logged as `objective_loss`), `batch_order`
    fixes the forget batches (one process), a `StopWhen` callback ends training on a condition.
    """

    def __init__(self, *args, objective: Objective, reference=None, retain: RetainStream | None = None,
                 loss_bound: float | None = None, keep_optimizer: str = "last", run: RunDir | None = None,
                 penalty: Penalty | None = None, batch_order: list[list[int]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.objective, self.reference, self.retain = objective, reference, retain
        self.loss_bound, self.keep_optimizer, self.run = loss_bound, keep_optimizer, run
        self.penalty, self.batch_order = penalty, batch_order  # see train/hooks.py
        if batch_order is not None and self.args.world_size > 1:
            raise ValueError("batch_order fixes one process's forget batches; under data parallelism leave it unset "
                             "(the Trainer's sampler shards the forget set)")
        self.model_accepts_loss_kwargs = False  # the objective's loss is a per-batch mean: Trainer scales it for GA
        self._retain_draw: int | None = None
        self._term_sums: dict[str, float] = {}
        self._term_counts: dict[str, int] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = UnlearnBatch(forget=inputs["forget"], retain=self._next_retain(), idk=inputs.get("idk"))
        # autocast also for reference/θ_ini forwards, which accelerate did not wrap; global_batch: token and row
        # means over every process's rows, so N processes train the loss of one process with N times the batch
        with self.accelerator.autocast(), global_batch(self.args.world_size):
            loss, terms = self.objective.loss(model, batch, self.reference)
            if self.penalty is not None:   # an extra term on the parameters (O-LoRA): logged as its own terms
                extra, extra_terms = self.penalty(model)
                terms = {**terms, "objective_loss": terms["loss"], **extra_terms}
                loss = loss + extra
        self._guard(loss)
        for k, v in terms.items():
            if k != "loss":  # the Trainer logs the loss itself (averaged over processes and accumulation)
                self._term_sums[k] = self._term_sums.get(k, 0.0) + float(v)
                self._term_counts[k] = self._term_counts.get(k, 0) + 1
        return (loss, None) if return_outputs else loss

    def _next_retain(self):
        if self.retain is None:
            return None
        if self._retain_draw is None:  # resumed runs continue the stream where the killed run stopped
            self._retain_draw = self.state.global_step * self.args.gradient_accumulation_steps
        batch = self.retain.batch(self._retain_draw)
        self._retain_draw += 1
        return self._prepare_input(batch)

    def _guard(self, loss: torch.Tensor) -> None:
        """Stop before the bad step's update (so no checkpoint can follow it); every process stops together."""
        value = loss.detach().float().reshape(1)
        if self.args.world_size > 1:
            values = self.accelerator.gather(value)
            bad = values[~torch.isfinite(values)]
            value = bad[:1] if bad.numel() else values[values.abs().argmax()].reshape(1)
        value = float(value.item())
        if diverged(value, self.loss_bound):
            self.stop_diverged(f"loss={value} (bound {self.loss_bound})", {"loss": value, "loss_bound": self.loss_bound})

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._term_sums:
            keys = sorted(self._term_sums)
            means = torch.tensor([self._term_sums[k] / self._term_counts[k] for k in keys], dtype=torch.float64)
            if self.args.world_size > 1:
                means = self.accelerator.reduce(means.to(self.args.device), reduction="mean").cpu()
            for k, v in zip(keys, means.tolist()):
                logs.setdefault(k, v)
            self._term_sums, self._term_counts = {}, {}
        super().log(logs, start_time)

    def get_train_dataloader(self):
        if self.batch_order is None:
            return super().get_train_dataloader()
        return torch.utils.data.DataLoader(self.train_dataset, batch_sampler=self.batch_order,
                                           collate_fn=self.data_collator)

    def floating_point_ops(self, inputs) -> int:
        return super().floating_point_ops(inputs.get("forget", inputs))

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.keep_optimizer == "last" and self.args.should_save:
            for _, older in list_checkpoints(self.args.output_dir)[:-1]:
                for name in OPTIMIZER_FILES:
                    (older / name).unlink(missing_ok=True)


# -- main path -----------------------------------------------------------------------------------------
def _resolved_model(spec: str) -> str:
    where, gguf = resolve_model_path(spec)
    p = Path(where)
    if p.exists():
        p = p.resolve()
        return str(p / gguf) if gguf else str(p)
    return where


def _check_same_tokenizer(tok, ref_tok, cfg: UnlearnConfig) -> None:
    a, b = tok.get_vocab(), ref_tok.get_vocab()
    if a != b or tok.eos_token_id != ref_tok.eos_token_id:
        n_diff = len(set(a.items()) ^ set(b.items()))
        raise ValueError(
            f"ref_model={cfg.ref_model!r}: its tokenizer differs from model={cfg.model!r}'s (vocab {len(b)} vs "
            f"{len(a)} tokens, {n_diff} differing entries, eos {ref_tok.eos_token_id} vs {tok.eos_token_id}); "
            f"reference log-probs must score the same token ids: use a reference with the same tokenizer, or "
            f"leave ref_model empty (π_ref = θ_ini)")


def _records(key: str, spec: str) -> list[QARecord]:
    try:
        return load_records(spec)
    except DataError as exc:
        raise DataError(f"{key}={spec!r}: {exc}") from None


def _retain_settings(objective: Objective) -> str:
    """The `params.retain=…` values this objective accepts (its config has the fields each term reads)."""
    kinds = [k for k, term in RETAIN_TERMS.items() if all(hasattr(objective.config, f) for f in term.config_fields)]
    return " or ".join(f"params.retain={k}" for k in kinds)


def _load_data(cfg: UnlearnConfig, objective: Objective) -> tuple[list[QARecord], list[QARecord], list[QARecord], str | None]:
    forget = _records("forget", cfg.forget)
    if not forget:
        raise ValueError(f"forget={cfg.forget!r}: the forget set is empty; nothing to unlearn")
    retain = _records("retain", cfg.retain) if cfg.retain else []
    if cfg.retain and not retain:
        raise ValueError(f"retain={cfg.retain!r}: the retain set is empty; pass a non-empty spec or retain=''")
    idk, idk_path = [], None
    if objective.needs_idk:
        idk_path = str(resolve_idk_path(cfg.idk).resolve())
        idk = idk_records(forget, load_idk_answers(idk_path), cfg.seed)
    try:
        objective.check_inputs(retain=bool(retain), idk=bool(idk), reference=True)
    except ValueError as exc:
        hint = ""
        if objective.needs_retain and not retain:
            where = f", which preset {cfg.preset!r} sets" if cfg.preset != "none" else ""
            hint = f" (give retain=<data spec>, or params.retain=none to drop the retain term{where})"
        raise ValueError(f"method={cfg.method!r}: {exc}{hint}") from None
    if retain and not objective.needs_retain:
        log.warning("method %s has no retain term (params.retain='none'), so retain=%s is not read; to use it set %s",
                    cfg.method, cfg.retain, _retain_settings(objective))
        retain = []
    return forget, retain, idk, idk_path


def _inputs_record(cfg: UnlearnConfig, objective: Objective) -> dict:
    """The part of config.yaml's `inputs` that the config alone determines (UIPE and the G-effect read it)."""
    return {"theta_ini": _resolved_model(cfg.model),
            "ref_model": _resolved_model(cfg.ref_model) if cfg.ref_model else _resolved_model(cfg.model),
            "method": cfg.method, "objective": asdict(objective.config), "preset": describe_preset(to_dict(cfg)),
            "forget": cfg.forget,
            "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "targets": list(cfg.lora_targets)} if cfg.lora else None}


def _reference_tables(cfg: UnlearnConfig, run: RunDir, objective: Objective, theta_ini, datasets: dict[str, QADataset],
                      pad_id: int, args, summary: dict) -> dict[str, torch.Tensor]:
    """θ_ini's answer-token log-probs of the forget / IdK rows the objective reads (`cached_splits`), from the
    run's on-disk cache (`reference_cache`: computed once, by the main process first); recorded in `summary`."""
    splits = {s: datasets[s] for s in cached_splits(objective) if s in datasets}
    if not splits:
        return {}
    precision, device = resolve_precision(cfg.precision), args.device
    digest = model_fingerprint(theta_ini)
    with args.main_process_first(local=False, desc="reference cache"):
        tables, status = reference_cache(run.path, FrozenModelReference(theta_ini), digest, splits,
                                         pad_id=pad_id,
                                         batch_size=cfg.ref_batch_size, device=device, precision=precision)
    summary["reference_cache"] = {"status": status, "bytes_in_memory": sum(t.nbytes for t in tables.values()),
                                  "splits": sorted(tables)}
    return {k: t.to(device) for k, t in tables.items()}


def unlearn(cfg: UnlearnConfig) -> dict:
    """Unlearn, save the final model (or adapter) in the run dir and return a summary (also `unlearn.json`).

    The run directory is locked for the whole command (`runs.locked_run`); an existing run in it is resumed or
    reused only when its stored config matches this one (`rerun.settle_rerun`)."""
    with locked_run(cfg.run) as run:
        return _unlearn(cfg, run)


def _unlearn(cfg: UnlearnConfig, run: RunDir) -> dict:
    finished, forced = settle_rerun(run, "unlearn", to_dict(cfg), SUMMARY, overwrite=cfg.overwrite, resume=cfg.resume)
    if finished is not None:
        return finished

    # 1. objective and data: every input error is raised here, before any model is loaded
    objective = cfg.objective()
    forget_recs, retain_recs, idk_recs, idk_path = _load_data(cfg, objective)
    tok = load_tokenizer(cfg.model)
    if cfg.ref_model:
        _check_same_tokenizer(tok, load_tokenizer(cfg.ref_model), cfg)
    fmt = cfg.prompt_format
    datasets = {k: QADataset(recs, tok, fmt) for k, recs in
                (("forget", forget_recs), ("retain", retain_recs), ("idk", idk_recs)) if recs}
    precision = resolve_precision(cfg.precision)
    args = training_arguments(run, cfg, batch_size=cfg.forget_batch_size)
    device = args.device  # sets up the process group under accelerate launch / torchrun

    # 2. θ_ini (and a separate reference, if asked), the run record
    model, tok = load_model(cfg.model, dtype=torch.float32)
    model.to(device)
    ref_model = None
    if cfg.ref_model:
        ref_model, _ = load_model(cfg.ref_model, dtype=torch.float32)
        ref_model.to(device).eval().requires_grad_(False)
    theta_ini = ref_model if ref_model is not None else model
    inputs = {**_inputs_record(cfg, objective), "idk": idk_path, "retain": cfg.retain if retain_recs else "",
              "n_forget": len(forget_recs), "n_retain": len(retain_recs), "precision": precision,
              "processes": args.world_size}
    if args.should_save:
        notes = {"resumed_despite": forced} if forced else {}
        run.write_config("unlearn", to_dict(cfg), seed=cfg.seed, extra={"inputs": inputs, **notes})

    # 3. reference: log-probs of the forget/IdK rows cached once (on disk), the rest as `build_reference` decides
    summary: dict = {"method": cfg.method, "theta_ini": inputs["theta_ini"], "forget": cfg.forget,
                     "records": {k: len(v) for k, v in datasets.items()},
                     "truncated": {k: v.n_truncated for k, v in datasets.items()}}
    tables = _reference_tables(cfg, run, objective, theta_ini, datasets, tok.pad_token_id, args, summary)

    # 4. LoRA, trainer, train (resuming from the last complete checkpoint)
    if cfg.lora:
        from transformers import set_seed

        set_seed(cfg.seed)
        model = apply_lora(model, LoraSettings(cfg.lora_r, cfg.lora_alpha, 0.0, list(cfg.lora_targets)))
    reference = build_reference(objective, model, frozen=ref_model, tables=tables, copy_trained=not cfg.lora)
    if reference.provider is not None:
        summary["reference"] = reference.record()
    summary["trainable"] = len(freeze_except(model, cfg.trainable)) if cfg.trainable else "all"
    model.train()
    retain = None
    if "retain" in datasets:
        retain = RetainStream(datasets["retain"], cfg.retain_batch_size or cfg.forget_batch_size, tok.pad_token_id,
                              seed=cfg.seed, rank=args.process_index, world_size=args.world_size)
    speed = throughput_callback(precision, reference.provider)
    trainer = UnlearnTrainer(
        model=model, args=args, train_dataset=ForgetDataset(datasets["forget"], datasets.get("idk")),
        data_collator=UnlearnCollator(tok.pad_token_id), processing_class=tok, callbacks=[speed, JsonlLogCallback(run)],
        objective=objective, reference=reference.provider, retain=retain, loss_bound=cfg.loss_bound,
        keep_optimizer=cfg.keep_optimizer, run=run)
    train_resuming(trainer, run, summary)
    summary["throughput"] = speed.totals()
    summary["checkpoints"] = [p.name for _, p in list_checkpoints(run.checkpoints)]

    # 5. final model (full) or adapter (LoRA), then the summary (its presence marks the run finished)
    if trainer.args.should_save:
        final = trainer.model
        out = save_model_atomically(final, tok, run.path / ("adapter" if cfg.lora else "model"))
        summary["output"] = str(out)
        write_json(run.path / SUMMARY, summary)
    trainer.accelerator.wait_for_everyone()
    return summary
