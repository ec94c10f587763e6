"""The `unlearnkit` command. Thin: it parses `key=value` overrides and a YAML file, then calls a module.

    unlearnkit finetune model=tiny data=synthetic:train,people=200 run=runs/target
    unlearnkit info model=default data=tofu:forget01
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="unlearnkit: LLM unlearning — objectives, TOFU metrics, UIPE, G-effect, Reveal-and-Release.")

Overrides = typer.Argument(None, help="key=value settings (override the YAML file)")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with settings")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def finetune(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Fine-tune a target model (or a retain oracle, with a retain data spec)."""
    from .config import ConfigError, load_config
    from .data.records import DataError
    from .runs import RunLockedError
    from .train.finetune import FinetuneConfig, finetune as run_finetune
    from .train.hf_glue import DivergenceError

    _setup_logging()
    try:
        cfg = load_config(FinetuneConfig, config, overrides or [])
        summary = run_finetune(cfg)
    except DivergenceError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=3)
    except (ConfigError, DataError, ValueError, FileNotFoundError, RunLockedError) as exc:
        _fail(exc)
    typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def unlearn(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Unlearn a forget set from θ_ini: `method=npo model=<dir> forget=tofu:forget01 retain=tofu:retain99 params.beta=0.1`.

    The method's preset (unlearnkit/presets/methods/<method>.yaml, the TOFU protocol) is the base layer; `-c` YAML
    and key=value settings override it key by key; `preset=none` starts from the bare defaults instead.
    Multi-process: `accelerate launch -m unlearnkit.cli unlearn ...`.
    """
    import os

    from .config import ConfigError
    from .data.records import DataError
    from .presets import load_with_preset
    from .runs import RunLockedError
    from .train.hf_glue import DivergenceError
    from .train.unlearn import UnlearnConfig, unlearn as run_unlearn

    _setup_logging()
    try:
        cfg = load_with_preset(UnlearnConfig, config, overrides or [])
        summary = run_unlearn(cfg)
    except DivergenceError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=3)
    except (ConfigError, DataError, ValueError, FileNotFoundError, RunLockedError) as exc:
        _fail(exc)
    if os.environ.get("RANK", "0") == "0":
        typer.echo(json.dumps(summary, indent=2, default=str))


@app.command()
def info(overrides: Optional[List[str]] = Overrides):
    """Summarise a model (`model=…`) and/or a dataset (`data=…`)."""
    from .info import describe

    _setup_logging()
    opts = dict(o.split("=", 1) for o in (overrides or []) if "=" in o)
    unknown = set(opts) - {"model", "data"}
    if unknown:
        _fail(ValueError(f"unknown key(s) {sorted(unknown)}; info takes model=… and data=…"))
    try:
        typer.echo(describe(model=opts.get("model"), data=opts.get("data")))
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)


@app.command()
def demo(overrides: Optional[List[str]] = Overrides, quick: bool = typer.Option(False, "--quick", help="tiny model, about a minute"),
         config: Optional[str] = ConfigOpt):
    """The end-to-end offline demo on the default SmolLM2 (`--quick`: a tiny model)."""
    from .config import ConfigError, load_config
    from .experiments.demo import DemoConfig, run_demo

    _setup_logging()
    try:
        cfg = load_config(DemoConfig, config, list(overrides or []) + (["quick=true"] if quick else []))
        run_demo(cfg, echo=typer.echo)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(exc)


# --- geffect (owner: geffect/) ------------------------------------------------------------------------------
@app.command("geffect")
def geffect_cmd(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """G-effects of every checkpoint of an unlearning run: run=<dir>, optional groups=3|each, n_forget=16,
    n_retain=16, smooth=none|ema (see GEffectConfig) → <run>/geffect/*.csv, summary.json, <run>/plots/geffect_*.png."""
    from .config import ConfigError, load_config
    from .data.records import DataError
    from .geffect.run import GEffectConfig, geffect_run

    _setup_logging()
    try:
        cfg = load_config(GEffectConfig, config, overrides or [])
        if not cfg.run:
            raise ValueError("run=<dir> is required (an unlearning run directory with checkpoints/step-N/)")
        summary = geffect_run(cfg.run, method=cfg.method or None, model=cfg.model or None, forget=cfg.forget or None,
                              retain=cfg.retain or None, groups=cfg.groups, n_forget=cfg.n_forget,
                              n_retain=cfg.n_retain, retain_offset=cfg.retain_offset, batch_size=cfg.batch_size,
                              regulariser_offset=cfg.regulariser_offset,
                              smooth=cfg.smooth, term=cfg.term, per_instance=cfg.per_instance,
                              instance_method=cfg.instance_method, plots=cfg.plots, device=cfg.device or None)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(json.dumps({k: summary[k] for k in ("csv", "instances_csv", "groups", "plots") if k in summary},
                          indent=2))


@app.command("geffect-compare")
def geffect_compare_cmd(overrides: Optional[List[str]] = Overrides):
    """Several runs' G-effects on one figure: runs=a,b,c out=<png or folder>."""
    from .geffect.plots import compare

    _setup_logging()
    opts = dict(o.split("=", 1) for o in (overrides or []) if "=" in o)
    unknown = set(opts) - {"runs", "out"}
    if unknown or "runs" not in opts:
        _fail(ValueError(f"geffect-compare takes runs=a,b,c and out=<png or folder>; got {sorted(opts)}"))
    try:
        out = compare([r for r in opts["runs"].split(",") if r], opts.get("out", "geffect_compare.png"))
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(str(out))
# --- end geffect ---------------------------------------------------------------------------------------------


@app.command()
def extrapolate(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """UIPE on an unlearning run: evaluate α values, choose α automatically, optionally save θ_uipe."""
    from .config import ConfigError, load_config
    from .uipe.search import ExtrapolateConfig, run_extrapolate

    _setup_logging()
    try:
        cfg = load_config(ExtrapolateConfig, config, overrides or [])
        run_extrapolate(cfg, echo=typer.echo)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(f"table: {Path(cfg.run) / 'uipe' / 'alpha_search.csv'}; plot: {Path(cfg.run) / 'uipe' / 'tradeoff.png'}")


@app.command()
def evaluate(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Evaluate a run (TOFU suite or related-knowledge probe); writes <run>/eval/<suite>.json."""
    from .config import ConfigError, load_config
    from .eval.command import EvaluateConfig, run_evaluate
    from .eval.suite import format_summary

    _setup_logging()
    try:
        cfg = load_config(EvaluateConfig, config, overrides or [])
        metrics = run_evaluate(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(format_summary(metrics))
    typer.echo(f"written: {Path(cfg.run) / 'eval' / (cfg.suite + '.json')}")


# --- sweep and report (owner: experiments/sweep.py, report/) ----------------------------------------------
@app.command("sweep")
def sweep_cmd(sweep_file: str = typer.Argument(..., help="sweep YAML (see unlearnkit.experiments.sweep)"),
              overrides: Optional[List[str]] = typer.Argument(None, help="key=value settings of the sweep file"),
              workers: Optional[int] = typer.Option(None, "--workers", "-j", help="worker processes (spawned)"),
              emit_commands: bool = typer.Option(False, "--emit-commands", help="print one shell command per run"),
              dry_run: bool = typer.Option(False, "--dry-run", help="validate and list the runs; run nothing"),
              only: Optional[List[str]] = typer.Option(None, "--only", help="run only these (name, dir name or index)"),
              no_report: bool = typer.Option(False, "--no-report", help="skip the report at the end")):
    """Run a grid or list of runs of one command (+ evaluation), skipping completed ones; then a report.
    `--emit-commands` prints independent commands for a scheduler instead (e.g. one per Slurm array task)."""
    from .config import ConfigError
    from .experiments.sweep import emit_commands as emit, load_sweep, parse_only, run_sweep

    _setup_logging()
    try:
        spec = load_sweep(sweep_file, overrides or [])
        if emit_commands:
            for line in emit(spec):
                typer.echo(line)
            return
        record = run_sweep(spec, workers=workers, dry_run=dry_run, only=parse_only(only),
                           report=False if no_report else None, echo=typer.echo)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    if any(r.get("status") == "failed" for r in record.get("runs", [])):
        raise typer.Exit(code=1)


@app.command("report")
def report_cmd(args: List[str] = typer.Argument(..., help="run directories (or folders of them), then out=<dir> title=...")):
    """Tables (CSV/parquet, Markdown leaderboard), plots and a self-contained report.html from run directories."""
    from .report import build_report

    _setup_logging()
    opts = dict(a.split("=", 1) for a in args if "=" in a)
    paths = [a for a in args if "=" not in a]
    unknown = set(opts) - {"out", "title"}
    if unknown:
        _fail(ValueError(f"unknown key(s) {sorted(unknown)}; report takes run directories, out=<dir> and title=..."))
    try:
        written = build_report(paths, opts.get("out"), **({"title": opts["title"]} if "title" in opts else {}))
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(json.dumps({k: str(v) for k, v in written.items()}, indent=2))
# --- end sweep and report ------------------------------------------------------------------------------------


# --- reveal (owner: reveal/) --------------------------------------------------------------------------------
@app.command("reveal")
def reveal_cmd(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Reveal-and-Release: forget a target given only its name, with self-generated forget data and one
    orthogonal LoRA round per iteration. `target='entity:Alia Karo' | skill:code | behaviour:toxicity
    model=<dir|default> scorer=auto|entity_contrast|entity|code|toxicity|hf:<id> rounds=3 method=npo` (see RevealConfig)."""
    from .config import ConfigError, load_config
    from .data.records import DataError
    from .reveal.loop import RevealConfig, reveal_and_release

    _setup_logging()
    try:
        cfg = load_config(RevealConfig, config, overrides or [])
        summary = reveal_and_release(cfg)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(json.dumps(summary, indent=2, default=str))
# --- end reveal ----------------------------------------------------------------------------------------------


# --- experiment related-knowledge (owner: experiments/related_knowledge.py) --------------------------------
experiment_app = typer.Typer(no_args_is_help=True, help="Experiments that chain the building blocks.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("related-knowledge")
def related_knowledge_cmd(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """UIPE's design on synthetic people with a tiny model: `out=runs/rk people=50 quick=true threads=1 ...`
    → <out>/results.json, results.md, plots/*.png and one run directory per sub-run."""
    from .config import ConfigError, load_config
    from .data.records import DataError
    from .experiments.related_knowledge import RelatedKnowledgeConfig, run_related_knowledge

    _setup_logging()
    try:
        cfg = load_config(RelatedKnowledgeConfig, config, overrides or [])
        run_related_knowledge(cfg, echo=typer.echo)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
# --- end experiment related-knowledge ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    app(args=argv if argv is not None else sys.argv[1:], standalone_mode=True)


if __name__ == "__main__":
    main()
