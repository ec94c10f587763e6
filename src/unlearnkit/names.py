"""`did_you_mean`: the one "unknown name" hint, so every registry, config and scorer error reads the same.

A typo in a name (objective, metric, hyper-parameter, scorer) is the commonest bad input; the error names
the closest known spelling (difflib) so the fix is one edit. Callers append the list of known names.
"""
from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest of `known` to `name`, or ";" when none is close.

    Written to sit between "unknown … 'name'" and " available: …" in an error message."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ";"
