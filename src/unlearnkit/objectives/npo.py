"""Negative preference optimisation (NPO) and its reference-free variant SimNPO.

NPO (Zhang, Lin, Bai, Mei 2024, arXiv 2404.05868; methods.md D.1), log π summed over answer tokens:

    L_NPO,β = −(2/β) E log σ(−β (log π_θ(y|x) − log π_ref(y|x)))  =  (2/β) E log(1 + (π_θ/π_ref)^β)
    ∇L_NPO  = E[W ∇log π_θ(y|x)],  W = 2π_θ^β / (π_θ^β + π_ref^β) = 2σ(β(log π_θ − log π_ref))

As β → 0, L ≈ (2/β) log 2 + log π_θ − log π_ref, so its gradient at π_θ = π_ref equals that of GA with
`reduction='sequence_sum'` (factor exactly 1; W = 1 there). Default β = 0.1 (open-unlearning; the
G-effect code uses 0.5).

SimNPO (Fan et al. 2024, arXiv 2410.07163; official code `OPTML-Group/Unlearn-Simple`, methods.md D.2):
no reference; the length-normalised NLL replaces the log-ratio, with a margin δ (γ in the paper):

    L_SimNPO = −(2/β) E log σ(β·NLL(y|x)/|y| − βδ) = −(2/β) E log σ(−(β/|y|) log π_θ(y|x) − βδ)

Sign convention: minimising it raises the answers' NLL. The margin enters multiplied by β, as in the
official code (`forget_loss = NLL_sum/|y| − γ; loss = −logsigmoid(β·forget_loss)·2/β`) and
open-unlearning's `delta`. Defaults β = 4.5, δ = 0 (open-unlearning's TOFU config).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..label_logprobs import answer_logprobs
from .base import Objective, ObjectiveConfig, hp, register_objective
from .reduce import row_mean


def npo_loss(logp_seq: torch.Tensor, ref_logp_seq: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−β(log π_θ − log π_ref)); inputs (B,) sequence-summed log-probs."""
    return -(2.0 / beta) * row_mean(F.logsigmoid(-beta * (logp_seq - ref_logp_seq.detach())))


def npo_weights(logp_seq: torch.Tensor, ref_logp_seq: torch.Tensor, beta: float) -> torch.Tensor:
    """W = 2π_θ^β/(π_θ^β + π_ref^β) = 2σ(β(log π_θ − log π_ref)), detached (for logging and analysis)."""
    return 2.0 * torch.sigmoid(beta * (logp_seq - ref_logp_seq)).detach()


def simnpo_loss(logp_mean: torch.Tensor, beta: float, delta: float = 0.0) -> torch.Tensor:
    """−(2/β)·mean log σ(−β·logp_mean − βδ); `logp_mean` = log π_θ(y|x)/|y|, shape (B,)."""
    return -(2.0 / beta) * row_mean(F.logsigmoid(-beta * logp_mean - beta * delta))


@dataclass
class NPOConfig(ObjectiveConfig):
    beta: float = hp(0.1, "β: inverse temperature of the log-ratio; β → 0 recovers gradient ascent.")

    def __post_init__(self):
        super().__post_init__()
        self.require("beta", self.beta > 0, "must be > 0 (the loss divides by β)")


@register_objective("npo")
class NPO(Objective):
    """Negative preference optimisation: DPO with only a rejected (forget) answer."""

    Config = NPOConfig
    paper = "Zhang et al. 2024, arXiv 2404.05868"
    forget_reference = ("forget_logprobs",)
    scores_answers = ("forget",)

    def forget_loss(self, model, batch, ref):
        slp = answer_logprobs(model, batch.forget)
        ref_sum = ref.forget_logprobs(batch.forget).sum.detach()
        logs = {"forget_logratio": (slp.sum - ref_sum).mean().item(),
                "npo_weight": npo_weights(slp.sum, ref_sum, self.config.beta).mean().item()}
        return npo_loss(slp.sum, ref_sum, self.config.beta), logs

    def instance_weights(self, slp, batch, ref):
        """2p^β/(p^β+p_ref^β): NPO's adaptive weight on log p(s) (summed over the answer)."""
        return npo_weights(slp.sum, ref.forget_logprobs(batch).sum, self.config.beta)


@dataclass
class SimNPOConfig(ObjectiveConfig):
    beta: float = hp(4.5, "β: inverse temperature applied to the length-normalised NLL.")
    delta: float = hp(0.0, "δ (γ in the SimNPO paper): reward margin; enters as β·δ, as in the official code.")

    def __post_init__(self):
        super().__post_init__()
        self.require("beta", self.beta > 0, "must be > 0 (the loss divides by β)")


@register_objective("simnpo")
class SimNPO(Objective):
    """Reference-free NPO on the length-normalised log-likelihood."""

    Config = SimNPOConfig
    paper = "Fan et al. 2024, arXiv 2410.07163"
    scores_answers = ("forget",)

    def forget_loss(self, model, batch, ref):
        slp = answer_logprobs(model, batch.forget)
        return simnpo_loss(slp.mean, self.config.beta, self.config.delta), {"forget_nll": (-slp.mean).mean().item()}

    def instance_weights(self, slp, batch, ref):
        """2σ(β·mean log p + βδ): SimNPO's weight, reference-free and length-normalised."""
        cfg = self.config
        return 2 * torch.sigmoid(cfg.beta * slp.mean + cfg.beta * cfg.delta)
