"""Fine-tuning: the *target* model (on the full data) and the *retain oracle* (on the retain split only).

Forget quality compares an unlearned model with an oracle that never saw the forget data, so both are
trained with the same recipe here. A plain, linear path: config → model → data → Trainer → save.
Killing a run and rerunning the same command resumes from the last complete checkpoint.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer

from ..config import to_dict
from ..data.collate import PromptFormat, QACollator, QADataset
from ..data.records import QARecord
from ..data.specs import load_records
from ..models.loading import load_model
from ..models.lora import LoraSettings, apply_lora
from ..models.portable import save_tokenizer_atomically
from ..models.tiny import tiny_llama, train_tokenizer
from ..runs import RunDir, locked_run, write_json
from ..label_logprobs import supports_label_head
from .answer_loss import answer_only_loss
from .checkpoints import AtomicCheckpointMixin
from .hf_glue import (DivergenceGuardMixin, JsonlLogCallback, save_model_atomically, step_of, train_resuming,
                      training_arguments)
from .rerun import check_rerun_options, settle_rerun
from .settings import TrainingSettings
from .throughput import throughput_callback

log = logging.getLogger(__name__)
SUMMARY = "finetune.json"


@dataclass
class FinetuneConfig(TrainingSettings):
    """Fine-tune a causal LM on QA records (answer tokens only)."""

    model: str = field(default="default", metadata={"help": "'default' (SmolLM2-135M offline), a hub id, a local dir, a .gguf file, or 'tiny' (from scratch)"})
    data: str = field(default="synthetic:train,people=50", metadata={"help": "data spec: tofu:<split>, synthetic:<part>,..., or a .jsonl path"})
    run: str = field(default="runs/finetune", metadata={"help": "run directory"})
    epochs: float = field(default=5.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=8, metadata={"help": "per-device batch size"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter instead of all weights (merged at the end)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "LoRA target modules"})
    group_by_length: bool = field(default=False, metadata={"help": "batch rows of similar length together (less padding; on small fact sets it groups facts of one kind per batch and memorises worse: 81% vs 98% recall on 50 people)"})
    freeze_embeddings: bool = field(default=False, metadata={"help": "keep the input embeddings (and a tied LM head) fixed: ~12% faster steps on SmolLM2"})
    keep_checkpoints: int | None = field(default=2, metadata={"help": "keep only the newest N checkpoints (null: all)"})
    max_length: int = field(default=256, metadata={"help": "truncate examples beyond this many tokens (reported)"})
    template: str = field(default="auto", metadata={"help": "prompt template: auto | chat | plain"})
    masking: str = field(default="exact", metadata={"help": "exact | open-unlearning (joint tokenisation, first answer token masked)"})
    recall_before: bool = field(default=False, metadata={"help": "measure exact-match recall before training too"})
    recall_max: int = field(default=0, metadata={"help": "measure recall on at most N records (0: all, -1: skip)"})
    recall_before_max: int = field(default=0, metadata={"help": "recall before training on at most N of those records (0: the same ones)"})
    tiny_hidden: int = field(default=256, metadata={"help": "model=tiny: hidden size"})
    tiny_layers: int = field(default=4, metadata={"help": "model=tiny: layers"})
    tiny_vocab: int = field(default=4096, metadata={"help": "model=tiny: tokenizer vocabulary size"})
    tiny_tokenizer: str = field(default="", metadata={"help": "model=tiny: reuse this tokenizer dir (e.g. the target's, so an oracle tokenises alike)"})
    overwrite: bool = field(default=False, metadata={"help": "delete what the run directory holds and start fresh"})
    resume: str = field(default="auto", metadata={"help": "auto: resume (or reuse) only a run with the same settings | force: despite differences"})

    def __post_init__(self):
        for name in ("epochs", "lr", "batch_size", "grad_accum"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        PromptFormat(template=self.template, masking=self.masking)
        check_rerun_options(self.overwrite, self.resume)

    @property
    def prompt_format(self) -> PromptFormat:
        return PromptFormat(template=self.template, masking=self.masking, max_length=self.max_length)


class FinetuneTrainer(DivergenceGuardMixin, AtomicCheckpointMixin, Trainer):
    """HF Trainer with atomic safetensors checkpoints, the NaN-gradient guard and, where it is exact, the LM head
    on answer positions only (`answer_loss`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not supports_label_head(model):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        with self.accelerator.autocast():   # the Trainer's bf16 lives in accelerate's wrapped `forward`,
            return answer_only_loss(model, inputs, num_items_in_batch)   # which this path does not call


def _tiny(cfg: FinetuneConfig, records: list[QARecord], run: RunDir):
    """A from-scratch tiny Llama; its tokenizer is trained once on the data and kept in the run dir."""
    from transformers import AutoTokenizer

    tok_dir = Path(cfg.tiny_tokenizer) if cfg.tiny_tokenizer else run.path / "tokenizer"
    if tok_dir.is_dir():
        tok = AutoTokenizer.from_pretrained(tok_dir)
    else:
        texts = [f"{cfg.prompt_format.plain_prompt.format(question=r.question)} {r.answer}" for r in records]
        texts += [t for r in records for t in ([r.paraphrased_answer] if r.paraphrased_answer else []) + (r.perturbed_answers or [])]
        tok = train_tokenizer(texts, vocab_size=cfg.tiny_vocab)
        save_tokenizer_atomically(tok, tok_dir)  # a kill mid-write must not leave a half tokenizer behind
    heads = max(1, cfg.tiny_hidden // 64)
    model = tiny_llama(len(tok), hidden=cfg.tiny_hidden, layers=cfg.tiny_layers, heads=heads,
                       intermediate=int(cfg.tiny_hidden * 8 / 3) // 8 * 8, seed=cfg.seed,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return model, tok


def build_model(cfg: FinetuneConfig, records: list[QARecord], run: RunDir):
    if cfg.model == "tiny":
        return _tiny(cfg, records, run)
    return load_model(cfg.model, dtype=torch.float32)


def finetune(cfg: FinetuneConfig) -> dict:
    """Train, save `model/` in the run dir, and return a summary (also written to `finetune.json`).

    The run directory is locked for the whole command (`runs.locked_run`); an existing run in it is resumed or
    reused only when its stored config matches this one (`rerun.settle_rerun`). config.yaml is written once the
    data and model have loaded, so a refused command leaves no run record behind."""
    with locked_run(cfg.run) as run:
        return _finetune(cfg, run)


def _finetune(cfg: FinetuneConfig, run: RunDir) -> dict:
    finished, forced = settle_rerun(run, "finetune", to_dict(cfg), SUMMARY, overwrite=cfg.overwrite,
                                    resume=cfg.resume)
    if finished is not None and (run.path / "model" / "config.json").is_file():
        return finished
    records = load_records(cfg.data)
    model, tok = build_model(cfg, records, run)
    run.write_config("finetune", to_dict(cfg), seed=cfg.seed, extra={"resumed_despite": forced} if forced else None)
    fmt = cfg.prompt_format
    if cfg.model == "tiny":
        fmt = PromptFormat(template="plain", masking=cfg.masking, max_length=cfg.max_length)
    dataset = QADataset(records, tok, fmt)
    summary: dict = {"records": len(records), "truncated": dataset.n_truncated, "model": cfg.model,
                     "parameters": sum(p.numel() for p in model.parameters())}
    recall_records = records if cfg.recall_max == 0 else records[: max(cfg.recall_max, 0)]
    if cfg.recall_before and recall_records:
        from ..eval.recall import answer_recall

        before = recall_records[: cfg.recall_before_max] if cfg.recall_before_max > 0 else recall_records
        summary["recall_before"], _ = answer_recall(model, tok, before, fmt)
        summary["recall_before_n"] = len(before)
    if cfg.freeze_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    if cfg.lora:
        model = apply_lora(model, LoraSettings(cfg.lora_r, cfg.lora_alpha, 0.0, list(cfg.lora_targets)))
    args = training_arguments(run, cfg, batch_size=cfg.batch_size, group_by_length=cfg.group_by_length)
    collator = _DropIndex(QACollator(tok.pad_token_id, "right"))
    speed = throughput_callback("bf16" if args.bf16 else "fp32")
    trainer = FinetuneTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                              processing_class=tok, callbacks=[speed, JsonlLogCallback(run)])
    trainer.run = run
    resume = train_resuming(trainer, run, summary)
    summary["throughput"] = speed.totals()
    if cfg.lora:
        model = model.merge_and_unload()
    if summary["steps"] and summary["train_seconds"]:
        summary["seconds_per_step"] = summary["train_seconds"] / max(1, summary["steps"] - step_of(resume))
    if recall_records:
        from ..eval.recall import answer_recall

        summary["recall_after"], _ = answer_recall(model, tok, recall_records, fmt)
        summary["recall_after_n"] = len(recall_records)
    if trainer.args.should_save:
        save_model_atomically(model, tok, run.path / "model")
        write_json(run.path / SUMMARY, summary)
    return summary


class _DropIndex:
    """Collate, then drop the bookkeeping `index` column the model's forward does not accept."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        batch = self.inner(features)
        batch.pop("index", None)
        return batch
