"""Imports point down the diagram (shared/DESIGN.md §2): evaluation, UIPE, the G-effect, reports and the
objectives read run directories through the run layer and never import the training package.

Checked on what Python actually loads (every module of each package imported in a fresh interpreter, then
`sys.modules` inspected), not on the source text, so a chain through a third module is caught too."""
import json
import subprocess
import sys

PACKAGES = ["objectives", "eval", "uipe", "geffect", "report"]

# One interpreter for speed: the packages are imported one after another, and the first one after which
# `unlearnkit.train` is loaded is the one that pulled it in.
PROBE = """
import importlib, json, pkgutil, sys
culprits = {}
for name in sys.argv[1:]:
    pkg = importlib.import_module("unlearnkit." + name)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
    loaded = sorted(m for m in sys.modules if m == "unlearnkit.train" or m.startswith("unlearnkit.train."))
    if loaded:
        culprits[name] = loaded
        break
print(json.dumps(culprits))
"""


def test_lower_layers_never_import_train():
    res = subprocess.run([sys.executable, "-c", PROBE, *PACKAGES], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    culprits = json.loads(res.stdout.strip().splitlines()[-1])
    assert culprits == {}, f"importing unlearnkit.<package> loaded the training package: {culprits}; read runs " \
                           f"through unlearnkit.runs"
