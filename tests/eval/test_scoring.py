"""Batched scoring and generation agree with one-at-a-time runs; per-token vocab statistics are right."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearnkit.data import encode_qa, pad_batch
from unlearnkit.eval.generation import generate_answers
from unlearnkit.eval.scoring import _pack, score_features, score_records
from unlearnkit.logprobs import sequence_logprobs


@pytest.fixture()
def records(people):
    recs = people.records(kinds=("target", "unrelated", "world"), people=[0, 1])
    return recs[:3] + recs[-2:]  # mixed lengths, world facts have no tags["person"]


def test_batched_matches_unbatched(tiny_model, tiny_tokenizer, records, plain_format):
    a = score_records(tiny_model, tiny_tokenizer, records, plain_format, batch_size=64, token_stats=True)
    b = score_records(tiny_model, tiny_tokenizer, records, plain_format, batch_size=1, token_stats=True)
    n_seq = 0
    for ra, rb in zip(a, b):
        pairs = [(ra.answer, rb.answer), (ra.paraphrased, rb.paraphrased)] + list(zip(ra.perturbed, rb.perturbed))
        assert len(ra.perturbed) == len(records[0].perturbed_answers)
        for x, y in pairs:
            n_seq += 1
            np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)
            np.testing.assert_allclose(x.mu, y.mu, atol=1e-5)
            np.testing.assert_allclose(x.sigma, y.sigma, atol=1e-5)
            assert (x.hits == y.hits).all()
    assert n_seq > 20


def test_matches_direct_sequence_logprobs(tiny_model, tiny_tokenizer, records, plain_format):
    rec = records[0]
    enc = encode_qa(tiny_tokenizer, rec.question, rec.answer, plain_format)
    batch = pad_batch([{"input_ids": enc.input_ids, "labels": enc.labels}], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        direct = sequence_logprobs(tiny_model, batch).mean.item()
    got = score_records(tiny_model, tiny_tokenizer, records, plain_format, batch_size=8)[0].answer
    assert got.mean_lp == pytest.approx(direct, abs=1e-5)
    assert got.n_tokens == int(sum(l != -100 for l in enc.labels[1:]))


def test_pack_keeps_question_groups_together():
    groups = [[0, 1, 2], [3], [4, 5, 6, 7, 8, 9], [10, 11]]
    batches = _pack(groups, lengths=[5] * 12, batch_size=4)
    for g in groups:
        assert sum(all(i in b for i in g) for b in batches) == 1
    assert sorted(i for b in batches for i in b) == list(range(12))


class _FixedLogits(torch.nn.Module):
    """Next-token log-probs always log[1/2, 1/4, 1/8, 1/8] (vocab 4)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.training = False

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
        row = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
        return SimpleNamespace(logits=row.expand(*input_ids.shape, 4).clone())


def test_token_stats_by_hand():
    # log p = -a ln2 with a in {1,2,3,3} w.p. {1/2,1/4,1/8,1/8}: mu = -1.75 ln2 ; E[a^2] = 3.75 -> sigma = sqrt(0.6875) ln2
    feats = [{"input_ids": [0, 1, 2, 0], "labels": [-100, 1, 2, 0]}]
    (s,) = score_features(_FixedLogits(), feats, pad_id=3, token_stats=True)
    ln2 = math.log(2)
    np.testing.assert_allclose(s.logprobs, [-2 * ln2, -3 * ln2, -ln2], atol=1e-6)
    np.testing.assert_allclose(s.mu, [-1.75 * ln2] * 3, atol=1e-6)
    np.testing.assert_allclose(s.sigma, [math.sqrt(0.6875) * ln2] * 3, atol=1e-6)
    assert s.hits.tolist() == [False, False, True]  # argmax is always token 0


def test_generation_batched_matches_single(tiny_model, tiny_tokenizer, records, plain_format):
    qs = [r.question for r in records]
    batched = generate_answers(tiny_model, tiny_tokenizer, qs, plain_format, max_new_tokens=6, batch_size=8)
    single = [generate_answers(tiny_model, tiny_tokenizer, [q], plain_format, max_new_tokens=6)[0] for q in qs[:3]]
    assert batched[:3] == single
    assert len(batched) == len(qs)
