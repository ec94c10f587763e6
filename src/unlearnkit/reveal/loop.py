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

Where each piece lives: the settings in `reveal/config.py`, the release step (through `UnlearnTrainer`, with
the orthogonality term as its penalty hook) in `reveal/release.py`, the rounds on disk in `reveal/rounds.py`;
this module is the loop.

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

import json
import logging
import time
from typing import Any, Callable, Optional

import torch

from ..config import to_dict
from ..data.collate import PromptFormat
from ..data.records import write_qa_jsonl
from ..data.specs import load_records
from ..models.loading import load_model
from ..runs import RunDir, atomic_write_text, open_run, write_json
from .bandits import EpsilonGreedy, RandomPolicy
from .config import RevealConfig
from .instructions import embed_instructions
from .neural_ucb import NeuralUCB, NeuralUCBConfig
from .novelty import NgramNovelty
from .olora import add_round_adapter, round_adapter_name
from .release import masked_forget_dataset, train_round
from .rounds import (ROUND_FILE, export_merged, load_pool, load_round_adapters, replay_rounds, round_dir,
                     save_adapter_atomically)
from .scorers import get_scorer, mention_pattern, scorer_for_target
from .selfdata import Pulls, RevealSample, forget_records, reveal_round, sample_completions
from .target import Target

log = logging.getLogger(__name__)

SUMMARY = "reveal.json"
#: NeuralUCBConfig values for reveal runs (bandit_params override them). Measured on the tiny-target
#: experiment, one round of 36 pulls: the library defaults (train every 10 pulls, no random start) gave a
#: mean reveal score of 0.45 against 0.64 for random instructions; these give 0.63.
NEURAL_UCB_DEFAULTS = {"train_every": 1, "explore_first": 8}


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


