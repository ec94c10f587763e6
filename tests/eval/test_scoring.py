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


def _full_vocab_scores(model, feats, pad_id):
    """The pre-gathering computation: full-sequence logits, full B×T×V cross-entropy, (N, V) log-softmax."""
    batch = pad_batch(feats, pad_id, "right")
    slp, out = sequence_logprobs(model, batch, return_outputs=True)
    sel = out.logits[:, :-1][slp.mask].float()
    logp = torch.log_softmax(sel, -1)
    m = (logp.exp() * logp).sum(-1)
    var = (logp.exp() * logp.square()).sum(-1) - m.square()
    return slp.token_logprobs[slp.mask], sel.argmax(-1), m, var.clamp(min=0).sqrt(), slp.mask.sum(-1).tolist()


@torch.no_grad()
def test_gathered_scores_equal_the_full_vocabulary_computation(tiny_model, tiny_tokenizer, records, plain_format,
                                                               monkeypatch):
    """Same values bit for bit (each operation is per row), with chunks of 7 rows, and the LM head applied only
    from the first answer position on."""
    import unlearnkit.eval.scoring as scoring

    feats = [scoring.encode_feature(tiny_tokenizer, r.question, r.answer, plain_format) for r in records]
    lps, argmax, mu, sigma, counts = _full_vocab_scores(tiny_model, feats, tiny_tokenizer.pad_token_id)
    head_rows = []
    hook = tiny_model.lm_head.register_forward_hook(lambda m, i, o: head_rows.append(i[0].shape[1]))
    monkeypatch.setattr(scoring, "CHUNK_ELEMENTS", 7 * tiny_model.config.vocab_size)
    try:
        got = score_features(tiny_model, feats, tiny_tokenizer.pad_token_id, batch_size=64, token_stats=True)
    finally:
        hook.remove()
    cat = {k: np.concatenate([getattr(s, k) for s in got]) for k in ("logprobs", "hits", "mu", "sigma", "labels")}
    assert [s.n_tokens for s in got] == counts
    assert np.array_equal(cat["logprobs"], lps.double().numpy())
    assert np.array_equal(cat["mu"], mu.double().numpy()) and np.array_equal(cat["sigma"], sigma.double().numpy())
    assert np.array_equal(cat["hits"], (argmax.numpy() == cat["labels"]))
    first_answer = min(f["labels"].index(next(l for l in f["labels"] if l != -100)) for f in feats)
    width = max(len(f["input_ids"]) for f in feats)
    assert head_rows == [width - first_answer + 1]  # positions first_answer-1 … width-1
