"""Fine-tuning step time: unlearnkit's `FinetuneTrainer` against the stock HF `Trainer` with the same settings.

Setup: SmolLM2-135M-Instruct (`--tiny`: a from-scratch tiny Llama), the demo's data (synthetic people, plain
`Question: … Answer:` prompts, answer tokens as labels), the same batch of `--batch` rows for every step, fp32.
Every variant starts from the same weights and runs `Trainer.training_step` (forward, loss, backward), gradient
clipping at 1.0 and its optimiser step, as `Trainer.train` does:

* stock: `transformers.Trainer` as it comes — the model's own loss (LM head and log-softmax over every
  position), HF's default optimiser `adamw_torch`;
* unlearnkit: `FinetuneTrainer` with the same arguments except its default fused AdamW (`adamw_torch_fused`) —
  the LM head runs at answer-label positions only (`label_logprobs`); the loss is the same up to fp32 summation
  order (printed: 0 on the tiny model, 2e-5 relative on SmolLM2 at two threads);
* recipe (`--recipe`): unlearnkit plus the demo's recipe — embeddings frozen and a LoRA adapter (rank 32,
  every linear layer) instead of all weights; a different training, timed to show what the recipe costs.

Steps alternate between the variants in rounds after a warm-up step each, so load from other processes hits
all alike; the reported time is the median. Issue goal: unlearnkit ≥ 1.5× the stock Trainer. Measured on SmolLM2,
batch 8, two threads, two runs: 1.59× and 1.25× (stock 2.03 / 2.10 s, unlearnkit 1.27 / 1.68 s); the demo's recipe
2.0× the stock full fine-tuning step in both.

    OMP_NUM_THREADS=1 python benchmarks/finetune_step.py [--tiny] [--steps 6] [--batch 16] [--recipe]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch


def build(tiny: bool, batch: int):
    from unlearnkit.data.collate import PromptFormat, QACollator, QADataset
    from unlearnkit.data.specs import load_records

    records = load_records("synthetic:train,people=50,seed=0,forget_fraction=0.1")
    if tiny:
        from unlearnkit.models import tiny_model_and_tokenizer

        model, tok = tiny_model_and_tokenizer([f"Question: {r.question}\nAnswer: {r.answer}" for r in records],
                                              vocab_size=2048)
        name = "tiny-llama"
    else:
        from unlearnkit.models import load_model

        model, tok = load_model("default")
        name = "SmolLM2-135M-Instruct"
    ds = QADataset(records, tok, PromptFormat(template="plain"))
    inputs = QACollator(tok.pad_token_id, "right")([ds[i] for i in range(batch)])
    inputs.pop("index", None)   # bookkeeping the model's forward does not take (finetune's `_DropIndex`)
    return model, tok, inputs, name


def trainer_for(kind: str, model, tok, out: str):
    from transformers import Trainer, TrainingArguments

    from unlearnkit.train.finetune import FinetuneTrainer

    args = TrainingArguments(output_dir=out, per_device_train_batch_size=16, learning_rate=1e-5, max_grad_norm=1.0,
                             optim="adamw_torch" if kind == "stock" else "adamw_torch_fused", use_cpu=True,
                             report_to=[], save_strategy="no", max_steps=1000)
    cls = Trainer if kind == "stock" else FinetuneTrainer
    trainer = cls(model=model, args=args, processing_class=tok)
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.current_gradient_accumulation_steps = 1   # what `Trainer.train` sets before its first step
    return trainer


def recipe_model(model):
    from unlearnkit.experiments.demo import LINEAR_LAYERS
    from unlearnkit.models.lora import LoraSettings, apply_lora

    model.get_input_embeddings().requires_grad_(False)
    return apply_lora(model, LoraSettings(32, 64, 0.0, LINEAR_LAYERS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny from-scratch model instead of SmolLM2-135M")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--batch", type=int, default=16, help="rows per step (the demo's fine-tuning batch)")
    ap.add_argument("--recipe", action="store_true", help="also time the demo's recipe (LoRA, frozen embeddings)")
    args = ap.parse_args()

    base, tok, inputs, name = build(args.tiny, args.batch)
    kinds = ["stock", "unlearnkit"] + (["recipe"] if args.recipe else [])
    labelled = int((inputs["labels"] != -100).sum())
    print(f"model {name}, batch {args.batch} rows x {inputs['input_ids'].shape[1]} positions, {labelled} answer "
          f"labels, fp32, torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for kind in kinds:
            model = copy.deepcopy(base)
            trainers[kind] = trainer_for(kind, recipe_model(model) if kind == "recipe" else model, tok, tmp)
        del base
        with torch.no_grad():   # same weights, same batch: the two losses must be the same number
            losses = {k: float(trainers[k].compute_loss(trainers[k].model, dict(inputs))) for k in ("stock", "unlearnkit")}
        rel = abs(losses["stock"] - losses["unlearnkit"]) / abs(losses["stock"])
        print(f"loss before training: stock {losses['stock']:.7f}, unlearnkit {losses['unlearnkit']:.7f} "
              f"(relative difference {rel:.1e})", flush=True)

        def step(kind: str) -> float:
            tr = trainers[kind]
            t = time.perf_counter()
            tr.training_step(tr.model, dict(inputs))
            torch.nn.utils.clip_grad_norm_(tr.model.parameters(), 1.0)
            tr.optimizer.step()
            tr.optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - t

        for kind in kinds:  # warm-up
            step(kind)
        times = {k: [] for k in kinds}
        for i in range(args.steps):
            for kind in kinds:
                times[kind].append(step(kind))
            print(f"  round {i + 1}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in kinds), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in kinds:
        print(f"fine-tuning step, {k:10s}: median {med[k]:.3f} s  ({', '.join(f'{t:.2f}' for t in times[k])})")
    ratio = med["stock"] / med["unlearnkit"]
    print(f"speed-up unlearnkit vs stock HF Trainer: {ratio:.2f}x  (goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'})")
    if args.recipe:
        print(f"the demo's recipe (LoRA r32 + frozen embeddings) vs stock full fine-tuning: "
              f"{med['stock'] / med['recipe']:.2f}x")


if __name__ == "__main__":
    main()
