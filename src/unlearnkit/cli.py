"""The `unlearnkit` command. Thin: it parses `key=value` overrides and a YAML file, then calls a module.

    unlearnkit finetune model=tiny data=synthetic:train,people=200 run=runs/target
    unlearnkit info model=default data=tofu:forget01

Every command loads one config dataclass (`unlearnkit.config.load_config`: unknown keys, bare arguments and
wrong types are errors naming the key), calls one function and prints its result, through `_run_command`;
`unlearnkit <command> --help` lists that dataclass's settings from the fields' `help` metadata.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from typer.core import TyperCommand

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="unlearnkit: LLM unlearning — objectives, TOFU metrics, UIPE, G-effect, Reveal-and-Release.")

Overrides = typer.Argument(None, help="key=value settings (override the YAML file)")
ConfigOpt = typer.Option(None, "--config", "-c", help="YAML file with settings")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _fail(exc: Exception, code: int = 2) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


# -- one command body -----------------------------------------------------------------------------------------
def _is_divergence(exc: BaseException) -> bool:
    """A training run that diverged (exit 3, not 2). Looked up in sys.modules rather than imported: the class
    lives next to transformers (train/hf_glue), and it can only have been raised if that module is loaded, so
    `info`/`report` need not pay for the import."""
    mod = sys.modules.get("unlearnkit.train.hf_glue")
    return mod is not None and isinstance(exc, mod.DivergenceError)


def _run_command(load: Callable[[], Any], call: Callable[[Any], Any],
                 show: Optional[Callable[[Any, Any], None]] = None) -> None:
    """load config → call → show, with the shared error handling: a bad config, bad data, a missing file or a
    locked run directory exit 2 with a one-line error; a diverged training run exits 3."""
    from .config import ConfigError
    from .data.records import DataError
    from .runs import RunLockedError

    _setup_logging()
    try:
        cfg = load()
        result = call(cfg)
    except (ConfigError, DataError, ValueError, FileNotFoundError, RunLockedError) as exc:
        _fail(exc)
    except Exception as exc:
        if _is_divergence(exc):
            _fail(exc, code=3)
        raise
    if show is not None:
        show(cfg, result)


def _echo_json(_cfg: Any, result: Any) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


def _load(target: str, config: Optional[str], overrides: Optional[List[str]]) -> Callable[[], Any]:
    """A loader for `module:Class` (relative to unlearnkit) from `-c` YAML and key=value overrides."""
    def load():
        from .config import load_config
        return load_config(_resolve(target), config, list(overrides or []))
    return load


# -- `--help` lists the settings ------------------------------------------------------------------------------
def _resolve(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module, __package__), name)


def _show_default(f) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return json.dumps(value) if isinstance(value, str) and not value else str(value)


def settings_help(cls: type, prefix: str = "") -> list[str]:
    """One line per setting of config dataclass `cls`: `name = default  help`, from the fields' `help`
    metadata; a nested dataclass field is flattened into `outer.inner` lines (the key=value spelling). The
    command's own settings come first (model, data, method), then those it shares through a base class."""
    hints = typing.get_type_hints(cls)
    own = list(cls.__dict__.get("__annotations__", {}))   # in the command's own order, overrides included
    lines: list[str] = []
    for f in sorted(fields(cls), key=lambda f: own.index(f.name) if f.name in own else len(own)):
        kind = hints.get(f.name)
        if isinstance(kind, type) and is_dataclass(kind):
            lines += settings_help(kind, prefix=f"{prefix}{f.name}.")
            continue
        lines.append(f"  {prefix}{f.name} = {_show_default(f)}  {f.metadata.get('help', '')}".rstrip())
    return lines


def _settings_epilog(target: str) -> str:
    cls = _resolve(target)
    text = "Settings (key=value, or keys of the -c YAML file), with their defaults:\n" + "\n".join(settings_help(cls))
    if getattr(typer.core, "HAS_RICH", False):
        from rich.markup import escape   # help is rendered as Rich markup: `[ga, npo]` is not a tag
        return escape(text)
    return "\b\n" + text                 # plain click: keep the lines as they are (no re-wrapping)


