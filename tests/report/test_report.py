"""Report from run directories alone: table values, every plot, a self-contained HTML page."""
from __future__ import annotations

import base64
import csv
import io
import re

import pytest

from unlearnkit.report import build_report, collect_runs, leaderboard
from unlearnkit.report.tables import MISSING, fmt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _md_rows(md: str, title: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table under `### <title>`."""
    block = md.split(f"### {title}", 1)[1].split("###", 1)[0]
    lines = [l for l in block.splitlines() if l.startswith("|")]
    return [[c.strip() for c in l.strip("|").split(" | ")] for l in lines]


def test_collect_reads_every_run_and_nothing_else(run_tree):
    records = collect_runs([run_tree])
    names = [r.name for r in records]
    assert names == sorted(["ga-lr1e-05-aaaa0001", "npo-lr1e-05-bbbb0002", "npo-lr3e-05-cccc0003", "target",
                            "failed-dddd0004", "reveal-eeee0005"])
    by = {r.name: r for r in records}
    ga = by["ga-lr1e-05-aaaa0001"]
    assert ga.method == "ga" and ga.split == "forget01" and ga.status == "finished"
    assert ga.metric("tofu", "forget_quality") == pytest.approx(1.2e-5)
    assert len(ga.log) == 5  # the half-written last line is skipped
    assert len(ga.geffect) == 18
    assert by["npo-lr1e-05-bbbb0002"].alpha_search["auto"]["alpha"] == 0.5
    assert by["failed-dddd0004"].status == "failed" and "boom" in by["failed-dddd0004"].error
    assert "oracle_stats" not in ga.metrics  # not a suite file
    assert by["target"].method == "finetune" and by["target"].metrics["related"]["target/probability"] == 0.9
    assert [r["mean_score"] for r in by["reveal-eeee0005"].reveal] == [0.6, 0.3, 0.01] and ga.reveal == []


def test_leaderboard_markdown_values(report):
    out = report
    md = out["markdown"].read_text()
    rows = _md_rows(md, "Leaderboard (TOFU metrics)")
    header, align, body = rows[0], rows[1], rows[2:]
    assert header[:6] == ["Method", "Split", "Run", "Settings", "Forget quality ↑", "Model utility ↑"]
    assert "Forget ROUGE ↓" in header and "PrivLeak (→0)" in header
    assert align[0] == "---" and align[4] == "---:"
    col = {h: i for i, h in enumerate(header)}
    by_run = {r[col["Run"]]: r for r in body}
    ga, npo1, npo3 = by_run["ga-lr1e-05-aaaa0001"], by_run["npo-lr1e-05-bbbb0002"], by_run["npo-lr3e-05-cccc0003"]
    assert ga[col["Method"]] == "ga" and ga[col["Split"]] == "forget01"
    assert ga[col["Forget quality ↑"]] == "1.20e-05"
    assert ga[col["Model utility ↑"]] == "0.610"
    assert ga[col["Forget ROUGE ↓"]] == "0.420"
    assert ga[col["PrivLeak (→0)"]] == "-55.000"
    assert npo1[col["Forget quality ↑"]] == "0.031" and npo3[col["Forget quality ↑"]] == "0.270"
    assert npo3[col["Forget ROUGE ↓"]] == MISSING  # missing metric
    assert npo3[col["Retain ROUGE ↑"]] == MISSING  # never measured
    assert "lr=3e-05" in npo3[col["Settings"]]  # the varying hyper-parameter is shown
    assert by_run["target"][col["Forget quality ↑"]] == MISSING
    assert by_run["failed-dddd0004"][col["Method"]] == "rmu (failed)"
    assert by_run["failed-dddd0004"][col["Split"]] == "forget05"
    # rows ordered by split, then method
    assert [r[col["Run"]] for r in body if r[col["Split"]] != MISSING][:3] == [
        "ga-lr1e-05-aaaa0001", "npo-lr1e-05-bbbb0002", "npo-lr3e-05-cccc0003"]
    assert by_run["reveal-eeee0005"][col["Method"]] == "npo" and by_run["reveal-eeee0005"][col["Split"]] == MISSING
    related = _md_rows(md, "Suite `related`: all metrics")
    assert related[0] == ["Method", "Run", "target/probability", "target/rouge_l_recall"]
    assert related[2] == ["finetune", "target", "0.900", "0.750"]


def test_table_csv_and_parquet(report):
    out = report
    with out["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    ga = next(r for r in rows if r["run"] == "ga-lr1e-05-aaaa0001")
    assert float(ga["tofu/forget_quality"]) == pytest.approx(1.2e-5)
    assert ga["config.params.beta"] == "0.1" and ga["config.lr"] == "1e-05"
    assert float(ga["log.loss"]) == pytest.approx(3.0 - 0.3 * 5)
    if "parquet" in out:
        import pyarrow.parquet as pq

        t = pq.read_table(out["parquet"])
        assert t.num_rows == 6 and "tofu/model_utility" in t.column_names


def test_every_plot_and_self_contained_html(report):
    from PIL import Image

    out = report
    for name in ("fq_vs_mu", "alpha_curves", "training", "geffect", "reveal"):
        p = out[f"plot:{name}"]
        assert p.read_bytes()[:8] == PNG_SIGNATURE
    page = out["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<style>" in page and "<script" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from the network
    assert page.count("<table>") == 4  # leaderboard, tofu suite, related suite, runs
    assert "Leaderboard (TOFU metrics)" in page and "1.20e-05" in page
    srcs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    assert len(srcs) == 5
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        import matplotlib.image as mpimg

        assert mpimg.imread(io.BytesIO(data), format="png").shape[0] > 100


def test_plots_without_data_are_left_out(run_tree, tmp_path):
    out = build_report([run_tree / "target"], tmp_path / "rep")
    assert not any(k.startswith("plot:") for k in out)
    page = out["html"].read_text()
    assert "<img" not in page and "<table>" in page
    assert "Leaderboard" not in page  # no TOFU metrics anywhere: no empty leaderboard


def test_fmt_and_errors(tmp_path):
    assert fmt(None) == MISSING and fmt(1.2e-5, "forget_quality") == "1.20e-05" and fmt(0.5) == "0.500"
    assert leaderboard([]).rows == []
    with pytest.raises(FileNotFoundError, match="no run directories"):
        build_report([tmp_path])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report([tmp_path / "nope"])


def test_leaderboard_markdown_escapes_hostile_names(tmp_path):
    """Run, method, setting and suite names cannot inject HTML, links or extra columns (issue 21.10)."""
    from pathlib import Path

    from unlearnkit.report.collect import RunRecord
    from unlearnkit.report.tables import markdown

    evil = "<img src=x onerror=alert(1)>|x"
    runs = [RunRecord(path=Path(tmp_path / f"{evil}[a](javascript:alert(2))"), kind="unlearn",
                      config={"method": "npo<script>alert(3)</script>", "lr": 1e-5, "params": {"beta": "a|b\nc"}},
                      inputs={"method": "npo<script>alert(3)</script>\n| injected | row |", "forget": "tofu:forget01"},
                      metrics={"tofu": {"forget_quality": 0.5}, "s`<b>|": {"m": 1.0}}, status="finished"),
            RunRecord(path=Path(tmp_path / "plain"), kind="unlearn", config={"method": "ga", "lr": 2e-5,
                                                                              "params": {"beta": "d"}},
                      metrics={"tofu": {"forget_quality": 0.1}}, status="finished")]
    md = markdown(runs, title="Report <b>bold</b>")
    assert "<" not in md and ">" not in md.replace("→", "")   # no tag survives anywhere
    assert not re.search(r"(?<!\\)\]\(javascript", md) and "\\[a\\](javascript" in md   # no live link
    for title in ("Leaderboard", "Suite", "Runs"):   # every row of every table has its header's columns
        lines = [l for l in md.split(f"### {title}", 1)[1].split("###", 1)[0].splitlines() if l.startswith("|")]
        assert len({len(re.split(r"(?<!\\) \| ", l)) for l in lines}) == 1, lines
    rows = [l for l in md.splitlines() if "onerror" in l and l.startswith("| npo")]
    assert rows and "&lt;img src=x onerror=alert(1)&gt;\\|x" in rows[0]
    assert "injected" in rows[0]   # the method's line break stays inside its cell
