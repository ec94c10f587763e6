"""Train a finished unlearning run on from θ_un until ‖θ − θ_ini‖ reaches target norms (UIPE's "trained longer").

The extra steps are `UnlearnTrainer` steps (same objective call, autocast, divergence guard and logging as the
base run) with a stop condition (`NormTargets`, a `StopWhen`), the base run's AdamW moments (`continued_optimizer`)
and its retain stream continued at its draw count (`OffsetDraws`). The forget order is that of a loader seeded
with the base run's seed (`loader_batches`).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from transformers import Trainer

from ..data.collate import QADataset
from ..data.specs import load_records
from ..models.loading import load_model
from ..objectives import build_objective
from ..objectives.reference import build_reference
from ..runs import last_checkpoint, open_run, read_run_record, save_model_atomically, write_json
from .hf_glue import JsonlLogCallback, training_arguments
from .hooks import OffsetDraws, StopWhen, loader_batches
from .settings import TrainingSettings
from .unlearn import UnlearnTrainer
from .unlearn_data import ForgetDataset, RetainStream, UnlearnCollator

log = logging.getLogger(__name__)


def param_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """‖a − b‖₂ over the floating-point tensors the two state dicts share."""
    total = 0.0
    for k, v in a.items():
        if k in b and v.is_floating_point():
            total += float((v.detach().double() - b[k].detach().double()).pow(2).sum())
    return math.sqrt(total)


class NormTargets(StopWhen):
    """After every step: ‖θ − θ_ini‖ (added to that step's log record); at each target's first hit the model is
    saved as `<out>/models/<name>/`; training stops once every target is reached."""

    def __init__(self, ini_state: dict, targets: dict[str, float], out: Path, tok, echo):
        super().__init__(self._reached_all)
        self.ini, self.pending, self.out, self.tok, self.echo = ini_state, dict(targets), out, tok, echo
        self.result: dict[str, dict] = {}
        self.norm, self.step = 0.0, 0

    def _reached_all(self, model, step: int) -> bool:
        self.norm, self.step = param_distance(model.state_dict(), self.ini), step
        for name, target in list(self.pending.items()):
            if self.norm >= target:
                save_model_atomically(model, self.tok, self.out / "models" / name)
                self.result[name] = {"target": target, "step": step, "norm": self.norm, "reached": True}
                del self.pending[name]
                self.echo(f"  trained longer [{name}]: ‖θ − θ_ini‖ = {self.norm:.4g} ≥ {target:.4g} after {step} "
                          f"extra steps")
        return not self.pending

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs and state.global_step == self.step:
            logs["norm"] = self.norm

    def finish(self, model, max_extra_steps: int) -> dict[str, dict]:
        """Targets not reached within `max_extra_steps` keep (and save) the last state, marked reached: false."""
        for name, target in self.pending.items():
            save_model_atomically(model, self.tok, self.out / "models" / name)
            self.result[name] = {"target": target, "step": self.step, "norm": self.norm, "reached": False}
            self.echo(f"  trained longer [{name}]: not reached within {max_extra_steps} steps (‖θ − θ_ini‖ = "
                      f"{self.norm:.4g} < {target:.4g}); the last state is evaluated")
        return self.result


def continue_until_norm(run_dir: Path, targets: dict[str, float], out: Path, max_extra_steps: int,
                        echo=log.info) -> dict:
    """Continue an unlearning run from θ_un and stop at the first step where ‖θ − θ_ini‖ ≥ each target norm.

    Same objective, data, batch size, weight decay, clipping and (constant) learning rate as the base run. The norm
    is logged to `<out>/log.jsonl` with every step; the parameters at each target's first hit are saved as
    `<out>/models/<name>/`. A target not reached within `max_extra_steps` keeps the last state and is marked
    `reached: false`. Returns (and writes `<out>/continue.json`) `{name: {"target", "step", "norm", "reached"}}`.
    """
    from ..uipe.search import read_unlearn_run

    summary_path = out / "continue.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if set(done["targets"]) >= set(targets) and all((out / "models" / n).is_dir() for n in targets):
            return {n: done["targets"][n] for n in targets}
    inputs = read_unlearn_run(run_dir)
    record = read_run_record(inputs.run.path)
    if not record.summary:
        raise FileNotFoundError(f"{inputs.run.path}: no finished unlearn summary; finish the base run first")
    base_cfg = dict(record.config)
    seed = int(base_cfg.get("seed", 0))
    torch.manual_seed(seed)
    objective = build_objective(inputs.method, dict(base_cfg.get("params") or {}))
    model, tok = load_model(str(inputs.theta_un))
    ini, _ = load_model(str(inputs.theta_ini))
    ini.eval().requires_grad_(False)
    forget = QADataset(load_records(inputs.forget), tok, inputs.prompt_format)
    bs = int(base_cfg["forget_batch_size"])
    retain = None
    if objective.needs_retain:
        stream = RetainStream(QADataset(load_records(inputs.retain), tok, inputs.prompt_format),
                              int(base_cfg.get("retain_batch_size") or bs), tok.pad_token_id, seed=seed)
        retain = OffsetDraws(stream, int(record.summary.get("steps") or 0))
    opt, opt_source = continued_optimizer(model, inputs.run.checkpoints, float(base_cfg["lr"]),
                                          float(base_cfg["weight_decay"]))
    run = open_run(out)
    (out / "log.jsonl").unlink(missing_ok=True)
    run.write_config("unlearn_continue", {"base_run": str(inputs.run.path), "targets": targets,
                                          "max_extra_steps": max_extra_steps, "lr": base_cfg["lr"],
                                          "method": inputs.method, "params": base_cfg.get("params", {}),
                                          "scheduler": "constant", "optimizer": opt_source}, seed=seed)
    stop = NormTargets({k: v.detach().clone() for k, v in ini.state_dict().items()}, targets, out, tok, echo)
    norm0 = param_distance(model.state_dict(), stop.ini)
    run.log({"step": 0, "norm": norm0})
    settings = TrainingSettings(max_steps=max_extra_steps, lr=float(base_cfg["lr"]), grad_accum=1,
                                weight_decay=float(base_cfg["weight_decay"]), scheduler="constant",
                                max_grad_norm=float(base_cfg.get("max_grad_norm") or 0), precision="fp32",
                                save_steps=-1, logging_steps=1, seed=seed)
    trainer = UnlearnTrainer(
        model=model, args=training_arguments(run, settings, batch_size=bs), train_dataset=ForgetDataset(forget),
        data_collator=UnlearnCollator(tok.pad_token_id), processing_class=tok, callbacks=[stop, JsonlLogCallback(run)],
        objective=objective, reference=build_reference(objective, model, frozen=ini).provider, retain=retain,
        run=run, batch_order=loader_batches(len(forget), bs, torch.Generator().manual_seed(seed), max_extra_steps),
        optimizers=(opt, None))
    model.train()
    trainer.train()
    result = stop.finish(model, max_extra_steps)
    write_json(summary_path, {"targets": result, "start_norm": norm0, "optimizer": opt_source})
    return result


def continued_optimizer(model, checkpoints: Path, lr: float, weight_decay: float):
    """AdamW grouped as the HF Trainer groups it (decay / no decay), loaded with the state in the base run's last
    checkpoint when there is one (then the extra steps continue the same Adam moments)."""
    decay = set(Trainer.get_decay_parameter_names(None, model))  # HF's rule; it does not use `self`
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr)
    ckpt = last_checkpoint(checkpoints) if checkpoints.is_dir() else None
    if ckpt is None or not (Path(ckpt) / "optimizer.pt").is_file():
        return opt, "AdamW, fresh state (the base run left no optimizer.pt)"
    state = torch.load(Path(ckpt) / "optimizer.pt", map_location="cpu", weights_only=False)
    sizes = [len(g["params"]) for g in state["param_groups"]]
    if sizes != [len(g["params"]) for g in groups]:
        raise ValueError(f"{ckpt}/optimizer.pt has parameter groups of sizes {sizes}, this model "
                         f"{[len(g['params']) for g in groups]}: it was not written for this model")
    flat = [p for g in groups for p in g["params"]]
    for idx, st in state["state"].items():
        if "exp_avg" in st and tuple(st["exp_avg"].shape) != tuple(flat[idx].shape):
            raise ValueError(f"{ckpt}/optimizer.pt: state {idx} has shape {tuple(st['exp_avg'].shape)}, the "
                             f"parameter {tuple(flat[idx].shape)}: parameter order differs from the Trainer's")
    opt.load_state_dict(state)
    for g in opt.param_groups:
        g["lr"] = lr
    return opt, f"AdamW continued from {Path(ckpt).name}/optimizer.pt"
