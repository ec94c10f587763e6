"""Pinned numbers: every TOFU metric of a fixed tiny model on a small TOFU slice, in both masking modes.

The model and tokenizer are built deterministically (the session tokenizer of conftest, a seeded 2-layer Llama,
a few fixed AdamW steps on the forget answers so memorisation metrics are not all zero); its retain "oracle" is
the same architecture untrained. A change that moves any metric by more than 1e-6 fails here: if the move is
intended, update PINNED in the same commit and say why in the comment above it.
"""
import json

import pytest

from unlearnkit.data import PromptFormat
from unlearnkit.data.collate import encode_qa, pad_batch
from unlearnkit.eval import run_tofu
from unlearnkit.eval.tofu import load_tofu_sets

TOL = 1e-6
SLICE = dict(limit=3, max_new_tokens=6, batch_size=8)

# Stored values. History (newest first; say why whenever a value moves):
# - first pinned with issue 15: token-level metrics without EOS (exact) / without the last label (open-unlearning),
#   open-unlearning's k* range and min-k++ σ floor under its masking.
PINNED = {
    "exact": {
        "forget/probability": 0.006481866665841511,
        "forget/rouge_l_recall": 0.09544513457556936,
        "forget/truth_ratio": 0.8180467186267104,
        "forget/exact_memorization": 0.7609564451669715,
        "forget/extraction_strength": 0.023809523809523798,
        "forget_quality": 0.09999999999999999,
        "retain/probability": 0.0015246507004631465,
        "retain/rouge_l_recall": 0.0,
        "retain/truth_ratio": 0.009324576322444397,
        "real_authors/probability": 0.23976760140231365,
        "real_authors/rouge_l_recall": 0.0,
        "real_authors/truth_ratio": 0.014384153539483524,
        "world_facts/probability": 0.20851731929048598,
        "world_facts/rouge_l_recall": 0.0,
        "world_facts/truth_ratio": 0.0,
        "model_utility": 0.0,
        "mia/loss": 1.0,
        "mia/zlib": 0.3333333333333333,
        "mia/min_k": 1.0,
        "mia/min_k_plus_plus": 1.0,
        "privleak": -100.0,
    },
    "open-unlearning": {
        "forget/probability": 0.00650386152579379,
        "forget/rouge_l_recall": 0.09544513457556936,
        "forget/truth_ratio": 0.8192519254266294,
        "forget/exact_memorization": 0.7688888888888888,
        "forget/extraction_strength": 0.038395061728395054,
        "forget_quality": 0.09999999999999999,
        "retain/probability": 0.001476366772906791,
        "retain/rouge_l_recall": 0.0,
        "retain/truth_ratio": 0.008308759790515966,
        "real_authors/probability": 0.24146146093000156,
        "real_authors/rouge_l_recall": 0.0,
        "real_authors/truth_ratio": 0.028354918513903333,
        "world_facts/probability": 0.2142758652125815,
        "world_facts/rouge_l_recall": 0.0,
        "world_facts/truth_ratio": 0.03341296418153683,
        "model_utility": 0.0,
        "mia/loss": 1.0,
        "mia/zlib": 0.3333333333333333,
        "mia/min_k": 1.0,
        "mia/min_k_plus_plus": 1.0,
        "privleak": -100.0,
    },
}


@pytest.fixture(scope="module")
def tofu_slice(tofu_dir):
    return load_tofu_sets("forget01", source=tofu_dir, limit=SLICE["limit"])


def _model(tokenizer, seed):
    from unlearnkit.models import tiny_llama

    return tiny_llama(len(tokenizer), hidden=64, layers=2, heads=4, intermediate=128, seed=seed,
                      attn_implementation="eager", pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id).eval()


def _evaluate(tokenizer, records, masking, memorise):
    fmt = PromptFormat(template="plain", max_length=256, masking=masking)
    oracle = run_tofu(_model(tokenizer, 1), tokenizer, fmt=fmt, records=records, sets=("forget",),
                      forget_quality=False, **SLICE)
    model = _model(tokenizer, 0)
    feats = [{"input_ids": e.input_ids, "labels": e.labels}
             for e in (encode_qa(tokenizer, r.question, r.answer, fmt) for r in records["forget"])]
    model.load_state_dict(memorise(model, [pad_batch(feats, tokenizer.pad_token_id)], 6, 3e-3))
    res = run_tofu(model, tokenizer, oracle_stats=oracle.oracle_stats(), fmt=fmt, records=records, **SLICE)
    return {name: m.value for name, m in res.metrics.items()}


@pytest.mark.parametrize("masking", ["exact", "open-unlearning"])
def test_tofu_metrics_are_pinned(tiny_tokenizer, tofu_slice, memorise, masking):
    got = _evaluate(tiny_tokenizer, tofu_slice, masking, memorise)
    want = PINNED.get(masking)
    assert want is not None, f"no pinned values for {masking!r}; measured:\n{json.dumps(got, indent=1)}"
    assert set(got) == set(want), f"metrics added/removed: {sorted(set(got) ^ set(want))}"
    moved = {k: (want[k], got[k]) for k in want if abs(got[k] - want[k]) > TOL}
    assert not moved, (f"{len(moved)} metric(s) moved by more than {TOL} (pinned, measured): {moved}. If intended, "
                       f"update PINNED in this commit and say why. All measured:\n{json.dumps(got, indent=1)}")
