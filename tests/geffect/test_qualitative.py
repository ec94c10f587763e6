"""Slow: the paper's qualitative GA finding on a tiny fine-tuned model (full script: tests/geffect/qualitative.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from unlearnkit.geffect import read_csv


@pytest.mark.slow
def test_ga_geffects_negative_and_growing(tmp_path):
    spec = importlib.util.spec_from_file_location("qualitative", Path(__file__).with_name("qualitative.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main([str(tmp_path), "--steps", "9", "--every", "3"])
    rows = read_csv(tmp_path / "ga" / "geffect" / "geffect.csv")
    total = lambda kind: [r["value"] for r in sorted(rows, key=lambda r: r["step"])
                          if r["group"] == "total" and r["kind"] == kind]
    e_u, e_r = total("unlearn"), total("retain")
    assert all(v < 0 for v in e_u) and all(v < 0 for v in e_r)
    assert abs(e_u[-1]) > abs(e_u[0]) and abs(e_r[-1]) > abs(e_r[0])
