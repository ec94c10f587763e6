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
        layers.append(read_yaml_layer(path))
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


def read_yaml_layer(path: Path):
    """OmegaConf.load, with a YAML syntax error, non-UTF-8 bytes or a non-mapping top level turned into a
    `ConfigError` naming the file and line (not a parser traceback)."""
    import yaml

    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or exc
        raise ConfigError(f"{where}: invalid YAML ({what}); fix the file (check indentation, brackets and quotes)") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          f"save the file as UTF-8") from None
    if not OmegaConf.is_dict(layer):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value) at the top level, "
                          f"got a {type(layer).__name__}")
    return layer


def to_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
