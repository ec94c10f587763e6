"""Membership-inference attacks (MIA) on answer tokens, their ROC AUC, and MUSE's PrivLeak.

Every attack maps one scored sample to a **membership score, oriented so that higher = more likely a member**
(e.g. −loss). AUC convention used throughout unlearnkit: members = the forget set (positives, label 1),
non-members = the holdout set (label 0), AUC = P(score(member) > score(non-member)) + ½ P(tie)
(`sklearn.metrics.roc_auc_score(labels, scores)`, which open-unlearning calls; counted exactly here, see `auc`). A model that still memorises the forget set has AUC → 1;
the retain oracle (never saw either set) sits near 0.5.

Inputs are per-token answer log-probs (the `token_logprobs` of `SequenceLogprobs` restricted to the mask),
per-token mean/std of the vocabulary log-probs (min-k%++), length-normalised log-likelihoods, answer texts.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from .result import MetricResult


def _k_count(n: int, k: float) -> int:
    if not 0 < k <= 1:
        raise ValueError(f"k={k}: the fraction of lowest tokens must be in (0, 1]")
    return max(1, int(n * k))


def loss_scores(mean_lps: Sequence[float]) -> np.ndarray:
    """LOSS attack (Yeom et al. 2018): score = −(mean answer-token NLL) = mean log p."""
    return np.asarray(mean_lps, dtype=np.float64)


def zlib_scores(mean_lps: Sequence[float], texts: Sequence[str]) -> np.ndarray:
    """zlib attack (Carlini et al. 2021, "Extracting Training Data from LLMs" §6.1): loss / zlib entropy,
    zlib entropy = len(zlib.compress(text.encode("utf-8"))) in bytes (open-unlearning `mia_zlib` uses the same).
    Score = −(mean NLL) / zlib_bytes(answer text)."""
    if len(mean_lps) != len(texts):
        raise ValueError(f"zlib_scores: {len(mean_lps)} scores but {len(texts)} texts")
    z = np.asarray([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.float64)
    return np.asarray(mean_lps, dtype=np.float64) / z


def min_k_scores(token_lps: Sequence[Sequence[float]], k: float = 0.4) -> np.ndarray:
    """Min-k% Prob (Shi et al. 2024, "Detecting Pretraining Data from LLMs"): mean of the k% lowest answer-token
    log-probs, k% = max(1, floor(n·k)) tokens (open-unlearning's count; its default k = 0.4, the paper's 0.2).
    The tokens are the answer text's (`TokenScores.text_tokens`: no EOS by default; open-unlearning masking drops
    the last label as it does). A sample with no token scores 0 (open-unlearning's choice)."""
    out = []
    for lp in token_lps:
        lp = np.sort(np.asarray(lp, dtype=np.float64))
        out.append(lp[: _k_count(len(lp), k)].mean() if lp.size else 0.0)
    return np.asarray(out)


#: open-unlearning clamps σ_t² at 1e-6 before the square root (`min_k_plus_plus.py`), i.e. σ_t ≥ 1e-3
OPEN_UNLEARNING_SIGMA_FLOOR = 1e-3


def min_k_plus_plus_scores(token_lps: Sequence[Sequence[float]], mus: Sequence[Sequence[float]],
                           sigmas: Sequence[Sequence[float]], k: float = 0.4, sigma_floor: float = 1e-12) -> np.ndarray:
    """Min-k%++ (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting Pre-Training Data from LLMs"):
    per token z_t = (log p(x_t|x_<t) − μ_t) / σ_t with μ_t = E_{z∼p(·|x_<t)}[log p(z|x_<t)] and
    σ_t² = E[(log p(z|x_<t))²] − μ_t² over the full vocabulary; score = mean of the k% lowest z_t (same count
    rule and token set as `min_k_scores`). σ_t is floored at `sigma_floor`: 1e-12 by default (only guards a
    one-hot next-token distribution), `OPEN_UNLEARNING_SIGMA_FLOOR` to reproduce open-unlearning."""
    out = []
    for lp, mu, sd in zip(token_lps, mus, sigmas, strict=True):
        sd = np.maximum(np.asarray(sd, np.float64), sigma_floor)
        z = np.sort((np.asarray(lp, np.float64) - np.asarray(mu, np.float64)) / sd)
        out.append(z[: _k_count(len(z), k)].mean() if z.size else 0.0)
    return np.asarray(out)


def reference_scores(mean_lps: Sequence[float], ref_mean_lps: Sequence[float], mode: str = "ratio") -> np.ndarray:
    """Reference-model attack (Carlini et al. 2021 §6.1 "comparing to other neural language models"):
    `mode="ratio"`: score = −loss_model / loss_ref (ratio of log-perplexities, the paper's form);
    `mode="difference"`: score = −(loss_model − loss_ref) (the calibrated form open-unlearning's `mia_reference`
    and Mireshghallah et al. 2022 use). Losses are mean answer-token NLLs."""
    loss = -np.asarray(mean_lps, dtype=np.float64)
    ref = -np.asarray(ref_mean_lps, dtype=np.float64)
    if mode == "ratio":
        return -loss / np.maximum(ref, 1e-12)
    if mode == "difference":
        return -(loss - ref)
    raise ValueError(f"mode={mode!r}: expected 'ratio' or 'difference'")


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """P(member > non-member) + ½ P(tie), counted over all pairs with two binary searches (Mann–Whitney U / n₁n₀):
    the area under the ROC curve that `sklearn.metrics.roc_auc_score` integrates, without importing
    scikit-learn (seconds of start-up for one number). The counts are integers, so the value is exact."""
    if np.isnan(member_scores).any() or np.isnan(nonmember_scores).any():
        raise ValueError("roc_auc: a membership score is NaN (a sample without scored tokens, or a NaN log-prob); "
                         "check the scored sets")
    h = np.sort(nonmember_scores)
    below = np.searchsorted(h, member_scores, side="left")
    ties = np.searchsorted(h, member_scores, side="right") - below
    return (2 * int(below.sum()) + int(ties.sum())) / (2 * member_scores.size * h.size)


def roc_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float], name: str = "mia",
            member_index: Sequence[int] | None = None, nonmember_index: Sequence[int] | None = None) -> MetricResult:
    """ROC AUC of membership scores (`auc`, = `sklearn.metrics.roc_auc_score`): members (forget) label 1, non-members
    (holdout) label 0; ties count ½. `per_item` holds members' scores (keyed by `member_index` when given);
    non-members' scores go to `extra["holdout_value_by_index"]` (keyed by `nonmember_index`, default 0..n−1).
    Scores are oriented higher = member: open-unlearning's min-k score is the negative of unlearnkit's."""
    m = np.asarray(member_scores, dtype=np.float64)
    h = np.asarray(nonmember_scores, dtype=np.float64)
    if m.size == 0 or h.size == 0:
        raise ValueError(f"roc_auc({name}): need members and non-members, got {m.size} and {h.size}")
    h_index = range(h.size) if nonmember_index is None else nonmember_index
    extra = {"n_members": int(m.size), "n_nonmembers": int(h.size),
             "holdout_value_by_index": {str(i): float(v) for i, v in zip(h_index, h, strict=True)}}
    return MetricResult(auc(m, h), f"{name}_auc[members=forget,label=1]", int(m.size + h.size),
                        m.tolist(), extra=extra, index=member_index)