class _SettingsCommand(TyperCommand):
    """A command whose help epilog is its config dataclass's settings, built when help is shown (importing the
    dataclass imports torch; the rest of the CLI should not pay for it)."""

    config_target = ""

    @property
    def epilog(self) -> str:
        return _settings_epilog(self.config_target)

    @epilog.setter
    def epilog(self, _value) -> None:   # click's __init__ assigns one; ours is computed
        pass


def _settings(target: str) -> type:
    """The command class for `@app.command(cls=...)` whose --help lists `target`'s ("module:Class") settings."""
    return type("SettingsCommand", (_SettingsCommand,), {"config_target": target})


# -- small configs of the commands that used to parse key=value by hand ---------------------------------------
@dataclass
class InfoConfig:
    """`unlearnkit info` settings."""

    model: str = field(default="", metadata={"help": "a model directory, `tiny` or `default` to summarise"})
    data: str = field(default="", metadata={"help": "a data spec (e.g. tofu:forget01) to summarise"})


@dataclass
class GEffectCompareConfig:
    """`unlearnkit geffect-compare` settings."""

    runs: str = field(default="", metadata={"help": "comma-separated run directories with geffect/ results (required)"})
    out: str = field(default="geffect_compare.png", metadata={"help": "the figure (.png) or a folder for it"})


@dataclass
class ReportConfig:
    """`unlearnkit report` settings (besides the run directories)."""

    out: str = field(default="", metadata={"help": "output folder (default: <first run directory>/report)"})
    title: str = field(default="unlearnkit report", metadata={"help": "title of leaderboard.md and report.html"})


