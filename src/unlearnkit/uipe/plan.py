"""Which α each tensor gets: a default α, an optional selection, and per-group α by regex.

Rules, applied to the tensor's name as it appears in the state dict / checkpoint
(`model.layers.3.mlp.down_proj.weight`); patterns are *searched* (`re.search`) in the name, so anchor
them (`^`, `$`, `\\.`) when a substring would match too much:

1. `select` given (one regex or a list, any may match) and the name matches none → α = 0, i.e. the
   tensor is left at θ_un bit-exactly.
2. otherwise the first `(regex, α)` of `group_alphas` that matches gives α (first match wins);
3. otherwise the default α.

Every pattern must decide at least one tensor; a pattern that matches nothing (or only tensors an
earlier group already claimed, or only unselected tensors) raises instead of silently doing nothing.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

GroupAlphas = Sequence[tuple[str, float]] | Mapping[str, float]


def layer_pattern(first: int, last: int) -> str:
    """Regex for decoder layers `first..last` inclusive, e.g. `layer_pattern(10, 20)` → `\\.layers\\.(10|…|20)\\.`."""
    if not (isinstance(first, int) and isinstance(last, int)) or first < 0 or last < first:
        raise ValueError(f"layer_pattern(first={first!r}, last={last!r}): need integers with 0 <= first <= last")
    return r"\.layers\.(" + "|".join(str(i) for i in range(first, last + 1)) + r")\."


def _check_alpha(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}={value!r}: α must be a finite number (UIPE: θ_un + α·(θ_un − θ_ini))")
    return float(value)


def _compile(pattern, what: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise TypeError(f"{what}={pattern!r}: expected a regex string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what}={pattern!r} is not a valid regex: {exc}") from None


@dataclass(frozen=True)
class AlphaPlan:
    """α per tensor name; build with `AlphaPlan.build(alpha, select, group_alphas)`."""

    alpha: float
    select: tuple[str, ...] | None = None
    groups: tuple[tuple[str, float], ...] = ()

    @classmethod
    def build(cls, alpha: float, select: str | Sequence[str] | None = None,
              group_alphas: GroupAlphas | None = None) -> "AlphaPlan":
        alpha = _check_alpha(alpha, "alpha")
        sel = None
        if select is not None:
            sel = (select,) if isinstance(select, str) else tuple(select)
            if not sel:
                raise ValueError("select=[]: an empty selection would change nothing; pass None to extrapolate "
                                 "every tensor")
            for p in sel:
                _compile(p, "select")
        groups: tuple[tuple[str, float], ...] = ()
        if group_alphas is not None:
            items = group_alphas.items() if isinstance(group_alphas, Mapping) else group_alphas
            out = []
            for item in items:
                if not (isinstance(item, (tuple, list)) and len(item) == 2):
                    raise TypeError(f"group_alphas entry {item!r}: expected a (regex, alpha) pair")
                _compile(item[0], "group_alphas regex")
                out.append((item[0], _check_alpha(item[1], f"group_alphas[{item[0]!r}]")))
            groups = tuple(out)
        return cls(alpha=alpha, select=sel, groups=groups)

    def decide(self, name: str) -> float:
        """α for one tensor name (0.0 = leave at θ_un)."""
        return self._decide(name)[0]

    def _decide(self, name: str) -> tuple[float, list[str], str | None]:
        """(α, matching select patterns, deciding group pattern or None)."""
        hits: list[str] = []
        if self.select is not None:
            hits = [p for p in self.select if re.search(p, name)]
            if not hits:
                return 0.0, hits, None
        for pattern, a in self.groups:
            if re.search(pattern, name):
                return a, hits, pattern
        return self.alpha, hits, None

    def assign(self, names: Iterable[str], what: str = "tensor") -> dict[str, float]:
        """α for every name; raises if a `select` or `group_alphas` pattern decides no name."""
        names = list(names)
        out: dict[str, float] = {}
        used: set[str] = set()
        for n in names:
            out[n], hits, group = self._decide(n)
            used.update(hits)
            if group is not None:
                used.add(group)
        unused = [p for p in (self.select or ()) if p not in used] + [p for p, _ in self.groups if p not in used]
        if unused:
            example = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            raise ValueError(
                f"pattern(s) {unused} decide no {what}: they match no name, or only names that are not selected "
                f"or that an earlier group already claimed (first match wins). Names look like: {example}. "
                f"Fix the regex or drop it.")
        return out

    def describe(self) -> dict:
        return {"alpha": self.alpha, "select": list(self.select) if self.select is not None else None,
                "group_alphas": [[p, a] for p, a in self.groups]}
