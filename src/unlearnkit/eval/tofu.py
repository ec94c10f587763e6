"""The TOFU suite: score every set once, generate once, then aggregate with the pure metrics.

Sets (open-unlearning's forget01 defaults; Maini et al. 2024):
  forget        `forgetXX_perturbed`          probability, ROUGE-L recall, truth ratio (forget aggregate),
                                              exact memorisation, extraction strength, forget quality
  retain        first `retain_limit` (400) of `retain_perturbed`: probability, ROUGE-L recall, truth ratio
  real_authors  `real_authors_perturbed`      normalised probability, ROUGE-L recall, truth ratio
  world_facts   `world_facts_perturbed`       normalised probability, ROUGE-L recall, truth ratio
  holdout       `holdoutXX` (MIA non-members) loss / zlib / min-k% / min-k%++ (/ reference) AUC, PrivLeak
  model_utility = hmean of the nine retain / real-authors / world-facts numbers.

Forget quality needs the retain oracle's per-question forget truth ratios (`OracleStats`), computed once by
evaluating the oracle and saved as `<oracle run>/eval/oracle_stats.json`.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..data.collate import PromptFormat
from ..data.records import QARecord
from ..data.tofu import holdout_split_for, load_tofu
from . import memorization, mia, tofu_metrics
from .generation import DEFAULT_MAX_NEW_TOKENS, generate_answers
from .result import MetricResult
from .scoring import RecordScores, score_records

ORACLE_STATS_FILE = "oracle_stats.json"
SETS = ("forget", "retain", "real_authors", "world_facts")
NORMALIZED_SETS = ("real_authors", "world_facts")


class OracleStatsMissing(ValueError):
    """Forget quality was asked for without the retain oracle's truth ratios."""


def _missing_message(forget: str) -> str:
    return (f"forget quality needs the retain oracle's per-question truth ratios on {forget}, and none were given. "
            f"Produce them once from the oracle run: `unlearnkit evaluate run=<oracle dir> suite=tofu forget={forget} "
            f"save_oracle_stats=true` (or `evaluate_run(<oracle dir>, forget={forget!r}, save_oracle_stats=True)`), "
            f"which writes <oracle dir>/eval/{ORACLE_STATS_FILE}; then pass oracle_stats=<that file>. "
            "To evaluate without it, pass forget_quality=False.")


@dataclass
class OracleStats:
    """The retain oracle's numbers that other runs are compared with (saved once, reused)."""

    forget: str
    truth_ratio_mean: str
    truth_ratios: list[float]
    mia_min_k_auc: float | None = None
    mia_k: float | None = None
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        from ..runs import write_json

        path = Path(path)
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "OracleStats":
        path = Path(path)
        if path.is_dir():
            cand = [path / "eval" / ORACLE_STATS_FILE, path / ORACLE_STATS_FILE]
            path = next((c for c in cand if c.is_file()), cand[0])
        if not path.is_file():
            raise OracleStatsMissing(f"oracle_stats={str(path)!r}: no such file. " + _missing_message("<forget split>"))
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in ("forget", "truth_ratio_mean", "truth_ratios")},
                   mia_min_k_auc=data.get("mia_min_k_auc"), mia_k=data.get("mia_k"), meta=data.get("meta", {}))


@dataclass
class TofuResult:
    metrics: dict[str, MetricResult]
    forget_ratios: np.ndarray | None
    generations: dict[str, list[str]]
    settings: dict

    def to_json(self) -> dict[str, dict]:
        return {k: m.to_json() for k, m in self.metrics.items()}

    def oracle_stats(self) -> OracleStats:
        if self.forget_ratios is None:
            raise ValueError("this evaluation has no forget-set truth ratios to save as oracle stats")
        auc = self.metrics.get("mia/min_k")
        return OracleStats(forget=self.settings["forget"], truth_ratio_mean=self.settings["truth_ratio_mean"],
                           truth_ratios=[float(r) for r in self.forget_ratios],
                           mia_min_k_auc=None if auc is None else auc.value, mia_k=self.settings["mia_k"])


