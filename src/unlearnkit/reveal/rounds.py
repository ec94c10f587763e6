"""A reveal run's rounds on disk: where each lives, its adapter saved and reloaded, the bandit replayed on
resume, the instruction pool kept for the whole run, and the final merge.

    rounds/round-<k>/reveal.jsonl, forget.jsonl, adapter/, round.json (written last: a round without it is redone)
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..data.collate import PromptFormat
from ..runs import RunDir, atomic_dir, save_model_atomically, write_json
from .config import RevealConfig
from .instructions import InstructionPool, build_pool
from .novelty import NgramNovelty
from .olora import activate_rounds, merge_rounds, round_adapter_name
from .selfdata import sample_completions
from .target import Target

ROUND_FILE = "round.json"


def replay_rounds(policy, novelty: NgramNovelty | None, contexts, run: RunDir, n: int) -> int:
    """Feed rounds 0..n-1's pulls (`reveal.jsonl`: arm, mean reward of the pull) to `policy` and their texts to
    `novelty`, so a resumed run's bandit starts from what the finished rounds learned. Contexts are those of
    the current model (the originals were not kept). `novelty` None: texts are not replayed (novelty_scope
    'round'). Returns the number of pulls replayed."""
    replayed = 0
    for k in range(n):
        path = round_dir(run, k) / "reveal.jsonl"
        if not path.is_file():
            continue
        pulls: dict[int, list[dict]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                pulls.setdefault(int(row["pull"]), []).append(row)
        for _, rows in sorted(pulls.items()):
            arm = int(rows[0]["arm"])
            policy.update(contexts[arm], sum(r["reward"] for r in rows) / len(rows), arm=arm)
            if novelty is not None:
                for r in rows:
                    novelty.add(r["text"])
            replayed += 1
    return replayed


def round_dir(run: RunDir, k: int) -> Path:
    return run.path / "rounds" / f"round-{k}"


def save_adapter_atomically(peft_model, name: str, dest: Path) -> None:
    """`save_pretrained` of one adapter through `runs.atomic_dir` (peft nests a non-'default' adapter in a
    sub-directory named after it: its files are moved up)."""
    with atomic_dir(dest) as tmp:
        peft_model.save_pretrained(str(tmp), selected_adapters=[name])
        nested = tmp / name
        if (nested / "adapter_config.json").is_file():
            for f in nested.iterdir():
                os.replace(f, tmp / f.name)
            nested.rmdir()


def load_round_adapters(model, run: RunDir, n: int):
    """Model with the adapters of rounds 0..n-1 loaded from the run dir (all active, frozen)."""
    from peft import PeftModel

    for k in range(n):
        path, name = str(round_dir(run, k) / "adapter"), round_adapter_name(k)
        if k == 0:
            model = PeftModel.from_pretrained(model, path, adapter_name=name, is_trainable=False)
        else:
            model.load_adapter(path, adapter_name=name, is_trainable=False)
    if n:
        activate_rounds(model)
        for p in model.parameters():
            p.requires_grad_(False)
    return model



def load_pool(run: RunDir, cfg: RevealConfig, target: Target, model, tok, fmt: PromptFormat) -> InstructionPool:
    path = run.path / "pool.json"
    if path.is_file():
        data = json.loads(path.read_text())
        pool = InstructionPool()
        pool.texts, pool.origins = list(data["texts"]), list(data["origins"])
        return pool
    def paraphrase_with_model(prompts):
        return [sample_completions(model, tok, p, 1, fmt, cfg.temperature, cfg.top_p, 32)[0][0] for p in prompts]

    gen = paraphrase_with_model if cfg.paraphrases else None
    pool = build_pool(target, n_recombined=cfg.n_recombined, seed=cfg.seed, generate_fn=gen,
                      n_paraphrases=max(cfg.paraphrases, 1))
    write_json(path, {"texts": pool.texts, "origins": pool.origins})
    return pool


def export_merged(peft_model, tok, dest: Path) -> Path:
    """`merge_rounds` (all rounds folded into the base weights) → `dest` (safetensors + tokenizer), atomically.
    The peft model is consumed (its base weights now hold the merge)."""
    return save_model_atomically(merge_rounds(peft_model), tok, dest)
