"""Token-weighted gradient ascent: WGA, TNPO and WTNPO (G-effect paper, Wang et al. 2025, arXiv 2502.19301).

All three minimise a weighted token mean of the forget answers' log-probs, with *detached* weights
(methods.md B.4; `dataloader.py` of tmlr-group/G-effect):

    L = (1/N) Σ_{answer tokens i} w_i · log p_i,     p_i = π_θ(y_i | x, y_<i),  N = answer tokens in the batch

* WGA   (Eq. 2): w_i = p_i^β                                              default β = 1 (open-unlearning;
                                                                           the G-effect code defaults to 5)
* TNPO  (Eq. 6): w_i = 2 p_i^β / (p_i^β + p_ref,i^β + ε)                  β = 4
* WTNPO        : w_i = 2 p_i^(β+α) / (p_i^β + p_ref,i^β + ε) = TNPO · p_i^α   β = 4, α = 1.5

ε = 1e-5 is in the official code (a guard against 0/0); the paper's weights have none. With eps=0 the
TNPO weight is computed in the exact, stable form 2σ(β(log p − log p_ref)). Both are tested. Note ε is
not negligible when p and p_ref are both small (p^4 < 1e-5 for p < 0.056): the code's weights then
shrink towards 0, which is the benchmark authors' behaviour and our default.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..label_logprobs import answer_logprobs
from .base import Objective, ObjectiveConfig, hp, register_objective, register_preset
from .reduce import sequence_mean, token_mean


def weighted_logprob_loss(token_logprobs: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """token_mean(w.detach() · log p): gradients never flow through the weights."""
    return token_mean(weights.detach() * token_logprobs, mask)


def wga_weights(token_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """w = p^β = exp(β log p), detached."""
    return torch.exp(beta * token_logprobs.detach())


def tnpo_weights(token_logprobs: torch.Tensor, ref_token_logprobs: torch.Tensor, beta: float,
                 alpha: float = 0.0, eps: float = 1e-5) -> torch.Tensor:
    """w = 2 p^(β+α) / (p^β + p_ref^β + ε), detached; α = 0 is TNPO, α > 0 WTNPO."""
    lp, ref = token_logprobs.detach().float(), ref_token_logprobs.detach().float()
    if eps == 0:
        w = 2.0 * torch.sigmoid(beta * (lp - ref))
    else:
        w = 2.0 * torch.exp(beta * lp) / (torch.exp(beta * lp) + torch.exp(beta * ref) + eps)
    if alpha:
        w = w * torch.exp(alpha * lp)
    return w.to(token_logprobs.dtype)


@dataclass
class WGAConfig(ObjectiveConfig):
    beta: float = hp(1.0, "β (α in the paper): token weight p^β; 0 gives token-mean gradient ascent.")

    def __post_init__(self):
        super().__post_init__()
        self.require("beta", self.beta >= 0, "must be >= 0")


@register_objective("wga")
class WGA(Objective):
    """Weighted gradient ascent: confident tokens are pushed down more, unlikely ones are left alone."""

    Config = WGAConfig
    paper = "Wang et al. 2025 (G-effect), arXiv 2502.19301"
    scores_answers = ("forget",)

    def forget_loss(self, model, batch, ref):
        slp = answer_logprobs(model, batch.forget)
        w = wga_weights(slp.token_logprobs, self.config.beta)
        return weighted_logprob_loss(slp.token_logprobs, w, slp.mask), {"weight_mean": token_mean(w, slp.mask).item()}

    def instance_weights(self, slp, batch, ref):
        """The mean of the token weights p_i^β over the answer."""
        return sequence_mean(wga_weights(slp.token_logprobs, self.config.beta), slp.mask)


@dataclass
class TNPOConfig(ObjectiveConfig):
    beta: float = hp(4.0, "β: inverse temperature of the token-level NPO weight.")
    alpha: float = hp(0.0, "α: extra confidence factor p^α on the weight (0 = TNPO, WTNPO uses 1.5).")
    eps: float = hp(1e-5, "ε in the weight's denominator, as in the official code; 0 = the paper's exact weight.")

    def __post_init__(self):
        super().__post_init__()
        self.require("beta", self.beta > 0, "must be > 0")
        self.require("alpha", self.alpha >= 0, "must be >= 0")
        self.require("eps", self.eps >= 0, "must be >= 0")


@register_objective("tnpo")
class TNPO(Objective):
    """Token-level NPO: each token's gradient-ascent weight compares p_i with the reference's p_ref,i."""

    Config = TNPOConfig
    paper = "Wang et al. 2025 (G-effect), arXiv 2502.19301"
    forget_reference = ("forget_logprobs",)
    scores_answers = ("forget",)

    def token_weights(self, slp, forget: dict, ref) -> torch.Tensor:
        """The TNPO (or WTNPO) weight of every answer token of `forget`, against the reference's log-probs."""
        cfg = self.config
        return tnpo_weights(slp.token_logprobs, ref.forget_logprobs(forget).token_logprobs, cfg.beta, cfg.alpha,
                            cfg.eps)

    def forget_loss(self, model, batch, ref):
        slp = answer_logprobs(model, batch.forget)
        w = self.token_weights(slp, batch.forget, ref)
        return weighted_logprob_loss(slp.token_logprobs, w, slp.mask), {"weight_mean": token_mean(w, slp.mask).item()}

    def instance_weights(self, slp, batch, ref):
        """The mean of the TNPO (or WTNPO) token weights over the answer."""
        return sequence_mean(self.token_weights(slp, batch, ref), slp.mask)


register_preset("wtnpo", TNPO, "Weighted TNPO: TNPO weight times p^α (α = 1.5, β = 4), G-effect paper "
                "(Wang et al. 2025, arXiv 2502.19301).", class_name="WTNPO", alpha=1.5)
