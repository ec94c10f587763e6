"""TOFU metrics against numbers computed by hand."""
import math

import numpy as np
import pytest

from unlearnkit.eval import tofu_metrics as tm

L = math.log


def test_probability_is_exp_mean_logprob():
    r = tm.probability([L(0.5), L(0.25)])
    assert r.value == pytest.approx(0.375) and r.n == 2 and r.per_item == pytest.approx([0.5, 0.25])


def test_normalized_probability():
    # q1: 0.5 / (0.5 + 0.25 + 0.25) = 0.5 ; q2: 0.6 / (0.6 + 0.2) = 0.75
    r = tm.normalized_probability([L(0.5), L(0.6)], [[L(0.25), L(0.25)], [L(0.2)]])
    assert r.per_item == pytest.approx([0.5, 0.75]) and r.value == pytest.approx(0.625)


PARA = [L(0.5), L(0.2)]
PERT = [[L(0.1), L(0.4)], [L(0.4), L(0.4)]]


def test_truth_ratio_geometric_vs_arithmetic():
    # q1 geometric: sqrt(0.1*0.4)/0.5 = 0.2/0.5 = 0.4 ; arithmetic: ((0.1+0.4)/2)/0.5 = 0.5
    # q2 (equal perturbed probabilities): both 0.4/0.2 = 2
    assert tm.truth_ratios(PARA, PERT, "geometric") == pytest.approx([0.4, 2.0])
    assert tm.truth_ratios(PARA, PERT, "arithmetic") == pytest.approx([0.5, 2.0])


@pytest.mark.parametrize("mean,forget,retain", [("geometric", (0.4 + 0.5) / 2, (0.6 + 0.0) / 2),
                                                ("arithmetic", (0.5 + 0.5) / 2, (0.5 + 0.0) / 2)])
def test_truth_ratio_aggregates(mean, forget, retain):
    r = tm.truth_ratios(PARA, PERT, mean)
    # forget: mean(min(R, 1/R)); retain: mean(max(0, 1-R))
    assert tm.truth_ratio_score(r, "forget", mean).value == pytest.approx(forget)
    assert tm.truth_ratio_score(r, "retain", mean).value == pytest.approx(retain)
    assert mean in tm.truth_ratio_score(r, "forget", mean).definition


def test_truth_ratio_rejects_bad_args():
    with pytest.raises(ValueError, match="mean="):
        tm.truth_ratios(PARA, PERT, "harmonic")
    with pytest.raises(ValueError, match="aggregate="):
        tm.truth_ratio_score([1.0], "both")
    with pytest.raises(ValueError, match="no perturbed"):
        tm.truth_ratios([0.0], [[]])


def test_forget_quality_ks_pvalue():
    # fully separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6,3) = 0.1
    r = tm.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert r.value == pytest.approx(0.1) and r.extra["ks_statistic"] == 1.0
    assert tm.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).value == pytest.approx(1.0)
    # invariant under R -> 1/R applied to both samples
    a, b = np.array([0.3, 0.9, 1.7, 2.2]), np.array([0.5, 0.6, 3.0])
    assert tm.forget_quality(a, b).value == pytest.approx(tm.forget_quality(1 / a, 1 / b).value)


def test_model_utility_harmonic_mean():
    vals = dict(zip(tm.MODEL_UTILITY_PARTS, [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]))
    # 9 / (3*1 + 3*2 + 3*4) = 9/21
    assert tm.model_utility(vals).value == pytest.approx(9 / 21)
    vals[tm.MODEL_UTILITY_PARTS[0]] = 0.0
    assert tm.model_utility(vals).value == 0.0
    with pytest.raises(ValueError, match="missing"):
        tm.model_utility({"retain/probability": 1.0})


def test_rouge_l_recall_with_stemming():
    # stemmed: ref = the cat sat on mat (5 tokens), gen = the cat sat -> LCS 3 -> recall 3/5
    r = tm.rouge_l_recall(["The cats sat"], ["the cat sat on mats"])
    assert r.value == pytest.approx(0.6)
    assert tm.rouge_l_recall(["xyz"], ["abc def"]).value == 0.0


def test_rouge_with_memoised_stems_equals_rouge_score_default():
    from rouge_score import rouge_scorer

    from unlearnkit.eval import tofu_metrics

    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = [("The author's novels were celebrated internationally", "Her novels are celebrated, internationally!"),
             ("running runners ran quickly", "the runner runs quick"), ("", "something"), ("Ünïcode wörds 2024", "wörds")]
    gens, refs = zip(*pairs)
    want = [plain.score(r, g)["rougeL"].recall for g, r in pairs]
    assert tofu_metrics.rouge_l_recall(list(gens), list(refs)).per_item == want
    assert tofu_metrics._scorer()._tokenizer.stem.cache_info().hits > 0  # "novels", "celebrated", … stemmed once
