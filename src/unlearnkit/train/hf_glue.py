"""The glue both training commands share with the HF Trainer: arguments, logging, final save, resume."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments

from ..precision import resolve_precision
from ..runs import RunDir, clean_stale_temps, save_model_atomically  # noqa: F401  (re-exported for the trainers)
from ..runs import checkpoint_step, last_checkpoint
from .checkpoints import clean_staging
from .settings import TrainingSettings


def training_arguments(run: RunDir, cfg: TrainingSettings, *, batch_size: int, optim: str = "adamw_torch_fused",
                       group_by_length: bool = False) -> TrainingArguments:
    """TrainingArguments from the shared settings, with the run's conventions: checkpoints under `checkpoints/`
    (`save_steps` 0: every epoch; < 0: none, for callers that save what they need themselves), bf16 only where fast.

    The fused AdamW is the default (on CPU it takes 0.1 s per SmolLM2 step against 0.5 s for the for-each
    one); `group_by_length` batches rows of similar length together (less padding, same epochs)."""
    bf16 = resolve_precision(cfg.precision) == "bf16"
    on_gpu = torch.cuda.is_available()
    save = "no" if cfg.save_steps < 0 else "steps" if cfg.save_steps > 0 else "epoch"
    return TrainingArguments(
        output_dir=str(run.checkpoints if cfg.save_steps >= 0 else run.path),  # no checkpoints: no empty folder
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.lr,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup,
        lr_scheduler_type=cfg.scheduler,
        max_grad_norm=cfg.max_grad_norm,
        optim=optim,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        bf16=bf16,
        use_cpu=not on_gpu,
        save_strategy=save,
        save_steps=cfg.save_steps if cfg.save_steps > 0 else 500,
        save_total_limit=cfg.keep_checkpoints,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to=[] if cfg.report_to in ("none", "", None) else cfg.report_to,
        seed=cfg.seed,
        data_seed=cfg.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        eval_strategy="no",
        disable_tqdm=False,
    )


class JsonlLogCallback(TrainerCallback):
    """Append every Trainer log record (loss terms, lr, grad norm) to the run's log.jsonl."""

    def __init__(self, run: RunDir):
        self.run = run

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.run.log({"step": state.global_step, "epoch": state.epoch, **logs})


class DivergenceError(RuntimeError):
    pass


def diverged(loss: float, bound: float | None) -> bool:
    """True when the loss is NaN/inf or |loss| > bound."""
    return not math.isfinite(loss) or (bound is not None and abs(loss) > bound)


def check_finite(loss: float, bound: float | None, step: int, last_good: Path | None) -> None:
    """Raise `DivergenceError` when the loss is NaN/inf or beyond `bound`; the last good checkpoint is kept."""
    if diverged(loss, bound):
        raise DivergenceError(_divergence_message(step, f"loss={loss} (bound {bound})", last_good))


def _divergence_message(step: int, what: str, last_good: Path | None, stopped: str = "stopped before its update") -> str:
    where = f"last good checkpoint kept at {last_good}" if last_good else "no checkpoint had been written yet"
    return f"training diverged at step {step}: {what}; {stopped}, {where}"


def parameters_finite(model, accelerator=None) -> bool:
    """True when every parameter is finite, on every process (a sharded model checks its shard, then all agree)."""
    ok = all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())
    if accelerator is not None and accelerator.num_processes > 1:
        flag = torch.tensor([0.0 if ok else 1.0], device=accelerator.device)
        ok = float(accelerator.reduce(flag, reduction="sum").item()) == 0.0
    return ok