def _round_stats(samples: list[RevealSample]) -> dict:
    scores = [s.score for s in samples]
    rewards = [s.reward for s in samples]
    arms = sorted({s.arm for s in samples})
    return {"n_generations": len(samples), "mean_score": sum(scores) / len(scores) if scores else 0.0,
            "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0, "arms_pulled": len(arms)}


# -- main path ------------------------------------------------------------------------------------------
class _Loop:
    """The state the rounds share: the run, the model (with every finished round), the pool, the bandit."""

    def __init__(self, cfg: RevealConfig, run: RunDir):
        self.cfg, self.run = cfg, run
        self.target = cfg.parsed_target()
        self.scorer = make_scorer(cfg, self.target)
        self.objective = cfg.objective()
        self.retain = load_records(cfg.retain) if cfg.retain and self.objective.needs_retain else []
        run.write_config("reveal", to_dict(cfg), seed=cfg.seed)
        self.model, self.tok = load_model(cfg.model, dtype=torch.float32)
        self.model.requires_grad_(False)
        self.fmt = PromptFormat(template=cfg.template, max_length=cfg.max_length)
        self.pool = load_pool(run, cfg, self.target, self.model, self.tok, self.fmt)
        self.policy = self.novelty = None

    def resume(self, on_round_end) -> tuple[list[dict], dict | None]:
        """Reload every round with a round.json (adapters frozen); (their records, the one that stopped, if any)."""
        done = 0
        while done < self.cfg.rounds and (round_dir(self.run, done) / ROUND_FILE).is_file():
            done += 1
        completed = [json.loads((round_dir(self.run, k) / ROUND_FILE).read_text()) for k in range(done)]
        n_trained = sum(1 for r in completed if r.get("trained"))
        if n_trained:
            self.model = load_round_adapters(self.model, self.run, n_trained)
            log.info("resumed: %d completed round(s) reloaded from %s", n_trained, self.run.path / "rounds")
        for r in completed:
            if r.get("trained") and on_round_end is not None:
                on_round_end(self.model, self.tok, r["round"], r)
        return completed, next((r for r in completed if not r.get("trained")), None)

    def reveal(self, k: int) -> tuple[list, dict]:
        """Step 1: the bandit's pulls under the current model → the round's scored generations and forget rows."""
        cfg, model, tok, fmt = self.cfg, self.model, self.tok, self.fmt
        contexts = embed_instructions(model, tok, self.pool.texts)
        if self.policy is None or not cfg.bandit_memory:
            self.policy = make_policy(cfg, contexts.shape[1], k)
            self.novelty = NgramNovelty(cfg.novelty_n) if cfg.novelty_scope == "run" else None
            if cfg.bandit_memory and k:   # resumed: replay the finished rounds' pulls into the new bandit
                replay_rounds(self.policy, self.novelty, contexts, self.run, k)
        if hasattr(self.scorer, "use_model"):   # model-based scorers rate with the model as it enters the round
            self.scorer.use_model(model, tok, fmt, base=cfg.score_reference == "base")
        samples = reveal_round(
            lambda ins: sample_completions(model, tok, ins, cfg.samples, fmt, cfg.temperature, cfg.top_p,
                                           cfg.max_new_tokens),
            self.pool.texts, contexts, self.policy, self.scorer,
            Pulls(cfg.pulls, k, cfg.novelty_n, cfg.novelty_weight, cfg.max_pulls_per_arm), novelty=self.novelty)
        rdir = round_dir(self.run, k)
        atomic_write_text(rdir / "reveal.jsonl", "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n"
                                                          for s in samples))
        forget = forget_records(samples, cfg.score_threshold, cfg.dedupe_threshold,
                                target=f"{self.target.kind}:{self.target.name}")
        write_qa_jsonl(forget, rdir / "forget.jsonl")
        return samples, forget

    def round(self, k: int) -> dict:
        """Reveal, then (unless a stop rule holds) release; the round's record, written last."""
        cfg, t0 = self.cfg, time.time()
        rdir = round_dir(self.run, k)
        rdir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed * 1000 + k)
        samples, forget = self.reveal(k)
        info = {"round": k, **_round_stats(samples), "n_forget": len(forget), "reveal_s": round(time.time() - t0, 2)}
        log.info("round %d: mean score %.3f over %d generations, %d forget rows", k, info["mean_score"],
                 info["n_generations"], len(forget))
        target = self.target
        mask = mention_pattern(target.surface_forms) if cfg.mask_target and target.kind == "entity" else None
        forget_ds, mask_counts = masked_forget_dataset(forget, self.tok, self.fmt, mask) if forget else (None, {})
        stop_reason = _stop_reason(cfg, info, forget, forget_ds)
        if stop_reason:
            info.update(trained=False, stop_reason=stop_reason)
            write_json(rdir / ROUND_FILE, info)
            return info
        # 2. release: a new orthogonal LoRA round on the self-generated forget set
        t1 = time.time()
        torch.manual_seed(cfg.seed * 1000 + k)
        self.model = add_round_adapter(self.model, k, cfg.lora_settings)
        train_info = {**train_round(self.model, self.tok, self.objective, forget_ds, self.retain, cfg, k, self.fmt,
                                    self.run), **mask_counts}
        t2 = time.time()
        save_adapter_atomically(self.model, round_adapter_name(k), rdir / "adapter")
        info.update(trained=True, train=train_info, train_s=round(t2 - t1, 2), save_s=round(time.time() - t2, 2),
                    total_s=round(time.time() - t0, 2))
        for p in self.model.parameters():   # the round is done: freeze it
            p.requires_grad_(False)
        write_json(rdir / ROUND_FILE, info)   # last: the round counts as complete from here on
        return info


def _stop_reason(cfg: RevealConfig, info: dict, forget: list, forget_ds) -> str | None:
    if not forget:
        return f"no generation scored >= {cfg.score_threshold}"
    if info["mean_score"] < cfg.stop_score:
        return f"mean score {info['mean_score']:.4f} < stop_score={cfg.stop_score}"
    if not len(forget_ds):
        return "every kept generation is only the target's name: nothing left to unlearn"
    return None


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
    loop = _Loop(cfg, run)
    rounds, stopped = loop.resume(on_round_end)
    for k in range(len(rounds), cfg.rounds):
        if stopped is not None:
            break
        info = loop.round(k)
        rounds.append(info)
        if not info["trained"]:
            stopped = info
        elif on_round_end is not None:
            on_round_end(loop.model, loop.tok, k, info)
    summary: dict = {"target": cfg.target, "model": cfg.model, "method": cfg.method, "run": str(run.path),
                     "pool_size": len(loop.pool), "rounds": rounds,
                     "rounds_trained": sum(1 for r in rounds if r.get("trained")),
                     "stopped_early": stopped["stop_reason"] if stopped else None}
    if cfg.export and summary["rounds_trained"]:
        summary["model_dir"] = str(export_merged(loop.model, loop.tok, run.path / "model"))
    write_json(run.path / SUMMARY, summary)
    return summary
