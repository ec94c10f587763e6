"""unlearnkit against open-unlearning, back to back in one run, on one model folder: wall times, ratios, agreement.

    OU_HOME=/path/made/by/setup.sh python benchmarks/vs_open_unlearning.py eval MODEL_DIR \\
        --ou-retain RETAIN/TOFU_EVAL.json --uk-oracle RETAIN_RUN [--repeat 2] [--limit 32] [--max-new-tokens 200]

`eval`: open-unlearning's `eval.sh` (../shared/tools/open-unlearning) and `unlearnkit evaluate suite=tofu
masking=open-unlearning template=plain precision=fp32`, each as a whole process (start-up, model load, data,
scoring, generation, writing), alternating tool by tool for `--repeat` rounds; then every aggregate of the two
outputs side by side (`scripts/compare_open_unlearning.py`'s table) and every ratio. Both get the same thread
count (`--threads`, default: the inherited OMP_NUM_THREADS), batch size, forget split and retain statistics
(`--ou-retain`: the retain model's TOFU_EVAL.json for open-unlearning; `--uk-oracle`: the same model's unlearnkit
run or oracle_stats.json; without them both skip forget quality and PrivLeak uses the reference AUC 0.5).
`--limit N` evaluates the first N rows of every set in both tools (open-unlearning:
`<dataset>.hf_args.split=train[:N]` on each of its dataset paths), for quick checks; say so when quoting it.

Only ratios measured in one run mean anything: the machine's speed moves by tens of percent between runs.

Subcommands live in `SUBCOMMANDS` (name -> (add_arguments, run)); a module `vs_open_unlearning_<name>.py` beside
this one that defines `add_arguments(parser)` and `run(args) -> int` is picked up as subcommand `<name>`
(`step`: the unlearning step, benchmarks/vs_open_unlearning_step.py).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EVAL_SH = REPO.parent / "shared" / "tools" / "open-unlearning" / "eval.sh"
sys.path.insert(0, str(REPO / "scripts"))
from compare_open_unlearning import agreement, print_table, worst_diff  # noqa: E402


def ou_paths(ou_home: Path, forget: str) -> tuple[list[str], list[str]]:
    """open-unlearning's TOFU suite as hydra paths: (datasets with `hf_args`, generation_args nodes), read from its
    resolved job config so a limit / max_new_tokens override reaches every one of them."""
    import yaml

    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([str(ou_home / "venv" / "bin" / "python"), "src/eval.py", "experiment=eval/tofu/default",
                          "model=phi-1_5", f"forget_split={forget}", "--cfg", "job"],
                         cwd=ou_home / "open-unlearning", env=env, capture_output=True, text=True, check=True).stdout
    datasets, gens = [], []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "hf_args" and isinstance(value, dict) and "split" in value:
                datasets.append(path)
            elif key == "generation_args" and isinstance(value, dict) and "max_new_tokens" in value:
                gens.append(here)
            walk(value, here)

    lines = out.splitlines()  # start-up warnings (deepspeed's) come before the YAML
    start = next(i for i, line in enumerate(lines) if line[:1].isalpha() and ":" in line)
    walk(yaml.safe_load("\n".join(lines[start:])), "")
    return datasets, gens


def ou_overrides(args) -> list[str]:
    if args.limit is None and args.max_new_tokens == 200:
        return []
    datasets, gens = ou_paths(args.ou_home, args.forget)
    out = [f"{p}.hf_args.split='train[:{args.limit}]'" for p in datasets] if args.limit is not None else []
    return out + [f"{p}.max_new_tokens={args.max_new_tokens}" for p in gens]


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def timed(cmd: list[str], env: dict, log: Path, cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one whole process and its children; output to `log`; a failure stops the
    benchmark. CPU seconds are the steadier number on a shared machine (one thread each: wall ≈ CPU when quiet)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd).returncode
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if rc:
        raise SystemExit(f"{cmd[0]} … failed (rc={rc}); see {log}")
    return wall, cpu


def run_ou(args, out: Path, overrides: list[str]) -> tuple[float, float]:
    env = dict(os.environ, OU_HOME=str(args.ou_home), EVAL_BS=str(args.batch_size))
    if args.ou_retain:
        env["RETAIN_LOGS"] = str(args.ou_retain)
    if args.threads:
        env["THREADS"] = str(args.threads)
    return timed(["bash", str(EVAL_SH), str(args.model), str(out), args.forget, *overrides], env, out / "bench.log")


def run_uk(args, run: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, "-m", "unlearnkit.cli", "evaluate", f"run={run}", f"model={args.model}", "suite=tofu",
           f"forget={args.forget}", "masking=open-unlearning", "template=plain", "precision=fp32",
           f"batch_size={args.batch_size}", f"max_new_tokens={args.max_new_tokens}"]
    # no retain statistics: both tools skip forget quality (unlearnkit needs to be told; it writes oracle stats)
    cmd += [f"oracle={args.uk_oracle}"] if args.uk_oracle else ["save_oracle_stats=true"]
    cmd += [f"limit={args.limit}"] if args.limit is not None else []
    return timed(cmd, env, run / "bench.log")


def run_eval(args) -> int:
    """`--repeat` rounds of open-unlearning then unlearnkit; the agreement table of the last round; the ratios."""
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vs_ou_"))
    overrides = ou_overrides(args)
    print(f"model: {args.model}  forget={args.forget}  limit={args.limit}  max_new_tokens={args.max_new_tokens}  "
          f"batch={args.batch_size}  threads={args.threads or os.environ.get('OMP_NUM_THREADS', 'default')}  "
          f"work: {work}", flush=True)
    times = []
    for r in range(args.repeat):
        ou_out, uk_run = work / f"ou_{r}", work / f"uk_{r}"
        for d in (ou_out, uk_run):
            d.mkdir(parents=True, exist_ok=True)
        (w_ou, c_ou), (w_uk, c_uk) = run_ou(args, ou_out, overrides), run_uk(args, uk_run)
        times.append((w_ou, w_uk, c_ou, c_uk))
        print(f"round {r + 1}: wall open-unlearning {w_ou:7.1f} s  unlearnkit {w_uk:7.1f} s  ratio {w_ou / w_uk:5.2f}x"
              f"  |  CPU {c_ou:7.1f} s  {c_uk:7.1f} s  ratio {c_ou / c_uk:5.2f}x", flush=True)
    rows = agreement(json.loads((ou_out / "TOFU_EVAL.json").read_text()),
                     json.loads((uk_run / "eval" / "tofu.json").read_text()))
    print_table(rows)
    worst = worst_diff(rows)
    print(f"largest aggregate |diff|: {worst:.2e} (tolerance {args.tol:g})")
    for what, (a, b) in (("wall", (0, 1)), ("CPU", (2, 3))):
        ratios = [t[a] / t[b] for t in times]
        print(f"{what} ratios: {', '.join(f'{x:.2f}x' for x in ratios)}   median {statistics.median(ratios):.2f}x")
    return 0 if worst <= args.tol else 1


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="model folder both tools load (transformers 4.45 must load it: "
                                            "scripts/compare_open_unlearning.py prepare)")
    p.add_argument("--ou-home", type=Path, default=os.environ.get("OU_HOME"), help="default: $OU_HOME")
    p.add_argument("--ou-retain", type=Path, default=None, help="retain model's TOFU_EVAL.json (open-unlearning)")
    p.add_argument("--uk-oracle", default=None, help="retain model's unlearnkit run / oracle_stats.json")
    p.add_argument("--forget", default="forget01")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="first N rows of every set, both tools")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="both tools' thread count (default: inherited)")
    p.add_argument("--workdir", default=None, help="outputs (default: a new temporary folder)")
    p.add_argument("--tol", type=float, default=1e-4, help="exit 1 when an aggregate differs by more")


SUBCOMMANDS = {"eval": (add_eval_arguments, run_eval)}


def _plugins(folder: Path = HERE) -> dict:
    """`vs_open_unlearning_<name>.py` modules in `folder` that define `add_arguments` and `run`."""
    found = {}
    sys.path.insert(0, str(folder))
    for path in sorted(folder.glob("vs_open_unlearning_*.py")):
        try:
            mod = importlib.import_module(path.stem)
        except Exception as err:  # a broken plug-in must not take `eval` down with it
            print(f"[vs_open_unlearning] skipping {path.name}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        if hasattr(mod, "add_arguments") and hasattr(mod, "run"):
            found[path.stem.removeprefix("vs_open_unlearning_")] = (mod.add_arguments, mod.run)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    commands = {**SUBCOMMANDS, **_plugins()}
    for name, (add_arguments, _) in commands.items():
        add_arguments(sub.add_parser(name))
    args = parser.parse_args(argv)
    if getattr(args, "ou_home", "") is None:
        parser.error("--ou-home or $OU_HOME: the folder open-unlearning's setup.sh made")
    return commands[args.cmd][1](args)


if __name__ == "__main__":
    sys.exit(main())
