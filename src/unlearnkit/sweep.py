"""Sweeps (the infrastructure behind `unlearnkit sweep`): one YAML → many runs of one command (a grid or a list), each optionally evaluated, then a report.

    command: unlearn                  # a name in COMMANDS (unlearn, finetune; later extrapolate, reveal, ...)
    out: runs/sweep-npo               # parent folder of the run directories (default: runs/<yaml stem>)
    base:                             # settings shared by every run (keys of the command's config dataclass)
      model: runs/target/model
      forget: tofu:forget01
      retain: tofu:retain99
      max_steps: 20
    grid:                             # cartesian product (dotted keys reach into dict fields)
      method: [ga, npo]
      lr: [1.0e-5, 3.0e-5]
      params.beta: [0.1]
    # runs: [{method: ga, lr: 1.0e-5}, {method: npo, params: {beta: 0.1}}]   # or an explicit list
    # runs: [{name: req1, forget: ...}, {name: req2, forget: ..., model: "{run:0}/model"}]  # a chain (see below)
    seeds: [0, 1]                     # each run once per seed (sets the config's `seed`); default: base's seed
    evaluate:                         # optional: `unlearnkit evaluate` settings (eval.command.EvaluateConfig)
      suite: tofu                     #   for each run after it finishes; run= and model= are filled in, the
      oracle: runs/oracle             #   forget split and prompt format come from each run's record
                                      #   (oracle_stats: is accepted as an alias)
      limit: 40
    report: true                      # build <out>/report/ at the end

Every run's config is resolved (dataclass defaults ← the method's preset for `unlearn` (unlearnkit.presets) ← base
← entry ← seed, nested `params.*` keys one by one) and validated before any run starts:
an unknown key, an unknown method or a value of the wrong type is an error naming the key and the run.
Each run lives in `<out>/<readable name>-<hash8>`, where hash8 hashes the fully resolved config (without its
`run` path); `sweep_done.json` (written last, atomically) marks it complete and a rerun skips it;
`sweep_error.json` records a failure's traceback and the other runs go on. `<out>/sweep.json` lists every run.
Runs go sequentially or in N spawned worker processes; `emit_commands` prints one independent shell command per
run instead, for any scheduler (Slurm array jobs, GNU parallel, ...).

Chains: in a `runs:` entry, `{run:i}` inside a string setting is the directory of entry i (an earlier one, same
seed), so one run's output is the next one's input — MUSE's sustainability protocol unlearns request k from the
model of request k−1 (`model: "{run:0}/model"`). The reference is resolved at planning, so the hash of a run
covers its whole chain; a sweep with chains runs sequentially, in entry order, and a run whose input run failed
fails too. A `runs:` entry may set `name:` (the readable part of its directory name).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import re
import shlex
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields, is_dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

from .config import ConfigError, load_config, to_dict
from .objectives.registry import Registry
from .runs import SWEEP_DONE, SWEEP_ERROR, SWEEP_RECORD, write_json

log = logging.getLogger(__name__)

DONE, ERROR = SWEEP_DONE, SWEEP_ERROR   # the per-run marker (written last) and the failure record (runs.layout)


# -- the sweep file ------------------------------------------------------------------------------------------
@dataclass
class SweepConfig:
    """A sweep: one command, shared settings, a grid or a list of variations, seeds, an optional evaluation."""

    command: str = field(default="unlearn", metadata={"help": "the command each run executes (COMMANDS: unlearn, finetune)"})
    out: str = field(default="", metadata={"help": "parent folder of the run dirs (default: runs/<yaml file stem>)"})
    base: dict[str, Any] = field(default_factory=dict, metadata={"help": "settings shared by every run"})
    grid: dict[str, Any] = field(default_factory=dict, metadata={"help": "key: [values...]; the cartesian product"})
    runs: list[Any] = field(default_factory=list, metadata={"help": "an explicit list of per-run settings"})
    seeds: list[int] = field(default_factory=list, metadata={"help": "repeat each run once per seed (empty: base's)"})
    evaluate: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "evaluate each run after it: `unlearnkit evaluate` settings (EvaluateConfig; run/model filled in)"})
    workers: int = field(default=1, metadata={"help": "worker processes (1: sequential, in this process)"})
    report: bool = field(default=True, metadata={"help": "build <out>/report/ at the end"})

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers={self.workers}: must be >= 1")
        if self.grid and self.runs:
            raise ValueError("give either `grid:` (a cartesian product) or `runs:` (a list), not both")
        for k, v in self.grid.items():
            if not isinstance(v, (list, tuple)) or not v:
                raise ValueError(f"grid.{k}: expected a non-empty list of values, got {v!r}")
        for i, r in enumerate(self.runs):
            if not isinstance(r, dict):
                raise ValueError(f"runs[{i}]: expected a mapping of settings, got {r!r}")


# -- sweepable commands --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepCommand:
    """How the sweep runs one command: its config class and run function (imported lazily), its CLI name,
    the config field holding the run dir and the seed, and where its final model lands (for evaluation)."""

    name: str
    load: Callable[[], tuple[type, Callable[[Any], Any]]]
    model_dirs: tuple[str, ...] = ("model",)
    run_key: str = "run"
    seed_key: str = "seed"
    check: Optional[Callable[[dict], None]] = None  # extra validation of the merged settings (before the dataclass)
    presets: bool = False  # the method's preset (unlearnkit.presets) is the layer under every run's settings

    def config_class(self) -> type:
        return self.load()[0]

    def build(self, settings: dict) -> Any:
        """The config dataclass for one run's settings, exactly as the command line builds it."""
        if self.presets:
            from .presets import load_with_preset

            return load_with_preset(self.config_class(), base=settings)
        return load_config(self.config_class(), base=settings)

    def final_model(self, run_dir: Path) -> Optional[str]:
        for name in self.model_dirs:
            if (run_dir / name).is_dir():
                return str(run_dir / name)
        return None


