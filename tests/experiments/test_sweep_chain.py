"""Sweep chains: `{run:i}` in a `runs:` entry names entry i's directory (MUSE sustainability: request k unlearns
from request k−1's model); resolved at planning, in the hash, validated, and the presets plan."""
from __future__ import annotations

from pathlib import Path

import pytest

from unlearnkit.config import ConfigError
from unlearnkit.sweep import SweepConfig, load_sweep, plan

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path, runs, **kw) -> SweepConfig:
    return SweepConfig(command="unlearn", out=str(tmp_path / "out"), report=False,
                       base={"model": "runs/target/model", "method": "npo", **kw}, runs=runs)


def test_run_reference_resolves_to_the_earlier_run_and_enters_the_hash(tmp_path):
    runs = [{"name": "req1", "forget": "tofu:forget01"}, {"name": "req2", "forget": "tofu:forget05",
                                                           "model": "{run:0}/model"}]
    a = plan(_spec(tmp_path, runs))
    assert [r.name for r in a] == ["req1", "req2"] and a[0].dir.name.startswith("req1-")
    assert a[1].settings["model"] == f"{a[0].dir}/model" and a[1].config["model"] == f"{a[0].dir}/model"
    assert a[1].after == (0,) and a[0].after == () and a[1].record()["after"] == [0]
    # a change upstream changes the downstream run's directory (its input is a different model)
    b = plan(_spec(tmp_path, [{**runs[0], "lr": 3.0e-5}, runs[1]]))
    assert b[0].hash != a[0].hash and b[1].hash != a[1].hash
    # with seeds, each seed's chain references its own seed's run
    s = _spec(tmp_path, runs)
    s.seeds = [0, 1]
    c = plan(s)
    assert [(r.seed, r.after) for r in c] == [(0, ()), (1, ()), (0, (0,)), (1, (1,))]
    assert c[3].settings["model"] == f"{c[1].dir}/model"


@pytest.mark.parametrize("ref", ["{run:1}", "{run:5}"])
def test_reference_to_a_later_or_missing_entry_is_an_error(tmp_path, ref):
    runs = [{"forget": "tofu:forget01", "model": f"{ref}/model"}, {"forget": "tofu:forget05"}]
    with pytest.raises(ConfigError, match=r"runs\[0\].*names runs\[\d\], which is not an earlier entry"):
        plan(_spec(tmp_path, runs))


@pytest.mark.parametrize("name,parts", [("muse_scal", ["1-1/4", "1-2/4", "1-3/4", "1-4/4"]),
                                        ("muse_sust", ["1/4", "2/4", "3/4", "4/4"])])
def test_muse_scal_and_sust_presets_plan(name, parts):
    runs = plan(load_sweep(REPO / "configs" / "experiments" / f"{name}.yaml"))
    assert [r.config["forget"].rsplit("part=", 1)[1] for r in runs] == parts
    if name == "muse_sust":   # each request from the previous one's model
        assert [r.after for r in runs] == [(), (0,), (1,), (2,)]
        assert all(r.config["model"] == f"{prev.dir}/model" for prev, r in zip(runs, runs[1:]))
    else:                     # every size from the same target
        assert {r.config["model"] for r in runs} == {"runs/muse/target/model"} and not any(r.after for r in runs)
