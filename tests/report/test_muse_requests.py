"""MUSE scalability / sustainability (issue 18): a 2-request sustainability chain on a tiny model through the
sweep runner (request 2 unlearns from request 1's model), evaluated with the MUSE suite on a small folder in the
MUSE layout, and the report's plot data (one point per request); scalability series from run folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from unlearnkit.report import build_report, collect_runs
from unlearnkit.report.plots import muse_request_series, plot_muse_requests

NEWS = [f"Story {i}: the council of town {i} voted on the new bridge, which will cost {i + 2} million pounds and "
        f"open in spring {2024 + i}." for i in range(6)]
QA = [{"question": f"What will the bridge of town {i} cost?", "answer": f"{i + 2} million pounds"} for i in range(6)]


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def muse_dir(tmp_path, monkeypatch) -> Path:
    """Every split the MUSE suite and the forget specs read, in the hub's schema, small."""
    root = tmp_path / "muse"
    news = root / "news"
    _jsonl(news / "raw" / "forget.jsonl", [{"text": t} for t in NEWS])
    _jsonl(news / "verbmem" / "forget.jsonl", [{"prompt": t[:30], "gt": t[30:]} for t in NEWS[:2]])
    for split, rows in (("forget_qa", QA[:2]), ("retain_qa", QA[2:4]), ("forget_qa_icl", QA[4:5]),
                        ("retain_qa_icl", QA[5:6])):
        _jsonl(news / "knowmem" / f"{split}.jsonl", rows)
    for split, rows in (("forget", NEWS[:2]), ("retain", NEWS[2:4]), ("holdout", NEWS[4:6])):
        _jsonl(news / "privleak" / f"{split}.jsonl", [{"text": t} for t in rows])
    monkeypatch.setenv("UNLEARNKIT_MUSE_DIR", str(root))
    return root


def test_sustainability_chain_end_to_end(muse_dir, tmp_path):
    from unlearnkit.sweep import SweepConfig, run_sweep
    from unlearnkit.train.finetune import FinetuneConfig, finetune

    target = tmp_path / "target"
    finetune(FinetuneConfig(model="tiny", data="muse:news/raw/forget", tiny_hidden=32, tiny_layers=1, tiny_vocab=300,
                            precision="fp32", max_steps=2, batch_size=8, lr=3e-3, run=str(target), recall_max=-1,
                            template="plain", max_length=32))
    forget = "muse:news/raw/forget,part={}/2"
    spec = SweepConfig(
        command="unlearn", out=str(tmp_path / "sust"), report=False,
        base={"model": str(target / "model"), "method": "npo", "max_steps": 2, "save_steps": 2, "grad_accum": 1,
              "forget_batch_size": 4, "precision": "fp32", "template": "plain", "max_length": 32,
              "params": {"retain": "none"}},
        runs=[{"name": "sust-1", "forget": forget.format(1)},
              {"name": "sust-2", "forget": forget.format(2), "model": "{run:0}/model"}],
        evaluate={"suite": "muse", "corpus": "news", "limit": 2, "batch_size": 4, "max_length": 32,
                  "template": "plain"})
    record = run_sweep(spec, workers=2, echo=lambda _: None)   # a chain runs in order even with workers
    first, second = (Path(r["dir"]) for r in record["runs"])
    assert [r["status"] for r in record["runs"]] == ["done", "done"] and record["runs"][1]["after"] == [0]
    inputs = [yaml.safe_load((d / "config.yaml").read_text())["inputs"] for d in (first, second)]
    assert inputs[0]["theta_ini"] == str((target / "model").resolve())
    assert inputs[1]["theta_ini"] == str((first / "model").resolve())          # request 2 starts from request 1
    assert [i["n_forget"] for i in inputs] == [3, 3]                             # two disjoint halves of 6 documents

    records = collect_runs([tmp_path])
    series = muse_request_series(records)
    assert list(series) == ["sustainability"]                                    # one start size: no scalability
    (label, points), = series["sustainability"].items()
    assert [x for x, _ in points] == [1.0, 2.0] and [r.path for _, r in points] == [first, second]
    for _, r in points:   # the plotted values are the runs' eval/muse.json numbers
        written = json.loads((r.path / "eval" / "muse.json").read_text())["metrics"]
        assert r.metric("muse", "knowmem_retain/rouge_l_f1") == written["knowmem_retain/rouge_l_f1"]["value"]
    assert plot_muse_requests(records, tmp_path / "plot.png").stat().st_size > 0


def _unlearn_run(root: Path, name: str, model: Path, n_forget: int, retain: float) -> Path:
    run = root / name
    (run / "eval").mkdir(parents=True)
    cfg = {"model": str(model), "method": "npo", "forget": f"muse:news/raw/forget,part=1-{n_forget}/4", "run": str(run)}
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"kind": "unlearn", "config": cfg, "seed": 0,
         "inputs": {"method": "npo", "theta_ini": str(model), "n_forget": n_forget}}))
    (run / "eval" / "muse.json").write_text(json.dumps({"suite": "muse", "metrics": {
        "knowmem_retain/rouge_l_f1": {"value": retain}, "knowmem_forget/rouge_l_f1": {"value": retain / 2}}}))
    (run / "unlearn.json").write_text("{}")
    return run


def test_scalability_series_and_report(tmp_path):
    target = tmp_path / "target" / "model"
    for k in (3, 1, 2):
        _unlearn_run(tmp_path, f"scal-{k}", target, k * 25, 0.5 - 0.1 * k)
    records = collect_runs([tmp_path])
    series = muse_request_series(records)
    assert list(series) == ["scalability"]
    assert [(x, r.name, r.metric("muse", "knowmem_retain/rouge_l_f1")) for x, r in series["scalability"]["npo"]] == [
        (25.0, "scal-1", pytest.approx(0.4)), (50.0, "scal-2", pytest.approx(0.3)), (75.0, "scal-3", pytest.approx(0.2))]
    out = build_report([tmp_path], tmp_path / "report")
    assert out["plot:muse_requests"].stat().st_size > 0 and "MUSE scalability" in out["html"].read_text()
    assert muse_request_series(records[:1]) == {}   # one size, no chain: nothing to plot