COMMANDS: Registry[SweepCommand] = Registry("sweep command")


def register_command(cmd: SweepCommand) -> SweepCommand:
    COMMANDS.register(cmd.name)(cmd)
    return cmd


def _load_unlearn():
    from .train.unlearn import UnlearnConfig, unlearn
    return UnlearnConfig, unlearn


def _load_finetune():
    from .train.finetune import FinetuneConfig, finetune
    return FinetuneConfig, finetune


def _check_method(settings: dict) -> None:
    from .objectives import OBJECTIVES

    if "method" in settings:
        try:
            OBJECTIVES.get(settings["method"])
        except KeyError as exc:
            raise ConfigError(f"config key 'method': {exc}") from None


register_command(SweepCommand("unlearn", _load_unlearn, model_dirs=("model", "adapter"), check=_check_method,
                              presets=True))
register_command(SweepCommand("finetune", _load_finetune))


# -- planning: YAML → validated runs --------------------------------------------------------------------------
@dataclass
class PlannedRun:
    """One run of a sweep, fully resolved: its settings (what was set), config (every field) and directory."""

    index: int
    name: str
    hash: str
    dir: Path
    settings: dict            # base ← entry ← seed ← run (what the emitted command sets)
    config: dict              # the fully resolved config dataclass as a dict
    label: str                # where it came from: "grid {method: ga, lr: 0.0001}" or "runs[2]"
    seed: Any = None
    after: tuple[int, ...] = ()   # indices of the runs whose directories its settings name ({run:i})

    def record(self) -> dict:
        return {"index": self.index, "name": self.name, "hash": self.hash, "dir": str(self.dir), "seed": self.seed,
                "from": self.label, **({"after": list(self.after)} if self.after else {})}


def _expand(d: dict) -> dict:
    """{'params.beta': 1} → {'params': {'beta': 1}} (OmegaConf's dotted keys), recursively merged."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _expand(v)
        parts = str(k).split(".")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError(f"key {k!r}: {p!r} is not a mapping")
        if isinstance(v, dict) and isinstance(cur.get(parts[-1]), dict):
            cur[parts[-1]] = _merge(cur[parts[-1]], v)
        else:
            cur[parts[-1]] = v
    return out


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def config_hash(config: dict, run_key: str = "run") -> str:
    """sha256 (first 8 hex digits) of the resolved config without its run-dir field."""
    body = {k: v for k, v in config.items() if k != run_key}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        s = f"{v:g}"
    elif isinstance(v, (list, tuple)):
        s = "+".join(_fmt_value(x) for x in v)
    else:
        s = str(v)
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", s.split("/")[-1] if isinstance(v, str) else s).strip("_")
    return s or "x"


def readable_name(variation: dict, seed: Any = None, with_seed: bool = False) -> str:
    """`npo-lr3e-05-beta0.1-s1`: the method's value bare, other varied keys as <last key part><value>."""
    parts = []
    for k, v in variation.items():
        short = str(k).split(".")[-1]
        parts.append(_fmt_value(v) if short in ("method", "command") else f"{short}{_fmt_value(v)}")
    if with_seed:
        parts.append(f"s{seed}")
    name = "-".join(parts) or "run"
    return name[:80]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _variations(spec: SweepConfig) -> list[tuple[str, dict]]:
    if spec.grid:
        keys = list(spec.grid)
        out = []
        for combo in itertools.product(*(spec.grid[k] for k in keys)):
            var = dict(zip(keys, combo))
            out.append((f"grid {{{', '.join(f'{k}: {v}' for k, v in var.items())}}}", var))
        return out
    if spec.runs:
        return [(f"runs[{i}]", dict(r)) for i, r in enumerate(spec.runs)]
    return [("base", {})]


