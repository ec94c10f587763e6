"""The iterative Reveal-and-Release loop (Xie et al., arXiv 2509.14624): unlearn a target given only its name.

    from unlearnkit.reveal.loop import RevealConfig, reveal_and_release
    summary = reveal_and_release(RevealConfig(target='entity:Alia Karo', model='runs/target/model', rounds=3))

or `unlearnkit reveal target='entity:Alia Karo' model=runs/target/model rounds=3 method=npo`.

Each round k = 0, 1, ...:
  1. **reveal** (`selfdata.reveal_round`): arms are the instruction pool (built once, `pool.json`), contexts
     their embeddings under the *current* model (`embed_instructions`); the bandit (NeuralUCB by default;
     one for the whole run with `bandit_memory`, so round k starts from what rounds < k learned) makes `pulls`
     pulls of K sampled completions each, at most `max_pulls_per_arm` per instruction; reward =
     `reveal_reward(score, novelty)`, novelty against this round's earlier generations (`novelty_scope=run`:
     every earlier round's too).
     If the round's mean score is below `stop_score`, or no generation passes `score_threshold`, the loop
     stops (round.json records why; no adapter).
  2. **release**: a new LoRA module `round_k` (`olora.add_round_adapter`; earlier rounds active and
     frozen) is trained for `steps` AdamW steps on the round's forget set with the registered objective
     `method` + λ·`round_orthogonality_penalty` (O-LoRA, against all earlier rounds) + the objective's own
     retain term on `retain` data when `params.retain` asks for one.
     Reference log-probs: `reference=previous` (default) scores the forget set once with the model as it
     enters the round (rounds 0..k-1), `reference=base` with every adapter disabled (θ_ini); either is cached before
     step 0 (`CachedReference`); logits-based needs (retain KL, UNDIAL) fall back to disabled adapters.

Design: a plain torch loop rather than `UnlearnTrainer`. A round is a few dozen steps on an in-memory set
of self-generated rows; the HF Trainer's checkpointing, schedulers and data-parallel glue bring nothing
here, and the orthogonality term would need a new hook in `train/unlearn.py`. The objectives are called
exactly as `UnlearnTrainer.compute_loss` calls them (`obj.loss(model, UnlearnBatch(...), ref)`).

Run directory (shared/DESIGN.md §3):
    config.yaml                      resolved config
    pool.json                        the instruction pool (arms), fixed for the whole run
    log.jsonl                        one line per training step: round, step, loss terms, orthogonality
    rounds/round-<k>/reveal.jsonl    every generation: instruction, arm, score, novelty, reward
    rounds/round-<k>/forget.jsonl    the filtered forget set (QA records with provenance tags)
    rounds/round-<k>/adapter/        the round's LoRA adapter (temp dir, then rename)
    rounds/round-<k>/round.json      scores, losses, timing; written last: a round without it is redone
    model/                           all rounds merged (`merge_rounds`), safetensors + tokenizer
    reveal.json                      summary, written last
Resume: rerunning the same command reloads every round that has `round.json` (its adapter, frozen) and
redoes the first one that has not; a crash mid-round loses only that round.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..config import to_dict
from ..data.collate import IGNORE, PromptFormat, QADataset, mask_answer_spans, pad_batch
from ..data.records import QARecord, write_qa_jsonl
from ..data.specs import load_records
from ..models.loading import load_model
from ..models.lora import LoraSettings
from ..objectives import CachedReference, DisabledAdapterReference, UnlearnBatch, build_objective
from ..objectives.reference import precompute_token_logprobs
from ..precision import autocast, resolve_precision
from ..runs import RunDir, atomic_dir, atomic_write_text, open_run, save_model_atomically, write_json
from .bandits import EpsilonGreedy, RandomPolicy
from .instructions import InstructionPool, build_pool, embed_instructions
from .neural_ucb import NeuralUCB, NeuralUCBConfig
from .novelty import NgramNovelty
from .olora import activate_rounds, add_round_adapter, merge_rounds, round_adapter_name, round_orthogonality_penalty
from .scorers import get_scorer, mention_pattern, scorer_for_target
from .selfdata import RevealSample, forget_records, reveal_round, sample_completions
from .target import KINDS, Target

log = logging.getLogger(__name__)

SUMMARY = "reveal.json"
ROUND_FILE = "round.json"
BANDITS = ("neural_ucb", "epsilon_greedy", "random")
#: NeuralUCBConfig values for reveal runs (bandit_params override them). Measured on the tiny-target
#: experiment, one round of 36 pulls: the library defaults (train every 10 pulls, no random start) gave a
#: mean reveal score of 0.45 against 0.64 for random instructions; these give 0.63.
NEURAL_UCB_DEFAULTS = {"train_every": 1, "explore_first": 8}


def _h(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class RevealConfig:
    """Reveal-and-Release: self-generated forget data + iterative O-LoRA unlearning of a target."""

    target: str = _h("", "what to forget: 'entity:<Name>', 'skill:code', 'behaviour:toxicity' (kind:name)")
    aliases: list[str] = _h([], "other names of an entity target")
    contrast_names: list[str] = _h([], "entity_contrast scorer: names of other entities of the same kind, known to "
                                       "the model, to contrast against (empty: John Smith, Maria Garcia, Wei Chen)")
    model: str = _h("default", "θ_ini: a model dir, hub id, .gguf file or 'default' (SmolLM2-135M offline)")
    scorer: str = _h("auto", "auto (entity: entity_contrast, code: code, toxicity: toxicity) | entity | "
                             "entity_contrast | code | toxicity | hf:<hub classifier id>")
    run: str = _h("runs/reveal", "run directory")
    rounds: int = _h(3, "maximum number of reveal+unlearn rounds")
    stop_score: float = _h(0.05, "stop when a round's mean reveal score falls below this")
    # instruction pool and bandit
    n_recombined: int = _h(30, "recombined instructions added to the seed templates")
    paraphrases: int = _h(0, "model paraphrases per seed instruction added to the pool (0: none)")
    bandit: str = _h("neural_ucb", "neural_ucb | epsilon_greedy | random")
    bandit_params: dict[str, Any] = _h({}, "NeuralUCBConfig fields (e.g. nu, train_every, explore_first; reveal "
                                           "defaults: NEURAL_UCB_DEFAULTS) or epsilon")
    pulls: int = _h(16, "bandit pulls (instructions) per round")
    max_pulls_per_arm: int = _h(2, "pulls of one instruction per round at most, so the forget set comes from "
                                   "several instructions (0: no cap)")
    bandit_memory: bool = _h(True, "keep one bandit across rounds (false: a fresh bandit each round)")
    novelty_scope: str = _h("round", "novelty against this round's earlier generations (round: a fact still revealed "
                                     "after unlearning is worth collecting again) or every earlier round's (run)")
    samples: int = _h(4, "K: sampled completions per pull")
    temperature: float = _h(1.0, "sampling temperature")
    top_p: float = _h(0.95, "nucleus sampling p")
    max_new_tokens: int = _h(64, "tokens per completion")
    novelty_n: int = _h(3, "word n-gram size of the novelty term")
    novelty_weight: float = _h(1.0, "w in reward = score·((1−w) + w·novelty)")
    score_threshold: float = _h(0.3, "keep generations scoring at least this as forget data")
    score_reference: str = _h("base", "entity_contrast: rate generations with θ_ini (base: adapters off; only text "
                                      "carrying what θ_ini knew counts) or with the model entering the round (current)")
    mask_target: bool = _h(False, "entity targets: no loss on the name/alias tokens inside the generations (the "
                                  "loss then falls on what is said about the entity only)")
    dedupe_threshold: float = _h(0.7, "drop a generation whose word-bigram Jaccard with a kept one is >= this")
    # unlearning
    method: str = _h("npo", "objective name (unlearnkit.objectives.OBJECTIVES): npo, ga, grad_diff, simnpo, ...")
    params: dict[str, Any] = _h({}, "the objective's hyper-parameters, e.g. params.beta=0.1 params.retain=nll")
    retain: str = _h("", "retain data spec for the objective's retain term (params.retain=nll|kl)")
    reference: str = _h("previous", "reference log-probs: previous (the model entering the round) | base (all "
                                    "adapters disabled = θ_ini; a later round's rows, written by a partly unlearned "
                                    "model, then start at log π/π_ref of +100 nats or more)")
    steps: int = _h(20, "optimizer steps per round")
    lr: float = _h(1e-4, "AdamW learning rate (constant)")
    batch_size: int = _h(8, "forget rows per step (and retain rows, when used)")
    weight_decay: float = _h(0.0, "AdamW weight decay")
    max_grad_norm: float = _h(1.0, "gradient clipping (0: off)")
    ortho_weight: float = _h(0.5, "λ: weight of the O-LoRA orthogonality penalty vs earlier rounds")
    lora_r: int = _h(8, "LoRA rank per round")
    lora_alpha: int = _h(16, "LoRA alpha")
    lora_targets: list[str] = _h(["q_proj", "v_proj"], "LoRA target modules")
    template: str = _h("auto", "prompt template: auto | chat | plain")
    max_length: int = _h(256, "truncate training rows beyond this many tokens")
    precision: str = _h("auto", "auto | fp32 | bf16")
    export: bool = _h(True, "merge all rounds into <run>/model at the end")
    seed: int = _h(0, "seed (pool, bandit, sampling, LoRA init, batches)")

    def __post_init__(self):
        self.parsed_target()
        if self.bandit not in BANDITS:
            raise ValueError(f"bandit={self.bandit!r}: expected one of {BANDITS}")
        if self.score_reference not in ("current", "base"):
            raise ValueError(f"score_reference={self.score_reference!r}: expected 'current' or 'base'")
        if self.novelty_scope not in ("round", "run"):
            raise ValueError(f"novelty_scope={self.novelty_scope!r}: expected 'round' or 'run'")
        if self.reference not in ("base", "previous"):
            raise ValueError(f"reference={self.reference!r}: expected 'base' or 'previous'")
        for name in ("rounds", "pulls", "samples", "max_new_tokens", "steps", "batch_size", "lora_r", "novelty_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.max_pulls_per_arm < 0:
            raise ValueError(f"max_pulls_per_arm={self.max_pulls_per_arm} must be >= 0")
        for name in ("score_threshold", "stop_score", "novelty_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if not 0.0 < self.dedupe_threshold <= 1.0:
            raise ValueError(f"dedupe_threshold={self.dedupe_threshold} must be in (0, 1]")
        if self.ortho_weight < 0:
            raise ValueError(f"ortho_weight={self.ortho_weight} must be >= 0")
        resolve_precision(self.precision)
        PromptFormat(template=self.template)
        obj = self.objective()
        if obj.needs_idk:
            raise ValueError(f"method={self.method!r} needs IdK answers, which a reveal run does not have; use "
                             "npo, ga, grad_diff, simnpo, wga, tnpo, ...")
        if obj.needs_retain and not self.retain:
            raise ValueError(f"method={self.method!r} with params.retain={obj.config.retain!r} needs retain "
                             "data: pass retain=<data spec>, or params.retain=none")

    def parsed_target(self) -> Target:
        kind, sep, name = self.target.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"target={self.target!r}: write kind:name with kind in {sorted(KINDS)}, e.g. "
                             "target='entity:Alia Karo', target=skill:code, target=behaviour:toxicity")
        kind = kind.strip()
        return Target(kind, name.strip(), tuple(self.aliases) if kind == "entity" else ())

    def objective(self):
        return build_objective(self.method, dict(self.params))

    @property
    def lora_settings(self) -> LoraSettings:
        return LoraSettings(self.lora_r, self.lora_alpha, 0.0, list(self.lora_targets))


# -- pieces ---------------------------------------------------------------------------------------------
def make_scorer(cfg: RevealConfig, target: Target):
    name = cfg.scorer
    if name == "auto":   # entities: the model-based scorer (see contrast_scorer); others: the target's default
        if target.kind != "entity":
            return scorer_for_target(target)
        name = "entity_contrast"
    if name in ("entity", "entity_contrast"):
        if target.kind != "entity":
            raise ValueError(f"scorer={name!r} rates an entity; target {cfg.target!r} is a {target.kind}")
        if name == "entity_contrast" and cfg.contrast_names:
            return get_scorer(name, names=target.surface_forms, placeholders=cfg.contrast_names)
        return get_scorer(name, names=target.surface_forms)
    return get_scorer(name)


def make_policy(cfg: RevealConfig, dim: int, round_idx: int):
    seed = cfg.seed * 1000 + round_idx
    params = dict(cfg.bandit_params)
    if cfg.bandit == "neural_ucb":   # pulls are few and costly: retrain the MLP after each, explore at random first
        return NeuralUCB(dim, NeuralUCBConfig(**{"seed": seed, **NEURAL_UCB_DEFAULTS, **params}))
    if cfg.bandit == "epsilon_greedy":
        return EpsilonGreedy(seed=seed, **params)
    if params:
        raise ValueError(f"bandit=random takes no bandit_params, got {sorted(params)}")
    return RandomPolicy(seed=seed)


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


def _load_pool(run: RunDir, cfg: RevealConfig, target: Target, model, tok, fmt: PromptFormat) -> InstructionPool:
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


def _batches(n: int, batch_size: int, rng: random.Random):
    """Endless shuffled index batches over range(n)."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n, batch_size):
            yield order[i:i + batch_size]


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


