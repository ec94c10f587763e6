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
evaluating the oracle and saved as `<oracle run>/eval/oracle_stats.json` (or open-unlearning's TOFU_EVAL.json).

Every per-question metric keeps its values keyed by the row's index in its TOFU split (`value_by_index`, as
open-unlearning writes them); truth ratios keep the raw ratio R, so forget quality can be recomputed.

`masking="open-unlearning"` (with `template="plain"`, fp32) reproduces open-unlearning's numbers: its joint
tokenisation, its token-level metrics without the last label, its extraction-strength k* range, its min-k%++
σ floor and its zlib text (the decoded labels). See the README's "Reproducing open-unlearning".
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.collate import PromptFormat
from ..data.records import QARecord
from ..data.tofu import holdout_split_for, load_tofu
from . import memorization, mia, tofu_metrics
from .generation import DEFAULT_MAX_NEW_TOKENS, generate_answers
from .oracle import COMPARED_SETTINGS, ORACLE_STATS_FILE, OracleStats, OracleStatsMissing, missing_message
from .result import MetricResult
from .scoring import RecordScores, score_records

__all__ = ["ORACLE_STATS_FILE", "OracleStats", "OracleStatsMissing", "SETS", "TofuResult", "load_tofu_sets",
           "run_tofu", "TofuConfig", "evaluate_tofu", "precision_in_effect"]

SETS = ("forget", "retain", "real_authors", "world_facts")
NORMALIZED_SETS = ("real_authors", "world_facts")


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
        tr = self.metrics.get("forget/truth_ratio")
        return OracleStats(forget=self.settings["forget"], truth_ratio_mean=self.settings["truth_ratio_mean"],
                           truth_ratios=[float(r) for r in self.forget_ratios],
                           mia_min_k_auc=None if auc is None else auc.value, mia_k=self.settings["mia_k"],
                           index=None if tr is None or tr.index is None else [int(i) for i in tr.index],
                           settings={k: self.settings[k] for k in COMPARED_SETTINGS})


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
    """(MetricResult, per-question R) or (None, None) with a warning naming the set when it has no perturbed answers.
    Rows without perturbed answers are skipped; `value_by_index` keeps the others' row indices."""
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
    return tofu_metrics.truth_ratio_score(ratios, aggregate, mean, index=keep), ratios


def precision_in_effect(model) -> str:
    """The precision the model computes in right now: "bf16" under a bf16 autocast on its device, else its
    parameters' dtype ("fp32", "bf16", "fp16"). Recorded with the results and compared with the oracle's."""
    import torch

    param = next(model.parameters())
    device = param.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16:
        return "bf16"
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(param.dtype, str(param.dtype))


def _check_oracle(oracle_stats: OracleStats | None, settings: dict, need_truth_ratios: bool) -> None:
    """Refuse oracle statistics that do not fit this evaluation (split, truth-ratio variant, `COMPARED_SETTINGS`)."""
    forget, mean = settings["forget"], settings["truth_ratio_mean"]
    if oracle_stats is None:
        if need_truth_ratios:
            raise OracleStatsMissing(missing_message(forget))
        return
    if oracle_stats.forget.removesuffix("_perturbed") != forget.removesuffix("_perturbed"):
        raise ValueError(f"oracle_stats were computed on {oracle_stats.forget!r} but forget={forget!r}; "
                         f"save oracle stats for {forget!r}")
    if need_truth_ratios and oracle_stats.truth_ratio_mean != mean:
        raise ValueError(f"oracle_stats use truth_ratio_mean={oracle_stats.truth_ratio_mean!r} but this evaluation "
                         f"uses {mean!r}; the KS test needs the same variant on both sides")
    oracle_stats.check_compatible(settings)