EVALUATE_ALIASES = {"oracle_stats": "oracle"}  # the evaluate_run argument name, accepted for EvaluateConfig's


def evaluate_settings(evaluate: dict, run_dir: str | Path) -> dict:
    """The `evaluate:` block as `EvaluateConfig` settings for one run (`run` set, aliases renamed)."""
    out = {EVALUATE_ALIASES.get(k, k): v for k, v in evaluate.items()}
    out["run"] = str(run_dir)
    return out


def check_evaluate(evaluate: dict) -> None:
    """The `evaluate:` block is `unlearnkit evaluate`'s settings (`EvaluateConfig`, without `run`): unknown keys
    and wrong types are errors naming the key."""
    if not evaluate:
        return
    from .eval.command import EvaluateConfig

    if "run" in evaluate:
        raise ConfigError("evaluate.run: set by the sweep (each run's own directory); remove it")
    try:
        load_config(EvaluateConfig, base=evaluate_settings(evaluate, "<run>"))
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"evaluate: {exc}") from None


RUN_REF = re.compile(r"\{run:(\d+)\}")


def resolve_run_refs(settings: Any, dirs: dict[int, PlannedRun], where: str) -> tuple[Any, set[int]]:
    """`{run:i}` in every string of `settings` → the directory of runs entry i (planned before, same seed);
    returns the new settings and the planned indices they name."""
    used: set[int] = set()

    def sub(m: re.Match) -> str:
        i = int(m.group(1))
        if i not in dirs:
            raise ConfigError(f"{where}: {m.group(0)} names runs[{i}], which is not an earlier entry of `runs:`")
        used.add(dirs[i].index)
        return str(dirs[i].dir)

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return RUN_REF.sub(sub, v) if isinstance(v, str) else v

    return walk(settings), used


def plan(spec: SweepConfig, out: str | Path | None = None) -> list[PlannedRun]:
    """Resolve and validate every run (nothing runs here): errors name the key and the grid entry / run."""
    cmd = COMMANDS.get(spec.command)
    cls = cmd.config_class()
    known = {f.name for f in fields(cls)} if is_dataclass(cls) else set()
    out = Path(out or spec.out or "runs/sweep")
    check_evaluate(dict(spec.evaluate))
    for k in spec.grid:
        top = str(k).split(".")[0]
        if top not in known:
            raise ConfigError(f"grid.{k}: unknown key {top!r} for command {spec.command!r}; known keys: "
                              f"{', '.join(sorted(known))}")
    base = _expand(dict(spec.base))
    seeds = list(spec.seeds) or [None]
    runs: list[PlannedRun] = []
    by_entry: dict[Any, dict[int, PlannedRun]] = {}   # seed -> runs entry index -> its planned run
    for entry, (label, variation) in enumerate(_variations(spec)):
        given_name = variation.pop("name", None) if spec.runs else None
        for seed in seeds:
            where = label + (f" seed {seed}" if seed is not None else "")
            settings = _merge(base, _expand(variation))
            if seed is not None:
                settings[cmd.seed_key] = seed
            settings.pop(cmd.run_key, None)
            settings, after = resolve_run_refs(settings, by_entry.setdefault(seed, {}), where)
            try:
                if cmd.check is not None:
                    cmd.check(settings)
                cfg = cmd.build(settings)
            except (ConfigError, ValueError, TypeError) as exc:
                raise ConfigError(f"{where}: {exc}") from None
            resolved = to_dict(cfg)
            h = config_hash(resolved, cmd.run_key)
            shown = {k: v for k, v in variation.items() if not spec.grid or len(spec.grid[k]) > 1}
            name = readable_name({"method": given_name} if given_name else shown, resolved.get(cmd.seed_key),
                                 with_seed=len(seeds) > 1)
            run_dir = out / f"{name}-{h}"
            settings[cmd.run_key] = str(run_dir)
            resolved[cmd.run_key] = str(run_dir)
            runs.append(PlannedRun(len(runs), name, h, run_dir, settings, resolved, where, resolved.get(cmd.seed_key),
                                   tuple(sorted(after))))
            by_entry[seed][entry] = runs[-1]
    seen: dict[str, str] = {}
    for r in runs:
        if r.hash in seen:
            raise ConfigError(f"{r.label} resolves to the same config as {seen[r.hash]} (hash {r.hash}); "
                              f"remove the duplicate")
        seen[r.hash] = r.label
    return runs


