"""G-effect figures (matplotlib, Agg backend): curves per group, instance scatters, several runs compared.

* `plot_curves(rows, out)`     — e_u (left) and e_r (right) against step, one line per group, `total` in black.
* `plot_instances(rows, dir)`  — per checkpoint, each forget sample at (pg_u, pg_r), coloured by the objective's
                                  weight (the paper's Fig. 5 style); one PNG per checkpoint.
* `compare(run_dirs, out)`     — several runs (GA vs NPO vs WGA vs TNPO, …) on one figure: rows e_u / e_r,
                                  one column per group, one line per run; also writes the combined CSV.
Rows are the dicts of `geffect.csv` / `instances.csv` (`run.read_csv`) or the lists `geffect_run` builds.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

KINDS = (("unlearn", "unlearning G-effect e_u"), ("retain", "retaining G-effect e_r"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: Sequence[dict], kind: str, group: str) -> tuple[list[int], list[float]]:
    pts = sorted((int(r["step"]), float(r["value"])) for r in rows if r["kind"] == kind and r["group"] == group)
    return [s for s, _ in pts], [v for _, v in pts]


def _groups(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["group"] for r in rows))


def plot_curves(rows: Sequence[dict], out: str | Path, title: str = "") -> Path:
    plt = _plt()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, (kind, label) in zip(axes, KINDS):
        for g in _groups(rows):
            x, y = _series(rows, kind, g)
            if g == "total":
                ax.plot(x, y, color="black", lw=2.2, marker="o", label=g)
            else:
                ax.plot(x, y, lw=1.2, marker=".", label=g)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("step")
        ax.set_title(label)
    axes[1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_instances(rows: Sequence[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    plt = _plt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    ckpts = list(dict.fromkeys((r["checkpoint"], int(r["step"])) for r in rows))
    for name, step in ckpts:
        sub = [r for r in rows if r["checkpoint"] == name and int(r["step"]) == step]
        x = [float(r["unlearn"]) for r in sub]
        y = [float(r["retain"]) for r in sub]
        w = [float(r["weight"]) for r in sub]
        fig, ax = plt.subplots(figsize=(5, 4.2), constrained_layout=True)
        if all(math.isnan(v) for v in w):
            ax.scatter(x, y, s=18, color="tab:blue")
        else:
            sc = ax.scatter(x, y, c=w, s=18, cmap="viridis")
            fig.colorbar(sc, ax=ax, label="objective weight w(s)")
        ax.axhline(0, color="grey", lw=0.6)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set_xlabel("∇R(D_u)ᵀ∇log p(s)")
        ax.set_ylabel("∇R(D_r)ᵀ∇log p(s)")
        ax.set_title(f"{title} step {step}".strip())
        p = out_dir / f"geffect_instances_{name}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def _label(run: Path) -> str:
    summary = run / "geffect" / "summary.json"
    if summary.is_file():
        method = json.loads(summary.read_text()).get("method")
        if method:
            return f"{run.name} ({method})" if method != run.name else method
    return run.name


def compare(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """One figure over several runs' `geffect/geffect.csv`; `out` is a .png path or a folder."""
    from .compute import GEffectError
    from .run import CURVE_FIELDS, read_csv, write_csv

    if not run_dirs:
        raise GEffectError("compare: no run directories given")
    runs = []
    for d in run_dirs:
        csv_path = Path(d) / "geffect" / "geffect.csv"
        if not csv_path.is_file():
            raise GEffectError(f"compare: {csv_path} does not exist; run `unlearnkit geffect run={d}` first")
        runs.append((_label(Path(d)), read_csv(csv_path)))
    out = Path(out)
    if out.suffix.lower() != ".png":
        out = out / "geffect_compare.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    groups = ["total"] + [g for g in dict.fromkeys(r["group"] for _, rows in runs for r in rows) if g != "total"]
    plt = _plt()
    fig, axes = plt.subplots(2, len(groups), figsize=(3.2 * len(groups), 6.2), squeeze=False, constrained_layout=True)
    for i, (kind, label) in enumerate(KINDS):
        for j, g in enumerate(groups):
            ax = axes[i][j]
            for name, rows in runs:
                x, y = _series(rows, kind, g)
                if x:
                    ax.plot(x, y, marker=".", label=name)
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_title(f"{g}: {'e_u' if kind == 'unlearn' else 'e_r'}", fontsize=9)
            if i == 1:
                ax.set_xlabel("step")
    axes[0][0].legend(fontsize=8)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    combined = [{"run": name, **r} for name, rows in runs for r in rows]
    write_csv(out.with_suffix(".csv"), ("run",) + CURVE_FIELDS, combined)
    return out
