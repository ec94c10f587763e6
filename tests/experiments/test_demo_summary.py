"""The demo's printed table and its two-to-three sentence summary, built from hand-written eval files."""
import json

from unlearnkit.experiments.demo import _Phases, summary_table, summary_text


def _run(out, name, recall=None, tofu=None, related=None, alpha=None):
    ev = out / name / "eval"
    ev.mkdir(parents=True)
    for suite, metrics in (("recall", recall), ("tofu", tofu), ("related", related)):
        body = {k: {"value": v, "definition": "d", "n": 1} for k, v in (metrics or {}).items()}
        (ev / f"{suite}.json").write_text(json.dumps({"suite": suite, "metrics": body}))
    if alpha is not None:
        (out / name / "uipe.json").write_text(json.dumps({"alpha": alpha}))


def _fixture(out, npo_forget=0.13):
    rel = lambda t, r, m: {"target/probability": t, "related/probability": r, "multihop/probability": m}
    _run(out, "target", {"forget/exact_match": 0.96, "retain/exact_match": 0.97},
         {"forget_quality": 1e-5, "model_utility": 0.41}, rel(0.95, 0.97, 0.60))
    _run(out, "oracle", {"forget/exact_match": 0.0, "retain/exact_match": 0.95}, {"model_utility": 0.43},
         rel(0.05, 0.04, 0.05))
    _run(out, "unlearn-ga", {"forget/exact_match": 0.0, "retain/exact_match": 0.40},
         {"forget_quality": 0.02, "model_utility": 0.10}, rel(0.01, 0.30, 0.02))
    _run(out, "unlearn-npo", {"forget/exact_match": npo_forget, "retain/exact_match": 0.90},
         {"forget_quality": 0.27, "model_utility": 0.38}, rel(0.20, 0.80, 0.40))
    _run(out, "uipe-npo", {"forget/exact_match": 0.0, "retain/exact_match": 0.88},
         {"forget_quality": 0.31, "model_utility": 0.36}, rel(0.08, 0.35, 0.15), alpha=4.0)


def test_summary_names_the_best_method_and_what_uipe_adds(tmp_path):
    _fixture(tmp_path)
    text = summary_text(tmp_path)
    assert text.startswith("Fine-tuning taught the target 96% of the forget people's facts and 97% of the retain "
                           "people's (model utility 0.41; the retain oracle, which never saw the forget people, "
                           "recalls 0% of them).")
    # npo has the higher forget quality (0.27 against GA's 0.02), so it is the one described
    assert ("The best base method, npo, cut forget recall from 96% to 13% with forget quality 0.27 "
            "(indistinguishable from the oracle at p ≥ 0.05) while retain recall is 90% and model utility 0.38.") in text
    assert ("UIPE (α=4) extrapolates npo's update to erase the knowledge that could rebuild the facts: target "
            "probability 0.2 → 0.08, related-fact probability 0.8 → 0.35, multi-hop probability 0.4 → 0.15, "
            "forget recall 0%, retain recall 88%.") in text


def test_summary_says_when_the_best_method_did_not_forget(tmp_path):
    _fixture(tmp_path, npo_forget=0.94)
    assert "The best base method, npo, left forget recall at 94% with" in summary_text(tmp_path)


def test_table_rows_in_order_with_recall_columns_and_alpha(tmp_path):
    _fixture(tmp_path)
    lines = summary_table(tmp_path).splitlines()
    assert lines[0].split("|")[1:4] == [" run ", " forget recall ", " retain recall "]
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["target", "oracle", "unlearn-ga", "unlearn-npo",
                                                             "uipe-npo (α=4)"]
    assert lines[5].split("|")[2:4] == [" 0.130 ", " 0.900 "]


def test_each_phase_prints_its_number_and_time():
    said = []
    phases = _Phases(2, said.append)
    with phases("one"):
        pass
    with phases("two"):
        pass
    assert said[0] == "[1/2] one" and said[2] == "[2/2] two"
    assert said[1].strip().endswith(" s)") and said[1].strip().startswith("(")


def test_ties_on_forget_quality_and_recall_go_to_the_method_that_kept_more(tmp_path):
    _fixture(tmp_path, npo_forget=0.0)
    ga = tmp_path / "unlearn-ga" / "eval" / "tofu.json"   # GA now ties NPO on forget quality and forget recall
    ga.write_text(json.dumps({"suite": "tofu", "metrics": {"forget_quality": {"value": 0.27}, "model_utility": {"value": 0.1}}}))
    assert "The best base method, npo, cut forget recall from 96% to 0%" in summary_text(tmp_path)  # retain 0.90 > 0.40
