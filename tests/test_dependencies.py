"""pyproject.toml: packages only the tests use are in the `test` extra, not in every user's install."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: distribution name -> import name of the packages only tests (may) import
TEST_ONLY = {"scikit-learn": "sklearn", "pytest": "pytest", "hypothesis": "hypothesis"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


@pytest.mark.parametrize("dist", sorted(TEST_ONLY))
def test_test_only_packages_are_in_the_test_extra_and_imported_by_tests_alone(dist):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert dist not in _names(project["dependencies"]), f"{dist}: only tests use it, move it to the `test` extra"
    assert dist in _names(project["optional-dependencies"]["test"])
    pattern = re.compile(rf"^\s*(import|from)\s+{TEST_ONLY[dist]}\b", re.M)
    importers = [str(p.relative_to(REPO)) for folder in ("src", "scripts", "benchmarks")
                 for p in (REPO / folder).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert importers == [], f"{dist} is imported outside tests ({importers}): it belongs in `dependencies`"
