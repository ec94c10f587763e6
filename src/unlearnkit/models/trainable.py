"""`trainable=`: train only the parameters whose names match a pattern, freeze the rest.

WMDP's RMU updates three tensors, not the model: the MLP down-projections of the decoder blocks ℓ−2, ℓ−1, ℓ
before the steering layer ℓ (the reference code's `layer_id=7, layer_ids=[5,6,7], param_ids=[6]`, where
parameter 6 of a Llama/Mistral block is `mlp.down_proj.weight`). Any method can be restricted the same way, so
the selection is a generic setting of the unlearn config rather than an RMU option:

    trainable: ["model.layers.[567].mlp.down_proj.weight"]            # shell-style globs (fnmatch)
    trainable: ["re:model\\.layers\\.(5|6|7)\\.mlp\\.down_proj\\..*"]   # or `re:` + a regex (re.fullmatch)

An empty list trains every parameter (the default). A pattern that matches nothing is an error that shows
what the names look like, so a typo cannot silently train the whole model — or nothing.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Sequence

REGEX_PREFIX = "re:"


def down_proj_patterns(layer: int, depth: int = 3) -> list[str]:
    """WMDP's reference selection: `model.layers.{ℓ−depth+1..ℓ}.mlp.down_proj.weight` (Llama/Mistral names)."""
    if layer - depth + 1 < 0:
        raise ValueError(f"layer={layer}: the {depth} blocks ending at it start below block 0")
    return [f"model.layers.{i}.mlp.down_proj.weight" for i in range(layer - depth + 1, layer + 1)]


def matches(pattern: str, name: str) -> bool:
    """`re:<regex>` must match the whole name; anything else is a glob (`*`, `?`, `[567]`)."""
    if pattern.startswith(REGEX_PREFIX):
        return re.fullmatch(pattern[len(REGEX_PREFIX):], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def check_patterns(patterns: Sequence[str]) -> None:
    """Refuse a malformed regex before any model is loaded."""
    for p in patterns:
        if p.startswith(REGEX_PREFIX):
            try:
                re.compile(p[len(REGEX_PREFIX):])
            except re.error as exc:
                raise ValueError(f"trainable: {p!r} is not a valid regular expression ({exc})") from None


def freeze_except(model, patterns: Sequence[str]) -> list[str]:
    """Set `requires_grad` on the parameters matching any pattern, clear it on the rest; returns the names
    trained. No patterns: every parameter trains (nothing is changed)."""
    named = list(model.named_parameters())
    if not patterns:
        return [n for n, _ in named]
    check_patterns(patterns)
    for p in patterns:
        if not any(matches(p, n) for n, _ in named):
            examples = ", ".join(n for n, _ in named[:4])
            raise ValueError(f"trainable: pattern {p!r} matches no parameter of this model; names look like "
                             f"{examples}, … (globs, or 're:' + a regex over the whole name)")
    selected = []
    for name, param in named:
        keep = any(matches(p, name) for p in patterns)
        param.requires_grad_(keep)
        if keep:
            selected.append(name)
    return selected
