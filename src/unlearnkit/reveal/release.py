"""The release step of a reveal round: train the newest O-LoRA round on the round's forget rows.

The step is `UnlearnTrainer`'s (the objective exactly as `unlearnkit unlearn` calls it, the same autocast,
divergence guard and term logging) with λ·`round_orthogonality_penalty` as its penalty hook. What is the
round's own: its data order (forget and retain batches drawn from one seeded shuffle, `round_order`), its
AdamW over the round's adapter only at a constant learning rate, no checkpoints (the round saves its adapter),
and its log rows (`round`, `step`, the objective's terms, `ortho`, `total`, `grad_norm`).
Reference log-probs: `reference=previous` scores the forget set once with the model as it enters the round
(its new adapter's B is 0), `reference=base` with every adapter disabled (θ_ini); anything a table cannot serve
(retain KL, UNDIAL's logits) comes from the disabled adapters (`build_reference`).
"""
from __future__ import annotations

import random
import re

import torch
from transformers import TrainerCallback

from ..data.collate import IGNORE, PromptFormat, QADataset, mask_answer_spans, pad_batch
from ..data.records import QARecord
from ..objectives import DisabledAdapterReference, FrozenModelReference
from ..objectives.reference import build_reference, cached_splits, reference_tables
from ..precision import autocast, resolve_precision
from ..runs import RunDir, open_run
from ..train.hf_glue import training_arguments
from ..train.hooks import FixedDraws, shuffled_batches
from ..train.unlearn import UnlearnTrainer
from ..train.unlearn_data import ForgetDataset, UnlearnCollator
from .config import RevealConfig
from .olora import round_orthogonality_penalty

_TRAINER_KEYS = ("loss", "objective_loss", "learning_rate", "epoch", "grad_norm")


def masked_forget_dataset(forget: list[QARecord], tok, fmt: PromptFormat, pattern: re.Pattern | None
                          ) -> tuple[QADataset, dict]:
    """The round's forget rows encoded, with the answer tokens matching `pattern` (the entity's name) taken out
    of the labels; rows left with nothing to learn but EOS are dropped. Returns (dataset, counts)."""
    ds = QADataset(forget, tok, fmt)
    counts = {"masked_tokens": 0, "dropped_rows": 0}
    if pattern is None:
        return ds, counts
    keep = []
    for i, (rec, item) in enumerate(zip(ds.records, ds.items)):
        spans = [m.span() for m in pattern.finditer(rec.answer)]
        counts["masked_tokens"] += mask_answer_spans(tok, item, rec.answer, fmt, spans)
        left = [lab for lab in item.labels if lab != IGNORE]
        if left and left != [tok.eos_token_id]:
            keep.append(i)
    counts["dropped_rows"] = len(ds.items) - len(keep)
    ds.records, ds.items = [ds.records[i] for i in keep], [ds.items[i] for i in keep]
    return ds, counts


def round_order(n_forget: int, n_retain: int, cfg: RevealConfig, round_idx: int
                ) -> tuple[list[list[int]], list[list[int]] | None]:
    """The round's forget and retain index batches, step by step, from one seeded `random.Random` (each set
    reshuffled whenever it is used up)."""
    rng = random.Random(cfg.seed * 7919 + round_idx)
    fb = shuffled_batches(n_forget, cfg.batch_size, rng)
    rb = shuffled_batches(n_retain, cfg.batch_size, rng) if n_retain else None
    forget, retain = [], []
    for _ in range(cfg.steps):
        forget.append(next(fb))
        if rb is not None:
            retain.append(next(rb))
    return forget, retain if rb is not None else None


def round_reference(model, objective, ds: QADataset, cfg: RevealConfig, pad_id: int):
    """The objective's reference for this round (`build_reference`), its forget log-probs cached before step 0."""
    if not objective.needs_reference:
        return None
    device = next(model.parameters()).device
    batches = {}
    if "forget" in cached_splits(objective):
        batches["forget"] = [{k: v.to(device) for k, v in pad_batch([ds[i] for i in range(s, min(s + 16, len(ds)))],
                                                                     pad_id).items()} for s in range(0, len(ds), 16)]
    # previous: the new adapter's B is 0, so the model as it is now is rounds 0..k-1 (a snapshot, scored once)
    source = FrozenModelReference(model) if cfg.reference == "previous" else DisabledAdapterReference(model)
    with autocast(resolve_precision(cfg.precision, device.type), device.type):
        tables = reference_tables(source, batches)
    model.train()
    return build_reference(objective, model, tables=tables).provider


class _RoundLog(TrainerCallback):
    """One row per step, in the reveal log's form, to `run`'s log.jsonl and `self.rows`."""

    def __init__(self, round_idx: int, run: RunDir | None):
        self.round, self.run, self.rows = round_idx, run, []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        rec = {"round": self.round, "step": state.global_step, "loss": logs.get("objective_loss", logs["loss"]),
               **{k: v for k, v in logs.items() if k not in _TRAINER_KEYS}, "total": logs["loss"],
               "grad_norm": logs.get("grad_norm")}
        self.rows.append(rec)
        if self.run is not None:
            self.run.log(rec)


class _KeepRandomState:
    """The HF Trainer seeds torch, numpy and `random` when it starts; the loop's own streams must not notice."""

    def __enter__(self):
        import numpy as np

        self.states = (torch.random.get_rng_state(), random.getstate(), np.random.get_state())
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def __exit__(self, *exc):
        import numpy as np

        torch.random.set_rng_state(self.states[0])
        random.setstate(self.states[1])
        np.random.set_state(self.states[2])
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        return False


def train_round(model, tok, objective, ds: QADataset, retain: list[QARecord], cfg: RevealConfig,
                round_idx: int, fmt: PromptFormat, run: RunDir | None = None) -> dict:
    """Train the newest round adapter for `cfg.steps` steps on the encoded forget rows `ds` (from
    `masked_forget_dataset`): objective + λ·orthogonality, through `UnlearnTrainer`. Returns its logs."""
    if not len(ds):
        raise ValueError(f"round {round_idx}: no forget rows to train on")
    rds = QADataset(retain, tok, fmt) if retain else None
    reference = round_reference(model, objective, ds, cfg, tok.pad_token_id)
    forget_order, retain_order = round_order(len(ds), len(rds) if rds else 0, cfg, round_idx)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    logger = _RoundLog(round_idx, run)

    def ortho(m):
        value = round_orthogonality_penalty(m)
        return cfg.ortho_weight * value, {"ortho": float(value.detach())}

    where = run if run is not None else open_run(cfg.run)
    with _KeepRandomState():
        trainer = UnlearnTrainer(
            model=model, args=training_arguments(where, cfg.training_settings(), batch_size=cfg.batch_size),
            train_dataset=ForgetDataset(ds), data_collator=UnlearnCollator(tok.pad_token_id), processing_class=tok,
            callbacks=[logger], objective=objective, reference=reference, penalty=ortho, batch_order=forget_order,
            retain=FixedDraws(rds, retain_order, tok.pad_token_id) if rds else None, optimizers=(opt, None))
        trainer.train()
    # bf16: accelerate wrapped `model.forward` in autocast for training; the loop's generation runs it unwrapped
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model.eval()
    with torch.no_grad():
        final_ortho = float(round_orthogonality_penalty(model))
    history = logger.rows
    return {"steps": cfg.steps, "first": history[0], "last": history[-1], "ortho_start": history[0]["ortho"],
            "ortho_end": final_ortho, "n_forget": len(ds), "n_retain": len(rds) if rds else 0}
