"""Report figures over collected runs (matplotlib, Agg backend). Each returns the PNG path, or None when no run
has the data it needs.

* `plot_fq_vs_mu`        forget quality (log scale) against model utility, one marker/colour per method
* `plot_alpha_curves`    UIPE α search: each metric against α, one line per run, the chosen α dashed
* `plot_training`        loss terms, grad norm and learning rate against step (log.jsonl), one line per run
* `plot_geffect`         G-effects e_u / e_r against step (geffect/geffect.csv), one line per run (and group)
* `plot_reveal`          Reveal-and-Release: mean reveal score and forget-set size per round, one line per run
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from .collect import RunRecord

TRAINING_KEYS = ("loss", "forget_loss", "retain_loss", "grad_norm", "learning_rate")
MARKERS = "osD^vP*Xh<>"
MAX_LEGEND = 12


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    _plt().close(fig)
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plot_fq_vs_mu(records: list[RunRecord], out: str | Path) -> Optional[Path]:
    """Forget quality (y, log scale: it is a KS-test p-value) against model utility (x), per method."""
    pts: dict[str, list[tuple[float, float, str]]] = {}
    for r in records:
        fq, mu = r.metric("tofu", "forget_quality"), r.metric("tofu", "model_utility")
        if _finite(fq) and _finite(mu) and fq > 0:
            pts.setdefault(r.method, []).append((mu, fq, r.name))
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for i, (method, xs) in enumerate(sorted(pts.items())):
        ax.scatter([p[0] for p in xs], [p[1] for p in xs], marker=MARKERS[i % len(MARKERS)], s=46, label=method)
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value, log scale)")
    ax.set_title("Forget quality vs model utility")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="method")
    return _save(fig, Path(out))


def plot_alpha_curves(records: list[RunRecord], out: str | Path, max_metrics: int = 4) -> Optional[Path]:
    """UIPE α search (`uipe/alpha_search.json`): every metric against α, the automatic choice as a dashed line."""
    runs = [r for r in records if isinstance(r.alpha_search, dict) and r.alpha_search.get("points")]
    if not runs:
        return None
    names = list(dict.fromkeys(m for r in runs for p in r.alpha_search["points"] for m in (p.get("metrics") or {})))
    names = names[:max_metrics]
    if not names:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), constrained_layout=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, r in enumerate(runs):
            pts = sorted((float(p["alpha"]), p["metrics"][name]) for p in r.alpha_search["points"]
                         if _finite(p.get("alpha")) and _finite((p.get("metrics") or {}).get(name)))
            if not pts:
                continue
            line, = ax.plot([a for a, _ in pts], [v for _, v in pts], marker=MARKERS[i % len(MARKERS)],
                            label=f"{r.method} ({r.name})"[:40])
            auto = (r.alpha_search.get("auto") or {}).get("alpha")
            if _finite(auto):
                ax.axvline(float(auto), color=line.get_color(), ls="--", lw=1)
        ax.set_xlabel("α")
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
    if len(runs) <= MAX_LEGEND:
        axes[0][0].legend(fontsize=7)
    fig.suptitle("UIPE α search (dashed: chosen α)")
    return _save(fig, Path(out))


def plot_training(records: list[RunRecord], out: str | Path) -> Optional[Path]:
    """Training curves from each run's log.jsonl: one panel per logged quantity, one line per run."""
    keys = [k for k in TRAINING_KEYS if any(_finite(x.get(k)) for r in records for x in r.log)]
    if not keys:
        return None
    plt = _plt()
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), constrained_layout=True, squeeze=False)
    flat = [ax for row in axes for ax in row]
    with_log = [r for r in records if r.log]
    for ax, key in zip(flat, keys):
        for r in with_log:
            pts = [(x["step"], x[key]) for x in r.log if _finite(x.get("step")) and _finite(x.get(key))]
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1.2, marker="." if len(pts) < 30 else None,
                        label=f"{r.method}: {r.name}"[:48])
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    for ax in flat[len(keys):]:
        ax.axis("off")
    if len(with_log) <= MAX_LEGEND:
        flat[0].legend(fontsize=6)
    fig.suptitle("Training (log.jsonl)")
    return _save(fig, Path(out))


def plot_geffect(records: list[RunRecord], out: str | Path) -> Optional[Path]:
    """G-effect curves (geffect/geffect.csv): e_u and e_r against step; the `total` group per run when several
    runs have one (every group for a single run)."""
    runs = [r for r in records if r.geffect]
    if not runs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, (kind, title) in zip(axes, (("unlearn", "unlearning G-effect e_u"), ("retain", "retaining G-effect e_r"))):
        for r in runs:
            groups = list(dict.fromkeys(x["group"] for x in r.geffect))
            shown = groups if len(runs) == 1 else (["total"] if "total" in groups else groups[:1])
            for g in shown:
                pts = sorted((x["step"], x["value"]) for x in r.geffect if x.get("kind") == kind and x["group"] == g)
                if pts:
                    label = g if len(runs) == 1 else f"{r.method}: {r.name}"[:48]
                    ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", lw=2 if g == "total" else 1,
                            label=label)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("G-effect" + (f" — {runs[0].name}" if len(runs) == 1 else ""))
    return _save(fig, Path(out))


def plot_reveal(records: list[RunRecord], out: str | Path) -> Optional[Path]:
    """Reveal-and-Release rounds (rounds/round-<k>/round.json): the mean reveal score of each round's
    generations (it should fall as the target is released) and the size of the self-generated forget set;
    a round that stopped the loop (no training) is drawn hollow."""
    runs = [r for r in records if r.reveal]
    if not runs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for i, r in enumerate(runs):
        label = f"{r.config.get('target', r.name)}: {r.name}"[:48]
        for ax, key in zip(axes, ("mean_score", "n_forget")):
            pts = [(int(x["round"]), float(x.get(key, 0.0)), bool(x.get("trained"))) for x in r.reveal]
            line, = ax.plot([k for k, _, _ in pts], [v for _, v, _ in pts], lw=1.5, label=label,
                            marker=MARKERS[i % len(MARKERS)])
            stopped = [(k, v) for k, v, trained in pts if not trained]
            if stopped:
                ax.plot([k for k, _ in stopped], [v for _, v in stopped], ls="none", marker="o", ms=10,
                        mfc="none", color=line.get_color())
    for ax, title in zip(axes, ("mean reveal score of the round's generations", "self-generated forget rows")):
        ax.set_xlabel("round")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    if len(runs) <= MAX_LEGEND:
        axes[0].legend(fontsize=7)
    fig.suptitle("Reveal-and-Release rounds")
    return _save(fig, Path(out))


PLOTS = {"fq_vs_mu": plot_fq_vs_mu, "alpha_curves": plot_alpha_curves, "training": plot_training,
         "geffect": plot_geffect, "reveal": plot_reveal}


def all_plots(records: list[RunRecord], out_dir: str | Path) -> dict[str, Path]:
    """Every figure that has data, as `<out_dir>/<name>.png`."""
    out = {}
    for name, fn in PLOTS.items():
        p = fn(records, Path(out_dir) / f"{name}.png")
        if p is not None:
            out[name] = p
    return out
