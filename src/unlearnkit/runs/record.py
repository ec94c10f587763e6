"""The typed run record: what a run directory says about how it was made, read by one function.

`config.yaml` holds the command's resolved config (`config:`), and an unlearning run adds `inputs:` (θ_ini's
resolved path, the method, its full hyper-parameters, the preset, the data specs it really read, the precision in
effect); the command's summary (`unlearn.json`, ...) is written last. Before this record, UIPE, the G-effect, the
report and the related-knowledge experiment each read those dicts with their own key fallbacks; now they read

    rec = read_run_record("runs/npo")
    rec.theta_ini, rec.method, rec.params, rec.forget, rec.forget_split, rec.prompt_format()

and the fallbacks (inputs before config: `inputs.theta_ini` is resolved against the run's cwd, `config.model`
may be relative to another) live here once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from .layout import CONFIG_FILE, SUMMARY_FILES

TOFU_PREFIX = "tofu:"


@dataclass(frozen=True)
class RunRecord:
    """One run directory's record, typed. Missing keys are None (or empty), never guessed.

    `config` / `inputs` / `summary` keep the raw mappings for the few readers that need a key not typed here."""

    path: Path
    kind: Optional[str] = None            # unlearn | finetune | reveal | ... (None: no config.yaml)
    seed: Any = None
    theta_ini: Optional[str] = None       # the model the run started from (inputs.theta_ini, else config.model)
    method: Optional[str] = None          # the objective's name (unlearn runs)
    params: Mapping[str, Any] = field(default_factory=dict)     # the method's params as configured
    objective: Mapping[str, Any] = field(default_factory=dict)  # its resolved config (all fields, inputs.objective)
    preset: Any = None                    # the preset the config started from (inputs.preset, else config.preset)
    forget: Optional[str] = None          # forget data spec, e.g. "tofu:forget05"
    retain: Optional[str] = None          # retain data spec as configured
    trained_retain: str = ""              # the retain spec the run really read ("" when its method used none)
    template: Optional[str] = None        # prompt format as the run used it (None: the command's default)
    masking: Optional[str] = None
    max_length: Optional[int] = None
    precision: Optional[str] = None       # in effect (inputs.precision), else as configured
    config: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def forget_split(self) -> Optional[str]:
        """The TOFU split of a `tofu:<split>` forget spec ("forget05"), else None (another data source)."""
        spec = self.forget or ""
        return spec[len(TOFU_PREFIX):] or None if spec.startswith(TOFU_PREFIX) else None

    @property
    def prompt_settings(self) -> dict[str, Any]:
        """The prompt-format keys the run recorded (template, masking, max_length), only those it has."""
        return {k: v for k, v in (("template", self.template), ("masking", self.masking),
                                  ("max_length", self.max_length)) if v is not None}

    def prompt_format(self, **defaults: Any):
        """The run's `PromptFormat`; `defaults` fill the keys the run did not record."""
        from ..data.collate import PromptFormat

        return PromptFormat(**{**defaults, **self.prompt_settings})


def _load_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc}); restore the file or rerun the command that wrote it") \
            from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping (kind, config, ...), got {type(raw).__name__}; restore the "
                         "file or rerun the command that wrote it")
    return raw


def _load_summary(path: Path, kind: Optional[str]) -> dict:
    name = SUMMARY_FILES.get(kind or "")
    if name is None or not (path / name).is_file():
        return {}
    try:
        data = json.loads((path / name).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}   # a half-written summary: the run did not finish
    return data if isinstance(data, dict) else {}


def _int_or_none(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def read_run_record(path: str | Path, missing_ok: bool = False) -> RunRecord:
    """The record of the run directory `path`, from its config.yaml (and summary, when the run finished).

    FileNotFoundError when `path` holds no config.yaml (with `missing_ok`: an empty record, kind None);
    ValueError naming the file when it is not a YAML mapping."""
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        if missing_ok:
            return RunRecord(path=path)
        raise FileNotFoundError(f"{path}: not a run directory (no {CONFIG_FILE})")
    raw = _load_yaml(cfg_path)
    cfg, inputs = dict(raw.get("config") or {}), dict(raw.get("inputs") or {})
    kind = raw.get("kind")
    return RunRecord(
        path=path, kind=None if kind is None else str(kind), seed=raw.get("seed"),
        theta_ini=inputs.get("theta_ini") or cfg.get("model"), method=inputs.get("method") or cfg.get("method"),
        params=dict(cfg.get("params") or {}), objective=dict(inputs.get("objective") or {}),
        preset=inputs.get("preset") or cfg.get("preset"), forget=inputs.get("forget") or cfg.get("forget"),
        retain=cfg.get("retain"),
        trained_retain=inputs["retain"] if "retain" in inputs else (cfg.get("retain") or ""),
        template=cfg.get("template"), masking=cfg.get("masking"), max_length=_int_or_none(cfg.get("max_length")),
        precision=inputs.get("precision") or cfg.get("precision"), config=cfg, inputs=inputs,
        summary=_load_summary(path, None if kind is None else str(kind)))
