"""TOFU metrics (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv 2401.06121).

Pure functions of already-scored numbers: every input is a length-normalised answer log-likelihood
`mean_lp = (1/|a|) Σ_t log p(a_t | q, a_<t)` (what `SequenceLogprobs.mean` returns), a generated string,
or per-question truth ratios. No model is touched here, so each formula is testable by hand.

Where published implementations disagree, the TOFU authors' released code (locuslab/tofu
`aggregate_eval_stat.py` / `utils.py:get_model_utility`, copied into G-effect and open-unlearning) is the
default, and the other variant is an argument:
* truth ratio: the code averages perturbed *losses* before the exp (a **geometric** mean of the perturbed
  answers' length-normalised probabilities); the paper's equation (and the G-effect repo's model-utility
  path) writes an **arithmetic** mean of those probabilities. `mean="geometric"|"arithmetic"`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import hmean, ks_2samp

from .result import MetricResult

TRUTH_RATIO_MEANS = ("geometric", "arithmetic")
MODEL_UTILITY_PARTS = tuple(f"{s}/{m}" for s in ("retain", "real_authors", "world_facts")
                            for m in ("probability", "rouge_l_recall", "truth_ratio"))


def probability(mean_lps: Sequence[float]) -> MetricResult:
    """TOFU answer probability P(a|q)^{1/|a|} = exp(−mean answer-token NLL), averaged over questions.

    Maini et al. 2024 §2.5.1; NPO (Zhang et al. 2024) App. E.1.2; TOFU `get_model_utility`
    (`np.exp(-avg_gt_loss)`). Used on the forget and retain sets.
    """
    p = np.exp(np.asarray(mean_lps, dtype=np.float64))
    return MetricResult(float(p.mean()), "tofu_probability: mean_q exp(mean_t log p(a_t))", len(p), p.tolist())


def normalized_probability(true_mean_lps: Sequence[float], perturbed_mean_lps: Sequence[Sequence[float]]) -> MetricResult:
    """Real-authors / world-facts probability P(true) / (P(true) + Σ_i P(perturbed_i)).

    Each P is the length-normalised probability exp(mean answer-token log p), as in TOFU's
    `get_model_utility` (`true_prob = exp(-avg_gt_loss)`, `false_prob = exp(-avg_perturb_loss)`,
    `true_prob / (true_prob + false_prob.sum(-1))`); Maini et al. 2024 §2.5.1.
    """
    t = np.exp(np.asarray(true_mean_lps, dtype=np.float64))
    f = [np.exp(np.asarray(p, dtype=np.float64)).sum() for p in perturbed_mean_lps]
    vals = t / (t + np.asarray(f))
    return MetricResult(float(vals.mean()), "tofu_normalized_probability: P(a)/(P(a)+sum_i P(pert_i)), "
                        "P = exp(mean_t log p)", len(vals), vals.tolist())


@lru_cache(maxsize=1)
def _scorer():
    """rouge-score's ROUGE-L scorer with its own tokenisation and Porter stemmer, the stem of each distinct word
    computed once (TOFU's texts repeat their words; the stemmer was a third of the ROUGE time)."""
    from nltk.stem import porter
    from rouge_score import rouge_scorer, tokenize

    class CachedStemTokenizer:
        """`rouge_score.tokenizers.DefaultTokenizer(use_stemmer=True)` with memoised stems: the same tokens."""

        def __init__(self):
            self.stem = lru_cache(maxsize=None)(porter.PorterStemmer().stem)

        def tokenize(self, text):
            return tokenize.tokenize(text, self)

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=CachedStemTokenizer())


def rouge_l_recall(generated: Sequence[str], references: Sequence[str]) -> MetricResult:
    """ROUGE-L **recall** with Porter stemming (`rouge-score`, `use_stemmer=True`) of greedy output vs the answer.

    Recall = LCS(gen, ref) / |ref| in tokens. TOFU `eval_rouge_recall` (`scorer.score(gt, gen)['rougeL'].recall`);
    Maini et al. 2024 §2.5.1.
    """
    if len(generated) != len(references):
        raise ValueError(f"rouge_l_recall: {len(generated)} generations but {len(references)} references")
    sc = _scorer()
    vals = [sc.score(ref, gen)["rougeL"].recall for gen, ref in zip(generated, references)]
    return MetricResult(float(np.mean(vals)) if vals else float("nan"), "rouge_l_recall[stemmed]", len(vals), vals)


