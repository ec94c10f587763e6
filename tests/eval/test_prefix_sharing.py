"""Scoring with each prompt run once gives the plain forward's numbers, and shares only identical prefixes."""
import numpy as np
import pytest

from unlearnkit.eval import prefix_sharing
from unlearnkit.eval.scoring import score_records


@pytest.fixture()
def records(people):
    recs = people.records(kinds=("target", "unrelated", "world"), people=[0, 1, 2])
    return recs[:4] + recs[-3:]  # prompts of different lengths in one batch: left-padded prefixes


def test_shared_prompts_score_like_the_plain_forward(tiny_model, tiny_tokenizer, records, plain_format, monkeypatch):
    calls = []
    real = prefix_sharing.shared_prefix_forward

    def counted(*a, **k):
        out = real(*a, **k)
        calls.append(out is not None)
        return out
    monkeypatch.setattr(prefix_sharing, "shared_prefix_forward", counted)
    shared = score_records(tiny_model, tiny_tokenizer, records, plain_format, batch_size=32, token_stats=True)
    assert calls and all(calls), "every batch must have gone through the shared-prefix forward"
    plain = score_records(tiny_model, tiny_tokenizer, records, plain_format, batch_size=32, token_stats=True,
                          share_prompts=False)
    n = 0
    for a, b in zip(shared, plain):
        for x, y in [(a.answer, b.answer), (a.paraphrased, b.paraphrased)] + list(zip(a.perturbed, b.perturbed)):
            n += 1
            assert x.n_tokens == y.n_tokens and (x.labels == y.labels).all()
            np.testing.assert_allclose(x.logprobs, y.logprobs, rtol=0, atol=1e-5)
            np.testing.assert_allclose(x.mu, y.mu, atol=1e-5)
            # σ² = E[lp²] − μ² cancels in fp32 (μ² ≈ 50 against σ² ≈ 0.03 here): rounding-level moves of the logits
            # move σ by up to ~μ²·1e-7 / σ
            np.testing.assert_allclose(x.sigma, y.sigma, atol=2e-4)
            assert (x.hits == y.hits).all()
            assert x.ends_with_eos == y.ends_with_eos
    assert n >= 7 * 6


def _feat(prompt, answer):
    return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}


def test_only_identical_prefixes_are_shared():
    a, b = _feat([5, 6, 7], [8, 9]), _feat([5, 6, 7], [10])
    c = _feat([5, 3, 7], [8])  # differs before its last prompt token
    d = _feat([5, 6, 11], [12])  # differs only in its last prompt token: that token runs with the answer
    prefixes, row_of, cuts = prefix_sharing.shared_rows([a, b, c, d])
    assert cuts == [2, 2, 2, 2]
    assert prefixes == [(5, 6), (5, 3)] and row_of == [0, 0, 1, 0]
    assert prefix_sharing.shared_rows([a, _feat([1, 2, 3], [4])]) is None  # nothing in common
    assert prefix_sharing.shared_rows([a, _feat([1], [4])]) is None  # a one-token prompt has no prefix to share