def load_tofu_sets(forget: str = "forget01", retain_limit: int | None = 400, source=None,
                   sets: Sequence[str] = SETS, with_holdout: bool = True, limit: int | None = None) -> dict[str, list[QARecord]]:
    """The TOFU records of each set. `limit` caps every set (quick checks); `retain_limit` caps the retain set."""
    split = {"forget": f"{forget.removesuffix('_perturbed')}_perturbed", "retain": "retain_perturbed",
             "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}
    unknown = set(sets) - set(SETS)
    if unknown:
        raise ValueError(f"sets={list(sets)}: unknown {sorted(unknown)}; available: {SETS}")
    out = {name: load_tofu(split[name], source) for name in sets}
    if with_holdout:
        out["holdout"] = load_tofu(holdout_split_for(forget), source)
    if "retain" in out and retain_limit is not None:
        out["retain"] = out["retain"][:retain_limit]
    if limit is not None:
        out = {k: v[:limit] for k, v in out.items()}
    return out


def _truth_ratio(name: str, records, scores: list[RecordScores], aggregate: str, mean: str):
    """(MetricResult, per-question R) or (None, None) with a warning naming the set when it has no perturbed answers."""
    keep = [i for i, r in enumerate(records) if r.perturbed_answers]
    if not keep:
        warnings.warn(f"TOFU set {name!r}: no record has perturbed answers, so its truth ratio is skipped "
                      "(not reported as 0)", UserWarning, stacklevel=3)
        return None, None
    if len(keep) < len(records):
        warnings.warn(f"TOFU set {name!r}: {len(records) - len(keep)} of {len(records)} records have no perturbed "
                      f"answers; the truth ratio uses the other {len(keep)}", UserWarning, stacklevel=3)
    base = [(scores[i].paraphrased or scores[i].answer).mean_lp for i in keep]
    pert = [[s.mean_lp for s in scores[i].perturbed] for i in keep]
    ratios = tofu_metrics.truth_ratios(base, pert, mean=mean)
    return tofu_metrics.truth_ratio_score(ratios, aggregate, mean), ratios


def run_tofu(model, tokenizer, forget: str = "forget01", oracle_stats: OracleStats | str | Path | None = None,
             fmt: PromptFormat | None = None, *, records: Mapping[str, list[QARecord]] | None = None,
             sets: Sequence[str] = SETS, retain_limit: int | None = 400, limit: int | None = None, source=None,
             batch_size: int = 32, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, truth_ratio_mean: str = "geometric",
             forget_quality: bool = True, mia_attacks: bool = True, mia_k: float = 0.4, reference_model=None,
             extraction_variant: str = "paper") -> TofuResult:
    """Evaluate `model` on the TOFU suite; see the module docstring for sets and metrics.

    `records` replaces the loaded sets (keys as in `SETS` plus `holdout`); `limit` caps every set;
    `forget_quality=True` without `oracle_stats` raises `OracleStatsMissing` saying how to produce them.
    """
    if truth_ratio_mean not in tofu_metrics.TRUTH_RATIO_MEANS:
        raise ValueError(f"truth_ratio_mean={truth_ratio_mean!r}: expected one of {tofu_metrics.TRUTH_RATIO_MEANS}")
    if isinstance(oracle_stats, (str, Path)):
        oracle_stats = OracleStats.load(oracle_stats)
    if forget_quality and "forget" in sets:
        if oracle_stats is None:
            raise OracleStatsMissing(_missing_message(forget))
        if oracle_stats.forget.removesuffix("_perturbed") != forget.removesuffix("_perturbed"):
            raise ValueError(f"oracle_stats were computed on {oracle_stats.forget!r} but forget={forget!r}; "
                             f"save oracle stats for {forget!r}")
        if oracle_stats.truth_ratio_mean != truth_ratio_mean:
            raise ValueError(f"oracle_stats use truth_ratio_mean={oracle_stats.truth_ratio_mean!r} but this evaluation "
                             f"uses {truth_ratio_mean!r}; the KS test needs the same variant on both sides")
    fmt = fmt or PromptFormat()
    if records is None:
        records = load_tofu_sets(forget, retain_limit, source, sets, with_holdout=mia_attacks, limit=limit)
    needed = list(sets) + (["holdout"] if mia_attacks else [])
    missing = [k for k in needed if k not in records]
    if missing:
        raise ValueError(f"records: missing set(s) {missing} (have {sorted(records)}); pass them, drop them from "
                         "`sets`, or set mia_attacks=False when there is no holdout set")
    settings = dict(forget=forget, sets=list(sets), retain_limit=retain_limit, limit=limit, batch_size=batch_size,
                    max_new_tokens=max_new_tokens, truth_ratio_mean=truth_ratio_mean, mia_k=mia_k,
                    extraction_variant=extraction_variant, masking=fmt.masking, template=fmt.template)
    metrics: dict[str, MetricResult] = {}
    generations: dict[str, list[str]] = {}
    forget_ratios = None
    forget_scores = None
    for name in sets:
        recs = records[name]
        if not recs:
            raise ValueError(f"TOFU set {name!r} is empty")
        is_forget = name == "forget"
        scores = score_records(model, tokenizer, recs, fmt, batch_size=batch_size, token_stats=is_forget and mia_attacks)
        gens = generate_answers(model, tokenizer, [r.question for r in recs], fmt, max_new_tokens, batch_size)
        generations[name] = gens
        if name in NORMALIZED_SETS and all(r.perturbed_answers for r in recs):
            metrics[f"{name}/probability"] = tofu_metrics.normalized_probability(
                [s.answer.mean_lp for s in scores], [[p.mean_lp for p in s.perturbed] for s in scores])
        else:
            metrics[f"{name}/probability"] = tofu_metrics.probability([s.answer.mean_lp for s in scores])
        metrics[f"{name}/rouge_l_recall"] = tofu_metrics.rouge_l_recall(gens, [r.answer for r in recs])
        tr, ratios = _truth_ratio(name, recs, scores, "forget" if is_forget else "retain", truth_ratio_mean)
        if tr is not None:
            metrics[f"{name}/truth_ratio"] = tr
        if is_forget:
            forget_scores, forget_ratios = scores, ratios
            hits = [s.answer.hits for s in scores]
            metrics["forget/exact_memorization"] = memorization.exact_memorization(hits)
            metrics["forget/extraction_strength"] = memorization.extraction_strength(hits, extraction_variant)
            if forget_quality and ratios is not None:
                metrics["forget_quality"] = tofu_metrics.forget_quality(ratios, oracle_stats.truth_ratios)
    parts = {k: metrics[k].value for k in tofu_metrics.MODEL_UTILITY_PARTS if k in metrics}
    if len(parts) == len(tofu_metrics.MODEL_UTILITY_PARTS):
        metrics["model_utility"] = tofu_metrics.model_utility(parts)
    elif {"retain", "real_authors", "world_facts"} <= set(sets):
        missing = sorted(set(tofu_metrics.MODEL_UTILITY_PARTS) - set(parts))
        warnings.warn(f"model utility skipped: missing {missing}", UserWarning, stacklevel=2)
    if mia_attacks:
        if forget_scores is None:
            raise ValueError("mia_attacks=True needs the forget set in `sets`")
        metrics.update(_mia(model, tokenizer, records["forget"], forget_scores, records["holdout"], fmt, batch_size,
                            mia_k, reference_model, oracle_stats))
    return TofuResult(metrics, forget_ratios, generations, settings)


def _mia(model, tokenizer, forget_recs, forget_scores, holdout_recs, fmt, batch_size, k, reference_model, oracle_stats):
    hold = score_records(model, tokenizer, holdout_recs, fmt, fields=("answer",), batch_size=batch_size, token_stats=True)
    f_ans = [s.answer for s in forget_scores]
    h_ans = [s.answer for s in hold]

    def both(fn):
        return fn(f_ans, [r.answer for r in forget_recs]), fn(h_ans, [r.answer for r in holdout_recs])

    attacks = {
        "loss": lambda a, t: mia.loss_scores([s.mean_lp for s in a]),
        "zlib": lambda a, t: mia.zlib_scores([s.mean_lp for s in a], t),
        "min_k": lambda a, t: mia.min_k_scores([s.logprobs for s in a], k),
        "min_k_plus_plus": lambda a, t: mia.min_k_plus_plus_scores([s.logprobs for s in a], [s.mu for s in a],
                                                                   [s.sigma for s in a], k),
    }
    out = {f"mia/{name}": mia.roc_auc(*both(fn), name=name) for name, fn in attacks.items()}
    if reference_model is not None:
        ref_f = score_records(reference_model, tokenizer, forget_recs, fmt, fields=("answer",), batch_size=batch_size)
        ref_h = score_records(reference_model, tokenizer, holdout_recs, fmt, fields=("answer",), batch_size=batch_size)
        out["mia/reference"] = mia.roc_auc(
            mia.reference_scores([s.mean_lp for s in f_ans], [s.answer.mean_lp for s in ref_f]),
            mia.reference_scores([s.mean_lp for s in h_ans], [s.answer.mean_lp for s in ref_h]), name="reference")
    ref_auc = None if oracle_stats is None else oracle_stats.mia_min_k_auc
    if ref_auc is None:
        warnings.warn("privleak: no oracle min-k AUC in oracle_stats; using the reference AUC 0.5 "
                      "(open-unlearning's fallback), named in the metric's definition", UserWarning, stacklevel=3)
        pl = mia.privleak(out["mia/min_k"].value, 0.5)
        pl.definition += " [reference AUC 0.5, no oracle]"
    else:
        pl = mia.privleak(out["mia/min_k"].value, ref_auc)
        pl.definition += " [reference: oracle min_k AUC]"
    pl.n = out["mia/min_k"].n
    out["privleak"] = pl
    return out


def evaluate_tofu(model, tokenizer, forget: str = "forget01", oracle_stats: OracleStats | str | Path | None = None,
                  fmt: PromptFormat | None = None, **kwargs) -> dict[str, dict]:
    """`run_tofu(...)` as a JSON-ready dict: metric name -> {"value", "definition", "n", ...}."""
    return run_tofu(model, tokenizer, forget, oracle_stats, fmt, **kwargs).to_json()