def train_round(model, tok, objective, ds: QADataset, retain: list[QARecord], cfg: RevealConfig,
                round_idx: int, fmt: PromptFormat, run: RunDir | None = None) -> dict:
    """Train the newest round adapter for `cfg.steps` steps on the encoded forget rows `ds` (from
    `masked_forget_dataset`): objective + λ·orthogonality. Returns its logs."""
    if not len(ds):
        raise ValueError(f"round {round_idx}: no forget rows to train on")
    device = next(model.parameters()).device
    precision = resolve_precision(cfg.precision, device.type)
    rds = QADataset(retain, tok, fmt) if retain else None
    pad = tok.pad_token_id
    to_dev = lambda b: {k: v.to(device) for k, v in b.items()}  # noqa: E731

    reference = None
    if objective.needs_reference:
        provider = DisabledAdapterReference(model)
        batches = [to_dev(pad_batch([ds[i] for i in range(s, min(s + 16, len(ds)))], pad))
                   for s in range(0, len(ds), 16)]
        with autocast(precision, device.type):
            if cfg.reference == "previous":   # the new adapter's B is 0: the model is still rounds 0..k-1
                from ..objectives import FrozenModelReference

                model.eval()
                table = precompute_token_logprobs(FrozenModelReference(model), batches)
                model.train()
            else:
                table = precompute_token_logprobs(provider, batches)
        reference = CachedReference(forget=table, fallback=provider)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed * 7919 + round_idx)
    fb, rb = _batches(len(ds), cfg.batch_size, rng), (_batches(len(rds), cfg.batch_size, rng) if rds else None)
    model.train()
    history = []
    for step in range(1, cfg.steps + 1):
        forget_b = to_dev(pad_batch([ds[i] for i in next(fb)], pad))
        retain_b = to_dev(pad_batch([rds[i] for i in next(rb)], pad)) if rb is not None else None
        with autocast(precision, device.type):
            loss, terms = objective.loss(model, UnlearnBatch(forget=forget_b, retain=retain_b), reference)
        ortho = round_orthogonality_penalty(model)
        total = loss + cfg.ortho_weight * ortho
        if not torch.isfinite(total):
            raise FloatingPointError(f"round {round_idx} step {step}: loss is {float(total)}; lower lr={cfg.lr}")
        opt.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        opt.step()
        rec = {"round": round_idx, "step": step, **{k: float(v) for k, v in terms.items()},
               "ortho": float(ortho.detach()), "total": float(total.detach()), "grad_norm": float(gnorm)}
        history.append(rec)
        if run is not None:
            run.log(rec)
    model.eval()
    with torch.no_grad():
        final_ortho = float(round_orthogonality_penalty(model))
    return {"steps": cfg.steps, "first": history[0], "last": history[-1], "ortho_start": history[0]["ortho"],
            "ortho_end": final_ortho, "n_forget": len(ds), "n_retain": len(rds) if rds else 0}