def privleak(auc_unlearned: float, auc_oracle: float = 0.5) -> MetricResult:
    """PrivLeak (Shi et al. 2024, MUSE, arXiv 2407.06460 §3): (AUC_unl − AUC_retrain) / AUC_retrain × 100.

    MUSE computes its AUC with the forget set as the *low-score* class (its well-trained target model gets
    PrivLeak ≈ −100 %). In unlearnkit's orientation (members = forget score higher, `roc_auc`) MUSE's AUC is
    1 − AUC, so PrivLeak = ((1−AUC_unl) − (1−AUC_oracle)) / (1−AUC_oracle) × 100 — identical to open-unlearning's
    `privleak`. 0 = like the oracle; strongly negative = under-unlearned (forget set still recognisable);
    positive = over-unlearned. `auc_oracle=0.5` (no oracle) is open-unlearning's fallback.
    """
    a_un, a_or = 1.0 - float(auc_unlearned), 1.0 - float(auc_oracle)
    if a_or <= 0:
        raise ValueError(f"privleak: oracle AUC {auc_oracle} leaves a zero denominator (1 − AUC = {a_or})")
    return MetricResult((a_un - a_or) / a_or * 100.0, "privleak_muse_pct: ((1-AUC)-(1-AUC_oracle))/(1-AUC_oracle)*100",
                        1, extra={"auc": float(auc_unlearned), "auc_oracle": float(auc_oracle)})
