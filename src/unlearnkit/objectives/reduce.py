"""How per-token values become one number.

`token_mean` is the Hugging Face / TOFU convention: sum over every answer token of the batch divided by
the number of answer tokens of the batch (so long answers weigh more than short ones). This is what
`outputs.loss` is, and what the G-effect and open-unlearning code average their losses with.
"""
from __future__ import annotations

import torch


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_{b,t} mask·values / Σ_{b,t} mask over the whole batch; `values` is 0 where masked or not."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence masked mean, shape (B,): Σ_t mask·values / Σ_t mask."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