def truth_ratios(para_mean_lps: Sequence[float], perturbed_mean_lps: Sequence[Sequence[float]],
                 mean: str = "geometric") -> np.ndarray:
    """Per-question truth ratio R = mean_i P(â_i|q)^{1/|â_i|} / P(ã|q)^{1/|ã|} (wrong over right; lower = truer).

    â_i: perturbed (wrong) answers; ã: paraphrased correct answer (the answer itself for real authors / world facts).
    * `mean="geometric"` (default; TOFU / open-unlearning code): R = exp(mean_i mean_lp(â_i) − mean_lp(ã)).
    * `mean="arithmetic"` (the paper's written equation; NPO App. E.1.2; G-effect's model-utility path):
      R = (1/n) Σ_i exp(mean_lp(â_i)) / exp(mean_lp(ã)).
    By AM–GM the arithmetic R is ≥ the geometric one; they agree when all perturbed probabilities are equal.
    """
    if mean not in TRUTH_RATIO_MEANS:
        raise ValueError(f"mean={mean!r}: expected one of {TRUTH_RATIO_MEANS}")
    if len(para_mean_lps) != len(perturbed_mean_lps):
        raise ValueError(f"truth_ratios: {len(para_mean_lps)} paraphrased scores but {len(perturbed_mean_lps)} "
                         "perturbed lists")
    out = np.empty(len(para_mean_lps))
    for j, (para, pert) in enumerate(zip(para_mean_lps, perturbed_mean_lps)):
        pert = np.asarray(pert, dtype=np.float64)
        if pert.size == 0:
            raise ValueError(f"truth_ratios: question {j} has no perturbed answers")
        if mean == "geometric":
            out[j] = np.exp(pert.mean() - para)
        else:
            out[j] = np.exp(pert - para).mean()
    return out


def truth_ratio_score(ratios: Sequence[float], aggregate: str, mean: str = "geometric",
                      index: Sequence[int] | None = None) -> MetricResult:
    """Aggregate per-question truth ratios R into TOFU's reported number.

    * `aggregate="forget"`: mean(min(R, 1/R)) — open-unlearning `closer_to_1_better`; TOFU code on forget sets.
    * `aggregate="retain"` (retain, real authors, world facts): mean(max(0, 1 − R)) — `true_better`; TOFU code.
    `mean` only names the variant that produced `ratios` (see `truth_ratios`). The per-item values are the
    raw ratios R themselves (open-unlearning's `value_by_index` scores), keyed by `index` when given, so that
    forget quality and either aggregate can be recomputed from the saved results.
    """
    r = np.asarray(ratios, dtype=np.float64)
    if aggregate == "forget":
        vals = np.minimum(r, 1.0 / r)
        name = f"truth_ratio_forget[{mean}]: mean(min(R,1/R)), per item R"
    elif aggregate == "retain":
        vals = np.maximum(0.0, 1.0 - r)
        name = f"truth_ratio_retain[{mean}]: mean(max(0,1-R)), per item R"
    else:
        raise ValueError(f"aggregate={aggregate!r}: expected 'forget' or 'retain'")
    return MetricResult(float(vals.mean()), name, len(vals), r.tolist(), extra={"mean_raw_ratio": float(r.mean())},
                        index=None if index is None else list(index))


def forget_quality(unlearned_ratios: Sequence[float], oracle_ratios: Sequence[float]) -> MetricResult:
    """Forget quality = p-value of the two-sample KS test (`scipy.stats.ks_2samp`, two-sided, default `method`)
    between the per-question forget-set truth ratios of the unlearned model and of the retain oracle.

    Maini et al. 2024 §2.5.2; TOFU `get_forget_quality`. The KS statistic depends only on ranks, so using R or
    1/R gives the same p-value; the geometric/arithmetic choice does matter and must match the oracle's.
    High (> 0.05) = indistinguishable from the oracle.
    """
    u = np.asarray(unlearned_ratios, dtype=np.float64)
    o = np.asarray(oracle_ratios, dtype=np.float64)
    res = ks_2samp(u, o)
    return MetricResult(float(res.pvalue), "forget_quality: ks_2samp(R_unlearned, R_oracle).pvalue", len(u),
                        extra={"ks_statistic": float(res.statistic), "n_oracle": int(len(o))})


def model_utility(values: Mapping[str, float]) -> MetricResult:
    """Model utility = harmonic mean (`scipy.stats.hmean`) of the nine numbers
    {probability, ROUGE-L recall, truth-ratio score} × {retain, real authors, world facts}.

    Maini et al. 2024 §2.5.2; TOFU `get_model_utility`. Any zero makes it zero.
    Keys: `MODEL_UTILITY_PARTS` (e.g. `retain/probability`); missing keys are an error, never skipped.
    """
    missing = [k for k in MODEL_UTILITY_PARTS if k not in values]
    if missing:
        raise ValueError(f"model_utility needs all nine TOFU numbers; missing {missing}")
    vals = np.asarray([values[k] for k in MODEL_UTILITY_PARTS], dtype=np.float64)
    if (vals < 0).any():
        raise ValueError(f"model_utility: negative input {dict(zip(MODEL_UTILITY_PARTS, vals))}")
    return MetricResult(float(hmean(vals)), "model_utility: hmean of 9 (prob, rouge_l_recall, truth_ratio) x "
                        "(retain, real_authors, world_facts)", len(vals), vals.tolist())