def load_sweep(path: str | Path, overrides: list[str] | tuple = ()) -> SweepConfig:
    """Read a sweep YAML (with `key=value` overrides on top); `out` defaults to runs/<file stem>."""
    spec = load_config(SweepConfig, path, list(overrides))
    if not spec.out:
        spec.out = str(Path("runs") / Path(path).stem)
    return spec


# -- executing one run ---------------------------------------------------------------------------------------
def _eval_settings(cmd: SweepCommand, run_dir: Path, evaluate: dict, planned: bool = False) -> dict:
    """EvaluateConfig settings for a run: its final model (model/ or adapter/) unless `model` is given;
    `planned`: the folder the run will write (for emitted commands, before it exists)."""
    kw = evaluate_settings(evaluate, run_dir)
    if kw.get("model") is None:
        final = cmd.final_model(run_dir)
        if final is None and planned:
            final = str(run_dir / cmd.model_dirs[0])
        if final is not None:
            kw["model"] = final
    return kw


def execute_run(command: str, settings: dict, evaluate: dict, meta: dict) -> dict:
    """Run one planned run (in this process or a worker): command, evaluation, then the `sweep_done.json` marker.

    Never raises for a failure of the run itself: the traceback goes to `sweep_error.json` and the status to
    the returned dict, so that the other runs go on.
    """
    cmd = COMMANDS.get(command)
    run_dir = Path(settings[cmd.run_key])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR).unlink(missing_ok=True)
    t0 = time.time()
    result = {"dir": str(run_dir), "name": meta.get("name"), "hash": meta.get("hash")}
    try:
        fn = cmd.load()[1]
        summary = fn(cmd.build(settings))
        metrics = None
        if evaluate:
            from .eval.command import EvaluateConfig, run_evaluate

            ecfg = load_config(EvaluateConfig, base=_eval_settings(cmd, run_dir, evaluate))
            metrics = {k: v.get("value") for k, v in run_evaluate(ecfg).items()}
        done = {**meta, "command": command, "evaluate": evaluate, "seconds": time.time() - t0,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "metrics": metrics,
                "summary": summary if isinstance(summary, dict) else None}
        write_json(run_dir / DONE, done)  # last: its presence means the run and its evaluation are complete
        return {**result, "status": "done", "seconds": done["seconds"]}
    except Exception as exc:  # noqa: BLE001 - recorded, and the sweep goes on (Ctrl-C and exits still stop it)
        err = {**meta, "command": command, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
               "seconds": time.time() - t0, "failed": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(run_dir / ERROR, err)
        log.error("run %s failed: %s (traceback in %s)", run_dir.name, err["error"], run_dir / ERROR)
        return {**result, "status": "failed", "error": err["error"], "seconds": err["seconds"]}


def is_done(run: PlannedRun, evaluate: dict) -> bool:
    """Complete: the marker exists and was written for the same evaluation settings."""
    p = run.dir / DONE
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("evaluate", {}) == evaluate
    except (OSError, json.JSONDecodeError):
        return False


# -- the sweep -----------------------------------------------------------------------------------------------
def run_sweep(spec: SweepConfig, *, workers: int | None = None, dry_run: bool = False, report: bool | None = None,
              only: Optional[list[str]] = None, echo: Callable[[str], None] = print) -> dict:
    """Validate every run, then run the ones not yet complete; write `<out>/sweep.json` and the report.

    `only`: run just these runs (names, name-hash dir names or 0-based indices), e.g. one Slurm array task
    (`--only $SLURM_ARRAY_TASK_ID`); it writes neither sweep.json nor the report (several tasks run at once):
    rerun the whole sweep afterwards, which skips every completed run and writes both.
    """
    runs = plan(spec)
    out = Path(spec.out)
    evaluate = dict(spec.evaluate)
    if only:
        wanted = set(map(str, only))
        runs = [r for r in runs if {str(r.index), r.name, r.dir.name, r.hash} & wanted]
        if not runs:
            raise ValueError(f"--only {sorted(wanted)}: no such run (see --dry-run for the names)")
    workers = workers or spec.workers
    if workers > 1 and any(r.after for r in runs):
        echo("sweep: runs use {run:i} (a chain): running them sequentially, in order")
        workers = 1
    todo = [r for r in runs if not is_done(r, evaluate)]
    status = {r.index: "skipped" for r in runs if r not in todo}
    for r in runs:
        echo(f"{'skip' if r.index in status else 'todo'}  {r.dir}  ({r.label})")
    if dry_run:
        return {"runs": [{**r.record(), "status": status.get(r.index, "todo")} for r in runs], "dry_run": True}
    out.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict] = {}
    jobs = [(spec.command, r.settings, evaluate, r.record()) for r in todo]
    if workers <= 1 or len(todo) <= 1:
        for r, job in zip(todo, jobs):
            echo(f"run   {r.dir}")
            results[r.index] = execute_run(*job)
            echo(f"{results[r.index]['status']:5s} {r.dir}")
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(execute_run, *job): r for r, job in zip(todo, jobs)}
            for fut in as_completed(futures):
                r = futures[fut]
                try:
                    results[r.index] = fut.result()
                except Exception as exc:  # a worker died (killed, out of memory): record and go on
                    results[r.index] = {"status": "failed", "error": f"worker: {type(exc).__name__}: {exc}"}
                    write_json(r.dir / ERROR, {**r.record(), "error": results[r.index]["error"],
                                               "traceback": traceback.format_exc()})
                echo(f"{results[r.index]['status']:5s} {r.dir}")
    record = {"command": spec.command, "out": str(out), "evaluate": evaluate, "seeds": list(spec.seeds),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "runs": [{**r.record(), "status": status.get(r.index) or results[r.index]["status"],
                        **({"error": results[r.index].get("error")} if r.index in results and
                           results[r.index]["status"] == "failed" else {})} for r in runs]}
    counts = {s: sum(1 for x in record["runs"] if x["status"] == s) for s in ("done", "skipped", "failed")}
    if only:  # one task of many (e.g. a Slurm array): the full sweep (all skipped) writes the record and report
        echo(f"sweep --only: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
        return record
    write_json(out / SWEEP_RECORD, record)
    echo(f"sweep: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed → {out / SWEEP_RECORD}")
    if spec.report if report is None else report:
        from .report import build_report

        paths = build_report([out], out / "report")
        record["report"] = str(paths.get("html"))
        echo(f"report: {paths.get('html')}")
    return record


# -- commands for a scheduler --------------------------------------------------------------------------------
def _cli_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_cli_value(x) for x in v) + "]"
    return str(v)


def _dotlist(d: dict) -> list[str]:
    return [shlex.quote(f"{k}={_cli_value(v)}") for k, v in _flat(d).items()]


def emit_commands(spec: SweepConfig, program: str = "unlearnkit") -> list[str]:
    """One independent shell line per run: `unlearnkit <command> key=value ... [&& unlearnkit evaluate run=...]`.

    Lines are validated like a sweep (errors before anything is printed); they write no sweep markers.
    """
    runs = plan(spec)
    evaluate = dict(spec.evaluate)
    lines = []
    for r in runs:
        line = " ".join([program, spec.command, *_dotlist(r.settings)])
        if evaluate:
            kw = _eval_settings(COMMANDS.get(spec.command), r.dir, evaluate, planned=True)
            line += " && " + " ".join([program, "evaluate", *_dotlist(kw)])
        lines.append(line)
    return lines


def parse_only(values: Optional[list[str]]) -> Optional[list[str]]:
    return [v for item in values or [] for v in str(item).split(",") if v] or None


__all__ = ["COMMANDS", "SweepCommand", "SweepConfig", "PlannedRun", "register_command", "load_sweep", "plan",
           "run_sweep", "execute_run", "emit_commands", "config_hash", "readable_name", "check_evaluate"]
