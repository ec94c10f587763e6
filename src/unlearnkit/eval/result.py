"""`MetricResult`: the one contract every metric returns — an aggregate, the per-item values and a definition.

Per-item values are kept (open-unlearning's `value_by_index` idea) so that distribution-level statistics
(the KS test of forget quality, ROC AUC) can be computed later from saved numbers without a model.
`to_json()` gives the `{"value", "definition", "n"}` record written to `<run>/eval/<suite>.json`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class MetricResult:
    """`value`: the aggregate; `per_item`: one number per question (None for set-level statistics);
    `definition`: the variant's name (e.g. `truth_ratio_forget[geometric]`); `n`: items behind `value`;
    `index`: each per-item value's row index in its dataset (the TOFU split), when the items are rows."""

    value: float
    definition: str
    n: int
    per_item: Sequence[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    index: Sequence[int] | None = None

    def __post_init__(self):
        if self.index is not None and (self.per_item is None or len(self.index) != len(self.per_item)):
            got = None if self.per_item is None else len(self.per_item)
            raise ValueError(f"MetricResult({self.definition}): {len(self.index)} indices for {got} per-item values")

    def value_by_index(self) -> dict[str, float | None] | None:
        """`{str(row index): per-item value}` (open-unlearning's `value_by_index` keys), or None without rows."""
        if self.index is None:
            return None
        return {str(int(i)): _clean(v) for i, v in zip(self.index, self.per_item)}

    def to_json(self, with_items: bool = False) -> dict[str, Any]:
        """`{"value", "definition", "n", **extra}`, plus `value_by_index` when the items are dataset rows (so a
        distribution statistic can be recomputed and two tools compared row by row), and the bare `per_item`
        list when `with_items`."""
        out: dict[str, Any] = {"value": _clean(self.value), "definition": self.definition, "n": int(self.n)}
        out.update(self.extra)
        by_index = self.value_by_index()
        if by_index is not None:
            out["value_by_index"] = by_index
        if with_items and self.per_item is not None:
            out["per_item"] = [_clean(v) for v in self.per_item]
        return out


def _clean(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v