# -- commands -------------------------------------------------------------------------------------------------
@app.command(cls=_settings(".train.finetune:FinetuneConfig"))
def finetune(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Fine-tune a target model (or a retain oracle, with a retain data spec)."""
    from .train.finetune import finetune as run_finetune

    _run_command(_load(".train.finetune:FinetuneConfig", config, overrides), run_finetune, _echo_json)


@app.command(cls=_settings(".train.unlearn:UnlearnConfig"))
def unlearn(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Unlearn a forget set from θ_ini: `method=npo model=<dir> forget=tofu:forget01 retain=tofu:retain99 params.beta=0.1`.

    The method's preset (unlearnkit/presets/methods/<method>.yaml, the TOFU protocol) is the base layer; `-c` YAML
    and key=value settings override it key by key; `preset=none` starts from the bare defaults instead.
    Multi-process: `accelerate launch -m unlearnkit.cli unlearn ...`. The defaults below are before the preset.
    """
    import os

    from .presets import load_with_preset
    from .train.unlearn import UnlearnConfig, unlearn as run_unlearn

    def show(cfg, summary):
        if os.environ.get("RANK", "0") == "0":
            _echo_json(cfg, summary)

    _run_command(lambda: load_with_preset(UnlearnConfig, config, overrides or []), run_unlearn, show)


@app.command(cls=_settings(".cli:InfoConfig"))
def info(overrides: Optional[List[str]] = Overrides):
    """Summarise a model (`model=…`) and/or a dataset (`data=…`)."""
    from .info import describe

    _run_command(_load(".cli:InfoConfig", None, overrides),
                 lambda cfg: describe(model=cfg.model or None, data=cfg.data or None),
                 lambda _cfg, text: typer.echo(text))


@app.command(cls=_settings(".experiments.demo:DemoConfig"))
def demo(overrides: Optional[List[str]] = Overrides, quick: bool = typer.Option(False, "--quick", help="tiny model, about a minute"),
         config: Optional[str] = ConfigOpt):
    """The end-to-end offline demo on the default SmolLM2 (`--quick`: a tiny model)."""
    from .experiments.demo import run_demo

    _run_command(_load(".experiments.demo:DemoConfig", config, list(overrides or []) + (["quick=true"] if quick else [])),
                 lambda cfg: run_demo(cfg, echo=typer.echo))


# --- geffect (owner: geffect/) ------------------------------------------------------------------------------
def _geffect(cfg):
    from .geffect.run import geffect_run

    if not cfg.run:
        raise ValueError("run=<dir> is required (an unlearning run directory with checkpoints/step-N/)")
    return geffect_run(cfg)


@app.command("geffect", cls=_settings(".geffect.run:GEffectConfig"))
def geffect_cmd(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """G-effects of every checkpoint of an unlearning run: run=<dir>, optional groups=3|each, n_forget=16,
    n_retain=16, smooth=none|ema (see GEffectConfig) → <run>/geffect/*.csv, summary.json, <run>/plots/geffect_*.png."""
    _run_command(_load(".geffect.run:GEffectConfig", config, overrides), _geffect,
                 lambda _cfg, s: _echo_json(_cfg, {k: s[k] for k in ("csv", "instances_csv", "groups", "plots") if k in s}))


def _geffect_compare(cfg: GEffectCompareConfig):
    from .geffect.plots import compare

    runs = [r for r in cfg.runs.split(",") if r]
    if not runs:
        raise ValueError("geffect-compare: runs=a,b,c is required (run directories with geffect/ results)")
    return compare(runs, cfg.out)


@app.command("geffect-compare", cls=_settings(".cli:GEffectCompareConfig"))
def geffect_compare_cmd(overrides: Optional[List[str]] = Overrides):
    """Several runs' G-effects on one figure: runs=a,b,c out=<png or folder>."""
    _run_command(_load(".cli:GEffectCompareConfig", None, overrides), _geffect_compare,
                 lambda _cfg, out: typer.echo(str(out)))
# --- end geffect ---------------------------------------------------------------------------------------------


@app.command(cls=_settings(".uipe.search:ExtrapolateConfig"))
def extrapolate(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """UIPE on an unlearning run: evaluate α values, choose α automatically, optionally save θ_uipe."""
    from .uipe.search import run_extrapolate

    _run_command(_load(".uipe.search:ExtrapolateConfig", config, overrides),
                 lambda cfg: run_extrapolate(cfg, echo=typer.echo),
                 lambda cfg, _r: typer.echo(f"table: {Path(cfg.run) / 'uipe' / 'alpha_search.csv'}; "
                                            f"plot: {Path(cfg.run) / 'uipe' / 'tradeoff.png'}"))


@app.command(cls=_settings(".eval.command:EvaluateConfig"))
def evaluate(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Evaluate a run (TOFU suite or related-knowledge probe); writes <run>/eval/<suite>.json."""
    from .eval.command import run_evaluate
    from .eval.suite import format_summary

    def show(cfg, metrics):
        typer.echo(format_summary(metrics))
        typer.echo(f"written: {Path(cfg.run) / 'eval' / (cfg.suite + '.json')}")

    _run_command(_load(".eval.command:EvaluateConfig", config, overrides), run_evaluate, show)


# --- sweep and report (owner: sweep.py, report/) ----------------------------------------------
@app.command("sweep", cls=_settings(".sweep:SweepConfig"))
def sweep_cmd(sweep_file: str = typer.Argument(..., help="sweep YAML (see unlearnkit.sweep)"),
              overrides: Optional[List[str]] = typer.Argument(None, help="key=value settings of the sweep file"),
              workers: Optional[int] = typer.Option(None, "--workers", "-j", help="worker processes (spawned)"),
              emit_commands: bool = typer.Option(False, "--emit-commands", help="print one shell command per run"),
              dry_run: bool = typer.Option(False, "--dry-run", help="validate and list the runs; run nothing"),
              only: Optional[List[str]] = typer.Option(None, "--only", help="run only these (name, dir name or index)"),
              no_report: bool = typer.Option(False, "--no-report", help="skip the report at the end")):
    """Run a grid or list of runs of one command (+ evaluation), skipping completed ones; then a report.
    `--emit-commands` prints independent commands for a scheduler instead (e.g. one per Slurm array task)."""
    from .sweep import emit_commands as emit, load_sweep, parse_only, run_sweep

    def call(spec):
        if emit_commands:
            for line in emit(spec):
                typer.echo(line)
            return {}
        return run_sweep(spec, workers=workers, dry_run=dry_run, only=parse_only(only),
                         report=False if no_report else None, echo=typer.echo)

    def show(_spec, record):
        if any(r.get("status") == "failed" for r in record.get("runs", [])):
            raise typer.Exit(code=1)

    _run_command(lambda: load_sweep(sweep_file, overrides or []), call, show)


def _report(paths: List[str], cfg: ReportConfig):
    from .report import build_report

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"report: {missing[0]!r} is neither a key=value setting nor an existing run "
                                f"directory (settings: out=<dir> title=...)")
    return build_report(paths, cfg.out or None, title=cfg.title)


@app.command("report", cls=_settings(".cli:ReportConfig"))
def report_cmd(args: List[str] = typer.Argument(..., help="run directories (or folders of them), then out=<dir> title=...")):
    """Tables (CSV/parquet, Markdown leaderboard), plots and a self-contained report.html from run directories.
    A bare argument must be an existing directory; key=value arguments are the settings below."""
    paths = [a for a in args if "=" not in a]
    _run_command(_load(".cli:ReportConfig", None, [a for a in args if "=" in a]), lambda cfg: _report(paths, cfg),
                 lambda _cfg, written: _echo_json(_cfg, {k: str(v) for k, v in written.items()}))
# --- end sweep and report ------------------------------------------------------------------------------------


# --- reveal (owner: reveal/) --------------------------------------------------------------------------------
@app.command("reveal", cls=_settings(".reveal.loop:RevealConfig"))
def reveal_cmd(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """Reveal-and-Release: forget a target given only its name, with self-generated forget data and one
    orthogonal LoRA round per iteration. `target='entity:Alia Karo' | skill:code | behaviour:toxicity
    model=<dir|default> scorer=auto|entity_contrast|entity|code|toxicity|hf:<id> rounds=3 method=npo` (see RevealConfig)."""
    from .reveal.loop import reveal_and_release

    _run_command(_load(".reveal.loop:RevealConfig", config, overrides), reveal_and_release, _echo_json)
# --- end reveal ----------------------------------------------------------------------------------------------


# --- experiment related-knowledge (owner: experiments/related_knowledge.py) --------------------------------
experiment_app = typer.Typer(no_args_is_help=True, help="Experiments that chain the building blocks.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("related-knowledge", cls=_settings(".experiments.related_knowledge:RelatedKnowledgeConfig"))
def related_knowledge_cmd(overrides: Optional[List[str]] = Overrides, config: Optional[str] = ConfigOpt):
    """UIPE's design on synthetic people with a tiny model: `out=runs/rk people=50 quick=true threads=1 ...`
    → <out>/results.json, results.md, plots/*.png and one run directory per sub-run."""
    from .experiments.related_knowledge import run_related_knowledge

    _run_command(_load(".experiments.related_knowledge:RelatedKnowledgeConfig", config, overrides),
                 lambda cfg: run_related_knowledge(cfg, echo=typer.echo))
# --- end experiment related-knowledge ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point. The process keeps freed memory for reuse (`allocator.keep_freed_memory`: no page
    faults on every step's new tensors; `UNLEARNKIT_KEEP_FREED_MEMORY=0` to opt out)."""
    from .allocator import keep_freed_memory

    keep_freed_memory()
    app(args=argv if argv is not None else sys.argv[1:], standalone_mode=True)


if __name__ == "__main__":
    main()
