"""Config dataclasses loaded from YAML with `key=value` overrides (OmegaConf), strictly typed.

An unknown key, or a value of the wrong type, is an error that names the key before anything runs.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    pass


def load_config(cls: type[T], yaml_path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict | None = None) -> T:
    """Build `cls` from defaults, then `base`, then a YAML file, then `key=value` overrides."""
    schema = OmegaConf.structured(cls)
    layers = []
    if base:
        layers.append(OmegaConf.create(base))
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        layers.append(OmegaConf.load(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    try:
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(schema, *layers)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
        known = ", ".join(f.name for f in fields(cls)) if is_dataclass(cls) else ""
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"config key {key!r}: {msg}" + (f" (known keys: {known})" if "not in" in msg else "")) from None


def to_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
