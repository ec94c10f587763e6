"""The one "did you mean" hint (unlearnkit.names), shared by registries, objective configs and scorers."""
from pathlib import Path

import unlearnkit
from unlearnkit.names import did_you_mean


def test_did_you_mean_names_the_closest_or_nothing():
    assert did_you_mean("rouge", ["rouge_l", "prob"]) == "; did you mean 'rouge_l'?"
    assert did_you_mean("zzz", ["rouge_l", "prob"]) == ";"
    assert did_you_mean(3, {"npo": 1}) == ";"  # non-str names and mappings are fine


def test_no_other_module_builds_its_own_hint():
    users = [p.name for p in Path(unlearnkit.__file__).parent.rglob("*.py") if "get_close_matches" in p.read_text()]
    assert users == ["names.py"]
