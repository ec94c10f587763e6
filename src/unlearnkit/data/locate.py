"""Where local copies of benchmark data live: `$UNLEARNKIT_<NAME>_DIR`, else `shared/data/<name>` found from
the working directory upwards (the layout of a checkout next to `../shared`). One rule for TOFU and MUSE, so
a user who sets up one benchmark's folder knows where the other's goes."""
from __future__ import annotations

import os
from pathlib import Path

from .records import DataError


def searched_dirs(name: str) -> list[Path]:
    """The `shared/data/<name>` folders looked for, from the working directory up (`<base>/shared/...` and
    `<base>/../shared/...` at each level), in the order they are tried."""
    out = []
    for base in (Path.cwd(), *Path.cwd().parents):
        out += [base / "shared" / "data" / name, base.parent / "shared" / "data" / name]
    return list(dict.fromkeys(out))


def shared_data_dir(env_var: str, name: str) -> Path | None:
    """`$env_var` if set, else the first existing folder of `searched_dirs(name)`, else None.

    A set variable that names no folder is an error: it would otherwise be taken for a hub id."""
    env = os.environ.get(env_var)
    if env:
        if not Path(env).is_dir():
            raise DataError(f"${env_var}={env!r} is not a folder; point it at a folder of the {name} data files "
                            f"or unset it")
        return Path(env)
    return next((cand for cand in searched_dirs(name) if cand.is_dir()), None)
