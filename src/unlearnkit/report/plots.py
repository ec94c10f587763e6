"""Report figures over collected runs (matplotlib, Agg backend). Each returns the PNG path, or None when no run
has the data it needs.

* `plot_fq_vs_mu`        forget quality (log scale) against model utility, labelled points, references starred
* `plot_alpha_curves`    UIPE α search: every α evaluated (automatic rule and full evaluations), chosen α dashed
* `plot_training`        loss terms, grad norm and learning rate against step (log.jsonl), a row per kind / method
* `plot_geffect`         G-effects e_u / e_r against step (geffect/geffect.csv), one line per run (and group)
* `plot_reveal`          Reveal-and-Release: mean reveal score and forget-set size per round, one line per run
* `plot_muse_requests`   MUSE scalability / sustainability: KnowMem and VerbMem against forget size / request number
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


REFERENCE_KINDS = ("finetune",)   # the target and the retain oracle: the points unlearning is judged against
FQ_LINE = 0.05                     # the usual significance level: above it the KS test cannot tell θ from the oracle


def fq_mu_points(records: list[RunRecord]) -> list[tuple[float, float, str, str, bool]]:
    """(model utility, forget quality, run name, method, is reference) of every run with both TOFU numbers and a
    positive forget quality (its axis is logarithmic); references are the fine-tuned target and retain models."""
    pts = []
    for r in records:
        fq, mu = r.metric("tofu", "forget_quality"), r.metric("tofu", "model_utility")
        if _finite(fq) and _finite(mu) and fq > 0:
            pts.append((float(mu), float(fq), r.name, r.method, r.kind in REFERENCE_KINDS))
    return pts


def plot_fq_vs_mu(records: list[RunRecord], out: str | Path) -> Optional[Path]:
    """Forget quality (y, log scale: a KS-test p-value) against model utility (x): one marker per method, each
    point labelled with its run, the fine-tuned references (target, retain oracle) as stars, p = 0.05 dotted."""
    pts = fq_mu_points(records)
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    methods = sorted({m for _, _, _, m, ref in pts if not ref})
    for i, method in enumerate(methods):
        xs = [(mu, fq) for mu, fq, _, m, ref in pts if m == method and not ref]
        ax.scatter([x for x, _ in xs], [y for _, y in xs], marker=MARKERS[i % len(MARKERS)], s=46, label=method)
    refs = [(mu, fq) for mu, fq, _, _, ref in pts if ref]
    if refs:
        ax.scatter([x for x, _ in refs], [y for _, y in refs], marker="*", s=160, color="black",
                   label="reference (fine-tuned)", zorder=3)
    for mu, fq, name, _, _ in pts:
        ax.annotate(name[:28], (mu, fq), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.axhline(FQ_LINE, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value, log scale)")
    same_mu = len({round(mu, 6) for mu, *_ in pts}) == 1
    ax.set_title("Forget quality vs model utility" + (f" (every model utility = {pts[0][0]:.3g})" if same_mu else ""))
    if same_mu:
        ax.set_xlim(pts[0][0] - 0.5, pts[0][0] + 0.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="method")
    return _save(fig, Path(out))


HELDOUT_UTILITY = "held-out retain utility (automatic α)"
ALPHA_PREFERRED = ("forget/target/probability", "forget/related/probability", "forget/multihop/probability",
                   "forget_quality", "model_utility", "utility")


def alpha_points(search: dict, max_metrics: int = 3) -> dict[str, list[tuple[float, float]]]:
    """The data of one run's α plot, panel name → (α, value) sorted by α: the held-out retain utility at every α
    the automatic rule evaluated (`auto_by_checkpoint[*].evaluations`: all of them, not only the α values that
    were then fully evaluated), then up to `max_metrics` metrics of the fully evaluated α `points`
    (forget probabilities and utilities first)."""
    panels: dict[str, list[tuple[float, float]]] = {}
    autos = search.get("auto_by_checkpoint") or {}
    for checkpoint, auto in autos.items():
        evals = auto.get("evaluations") if isinstance(auto, dict) else None
        pts = {float(e["alpha"]): float(e["utility"]) for e in evals or []
               if isinstance(e, dict) and _finite(e.get("alpha")) and _finite(e.get("utility"))}
        if pts:
            panels[HELDOUT_UTILITY + (f" [{checkpoint}]" if len(autos) > 1 else "")] = sorted(pts.items())
    points = [p for p in search.get("points") or [] if isinstance(p, dict) and _finite(p.get("alpha"))]
    names = list(dict.fromkeys(m for p in points for m in (p.get("metrics") or {})))
    names = ([n for n in ALPHA_PREFERRED if n in names] + [n for n in names if n not in ALPHA_PREFERRED])[:max_metrics]
    for name in names:
        pts = sorted((float(p["alpha"]), float(p["metrics"][name])) for p in points
                     if _finite((p.get("metrics") or {}).get(name)))
        if pts:
            panels[name] = pts
    return panels


def plot_alpha_curves(records: list[RunRecord], out: str | Path, max_metrics: int = 3) -> Optional[Path]:
    """UIPE α search (`uipe/alpha_search.json`), every α evaluated: the automatic rule's held-out retain utility
    curve and the fully evaluated metrics against α, one line per run, the chosen α as a dashed line."""
    data = {r.name: (r, alpha_points(r.alpha_search, max_metrics)) for r in records if isinstance(r.alpha_search, dict)}
    data = {k: v for k, v in data.items() if v[1]}
    if not data:
        return None
    names = list(dict.fromkeys(n for _, panels in data.values() for n in panels))
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.8), constrained_layout=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, (r, panels) in enumerate(data.values()):
            pts = panels.get(name)
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
    if len(data) <= MAX_LEGEND:
        axes[0][0].legend(fontsize=7)
    fig.suptitle("UIPE α search: every α evaluated (dashed: chosen α)")
    return _save(fig, Path(out))


def training_group(r: RunRecord) -> str:
    """The row of the training figure a run goes to: its kind, and for unlearning its method too (an NPO loss
    starts at 2/β·log 2 ≈ 13.9, a GA loss near 0, a fine-tuning loss near the vocabulary's log-size)."""
    return f"{r.kind} · {r.method}" if r.kind == "unlearn" else r.kind


def training_panels(records: list[RunRecord]) -> dict[str, list[str]]:
    """Row (`training_group`) → the logged quantities (TRAINING_KEYS) its runs have, so that quantities on
    different scales never share an axis."""
    out: dict[str, set[str]] = {}
    for r in records:
        keys = {k for k in TRAINING_KEYS if any(_finite(x.get(k)) for x in r.log)}
        if keys:
            out.setdefault(training_group(r), set()).update(keys)
    return {g: [k for k in TRAINING_KEYS if k in keys] for g, keys in sorted(out.items())}


def plot_training(records: list[RunRecord], out: str | Path) -> Optional[Path]:
    """Training curves from each run's log.jsonl: one row per run kind (and method, for unlearning), one panel
    per logged quantity, one line per run."""
    panels = training_panels(records)
    if not panels:
        return None
    plt = _plt()
    cols = max(len(k) for k in panels.values())
    fig, axes = plt.subplots(len(panels), cols, figsize=(3.9 * cols, 2.9 * len(panels)), constrained_layout=True,
                             squeeze=False)
    for row, (group, keys) in zip(axes, panels.items()):
        runs = [r for r in records if training_group(r) == group and r.log]
        for ax, key in zip(row, keys):
            for r in runs:
                pts = [(x["step"], x[key]) for x in r.log if _finite(x.get("step")) and _finite(x.get(key))]
                if pts:
                    ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1.2, marker="." if len(pts) < 30 else None,
                            label=r.name[:40])
            ax.set_title(f"{group}: {key}", fontsize=10)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
        for ax in row[len(keys):]:
            ax.axis("off")
        if len(runs) <= MAX_LEGEND:
            row[0].legend(fontsize=6)
    fig.suptitle("Training (log.jsonl): one row per run kind / unlearning method, each on its own scale")
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


