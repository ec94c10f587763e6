"""UIPE over a real (tiny) unlearning run: α search table/plot, automatic α, writing θ_uipe to disk."""
import json

import pytest
import torch

from unlearnkit.train.finetune import FinetuneConfig, finetune
from unlearnkit.train.unlearn import UnlearnConfig, unlearn
from unlearnkit.uipe.search import SearchSettings, alpha_search, extrapolate_run, read_unlearn_run

PEOPLE = 8


@pytest.fixture(scope="module")
def ga_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("uipe_run")
    data = f"synthetic:train,people={PEOPLE}"
    finetune(FinetuneConfig(model="tiny", data=data, run=str(root / "target"), epochs=20, lr=2e-3, batch_size=16,
                            tiny_hidden=64, tiny_layers=2, tiny_vocab=512, precision="fp32", recall_max=-1,
                            keep_checkpoints=1))
    unlearn(UnlearnConfig(model=str(root / "target" / "model"), forget=f"synthetic:forget,people={PEOPLE}",
                          retain=f"synthetic:retain,people={PEOPLE}", method="grad_diff", run=str(root / "ga"),
                          max_steps=4, lr=1e-3, forget_batch_size=2, grad_accum=1, precision="fp32", save_steps=2))
    return root


def test_alpha_search_writes_table_plot_and_auto_alpha(ga_run):
    s = SearchSettings(alphas=(0.0, 1.0), suite="related", related_people=PEOPLE, max_new_tokens=16, auto_n=16,
                       tolerance=0.2, alpha_max=2.0)
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
    assert (out / "alpha_search.csv").read_text().startswith("alpha,auto,")
    auto = saved["auto"]
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