@dataclass(frozen=True)
class TofuConfig:
    """How to run the TOFU suite (`run_tofu`): which sets and split, how much of each, and which metrics.

    `limit` caps every set; `forget_quality=True` needs oracle stats; `extraction_variant` defaults to the
    masking's ("paper" for exact, "open-unlearning" for it); `source` is where the TOFU data is read from."""

    forget: str = "forget01"
    fmt: PromptFormat = field(default_factory=PromptFormat)
    sets: Sequence[str] = SETS
    retain_limit: int | None = 400
    limit: int | None = None
    source: Any = None
    batch_size: int = 32
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    truth_ratio_mean: str = "geometric"
    forget_quality: bool = True
    mia_attacks: bool = True
    mia_k: float = 0.4
    extraction_variant: str | None = None

    def __post_init__(self):
        if self.truth_ratio_mean not in tofu_metrics.TRUTH_RATIO_MEANS:
            raise ValueError(f"truth_ratio_mean={self.truth_ratio_mean!r}: expected one of "
                             f"{tofu_metrics.TRUTH_RATIO_MEANS}")

    def with_overrides(self, forget: str | None = None, fmt: PromptFormat | None = None, **overrides) -> "TofuConfig":
        """A copy with `forget` / `fmt` (when given) and any other field replaced; an unknown name is an error."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"run_tofu: unknown setting(s) {unknown}; TofuConfig has "
                            f"{', '.join(f.name for f in fields(self))}")
        given = {k: v for k, v in (("forget", forget), ("fmt", fmt)) if v is not None}
        return replace(self, **given, **overrides)


def run_tofu(model, tokenizer, forget: str | None = None, oracle_stats: OracleStats | str | Path | None = None,
             fmt: PromptFormat | None = None, *, config: TofuConfig | None = None,
             records: Mapping[str, list[QARecord]] | None = None, reference_model=None, **overrides) -> TofuResult:
    """Evaluate `model` on the TOFU suite; see the module docstring for sets and metrics.

    The settings are `config` (default `TofuConfig()`) with `forget`, `fmt` and any `TofuConfig` field given as
    a keyword on top. `records` replaces the loaded sets (keys as in `SETS` plus `holdout`; a row's index is
    its position there); `forget_quality=True` without `oracle_stats` raises `OracleStatsMissing` saying how
    to produce them; oracle stats made with other settings (masking, template, max_length, precision) are
    refused.
    """
    c = (config or TofuConfig()).with_overrides(forget, fmt, **overrides)
    if isinstance(oracle_stats, (str, Path)):
        oracle_stats = OracleStats.load(oracle_stats)
    fmt = c.fmt
    extraction_variant = c.extraction_variant or ("open-unlearning" if fmt.masking == "open-unlearning" else "paper")
    settings = dict(forget=c.forget, sets=list(c.sets), retain_limit=c.retain_limit, limit=c.limit,
                    batch_size=c.batch_size, max_new_tokens=c.max_new_tokens, truth_ratio_mean=c.truth_ratio_mean,
                    mia_k=c.mia_k, extraction_variant=extraction_variant, masking=fmt.masking,
                    template="chat" if fmt.uses_chat(tokenizer) else "plain", max_length=fmt.max_length,
                    precision=precision_in_effect(model))
    _check_oracle(oracle_stats, settings, c.forget_quality and "forget" in c.sets)
    if records is None:
        records = load_tofu_sets(c.forget, c.retain_limit, c.source, c.sets, with_holdout=c.mia_attacks,
                                 limit=c.limit)
    needed = list(c.sets) + (["holdout"] if c.mia_attacks else [])
    missing = [k for k in needed if k not in records]
    if missing:
        raise ValueError(f"records: missing set(s) {missing} (have {sorted(records)}); pass them, drop them from "
                         "`sets`, or set mia_attacks=False when there is no holdout set")
    metrics: dict[str, MetricResult] = {}
    generations: dict[str, list[str]] = {}
    forget_ratios = forget_scores = None
    for name in c.sets:
        scores, ratios = _score_set(model, tokenizer, name, records[name], fmt, settings, metrics, generations,
                                    token_stats=name == "forget" and c.mia_attacks)
        if name == "forget":
            forget_scores, forget_ratios = scores, ratios
            if c.forget_quality and ratios is not None:
                metrics["forget_quality"] = tofu_metrics.forget_quality(ratios, oracle_stats.truth_ratios)
    parts = {k: metrics[k].value for k in tofu_metrics.MODEL_UTILITY_PARTS if k in metrics}
    if len(parts) == len(tofu_metrics.MODEL_UTILITY_PARTS):
        metrics["model_utility"] = tofu_metrics.model_utility(parts)
    elif {"retain", "real_authors", "world_facts"} <= set(c.sets):
        missing = sorted(set(tofu_metrics.MODEL_UTILITY_PARTS) - set(parts))
        warnings.warn(f"model utility skipped: missing {missing}", UserWarning, stacklevel=2)
    if c.mia_attacks:
        if forget_scores is None:
            raise ValueError("mia_attacks=True needs the forget set in `sets`")
        metrics.update(_mia(model, tokenizer, records["forget"], forget_scores, records["holdout"], fmt, c.batch_size,
                            c.mia_k, reference_model, oracle_stats))
    return TofuResult(metrics, forget_ratios, generations, settings)


def _score_set(model, tokenizer, name, recs, fmt, settings, metrics, generations, token_stats):
    """Score and generate one set once; add its metrics (per-item values keyed by row index) to `metrics`.
    Returns (its RecordScores, its per-question truth ratios or None)."""
    if not recs:
        raise ValueError(f"TOFU set {name!r} is empty")
    bs = settings["batch_size"]
    rows = list(range(len(recs)))
    scores = score_records(model, tokenizer, recs, fmt, batch_size=bs, token_stats=token_stats)
    gens = generate_answers(model, tokenizer, [r.question for r in recs], fmt, settings["max_new_tokens"], bs)
    generations[name] = gens
    if name in NORMALIZED_SETS and all(r.perturbed_answers for r in recs):
        prob = tofu_metrics.normalized_probability([s.answer.mean_lp for s in scores],
                                                   [[p.mean_lp for p in s.perturbed] for s in scores])
    else:
        prob = tofu_metrics.probability([s.answer.mean_lp for s in scores])
    metrics[f"{name}/probability"] = replace(prob, index=rows)
    metrics[f"{name}/rouge_l_recall"] = replace(tofu_metrics.rouge_l_recall(gens, [r.answer for r in recs]), index=rows)
    is_forget = name == "forget"
    tr, ratios = _truth_ratio(name, recs, scores, "forget" if is_forget else "retain", settings["truth_ratio_mean"])
    if tr is not None:
        metrics[f"{name}/truth_ratio"] = tr
    if is_forget:
        hits = [s.answer.text_tokens(fmt.masking).hits for s in scores]
        metrics["forget/exact_memorization"] = replace(memorization.exact_memorization(hits), index=rows)
        metrics["forget/extraction_strength"] = replace(
            memorization.extraction_strength(hits, settings["extraction_variant"]), index=rows)
    return scores, ratios


def _mia(model, tokenizer, forget_recs, forget_scores, holdout_recs, fmt, batch_size, k, reference_model, oracle_stats):
    """Membership-inference AUCs (forget = members, holdout = non-members) and PrivLeak against the oracle's AUC.

    Loss and zlib use the whole answer likelihood (EOS included, as `evaluate_probability` does in both tools);
    min-k% and min-k%++ use `TokenScores.text_tokens(masking)`. Under open-unlearning masking the zlib text is
    the decoded labels (its `extract_target_texts_from_processed_data`), min-k%++ floors σ² at 1e-6 and the
    reference attack is its calibrated difference; otherwise the text is the answer and the reference a ratio."""
    ou = fmt.masking == "open-unlearning"
    hold = score_records(model, tokenizer, holdout_recs, fmt, fields=("answer",), batch_size=batch_size, token_stats=True)
    f_ans = [s.answer for s in forget_scores]
    h_ans = [s.answer for s in hold]
    floor = mia.OPEN_UNLEARNING_SIGMA_FLOOR if ou else 1e-12

    def texts(answers, recs):
        if ou:
            return [tokenizer.decode(a.labels.tolist(), skip_special_tokens=True) for a in answers]
        return [r.answer for r in recs]

    def both(fn):
        return fn(f_ans, texts(f_ans, forget_recs)), fn(h_ans, texts(h_ans, holdout_recs))

    def text_tokens(answers):
        return [a.text_tokens(fmt.masking) for a in answers]

    attacks = {
        "loss": lambda a, t: mia.loss_scores([s.mean_lp for s in a]),
        "zlib": lambda a, t: mia.zlib_scores([s.mean_lp for s in a], t),
        "min_k": lambda a, t: mia.min_k_scores([s.logprobs for s in text_tokens(a)], k),
        "min_k_plus_plus": lambda a, t: mia.min_k_plus_plus_scores(
            *zip(*[(s.logprobs, s.mu, s.sigma) for s in text_tokens(a)]), k=k, sigma_floor=floor),
    }
    rows = dict(member_index=list(range(len(f_ans))), nonmember_index=list(range(len(h_ans))))
    out = {f"mia/{name}": mia.roc_auc(*both(fn), name=name, **rows) for name, fn in attacks.items()}
    if reference_model is not None:
        ref_f = score_records(reference_model, tokenizer, forget_recs, fmt, fields=("answer",), batch_size=batch_size)
        ref_h = score_records(reference_model, tokenizer, holdout_recs, fmt, fields=("answer",), batch_size=batch_size)
        mode = "difference" if ou else "ratio"
        out["mia/reference"] = mia.roc_auc(
            mia.reference_scores([s.mean_lp for s in f_ans], [s.answer.mean_lp for s in ref_f], mode),
            mia.reference_scores([s.mean_lp for s in h_ans], [s.answer.mean_lp for s in ref_h], mode),
            name=f"reference[{mode}]", **rows)
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