MUSE_REQUEST_METRICS = (("knowmem_retain/rouge_l_f1", "KnowMem retain ↑ (utility)"),
                        ("knowmem_forget/rouge_l_f1", "KnowMem forget ↓"), ("verbmem_forget/rouge_l_f1", "VerbMem ↓"))


def _model_run(r: RunRecord) -> Optional[Path]:
    """The run directory whose final model (`<run>/model` or `<run>/adapter`) this unlearning run started from
    (`inputs.theta_ini`: the resolved absolute path unlearn records; else the configured `model`)."""
    model = str(r.inputs.get("theta_ini") or r.config.get("model") or "")
    p = Path(model)
    return p.parent.resolve() if model and p.name in ("model", "adapter") else None


def muse_request_series(records: list[RunRecord]) -> dict[str, dict[str, list[tuple[float, RunRecord]]]]:
    """MUSE scalability and sustainability (Shi et al. 2024, criteria 5 and 6) from unlearning runs with MUSE
    metrics, as {"scalability" | "sustainability": {line label: [(x, run), ...] sorted by x}}:

    * sustainability — chains of requests, each run starting from the previous request's model (a sweep's
      `model: "{run:i}/model"`): x = the request number (1 for the run that started from a model no unlearning
      run wrote), one line per chain;
    * scalability — runs that each start from that first model (request 1), per method: x = the forget-set size
      in documents (`inputs.n_forget`), drawn when a method has at least two sizes.
    """
    muse = [r for r in records if r.kind == "unlearn" and "muse" in r.metrics]
    by_path = {r.path.resolve(): r for r in muse}
    parent = {r.path.resolve(): by_path.get(_model_run(r)) for r in muse}
    children: dict[Path, list[RunRecord]] = {}
    for r in muse:
        if parent[r.path.resolve()] is not None:
            children.setdefault(parent[r.path.resolve()].path.resolve(), []).append(r)
    roots = [r for r in muse if parent[r.path.resolve()] is None]
    sust: dict[str, list[tuple[float, RunRecord]]] = {}
    for root in roots:
        chain, cur = [root], root
        while len(children.get(cur.path.resolve(), [])) == 1:
            cur = children[cur.path.resolve()][0]
            chain.append(cur)
        if len(chain) > 1:
            sust[f"{root.method}: {root.name}"[:40]] = [(float(i), r) for i, r in enumerate(chain, start=1)]
    scal: dict[str, list[tuple[float, RunRecord]]] = {}
    for r in roots:
        n = r.inputs.get("n_forget")
        if _finite(n):
            scal.setdefault(r.method, []).append((float(n), r))
    scal = {m: sorted(v, key=lambda t: t[0]) for m, v in scal.items() if len({x for x, _ in v}) > 1}
    return {k: v for k, v in (("scalability", scal), ("sustainability", sust)) if v}


