"""Method presets: each unlearning method's protocol settings, shipped inside the package.

A preset is the base layer of every `unlearnkit unlearn` run and of every unlearn sweep cell, so that
`method=npo` alone trains the NPO of the papers (β = 0.1 with its retain NLL term, TOFU's lr, batch and
schedule), not the bare defaults of the objective's dataclass. The layers, each overriding the one before
it key by key (nested `params.*` keys one by one, too):

    UnlearnConfig defaults ← presets/methods/<method>.yaml ← base (a sweep's base + grid entry)
        ← -c file ← key=value

`preset=auto` (what an absent `preset` key means) takes the method's own preset; `preset=none` skips the
layer; `preset=<name>` names one explicitly (it must be the method's). The resolved name is written back
into the config, so a run's `config.yaml` records which preset supplied its values, and `describe` says
which of them the user changed.

The files live in `unlearnkit/presets/methods/*.yaml` (package data, read through `importlib.resources`,
so they work from an installed wheel); `configs/methods` in a checkout is a link to the same folder.
"""
from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import ConfigError, load_config, read_yaml_layer

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

T = TypeVar("T")

FOLDER = "methods"
AUTO, NONE = "auto", "none"


def _folder() -> Traversable:
    return resources.files(__name__) / FOLDER


def preset_names() -> list[str]:
    """Every packaged preset, by name (= the method it configures)."""
    return sorted(p.name[:-len(".yaml")] for p in _folder().iterdir() if p.name.endswith(".yaml"))


def preset_file(name: str) -> Traversable:
    """The packaged YAML of preset `name`; an unknown name is an error listing the known ones."""
    path = _folder() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset={name!r}: no such preset; available: {', '.join(preset_names())}, "
                          f"or 'auto' (the method's own) or 'none'")
    return path


def load_preset(name: str) -> dict:
    """Preset `name` as a dict (its `method` key equals `name`)."""
    path = preset_file(name)
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict) or values.get("method") != name:
        raise ConfigError(f"preset file unlearnkit/presets/{FOLDER}/{name}.yaml: expected a mapping with "
                          f"method: {name}; fix the packaged file")
    return values


def check_recorded(name: str) -> None:
    """A config object's `preset` must name what was applied: a packaged preset or 'none' ('auto' is resolved
    by `load_with_preset`, which the CLI and sweeps use; a dataclass built directly is taken as given)."""
    if name == AUTO:
        raise ConfigError("preset='auto' is resolved while loading (unlearnkit.presets.load_with_preset, used by "
                          "the CLI and sweeps); a config built directly in Python is taken as given: set "
                          "preset='none', or build it with load_with_preset(UnlearnConfig, base={...})")
    if name != NONE:
        preset_file(name)


def _user_layers(yaml_path: str | Path | None, overrides: Sequence[str], base: dict | None) -> dict:
    """What the user set (base ← YAML ← overrides) as a plain dict, unvalidated: only read for method/preset."""
    layers = [OmegaConf.create(base or {})]
    if yaml_path is not None and Path(yaml_path).is_file():
        layers.append(read_yaml_layer(Path(yaml_path)))  # a bad file is a named error, as in load_config
    layers.append(OmegaConf.from_dotlist([o for o in overrides if "=" in o]))
    return OmegaConf.to_container(OmegaConf.merge(*layers), resolve=True)


def select_preset(user: dict, default_method: str) -> str:
    """The preset name for these user settings, or 'none'. `preset=<name>` must match the chosen method."""
    wanted = str(user.get("preset", AUTO))
    method = str(user.get("method", wanted if wanted not in (AUTO, NONE) else default_method))
    if wanted == NONE:
        return NONE
    if wanted == AUTO:
        return method if method in preset_names() else NONE
    preset_file(wanted)  # unknown name → error
    if wanted != method:
        raise ConfigError(f"preset={wanted!r} configures method {wanted!r}, not method={method!r}: drop preset= "
                          f"(the method's own preset is used) or set method={wanted}")
    return wanted


def load_with_preset(cls: type[T], yaml_path: str | Path | None = None, overrides: Sequence[str] = (),
                     base: dict | None = None) -> T:
    """`load_config(cls, ...)` with the method's preset as the lowest layer above the dataclass defaults.

    `cls` needs `method` and `preset` fields (UnlearnConfig). The chosen preset's name is set as `preset`.
    """
    overrides = list(overrides)
    try:
        user = _user_layers(yaml_path, overrides, base)
    except OmegaConfBaseException:  # malformed input: load_config reports it with the key
        return load_config(cls, yaml_path, overrides, base)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    name = select_preset(user, str(defaults["method"]))
    layer = {} if name == NONE else load_preset(name)
    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(layer), OmegaConf.create(base or {})))
    return load_config(cls, yaml_path, overrides + [f"preset={name}"], base=merged)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def describe(config: dict) -> dict | None:
    """For a run's record: the preset a resolved config came from, its file, and the keys set differently.

    None when the config names no preset (`preset: none`, or a config built directly in Python).
    """
    name = config.get("preset", NONE)
    if name in (None, NONE, AUTO) or name not in preset_names():
        return None
    values, final = _flat(load_preset(name)), _flat(config)
    changed = {k: {"preset": v, "used": final.get(k)} for k, v in values.items() if final.get(k) != v}
    return {"name": name, "file": f"unlearnkit/presets/{FOLDER}/{name}.yaml", "overridden": changed}


__all__ = ["AUTO", "NONE", "preset_names", "preset_file", "load_preset", "check_recorded", "select_preset",
           "load_with_preset", "describe"]
