"""Teacher-forced memorisation metrics over answer tokens.

Input per sample: `hits[t] = (argmax_v p(v | q, a_<t) == a_t)` for the answer tokens t that
`TokenScores.text_tokens(masking)` keeps, from the same forward that scores the answer:
* default (`masking="exact"`): the answer text's tokens, without the appended EOS — both metrics concern
  reproducing the answer *text* (Tirumala et al. 2022; Carlini et al. 2021), and EOS is not part of it;
* `masking="open-unlearning"`: every labelled token but the last (open-unlearning's `tokenwise_vocab_logprobs`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .result import MetricResult


def exact_memorization(hits: Sequence[Sequence[bool]]) -> MetricResult:
    """Exact memorisation EM = (1/|a|) Σ_t 1[argmax p(·|q, a_<t) = a_t] (Tirumala et al. 2022, "Memorization
    Without Overfitting"; open-unlearning `exact_memorization`), averaged over samples.

    A sample with no token (only possible under open-unlearning masking, a one-token answer) has no EM: its
    per-item value is NaN and the mean skips it, as open-unlearning's `None` score does."""
    vals = [float(np.mean(h)) if len(h) else float("nan") for h in hits]
    kept = [v for v in vals if not np.isnan(v)]
    value = float(np.mean(kept)) if kept else float("nan")
    return MetricResult(value, "exact_memorization: mean_t 1[argmax=a_t] (teacher-forced)", len(kept), vals)


def extraction_strength(hits: Sequence[Sequence[bool]], variant: str = "paper") -> MetricResult:
    """Extraction strength ES = 1 − k*/|a|, k* = the shortest answer prefix after which the teacher-forced greedy
    predictions reproduce the whole remaining suffix: k* = min{k : hits[k:] all true}
    (Carlini et al. 2021 extraction; as defined by Wang et al. 2025, "Towards Effective Evaluations and
    Comparisons for LLM Unlearning Methods", ICLR; open-unlearning `extraction_strength`).

    * `variant="paper"` (default with exact masking): k ranges over 0..|a|, so a sample whose last token is
      wrong gets ES = 0 (nothing of the answer is extracted).
    * `variant="open-unlearning"` (used with open-unlearning masking): its loop stops at k = |a| − 1 without
      checking the empty suffix, so such a sample gets ES = 1/|a| instead of 0. Both agree whenever the last
      token is predicted correctly.
    A sample with no token scores 0 in both (open-unlearning's choice).
    """
    if variant not in ("paper", "open-unlearning"):
        raise ValueError(f"variant={variant!r}: expected 'paper' or 'open-unlearning'")
    vals = []
    for h in hits:
        h = np.asarray(h, dtype=bool)
        n = len(h)
        if n == 0:
            vals.append(0.0)
            continue
        # suffix_ok[k] = all(h[k:]); k* = first k with suffix_ok true (k = n always true: empty suffix)
        wrong = np.flatnonzero(~h)
        k = 0 if wrong.size == 0 else int(wrong[-1]) + 1
        if variant == "open-unlearning":
            k = min(k, n - 1)
        vals.append(1.0 - k / n)
    return MetricResult(float(np.mean(vals)), f"extraction_strength[{variant}]: 1 - k*/|a|", len(vals), vals)
