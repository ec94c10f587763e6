"""Token-level metrics (exact memorisation, extraction strength, min-k%, min-k%++) see the answer text:
without the appended EOS by default, without the last label under open-unlearning masking (as it computes them).

The reference below recomputes each metric one sequence at a time, straight from the definitions and without
unlearnkit's batched scorer, so a wrong token set or k* range shows up as a different per-row value."""
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from unlearnkit.data import PromptFormat
from unlearnkit.data.collate import IGNORE, encode_qa, pad_batch
from unlearnkit.eval import run_tofu
from unlearnkit.eval.mia import min_k_plus_plus_scores
from unlearnkit.eval.scoring import TokenScores, score_records

K = 0.4


@pytest.fixture()
def sets(people):
    recs = [r for r in people.records(kinds=("target",)) if r.perturbed_answers]
    return {"forget": recs[:6], "holdout": recs[6:12]}


@pytest.fixture()
def partly_memorised(tiny_model, tiny_tokenizer, sets, memorise):
    """The tiny model after a few steps on the forget answers: some tokens right, some wrong (non-trivial EM/ES)."""
    fmt = PromptFormat(template="plain", max_length=128)
    feats = [{"input_ids": e.input_ids, "labels": e.labels}
             for e in (encode_qa(tiny_tokenizer, r.question, r.answer, fmt) for r in sets["forget"])]
    tiny_model.load_state_dict(memorise(tiny_model, [pad_batch(feats, tiny_tokenizer.pad_token_id)], 8, 3e-3))
    return tiny_model


def _reference(model, tokenizer, records, fmt, ou: bool):
    """Per record: (EM, ES, min-k score, min-k++ score) over the labelled tokens but the last (the EOS here: no
    record is truncated); open-unlearning's k* stops at n − 1 and its σ² is clamped at 1e-6."""
    rows = []
    for rec in records:
        enc = encode_qa(tokenizer, rec.question, rec.answer, fmt)
        with torch.no_grad():
            logits = model(torch.tensor([enc.input_ids])).logits[0, :-1].float()
        target = torch.tensor(enc.labels[1:])
        pos = (target != IGNORE).nonzero().flatten()
        pos = pos[:-1]
        logp = torch.log_softmax(logits[pos], -1)
        lab = target[pos]
        tok = logp.gather(1, lab[:, None])[:, 0].double().numpy()
        hits = (logp.argmax(-1) == lab).numpy()
        n = len(hits)
        k_star = next((k for k in range(n if ou else n + 1) if hits[k:].all()), n - 1)
        mu = (logp.exp() * logp).sum(-1)
        var = (logp.exp() * logp.square()).sum(-1) - mu.square()
        sd = var.clamp(min=1e-6 if ou else 0).sqrt().double().numpy()
        z = np.sort((tok - mu.double().numpy()) / np.maximum(sd, 1e-12))
        m = max(1, int(n * K))
        rows.append((hits.mean(), 1 - k_star / n, np.sort(tok)[:m].mean(), z[:m].mean()))
    return np.array(rows)


@pytest.mark.parametrize("masking", ["open-unlearning", "exact"])
def test_token_level_metrics_match_the_definition_row_by_row(partly_memorised, tiny_tokenizer, sets, masking):
    fmt = PromptFormat(template="plain", max_length=128, masking=masking)
    res = run_tofu(partly_memorised, tiny_tokenizer, fmt=fmt, records=sets, sets=("forget",), forget_quality=False,
                   max_new_tokens=2, mia_k=K)
    ou = masking == "open-unlearning"
    ref_f = _reference(partly_memorised, tiny_tokenizer, sets["forget"], fmt, ou)
    ref_h = _reference(partly_memorised, tiny_tokenizer, sets["holdout"], fmt, ou)
    m = res.metrics
    assert 0 < m["forget/exact_memorization"].value < 1  # the fixture is informative
    np.testing.assert_allclose(m["forget/exact_memorization"].per_item, ref_f[:, 0], atol=1e-12)
    np.testing.assert_allclose(m["forget/extraction_strength"].per_item, ref_f[:, 1], atol=1e-12)
    np.testing.assert_allclose(m["mia/min_k"].per_item, ref_f[:, 2], atol=1e-5)
    np.testing.assert_allclose(m["mia/min_k_plus_plus"].per_item, ref_f[:, 3], atol=1e-4)
    labels = np.r_[np.ones(len(ref_f)), np.zeros(len(ref_h))]
    assert m["mia/min_k"].value == pytest.approx(roc_auc_score(labels, np.r_[ref_f[:, 2], ref_h[:, 2]]))
    assert res.settings["extraction_variant"] == ("open-unlearning" if ou else "paper")


def test_exact_masking_drops_only_the_appended_eos(tiny_model, tiny_tokenizer, sets):
    rec = sets["forget"][0]
    full = PromptFormat(template="plain", max_length=128)
    (s,) = score_records(tiny_model, tiny_tokenizer, [rec], full, fields=("answer",))
    assert s.answer.ends_with_eos and s.answer.labels[-1] == tiny_tokenizer.eos_token_id
    assert s.answer.text_tokens("exact").n_tokens == s.answer.n_tokens - 1
    assert s.answer.text_tokens("open-unlearning").n_tokens == s.answer.n_tokens - 1
    # truncated inside the answer: no EOS, so the exact mode keeps every token; open-unlearning still drops one
    n_prompt = encode_qa(tiny_tokenizer, rec.question, rec.answer, full).prompt_len
    cut = PromptFormat(template="plain", max_length=n_prompt + 2)
    (t,) = score_records(tiny_model, tiny_tokenizer, [rec], cut, fields=("answer",))
    assert not t.answer.ends_with_eos
    assert t.answer.text_tokens("exact").n_tokens == t.answer.n_tokens == 2
    assert t.answer.text_tokens("open-unlearning").n_tokens == 1


def test_empty_token_set_scores_like_open_unlearning():
    from unlearnkit.eval.memorization import exact_memorization, extraction_strength
    from unlearnkit.eval.mia import min_k_scores

    one = TokenScores(np.array([-1.0]), np.array([True]), labels=np.array([5]))
    empty = one.text_tokens("open-unlearning")
    assert empty.n_tokens == 0
    em = exact_memorization([empty.hits, np.array([True, False])])
    assert em.value == 0.5 and em.n == 1 and np.isnan(em.per_item[0])  # skipped, as its None score
    assert extraction_strength([empty.hits], "open-unlearning").per_item == [0.0]
    assert min_k_scores([empty.logprobs]).tolist() == [0.0]


def test_min_k_plus_plus_sigma_floor():
    # a near one-hot next-token distribution: σ = 1e-5; open-unlearning clamps σ² at 1e-6 (σ ≥ 1e-3)
    lp, mu, sd = [np.array([-0.1])], [np.array([-0.2])], [np.array([1e-5])]
    assert min_k_plus_plus_scores(lp, mu, sd)[0] == pytest.approx(0.1 / 1e-5)
    assert min_k_plus_plus_scores(lp, mu, sd, sigma_floor=1e-3)[0] == pytest.approx(0.1 / 1e-3)
