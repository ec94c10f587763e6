"""Gradient ascent on the forget answers, and its retain-regularised presets.

    L_GA(θ) = E_{(x,y)∈D_f} log π_θ(y|x)        (minimised: the forget answers become unlikely)

Source: Jang et al. 2023 ("Knowledge Unlearning for Mitigating Privacy Risks in Language Models");
TOFU (Maini et al. 2024) for `grad_diff` and `kl`; formulas as in methods.md B.4 / D.1.

`reduction="token_mean"` (default) is `−outputs.loss`: log-probs averaged over every answer token of the
batch, as TOFU, open-unlearning and the G-effect code do. `reduction="sequence_sum"` is the NPO paper's
L_GA with log π(y|x) summed over the answer tokens and averaged over sequences, the limit of NPO as
β → 0 (∇L_NPO,β → ∇L_GA,sequence_sum when π_θ = π_ref).

Presets over the same code (only defaults differ):
* `grad_diff` = ga + retain='nll':  L = γ·L_GA + α·NLL_retain
* `kl`        = ga + retain='kl':   L = γ·L_GA + α·KL(π_ini‖π_θ)_retain
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..label_logprobs import answer_logprobs
from .base import Objective, ObjectiveConfig, hp, register_objective, register_preset
from .reduce import row_mean, token_mean

REDUCTIONS = ("token_mean", "sequence_sum")


def ga_loss(token_logprobs: torch.Tensor, mask: torch.Tensor, reduction: str = "token_mean") -> torch.Tensor:
    """E log π_θ: token mean over the batch, or mean over sequences of the summed answer log-prob."""
    if reduction == "token_mean":
        return token_mean(token_logprobs, mask)
    if reduction == "sequence_sum":
        return row_mean((token_logprobs * mask).sum(-1))
    raise ValueError(f"reduction={reduction!r}: expected one of {REDUCTIONS}")


@dataclass
class GAConfig(ObjectiveConfig):
    reduction: str = hp("token_mean", "How log-probs are averaged: 'token_mean' (−HF loss, TOFU/open-unlearning) "
                                      "or 'sequence_sum' (NPO paper's E log π(y|x), the β→0 limit of NPO).")

    def __post_init__(self):
        super().__post_init__()
        self.require("reduction", self.reduction in REDUCTIONS, f"expected one of {REDUCTIONS}")


@register_objective("ga")
class GradientAscent(Objective):
    """Gradient ascent: minimise the forget answers' log-likelihood."""

    Config = GAConfig
    paper = "Jang et al. 2023, arXiv 2210.01504"
    scores_answers = ("forget",)

    def forget_loss(self, model, batch, ref):
        slp = answer_logprobs(model, batch.forget)
        return ga_loss(slp.token_logprobs, slp.mask, self.config.reduction), {}

    def instance_weights(self, slp, batch, ref):
        """1: every forget sample's ∇log p is ascended alike."""
        return torch.ones_like(slp.sum)


register_preset("grad_diff", GradientAscent, "GradDiff: gradient ascent on forget + NLL on retain (TOFU, Maini et al. "
                "2024, arXiv 2401.06121). L = γ·L_GA + α·NLL_retain.", class_name="GradDiff", retain="nll")
register_preset("kl", GradientAscent, "GA with a KL retain term: L = γ·L_GA + α·KL(π_ini‖π_θ) on retain tokens "
                "(TOFU, Maini et al. 2024; token-averaged as in the G-effect code).", class_name="GAWithKL", retain="kl")
