"""UIPE over a real (tiny) unlearning run: α search table/plot, automatic α, writing θ_uipe to disk."""
import json

import pytest
import torch

from unlearnkit.train.finetune import FinetuneConfig, finetune
from unlearnkit.train.unlearn import UnlearnConfig, unlearn
from unlearnkit.data import write_qa_jsonl
from unlearnkit.data.specs import load_records
from unlearnkit.uipe.search import (SearchSettings, alpha_search, extrapolate_run, heldout_retain_slice,
                                    read_unlearn_run, resolve_checkpoints)

PEOPLE = 8
RETAIN = f"synthetic:retain,people={PEOPLE}"


@pytest.fixture(scope="module")
def ga_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("uipe_run")
    data = f"synthetic:train,people={PEOPLE}"
    finetune(FinetuneConfig(model="tiny", data=data, run=str(root / "target"), epochs=20, lr=2e-3, batch_size=16,
                            tiny_hidden=64, tiny_layers=2, tiny_vocab=512, precision="fp32", recall_max=-1,
                            keep_checkpoints=1))
    # the run's retain term reads the first 50 retain rows; the other 24 are rows it never trained on
    write_qa_jsonl(load_records(RETAIN)[:50], root / "retain_train.jsonl")
    unlearn(UnlearnConfig(model=str(root / "target" / "model"), forget=f"synthetic:forget,people={PEOPLE}",
                          retain=str(root / "retain_train.jsonl"), method="grad_diff", run=str(root / "ga"),
                          max_steps=4, lr=1e-3, forget_batch_size=2, grad_accum=1, precision="fp32", save_steps=2))
    return root


def test_alpha_search_writes_table_plot_and_auto_alpha(ga_run):
    s = SearchSettings(alphas=(0.0, 1.0), suite="related", related_people=PEOPLE, max_new_tokens=16, auto_n=16,
                       tolerance=0.2, alpha_max=2.0, auto_retain=RETAIN)
    res = alpha_search(ga_run / "ga", s, echo=lambda *_: None)
    out = ga_run / "ga" / "uipe"
    saved = json.loads((out / "alpha_search.json").read_text())
    assert saved["method"] == "grad_diff" and saved["suite"] == "related"
    alphas = [p["alpha"] for p in saved["points"]]
    assert 0.0 in alphas and 1.0 in alphas and res["auto"]["alpha"] in alphas
    for p in saved["points"]:
        assert 0 <= p["metrics"]["forget/target/probability"] <= 1 and 0 <= p["metrics"]["utility"] <= 1
    # extrapolating further along the update lowers the forget-target probability (GradDiff pushed it down)
    by_alpha = {p["alpha"]: p["metrics"] for p in saved["points"]}
    assert by_alpha[1.0]["forget/target/probability"] < by_alpha[0.0]["forget/target/probability"]
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "alpha_search.csv").read_text().startswith("checkpoint,alpha,auto,")
    auto = saved["auto"]
    assert auto["n"] == 16 and auto["excluded"][0].endswith("retain_train.jsonl")
    assert auto["evaluations"][0]["alpha"] == 0.0
    ok = [e for e in auto["evaluations"] if e["utility"] >= auto["threshold"]]
    assert auto["alpha"] == max(e["alpha"] for e in ok)


def test_extrapolate_run_matches_formula(ga_run):
    from unlearnkit.models import load_model

    inputs = read_unlearn_run(ga_run / "ga")
    out = extrapolate_run(ga_run / "ga", 0.5)
    assert out.name == "alpha-0.5" and (out / "uipe.json").is_file()
    ini, _ = load_model(inputs.theta_ini)
    un, _ = load_model(str(inputs.theta_un))
    ex, _ = load_model(str(out))
    name = "model.layers.0.mlp.up_proj.weight"
    a, b, c = (m.state_dict()[name] for m in (ini, un, ex))
    torch.testing.assert_close(c, b + 0.5 * (b - a), rtol=1e-5, atol=1e-6)


def test_not_an_unlearn_run(ga_run):
    with pytest.raises(ValueError, match="kind='finetune'"):
        read_unlearn_run(ga_run / "target")


def test_cli_extrapolate_and_bad_alphas(ga_run):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["extrapolate", f"run={ga_run / 'ga'}", "alphas=0,0.25", "auto=false",
                              f"related_people={PEOPLE}", "max_new_tokens=8", "save=0.25"])
    assert res.exit_code == 0, res.output
    assert (ga_run / "ga" / "uipe" / "alpha-0.25" / "uipe.json").is_file()
    bad = runner.invoke(app, ["extrapolate", f"run={ga_run / 'ga'}", "alphas=0,lots"])
    assert bad.exit_code == 2 and "alphas" in bad.output


def test_bf16_search_sees_each_alpha(ga_run):
    """Under bf16 autocast every α is scored with its own weights (autocast's weight-cast cache must not
    carry the first α's weights into the next): same direction as fp32, values within bf16 rounding."""
    kw = dict(alphas=(0.0, 1.0), suite="related", related_people=PEOPLE, max_new_tokens=4, auto=False, limit=8)
    fp32 = alpha_search(ga_run / "ga", SearchSettings(**kw), echo=lambda *_: None)
    bf16 = alpha_search(ga_run / "ga", SearchSettings(precision="bf16", **kw), echo=lambda *_: None)
    assert bf16["precision"] == "bf16" and fp32["precision"] == "fp32"
    key = "forget/target/probability"
    p32 = {p["alpha"]: p["metrics"][key] for p in fp32["points"]}
    p16 = {p["alpha"]: p["metrics"][key] for p in bf16["points"]}
    assert p16[1.0] < p16[0.0]
    for a in (0.0, 1.0):
        assert p16[a] == pytest.approx(p32[a], abs=0.03)
    assert abs((p16[0.0] - p16[1.0]) - (p32[0.0] - p32[1.0])) < 0.5 * (p32[0.0] - p32[1.0])


