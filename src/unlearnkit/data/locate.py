"""Where local copies of benchmark data live: `$UNLEARNKIT_<NAME>_DIR`, else `shared/data/<name>` found from
the working directory upwards (the layout of a checkout next to `../shared`). One rule for TOFU and MUSE, so
a user who sets up one benchmark's folder knows where the other's goes."""
from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir(env_var: str, name: str) -> Path | None:
    """`$env_var` if set, else the first `shared/data/<name>` beside the working directory or one of its
    parents (either `<base>/shared/...` or `<base>/../shared/...`), else None."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path.cwd().parents):
        for cand in (base / "shared" / "data" / name, base.parent / "shared" / "data" / name):
            if cand.is_dir():
                return cand
    return None
