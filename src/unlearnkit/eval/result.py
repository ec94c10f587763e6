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
    `definition`: the variant's name (e.g. `truth_ratio_forget[geometric]`); `n`: items behind `value`."""

    value: float
    definition: str
    n: int
    per_item: Sequence[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, with_items: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"value": _clean(self.value), "definition": self.definition, "n": int(self.n)}
        out.update(self.extra)
        if with_items and self.per_item is not None:
            out["per_item"] = [_clean(v) for v in self.per_item]
        return out


def _clean(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v