def _round_stats(samples: list[RevealSample]) -> dict:
    scores = [s.score for s in samples]
    rewards = [s.reward for s in samples]
    arms = sorted({s.arm for s in samples})
    return {"n_generations": len(samples), "mean_score": sum(scores) / len(scores) if scores else 0.0,
            "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0, "arms_pulled": len(arms)}


# -- main path ------------------------------------------------------------------------------------------
def reveal_and_release(cfg: RevealConfig, on_round_end: Optional[Callable[[Any, Any, int, dict], None]] = None
                       ) -> dict:
    """Run (or resume) the loop; returns the summary (also `<run>/reveal.json`).

    `on_round_end(model, tokenizer, round_idx, round_info)` is called after every round that trained
    (also for rounds reloaded on resume), with all rounds so far active: experiments measure there.
    """
    run = open_run(cfg.run)
    if (run.path / SUMMARY).is_file():
        log.info("run %s already finished; delete it to rerun", run.path)
        return json.loads((run.path / SUMMARY).read_text())
    target = cfg.parsed_target()
    scorer = make_scorer(cfg, target)
    objective = cfg.objective()
    retain = load_records(cfg.retain) if cfg.retain and objective.needs_retain else []
    run.write_config("reveal", to_dict(cfg), seed=cfg.seed)

    model, tok = load_model(cfg.model, dtype=torch.float32)
    model.requires_grad_(False)
    fmt = PromptFormat(template=cfg.template, max_length=cfg.max_length)
    pool = _load_pool(run, cfg, target, model, tok, fmt)

    rounds: list[dict] = []
    done = 0
    while done < cfg.rounds and (round_dir(run, done) / ROUND_FILE).is_file():
        done += 1
    completed = [json.loads((round_dir(run, k) / ROUND_FILE).read_text()) for k in range(done)]
    n_trained = sum(1 for r in completed if r.get("trained"))
    if n_trained:
        model = load_round_adapters(model, run, n_trained)
        log.info("resumed: %d completed round(s) reloaded from %s", n_trained, run.path / "rounds")
    stopped = next((r for r in completed if not r.get("trained")), None)
    for r in completed:
        rounds.append(r)
        if r.get("trained") and on_round_end is not None:
            on_round_end(model, tok, r["round"], r)

    policy = novelty = None
    for k in range(done, cfg.rounds):
        if stopped is not None:
            break
        t0 = time.time()
        rdir = round_dir(run, k)
        rdir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed * 1000 + k)
        # 1. reveal: arms = pool, contexts = embeddings under the current model
        contexts = embed_instructions(model, tok, pool.texts)
        if policy is None or not cfg.bandit_memory:
            policy = make_policy(cfg, contexts.shape[1], k)
            novelty = NgramNovelty(cfg.novelty_n) if cfg.novelty_scope == "run" else None
            if cfg.bandit_memory and k:   # resumed: replay the finished rounds' pulls into the new bandit
                replay_rounds(policy, novelty, contexts, run, k)
        if hasattr(scorer, "use_model"):   # model-based scorers rate with the model as it enters the round
            scorer.use_model(model, tok, fmt, base=cfg.score_reference == "base")
        samples = reveal_round(
            lambda ins: sample_completions(model, tok, ins, cfg.samples, fmt, cfg.temperature, cfg.top_p,
                                           cfg.max_new_tokens),
            pool.texts, contexts, policy, scorer, cfg.pulls, round_idx=k, novelty_n=cfg.novelty_n,
            novelty_weight=cfg.novelty_weight, max_pulls_per_arm=cfg.max_pulls_per_arm, novelty=novelty)
        atomic_write_text(rdir / "reveal.jsonl", "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n"
                                                          for s in samples))
        forget = forget_records(samples, cfg.score_threshold, cfg.dedupe_threshold, target=f"{target.kind}:{target.name}")
        write_qa_jsonl(forget, rdir / "forget.jsonl")
        info = {"round": k, **_round_stats(samples), "n_forget": len(forget), "reveal_s": round(time.time() - t0, 2)}
        log.info("round %d: mean score %.3f over %d generations, %d forget rows", k, info["mean_score"],
                 info["n_generations"], len(forget))
        mask = mention_pattern(target.surface_forms) if cfg.mask_target and target.kind == "entity" else None
        forget_ds, mask_counts = masked_forget_dataset(forget, tok, fmt, mask) if forget else (None, {})
        stop_reason = None
        if not forget:
            stop_reason = f"no generation scored >= {cfg.score_threshold}"
        elif info["mean_score"] < cfg.stop_score:
            stop_reason = f"mean score {info['mean_score']:.4f} < stop_score={cfg.stop_score}"
        elif not len(forget_ds):
            stop_reason = "every kept generation is only the target's name: nothing left to unlearn"
        if stop_reason:
            info.update(trained=False, stop_reason=stop_reason)
            write_json(rdir / ROUND_FILE, info)
            rounds.append(info)
            stopped = info
            break
        # 2. release: a new orthogonal LoRA round on the self-generated forget set
        t1 = time.time()
        torch.manual_seed(cfg.seed * 1000 + k)
        model = add_round_adapter(model, k, cfg.lora_settings)
        train_info = {**train_round(model, tok, objective, forget_ds, retain, cfg, k, fmt, run), **mask_counts}
        t2 = time.time()
        save_adapter_atomically(model, round_adapter_name(k), rdir / "adapter")
        info.update(trained=True, train=train_info, train_s=round(t2 - t1, 2), save_s=round(time.time() - t2, 2),
                    total_s=round(time.time() - t0, 2))
        for p in model.parameters():   # the round is done: freeze it
            p.requires_grad_(False)
        write_json(rdir / ROUND_FILE, info)   # last: the round counts as complete from here on
        rounds.append(info)
        if on_round_end is not None:
            on_round_end(model, tok, k, info)

    summary: dict = {"target": cfg.target, "model": cfg.model, "method": cfg.method, "run": str(run.path),
                     "pool_size": len(pool), "rounds": rounds,
                     "rounds_trained": sum(1 for r in rounds if r.get("trained")),
                     "stopped_early": stopped["stop_reason"] if stopped else None}
    if cfg.export and summary["rounds_trained"]:
        summary["model_dir"] = str(export_merged(model, tok, run.path / "model"))
    write_json(run.path / SUMMARY, summary)
    return summary


def export_merged(peft_model, tok, dest: Path) -> Path:
    """`merge_rounds` (all rounds folded into the base weights) → `dest` (safetensors + tokenizer), atomically.
    The peft model is consumed (its base weights now hold the merge)."""
    return save_model_atomically(merge_rounds(peft_model), tok, dest)
