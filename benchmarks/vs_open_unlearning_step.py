"""Unlearning step time: open-unlearning's trainer against `unlearnkit unlearn`, back to back in one run.

Same model folder, method, batch (4 forget + 4 retain rows, no accumulation), steps, precision (fp32 by
default) and thread count. open-unlearning runs through the shared harness
(`../shared/tools/open-unlearning/train_speed.sh`, with `$OU_HOME` from its setup); unlearnkit through its
CLI with `masking=open-unlearning template=plain` (open-unlearning's tokenisation). Each repeat runs every
method in both tools, alternating which goes first, so load from other processes hits both alike. Both
time a step the same way (a TrainerCallback from `on_step_begin` to `on_step_end`: forward, backward,
optimizer); the first step is left out of the median. Printed per method and repeat: s/step of each, the
ratio, both process wall times, unlearnkit's FLOP/s and share of the measured matmul peak, and the first
logged losses of both (each tool draws its own forget/retain rows, so only the NPO step-1 forget loss,
(2/β)·log 2 at π_θ = π_ref, is expected to agree).

    python benchmarks/vs_open_unlearning_step.py --model DIR [--methods GradDiff,NPO] [--steps 10]
        [--repeats 2] [--threads 1] [--precision fp32]

`main(argv)` is importable, so benchmarks/vs_open_unlearning.py can register it as its `step` subcommand.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO.parent / "shared" / "tools" / "open-unlearning"
METHODS = {"GradDiff": "grad_diff", "NPO": "npo", "SimNPO": "simnpo", "RMU": "rmu", "GradAscent": "ga"}


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--model", required=True, help="model folder both tools load (e.g. a SmolLM2 copy)")
    ap.add_argument("--methods", default="GradDiff,NPO", help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=2, help="paired runs per method")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both tools")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="fp32: both fp32; bf16: open-unlearning bf16=true, unlearnkit precision=auto")
    ap.add_argument("--ou-home", default=os.environ.get("OU_HOME", ""), help="open-unlearning setup ($OU_HOME)")
    ap.add_argument("--harness", default=str(HARNESS), help="folder of train_speed.sh")
    ap.add_argument("--out", default="", help="keep both tools' run folders here (default: a temp dir)")
    return ap


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _median_excl_first(steps: list[float]) -> float:
    return statistics.median(steps[1:] or steps)


def run_open_unlearning(args, method: str, out: Path) -> dict:
    """train_speed.sh METHOD STEPS; its timing.json (per-step seconds, logged losses) and the process wall."""
    env = {**_env(args.threads), "OUT_ROOT": str(out), "DTYPE": "float32",
           "BF16": "true" if args.precision == "bf16" else "false", "THREADS": str(args.threads)}
    if args.ou_home:
        env["OU_HOME"] = args.ou_home
    t0 = time.perf_counter()
    res = subprocess.run(["bash", str(Path(args.harness) / "train_speed.sh"), args.model, method, str(args.steps)],
                         env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"open-unlearning {method} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    timing = json.loads(next(out.glob(f"*_{method}_{args.steps}_*/timing.json")).read_text())
    return {"s_per_step": timing["median_step_s_excl_first"], "wall_s": wall,
            "losses": [x for x in timing.get("losses", []) if x is not None]}


def run_unlearnkit(args, method: str, out: Path) -> dict:
    """`unlearnkit unlearn` with open-unlearning's batch, tokenisation and step count; its summary and log."""
    run = out / f"uk_{method}"
    cmd = [sys.executable, "-m", "unlearnkit.cli", "unlearn", f"model={args.model}", f"method={METHODS[method]}",
           "forget=tofu:forget01", "retain=tofu:retain99", "forget_batch_size=4", "retain_batch_size=4",
           "grad_accum=1", f"max_steps={args.steps}", "warmup=0", "lr=1e-5", "save_steps=100000",
           "masking=open-unlearning", "template=plain", "logging_steps=1", f"run={run}", "overwrite=true",
           f"precision={'fp32' if args.precision == 'fp32' else 'auto'}"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"unlearnkit {method} failed:\n{res.stderr[-3000:]}")
    speed = json.loads((run / "unlearn.json").read_text())["throughput"]
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {"s_per_step": _median_excl_first(speed["step_s"]), "wall_s": wall, "peak_share": speed["peak_share"],
            "flops_per_s": speed["flops_per_s"], "losses": [r["loss"] for r in rows if "learning_rate" in r]}


def _row(method: str, rep: int, ou: dict, uk: dict) -> str:
    first = "n/a"
    if ou["losses"] and uk["losses"]:
        first = f"{ou['losses'][0]:.4f} / {uk['losses'][0]:.4f}"
    return (f"| {method} | {rep} | {ou['s_per_step']:.3f} | {uk['s_per_step']:.3f} | "
            f"{ou['s_per_step'] / uk['s_per_step']:.2f}× | {ou['wall_s']:.0f} / {uk['wall_s']:.0f} s | "
            f"{uk['flops_per_s'] / 1e9:.1f} GFLOP/s ({uk['peak_share']:.0%}) | {first} |")


def run(args) -> list[dict]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; expected some of {list(METHODS)}")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="uk_vs_ou_step_"))
    print(f"model={args.model} steps={args.steps} threads={args.threads} precision={args.precision} out={root}")
    print("| method | repeat | open-unlearning s/step | unlearnkit s/step | ratio | wall OU / UK | "
          "unlearnkit FLOP/s (peak share) | step-1 loss OU / UK |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for rep in range(args.repeats):
        for i, method in enumerate(methods):
            out = root / f"rep{rep}"
            out.mkdir(parents=True, exist_ok=True)
            order = ("ou", "uk") if (rep + i) % 2 == 0 else ("uk", "ou")
            got = {}
            try:
                for tool in order:
                    got[tool] = run_open_unlearning(args, method, out) if tool == "ou" else run_unlearnkit(args, method, out)
            except RuntimeError as exc:   # one failed pair (e.g. a killed process) does not lose the others
                print(f"| {method} | {rep} | failed: {str(exc).splitlines()[0]} |", flush=True)
                continue
            print(_row(method, rep, got["ou"], got["uk"]), flush=True)
            results.append({"method": method, "repeat": rep, **{k: v for k, v in got.items()}})
    for method in methods:
        ratios = [r["ou"]["s_per_step"] / r["uk"]["s_per_step"] for r in results if r["method"] == method]
        if not ratios:
            continue
        print(f"{method}: step ratio (open-unlearning / unlearnkit) median {statistics.median(ratios):.2f}× "
              f"over {len(ratios)} paired runs: {', '.join(f'{x:.2f}' for x in ratios)}")
    (root / "results.json").write_text(json.dumps(results, indent=1))
    return results


def main(argv: list[str] | None = None) -> None:
    ap = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
