"""Related-knowledge experiment: gradient cosines vs brute force, the CI helper on hand numbers, a quick end-to-end run."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.data.collate import encode_qa
from unlearnkit.uipe.gradient_similarity import (gradient_cosines, mean_ci, relation_pairs, RELATIONS,
                                                 similarity_table)


def _manual_flat_grad(model, tok, rec, fmt, select=lambda name: True):
    """∇ log p(answer|question) by hand: plain forward, log_softmax, sum over the answer tokens, .backward()."""
    e = encode_qa(tok, rec.question, rec.answer, fmt)
    ids = torch.tensor([e.input_ids])
    model.zero_grad()
    logits = model(input_ids=ids).logits[0, :-1]
    labels = torch.tensor(e.labels[1:])
    keep = labels != -100
    logp = torch.log_softmax(logits.float(), -1)[keep].gather(1, labels[keep][:, None]).sum()
    logp.backward()
    g = torch.cat([p.grad.reshape(-1) for n, p in model.named_parameters() if select(n)])
    model.zero_grad()
    return g


def test_gradient_cosines_match_brute_force(tiny_model, tiny_tokenizer, people, plain_format):
    recs = people.records(kinds=("target", "related", "unrelated"), people=[0, 1])
    pairs = [(recs[0], recs[1]), (recs[0], recs[5]), (recs[3], recs[10]), (recs[1], recs[0])]
    got = gradient_cosines(tiny_model, tiny_tokenizer, pairs, plain_format,
                           groups={"all": None, "blocks": r"\.layers\."}, cache_size=2)
    for i, (a, b) in enumerate(pairs):
        ga, gb = (_manual_flat_grad(tiny_model, tiny_tokenizer, r, plain_format) for r in (a, b))
        assert got["all"][i] == pytest.approx(F.cosine_similarity(ga, gb, dim=0).item(), abs=1e-5)
        sel = lambda n: ".layers." in n
        ga, gb = (_manual_flat_grad(tiny_model, tiny_tokenizer, r, plain_format, sel) for r in (a, b))
        assert got["blocks"][i] == pytest.approx(F.cosine_similarity(ga, gb, dim=0).item(), abs=1e-5)
    # symmetric, and a record with itself is 1
    assert got["all"][3] == pytest.approx(got["all"][0], abs=1e-6)
    assert gradient_cosines(tiny_model, tiny_tokenizer, [(recs[2], recs[2])], plain_format)["all"][0] == \
        pytest.approx(1.0, abs=1e-6)
    assert all(p.grad is None for p in tiny_model.parameters())  # autograd.grad leaves .grad alone


def test_gradient_cosines_errors(tiny_model, tiny_tokenizer, people, plain_format):
    recs = people.records(kinds=("target",), people=[0])
    with pytest.raises(ValueError, match="empty"):
        gradient_cosines(tiny_model, tiny_tokenizer, [], plain_format)
    with pytest.raises(ValueError, match="matches no parameter"):
        gradient_cosines(tiny_model, tiny_tokenizer, [(recs[0], recs[1])], plain_format, groups={"x": "nothing_here"})


def test_mean_ci_hand_numbers():
    # mean 3, s = sqrt(2.5), sem = s/sqrt(5) = 0.70711, t_{0.975, 4} = 2.776445 → half-width 1.963243
    ci = mean_ci([1, 2, 3, 4, 5])
    assert ci.mean == pytest.approx(3.0)
    assert ci.low == pytest.approx(3 - 1.963243, abs=1e-5) and ci.high == pytest.approx(3 + 1.963243, abs=1e-5)
    assert ci.n == 5 and ci.method == "t"
    # 90 %: t_{0.95, 4} = 2.131847
    ci90 = mean_ci([1, 2, 3, 4, 5], level=0.9)
    assert ci90.high - ci90.mean == pytest.approx(2.131847 * math.sqrt(2.5) / math.sqrt(5), abs=1e-5)
    # NaNs are dropped; constant values give a zero-width interval
    assert mean_ci([2.0, float("nan"), 2.0]).to_json() == {"mean": 2.0, "ci_low": 2.0, "ci_high": 2.0, "n": 2,
                                                           "level": 0.95, "method": "t"}
    boot = mean_ci([1, 2, 3, 4, 5, 6, 7, 8], method="bootstrap", seed=1)
    assert boot.low < 4.5 < boot.high and 1 <= boot.low and boot.high <= 8
    with pytest.raises(ValueError, match="at least 2"):
        mean_ci([1.0])
    with pytest.raises(ValueError, match="method"):
        mean_ci([1, 2], method="jackknife")
    rows = similarity_table({"a": [0.1, 0.2, 0.3], "b": [0.0, 0.0]})
    assert [r["relation"] for r in rows] == ["a", "b"] and rows[0]["mean"] == pytest.approx(0.2)


def test_relation_pairs(people):
    pairs = relation_pairs(people, [0, 1], seed=0)
    assert list(pairs) == list(RELATIONS)
    assert len(pairs["related (same person)"]) == 6 and len(pairs["unrelated (same person)"]) == 12
    for t, r in pairs["related (same person)"]:
        assert t.tags["kind"] == "target" and r.tags["kind"] == "related"
        assert t.tags["person_id"] == r.tags["person_id"] and t.tags["category"] == r.tags["category"]
    for t, r in pairs["related (other person)"] + pairs["unrelated (other person)"]:
        assert t.tags["person_id"] != r.tags["person_id"]
    for t, w in pairs["world bridge (same value)"]:
        assert w.tags["kind"] == "world" and w.tags["value"] == t.tags["value"]


def _finite(x):
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, list):
        return all(_finite(v) for v in x)
    if isinstance(x, float):
        return math.isfinite(x)
    return True


def test_quick_end_to_end(tmp_path):
    from unlearnkit.experiments.related_knowledge import RelatedKnowledgeConfig, run_related_knowledge

    out = tmp_path / "rk"
    run_related_knowledge(RelatedKnowledgeConfig(out=str(out), quick=True, threads=1), echo=lambda *_: None)
    res = json.loads((out / "results.json").read_text())
    assert {"setup", "finetune", "unlearn", "reconstruction", "gradient_similarity", "uipe", "seconds"} <= set(res)
    assert len(res["reconstruction"]["rows"]) == 5
    for row in res["reconstruction"]["rows"]:
        m = row["metrics"]
        for k in ("forget/target/probability", "forget/multihop/probability", "forget/related/probability",
                  "forget/multihop/rouge_l_recall", "forget/chain_recovery", "utility"):
            assert 0 <= m[k] <= 1, (row["model"], k, m[k])
    assert set(res["uipe"]["methods"]) == {"ga", "grad_diff", "kl", "npo"}
    for method, r in res["uipe"]["methods"].items():
        v = r["variants"]
        assert {"base", "uipe_best", "uipe_auto", "longer_best", "longer_auto"} <= set(v)
        assert v["base"]["alpha"] == 0 and r["norm_un"] > 0
        assert v["uipe_auto"]["alpha"] == r["auto_alpha"]
        for name in ("best", "auto"):
            if v[f"uipe_{name}"]["alpha"] > 0:
                assert v[f"longer_{name}"]["extra_steps"] >= 1 and "metrics" in v[f"longer_{name}"]
    for group in ("all", "blocks"):
        assert [r["relation"] for r in res["gradient_similarity"][group]["table"]] == list(RELATIONS)
    assert _finite({k: res[k] for k in ("reconstruction", "gradient_similarity", "uipe")})
    assert (out / "results.md").read_text().startswith("# Related-knowledge experiment")
    for p in res["plots"]:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # each sub-run is a normal run directory
    assert (out / "p1" / "config.yaml").is_file() and (out / "unlearn" / "P1-npo" / "unlearn.json").is_file()
    assert (out / "unlearn" / "P1-ga" / "uipe" / "tradeoff.png").is_file()


def test_cli_refuses_bad_settings():
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["experiment", "related-knowledge", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output
    res = runner.invoke(app, ["experiment", "related-knowledge", "methods=[ga,nope]"])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(app, ["experiment", "related-knowledge", "utility_floor=2"])
    assert res.exit_code == 2 and "utility_floor" in res.output
