"""The MUSE suite on the tiny model and small sets in the MUSE schema: json shape, oracle PrivLeak, variants."""
from __future__ import annotations

import json

import pytest

from unlearnkit.data import PromptFormat, QARecord
from unlearnkit.data.documents import document_records
from unlearnkit.eval import evaluate_run
from unlearnkit.eval.metric_registry import METRICS
from unlearnkit.eval.muse import ORACLE_STATS_FILE, MuseOracleStats, run_muse

KEYS = {"verbmem_forget/rouge_l_f1", "knowmem_forget/rouge_l_f1", "knowmem_retain/rouge_l_f1",
        "forget/extraction_strength", "forget/exact_memorization", "mia/loss", "mia/zlib", "mia/min_k",
        "mia/min_k_plus_plus", "privleak"}
FAST = dict(verbmem_new_tokens=6, knowmem_new_tokens=4, batch_size=4)


@pytest.fixture(scope="module")
def sets(people):
    recs = people.records(kinds=("target", "related"))
    qa = [QARecord(question=r.question, answer=r.answer) for r in recs]
    texts = [f"{r.question} {r.answer}" for r in recs]
    return {"verbmem": [QARecord(question=r.question, answer=r.answer) for r in recs[:3]],
            "knowmem_forget": qa[3:6], "knowmem_retain": qa[6:9], "icl_forget": qa[9:11], "icl_retain": qa[11:13],
            "privleak_forget": document_records(texts[13:17], "f"),
            "privleak_holdout": document_records(texts[17:21], "h")}


def test_suite_writes_muse_json_and_oracle_privleak(tmp_path, tiny_model, tiny_tokenizer, sets):
    oracle_dir, run_dir = tmp_path / "oracle", tmp_path / "run"
    oracle_dir.mkdir(), run_dir.mkdir()
    evaluate_run(oracle_dir, "muse", model=tiny_model, tokenizer=tiny_tokenizer, save_oracle_stats=True,
                 records=sets, **FAST)
    stats = MuseOracleStats.load(oracle_dir)
    assert (oracle_dir / "eval" / ORACLE_STATS_FILE).is_file() and stats.mia_k == 0.4 and stats.variant == "exact"

    metrics = evaluate_run(run_dir, "muse", model=tiny_model, tokenizer=tiny_tokenizer, oracle_stats=oracle_dir,
                           records=sets, **FAST)
    written = json.loads((run_dir / "eval" / "muse.json").read_text())
    assert written["suite"] == "muse" and written["metrics"] == metrics and set(metrics) == KEYS
    assert {m.key for _, m in METRICS.items() if m.suite == "muse"} <= set(metrics)   # registry ⊆ what it writes
    assert written["settings"]["sizes"]["verbmem"] == 3 and written["settings"]["template"] == "plain"
    for name, m in metrics.items():
        assert m["definition"] and set(m) >= {"value", "definition", "n"}, name
        assert name == "privleak" or "per_item" in m, name  # per-sample values by index; PrivLeak is set-level
    assert len(metrics["verbmem_forget/rouge_l_f1"]["per_item"]) == 3
    assert len(metrics["knowmem_retain/rouge_l_f1"]["per_item"]) == 3
    assert len(metrics["mia/min_k"]["per_item"]) == 4 and metrics["mia/min_k"]["n_members"] == 4  # members
    assert len(metrics["mia/min_k"]["holdout_value_by_index"]) == 4                           # non-members
    # the same model as its own oracle: PrivLeak exactly 0, and the definition says what the reference was
    assert metrics["privleak"]["value"] == pytest.approx(0.0) and "oracle" in metrics["privleak"]["definition"]
    assert metrics["privleak"]["auc_oracle"] == pytest.approx(stats.mia_min_k_auc)


def test_oracle_stats_must_match_variant(tiny_model, tiny_tokenizer, sets):
    stats = MuseOracleStats("news", 0.4, 0.7, "open-unlearning")
    with pytest.raises(ValueError, match="same on both sides"):
        run_muse(tiny_model, tiny_tokenizer, sets, oracle_stats=stats, **FAST)
    with pytest.raises(FileNotFoundError, match="save_oracle_stats=true"):
        MuseOracleStats.load("/nonexistent/run")


def test_open_unlearning_variant_references_and_dropped_label(tiny_model, tiny_tokenizer, sets):
    tok = tiny_tokenizer
    exact = run_muse(tiny_model, tok, sets, **FAST)
    ou = run_muse(tiny_model, tok, sets, fmt=PromptFormat(template="plain", masking="open-unlearning"), **FAST)
    assert exact.references["verbmem"] == [r.answer for r in sets["verbmem"]]
    # open-unlearning's VerbMem reference: decoded label tokens of tok(prompt + " " + gt) after the prompt's tokens
    r = sets["verbmem"][0]
    n = len(tok(r.question)["input_ids"])
    want = tok.clean_up_tokenization(tok.decode(tok(r.question + " " + r.answer)["input_ids"][n:],
                                                skip_special_tokens=True)).strip()
    assert ou.references["verbmem"][0] == want
    # its KnowMem reference: decode(prompt + answer) with decode(prompt) cut out, i.e. the answer again
    q = sets["knowmem_forget"][0]
    from unlearnkit.eval.muse_metrics import knowmem_prompt

    prompt = knowmem_prompt([(x.question, x.answer) for x in sets["icl_forget"]], q.question)
    p_ids, f_ids = tok(prompt)["input_ids"], tok(prompt + q.answer)["input_ids"]
    assert f_ids[:len(p_ids)] != p_ids  # the joint tokenisation merges the prompt's trailing space ...
    assert ou.references["knowmem_forget"][0] == q.answer  # ... yet the reference is the whole answer
    # token metrics drop the last label token: exact memorisation per item over n−1 hits
    assert ou.metrics["forget/extraction_strength"].definition.startswith("extraction_strength[open-unlearning]")
    assert exact.metrics["forget/extraction_strength"].definition.startswith("extraction_strength[paper]")


def test_completion_features_by_hand(tiny_tokenizer):
    from unlearnkit.data.collate import IGNORE
    from unlearnkit.eval.muse import _completion_feature, _drop_last
    from unlearnkit.eval.scoring import TokenScores

    tok = tiny_tokenizer
    p = tok("Alice was", add_special_tokens=True)["input_ids"]
    c = tok(" born in Paris", add_special_tokens=False)["input_ids"]
    f = _completion_feature(tok, "Alice was", "born in Paris", ou=False)
    assert f["input_ids"] == p + c and f["labels"] == [IGNORE] * len(p) + c
    joint = tok("Alice was born in Paris")["input_ids"]
    g = _completion_feature(tok, "Alice was", "born in Paris", ou=True)
    assert g["input_ids"] == joint and g["labels"] == [IGNORE] * len(p) + joint[len(p):]
    # a text without prefix (PrivLeak): the first token is context only, every other token a label
    t = tok("Alice was born", add_special_tokens=True)["input_ids"]
    assert _completion_feature(tok, "", "Alice was born", ou=False)["labels"] == [IGNORE] + t[1:]
    # open-unlearning's token metrics drop the last label token
    import numpy as np

    s = _drop_last(TokenScores(np.array([-1.0, -2.0, -3.0]), np.array([True, False, True])))
    assert s.logprobs.tolist() == [-1.0, -2.0] and s.hits.tolist() == [True, False]