def plot_muse_requests(records: list[RunRecord], out: str | Path) -> Optional[Path]:
    """KnowMem retain (utility), KnowMem forget and VerbMem against forget-set size (scalability) and request
    number (sustainability); a star at x = 0: the model the first request started from, when it was evaluated."""
    series = muse_request_series(records)
    if not series:
        return None
    by_path = {r.path.resolve(): r for r in records}
    plt = _plt()
    n = len(MUSE_REQUEST_METRICS)
    fig, axes = plt.subplots(len(series), n, figsize=(4.3 * n, 3.4 * len(series)), constrained_layout=True,
                             squeeze=False)
    for row, (kind, lines) in zip(axes, series.items()):
        for ax, (key, title) in zip(row, MUSE_REQUEST_METRICS):
            for i, (label, pts) in enumerate(lines.items()):
                xy = [(x, r.metric("muse", key)) for x, r in pts if _finite(r.metric("muse", key))]
                ax.plot([x for x, _ in xy], [y for _, y in xy], marker=MARKERS[i % len(MARKERS)], label=label)
                start = by_path.get(_model_run(pts[0][1]))
                if start is not None and _finite(start.metric("muse", key)):
                    ax.plot([0, xy[0][0]] if xy else [0], [start.metric("muse", key)] + [xy[0][1]] * bool(xy),
                            ls=":", color="grey", lw=1)
                    ax.scatter([0], [start.metric("muse", key)], marker="*", s=140, color="black", zorder=3,
                               label=f"before: {start.name}"[:40] if i == 0 else None)
            ax.set_xlabel("forget set size (documents)" if kind == "scalability" else "unlearning request")
            ax.set_title(f"{kind}: {title}", fontsize=10)
            ax.grid(True, alpha=0.3)
        if len(lines) <= MAX_LEGEND:
            row[0].legend(fontsize=7)
    fig.suptitle("MUSE scalability / sustainability (star at 0: the model before the first request)")
    return _save(fig, Path(out))


PLOTS = {"fq_vs_mu": plot_fq_vs_mu, "alpha_curves": plot_alpha_curves, "training": plot_training,
         "geffect": plot_geffect, "reveal": plot_reveal, "muse_requests": plot_muse_requests}


def all_plots(records: list[RunRecord], out_dir: str | Path) -> dict[str, Path]:
    """Every figure that has data, as `<out_dir>/<name>.png`."""
    out = {}
    for name, fn in PLOTS.items():
        p = fn(records, Path(out_dir) / f"{name}.png")
        if p is not None:
            out[name] = p
    return out
