"""Tables (`results.md`) and plots (`plots/*.png`) of the related-knowledge experiment's `results.json`
(experiments/related_knowledge.py writes it)."""
from __future__ import annotations

import math
from pathlib import Path

from ..markdown import markdown_table


def _f(x, nd=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


PROBE_COLS = [("target p", "forget/target/probability"), ("target rouge", "forget/target/rouge_l_recall"),
              ("target recall", "forget/target/value_recall"), ("related p", "forget/related/probability"),
              ("related recall", "forget/related/value_recall"), ("multihop p", "forget/multihop/probability"),
              ("multihop rouge", "forget/multihop/rouge_l_recall"), ("multihop recall", "forget/multihop/value_recall"),
              ("chain", "forget/chain_recovery"), ("utility", "utility"), ("retain world p", "retain/world/probability")]


def results_markdown(res: dict) -> str:
    s = res["setup"]
    parts = [f"# Related-knowledge experiment (UIPE design, toy scale)\n\n{s['model']}; {s['people']} people "
             f"({s['forget_people']} forget, {s['retain_people']} retain).\n"]
    ft = res["finetune"]
    parts.append(markdown_table(["model", "data", "records", "steps", "recall after fine-tuning"],
                        [[k, s["specs"]["p1" if k == "P1" else "p2"], str(v["records"]), str(v["steps"]),
                          _f(v.get("recall_after"))] for k, v in ft.items()]))
    parts.append("\n## 1. Reconstruction (Mechanism 1)\n\nForget people; `recall` = greedy answer contains the value "
                 "(target, multi-hop) or the clue (related); `chain` = related answer names the clue and the world "
                 "answer names the value; utility = retain people's probability on the kinds the model was trained on.\n")
    parts.append(markdown_table(["model"] + [c for c, _ in PROBE_COLS],
                        [[r["model"]] + [_f(r["metrics"].get(k)) for _, k in PROBE_COLS]
                         for r in res["reconstruction"]["rows"]]))
    g = res["gradient_similarity"]
    parts.append(f"\n## 2. Gradient similarity (Mechanism 2)\n\nCosine of {g['gradient']} on P1 between a target fact "
                 f"and another fact, {g['people']} people; mean and 95% t-interval.\n")
    for group, desc in g["groups"].items():
        parts.append(f"\n**{group}** ({desc})\n\n" + markdown_table(
            ["relation to the target", "mean cos", "95% CI", "pairs"],
            [[r["relation"], _f(r["mean"], 4), f"[{_f(r['ci_low'], 4)}, {_f(r['ci_high'], 4)}]", str(r["n"])]
             for r in g[group]["table"]]))
    u = res["uipe"]
    parts.append(f"\n## 3. Base vs UIPE vs trained longer (P1)\n\nbest α: lowest forget score (mean of target, related "
                 f"and multi-hop probability) with utility ≥ {u['utility_floor']}·utility(θ_un), grid {u['alphas']}; "
                 f"automatic α: held-out retain probability within {u['tolerance']:.0%} of θ_un's; trained longer: "
                 f"continue from θ_un until ‖θ − θ_ini‖ first reaches ‖θ_uipe − θ_ini‖.\n")
    cols = [("score", "forget/score")] + PROBE_COLS
    rows = []
    for method, r in u["methods"].items():
        for name, v in r["variants"].items():
            if "metrics" not in v:
                rows.append([method, name, "–", "–", "–"] + ["–"] * len(cols))
                continue
            extra = f"{v['extra_steps']}{'' if v.get('reached') else ' (not reached)'}" if "extra_steps" in v else "–"
            rows.append([method, name, _f(v["alpha"], 2), _f(v["norm"], 3), extra]
                        + [_f(v["metrics"].get(k)) for _, k in cols])
    parts.append(markdown_table(["method", "variant", "α", "‖θ − θ_ini‖", "extra steps"] + [c for c, _ in cols], rows))
    parts.append("\n### α grid per method\n")
    for method, r in u["methods"].items():
        parts.append(f"\n**{method}** (auto α = {_f(r['auto_alpha'], 3)}, {r['auto']['stopped']})\n\n" + markdown_table(
            ["α", "norm", "score", "target p", "related p", "multihop p", "utility"],
            [[a, _f(v["norm"]), _f(v["forget/score"]), _f(v["forget/target/probability"]),
              _f(v["forget/related/probability"]), _f(v["forget/multihop/probability"]), _f(v["utility"])]
             for a, v in r["grid"].items()]))
    parts.append(f"\nTime: {', '.join(f'{k} {v:.0f}s' for k, v in res['seconds'].items())}.\n")
    return "\n".join(parts) + "\n"


def write_plots(res: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    # reconstruction: forget probabilities per model
    rows = res["reconstruction"]["rows"]
    kinds = ["target", "related", "multihop"]
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(rows)
    for j, r in enumerate(rows):
        ax.bar([i + j * w for i in range(len(kinds))], [r["metrics"][f"forget/{k}/probability"] for k in kinds], w,
               label=r["model"])
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(kinds))], kinds)
    ax.set_ylabel("forget people: answer probability")
    ax.set_title("Reconstruction: P1 (targets + related) vs P2 (targets only)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(folder / "reconstruction.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # gradient similarity
    g = res["gradient_similarity"]
    groups = list(g["groups"])
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        t = g[group]["table"]
        means = [r["mean"] for r in t]
        err = [[r["mean"] - r["ci_low"] for r in t], [r["ci_high"] - r["mean"] for r in t]]
        ax.barh(range(len(t)), means, xerr=err, color="tab:blue", capsize=3)
        ax.set_yticks(range(len(t)), [r["relation"] for r in t], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("cos(∇ log p(target), ∇ log p(other))")
        ax.set_title(f"P1 gradients ({group})")
    fig.tight_layout()
    paths.append(folder / "gradient_similarity.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # base vs UIPE vs longer: utility vs forget score
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {"base": "o", "uipe_best": "*", "uipe_auto": "P", "longer_best": "s", "longer_auto": "D"}
    for c, (method, r) in enumerate(res["uipe"]["methods"].items()):
        color = f"C{c}"
        grid = r["grid"]
        ax.plot([v["utility"] for v in grid.values()], [v["forget/score"] for v in grid.values()], "-", color=color,
                alpha=0.4)
        for name, v in r["variants"].items():
            if "metrics" in v:
                ax.scatter(v["metrics"]["utility"], v["metrics"]["forget/score"], marker=markers.get(name, "x"),
                           color=color, s=60, label=f"{method} {name}")
    ax.set_xlabel("utility (retain people's probability)")
    ax.set_ylabel("forget score (mean target/related/multi-hop probability)")
    ax.set_title("Base vs UIPE vs trained longer (lower-right is better)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(folder / "uipe_vs_longer.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