def test_heldout_rows_are_rows_the_run_never_trained_on(ga_run):
    """Its RetainStream drew from all 50 rows of retain_train.jsonl: only the other 24 retain rows are held out."""
    inputs = read_unlearn_run(ga_run / "ga")
    assert inputs.trained_retain.endswith("retain_train.jsonl")
    trained = {(r.question, r.answer) for r in load_records(inputs.trained_retain)}
    held = heldout_retain_slice(RETAIN, 64, (inputs.trained_retain, inputs.forget))
    assert [(r.question, r.answer) for r in held] == [(r.question, r.answer) for r in load_records(RETAIN)[50:]]
    assert not trained & {(r.question, r.answer) for r in held}
    # the run's own retain spec holds no row it did not train on: a clear error, not its last 64 rows
    with pytest.raises(ValueError, match="every record of .*retain_train.jsonl.* is one the run trained on"):
        alpha_search(ga_run / "ga", SearchSettings(alphas=(0.0,), related_people=PEOPLE), echo=lambda *_: None)


def test_search_over_checkpoints_and_alpha(ga_run):
    """checkpoint=step-2,final: each θ_un is extrapolated and scored on its own; step-2 is not the final model."""
    s = SearchSettings(alphas=(0.0, 1.0), suite="related", related_people=PEOPLE, max_new_tokens=4, limit=8,
                       auto_retain=RETAIN, auto_n=8, tolerance=0.2, alpha_max=1.0, auto_max_evals=3,
                       checkpoint=("step-2", "final"))
    res = alpha_search(ga_run / "ga", s, echo=lambda *_: None)
    assert res["checkpoints"] == ["step-2", "final"] and "auto" not in res
    assert set(res["auto_by_checkpoint"]) == {"step-2", "final"}
    key = "forget/target/probability"
    p = {(q["checkpoint"], q["alpha"]): q["metrics"][key] for q in res["points"]}
    assert p[("step-2", 0.0)] != pytest.approx(p[("final", 0.0)], abs=1e-6)
    assert p[("step-2", 1.0)] < p[("step-2", 0.0)]
    rows = (ga_run / "ga" / "uipe" / "alpha_search.csv").read_text().splitlines()
    assert {r.split(",")[0] for r in rows[1:]} == {"step-2", "final"}
    with pytest.raises(FileNotFoundError, match="checkpoint='step-99' is not in"):
        alpha_search(ga_run / "ga", SearchSettings(auto=False, checkpoint="step-99"), echo=lambda *_: None)


def test_extrapolate_a_checkpoint(ga_run):
    from unlearnkit.models import load_model

    out = extrapolate_run(ga_run / "ga", 0.5, checkpoint="step-2", overwrite=True)
    assert out == ga_run / "ga" / "uipe" / "step-2" / "alpha-0.5"
    ini, _ = load_model(read_unlearn_run(ga_run / "ga").theta_ini)
    un, _ = load_model(str(ga_run / "ga" / "checkpoints" / "step-2"))
    ex, _ = load_model(str(out))
    name = "model.layers.0.mlp.up_proj.weight"
    a, b, c = (m.state_dict()[name] for m in (ini, un, ex))
    torch.testing.assert_close(c, b + 0.5 * (b - a), rtol=1e-5, atol=1e-6)


def test_resolve_checkpoints_reads_only_complete_step_folders(tmp_path):
    """checkpoint=all lists what runs.list_checkpoints lists: step-N folders in numeric order, not a stray file
    named like one or a half-written staging folder."""
    ck = tmp_path / "checkpoints"
    for name in ("step-10", "step-2", ".staging"):
        (ck / name).mkdir(parents=True)
    (ck / "step-7").write_text("not a checkpoint")
    assert resolve_checkpoints(tmp_path, ["all"]) == ["step-2", "step-10", "final"]
    assert resolve_checkpoints(tmp_path, ["step-3", " final "]) == ["step-3", "final"]
    for bad in ("step-x", "step-", "3"):
        with pytest.raises(ValueError, match=f"checkpoint={bad!r}: expected final, step-N"):
            resolve_checkpoints(tmp_path, [bad])


def test_one_settings_class_for_the_command_and_the_search():
    """`unlearnkit extrapolate`'s config is what `alpha_search` takes: the CLI's comma lists and Python's tuples
    give the same α and checkpoints, and a bad α fails when the settings are made, before any model loads."""
    from unlearnkit.config import ConfigError, load_config
    from unlearnkit.uipe.search import ExtrapolateConfig

    assert SearchSettings is ExtrapolateConfig
    cli = load_config(ExtrapolateConfig, overrides=["alphas=0,0.5,2", "checkpoint=step-2,final"])
    py = ExtrapolateConfig(alphas=(0, 0.5, 2.0), checkpoint=("step-2", "final"))
    assert cli.alpha_values == py.alpha_values == (0.0, 0.5, 2.0)
    assert cli.checkpoint_names == py.checkpoint_names == ("step-2", "final")
    with pytest.raises((ValueError, ConfigError), match="α below −1"):
        ExtrapolateConfig(alphas="0,-2")
    with pytest.raises((ValueError, ConfigError), match="comma-separated numbers"):
        load_config(ExtrapolateConfig, overrides=["alphas=0,lots"])