class DivergenceGuardMixin:
    """Mixin for `transformers.Trainer`: stop before an optimizer step whose gradient norm is NaN/inf.

    A finite loss can still have a NaN gradient (an overflow in the backward pass); clipping by a NaN norm then
    turns every gradient into NaN and the update writes NaN into every weight — and the next checkpoint would be
    all NaN. The norm is checked after the (all-reduced) gradients are clipped and before `optimizer.step`, so
    every process stops on the same step with the weights of the last good one. As a second line, a checkpoint
    whose parameters are not all finite is never written, so the newest `step-N` is always one to resume from.
    Set `self.run` to log the stop to log.jsonl."""

    run: RunDir | None = None

    def _get_grad_norm(self, model, grad_norm=None):  # Trainer hook: the pre-clip norm, before optimizer.step
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        value = float(norm) if norm is not None else 0.0
        if not math.isfinite(value):
            self.stop_diverged(f"gradient norm={value} (the loss was finite)", {"grad_norm": value})
        return norm

    def _save_checkpoint(self, model, trial):  # Trainer hook; before AtomicCheckpointMixin's in the MRO
        if not parameters_finite(model, self.accelerator):
            self.stop_diverged("the parameters are not all finite", {}, step=self.state.global_step,
                               stopped="its checkpoint was not written")
        super()._save_checkpoint(model, trial)

    def stop_diverged(self, what: str, record: dict, step: int | None = None,
                      stopped: str = "stopped before its update") -> None:
        """Log the divergence to log.jsonl (main process) and raise `DivergenceError` on every process."""
        step = self.state.global_step + 1 if step is None else step
        message = _divergence_message(step, what, last_checkpoint(self.args.output_dir), stopped)
        if self.run is not None and self.is_world_process_zero():
            self.run.log({"step": step, "diverged": True, **record, "message": message})
        raise DivergenceError(message)


def resume_point(run: RunDir, clean: bool = True) -> Path | None:
    """The last complete checkpoint, if any; with `clean` (the main process, holding the run's lock) first remove
    half-written staging checkpoints and the temp folders a killed final save left (`.model.tmp-*`)."""
    if clean:
        clean_staging(run.checkpoints)
        clean_stale_temps(run.path)
    return last_checkpoint(run.checkpoints)


def step_of(checkpoint: Path | None) -> int:
    """The step a resume starts from: N of a `step-N` checkpoint (runs.checkpoint_step), 0 for a fresh run."""
    return checkpoint_step(checkpoint.name) if checkpoint is not None else 0


def planned_steps(trainer) -> int:
    """The optimizer steps this training asks for: max_steps, or epochs × update steps per epoch (HF's count)."""
    if trainer.args.max_steps > 0:
        return trainer.args.max_steps
    return trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1]


def logged_loss(rows: list[dict], upto: int) -> tuple[float, int]:
    """(sum, steps) of the training loss over steps 1..`upto` from log.jsonl rows: each logged `loss` is the mean
    since the previous logged step, so it is weighted by the steps it covers. Steps after the last logged one
    are not covered (count them from `steps`)."""
    points = sorted({int(r["step"]): r["loss"] for r in rows
                     if "learning_rate" in r and not r.get("diverged") and isinstance(r.get("loss"), (int, float))
                     and isinstance(r.get("step"), (int, float)) and 0 < r["step"] <= upto}.items())
    total, prev = 0.0, 0
    for step, loss in points:
        total += float(loss) * (step - prev)
        prev = step
    return total, prev


def _finish_at(trainer, checkpoint: Path) -> None:
    """The checkpoint is already at the planned last step: load its weights and state, train nothing (HF's loop
    would run one more step before it checks max_steps)."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))   # full weights or LoRA adapter, as `train(resume_from=…)` does
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def train_resuming(trainer, run: RunDir, summary: dict) -> Path | None:
    """Train from the last complete checkpoint (if any); record resume point, time, loss and steps in `summary`.

    A resumed run's log.jsonl is cut back to the checkpoint's step first (the killed run may have logged steps
    after it). `train_loss` is the mean loss over all the run's steps: on a resumed run the logged losses up to
    the checkpoint plus the Trainer's mean over the steps trained now."""
    import logging
    import time

    main = trainer.args.should_save
    resume = resume_point(run, clean=main)
    done = step_of(resume)
    if main:
        run.truncate_log(done)
    t0, result, complete = time.time(), None, False
    if resume is not None:
        logging.getLogger(__name__).info("resuming from %s", resume)
        summary["resumed_from"] = str(resume)
        planned = planned_steps(trainer)
        if done > planned:
            raise ValueError(f"run={run.path}: its last checkpoint {resume.name} is beyond the {planned} steps asked "
                             f"for (max_steps/epochs); ask for at least {done} steps, or overwrite=true to retrain")
        complete = done == planned
    if complete:
        _finish_at(trainer, resume)
    else:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    summary["train_seconds"] = time.time() - t0
    summary["steps"] = trainer.state.global_step
    new = trainer.state.global_step - done
    if done == 0:
        summary["train_loss"] = result.training_loss
    else:
        before, covered = logged_loss(run.read_log(), done)
        after = result.training_loss * new if result is not None else 0.0
        summary["train_loss"] = (before + after) / (covered + new) if covered + new else None
    return resume
