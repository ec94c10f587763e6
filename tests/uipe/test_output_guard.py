"""UIPE never writes over what it reads (issue 21.6): an output that is, contains or lies inside an input, or
replaces the run an input belongs to, is refused even with overwrite=True, and nothing is deleted."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from uipe_fixtures import make_model, perturbed

from unlearnkit.uipe.search import extrapolate_run


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture()
def runs(tmp_path):
    """root/ft (a finetune run: model/, checkpoints/step-1) and root/un (an unlearn run of root/ft/model)."""
    root = tmp_path / "runs"
    for name, kind, model in (("ft", "finetune", make_model(0)), ("un", "unlearn", perturbed(make_model(0)))):
        run = root / name
        model.save_pretrained(run / "model")
        model.save_pretrained(run / "checkpoints" / "step-1")
        record = {"kind": kind, "config": {"method": "ga", "model": str(root / "ft" / "model")}}
        if kind == "unlearn":
            record["inputs"] = {"theta_ini": str(root / "ft" / "model")}
        (run / "config.yaml").write_text(yaml.safe_dump(record))
    return root


@pytest.mark.parametrize("where", ["ft", "ft/model", "ft/checkpoints", "ft/checkpoints/step-1", "ft/model/sub",
                                   "un", "un/model", "un/checkpoints", "un/checkpoints/step-1", ".", ".."])
def test_output_overlapping_an_input_or_its_run_is_refused(runs, where):
    before = _tree_digest(runs.parent)
    with pytest.raises(ValueError, match="one of the inputs|would replace"):
        extrapolate_run(runs / "un", 0.5, out_dir=runs / where, overwrite=True)
    assert _tree_digest(runs.parent) == before   # nothing deleted, nothing written


def test_a_new_folder_inside_a_run_is_fine(runs):
    assert extrapolate_run(runs / "un", 0.5).parent == runs / "un" / "uipe"          # the default place
    out = extrapolate_run(runs / "un", 0.5, out_dir=runs / "ft" / "uipe-of-un", overwrite=True)
    assert (out / "uipe.json").is_file() and (runs / "ft" / "model" / "config.json").is_file()
