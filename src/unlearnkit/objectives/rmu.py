"""Representation misdirection (RMU): steer forget activations at one layer to a fixed random vector.

Li et al. 2024, "The WMDP Benchmark", arXiv 2403.03218; G-effect paper Eq. 8 (methods.md B.4):

    L_forget = E_{s∈D_f} (1/|s|) Σ_i mse(φ_ℓ(s_{≤i}; θ), c·u)
    L_retain = E_{s∈D_r} (1/|s|) Σ_i mse(φ_ℓ(s_{≤i}; θ), φ_ℓ(s_{≤i}; θ_ini))       (retain='hidden')
    L        = γ·L_forget + α·L_retain

φ_ℓ = the output of decoder block ℓ, `model.layers[ℓ]` (0-based), read by a forward hook exactly as the
WMDP code and open-unlearning's RMU read it (`reference.block_output`); in `outputs.hidden_states` terms
that is index ℓ + 1 (index 0 is the embeddings), except for the last block, whose output transformers
replaces there by the final-norm output. u is drawn once from
U[0,1)^d with a fixed seed and scaled to unit norm, as in the WMDP code (`rand / norm * c`); c is the
steering coefficient. mse(a, b) is the mean over the d hidden dimensions of (a − b)², as WMDP's
`F.mse_loss` and open-unlearning's RMU compute it; the G-effect code's Eq. 8 uses the squared norm
(sum over d, i.e. d times ours) and an unnormalised u. Positions i are those whose hidden state predicts
an answer token (the positions `sequence_logprobs` scores), averaged per sequence, then over the batch.
Defaults: layer 7 (= `model.layers[7]`, WMDP/open-unlearning; scale it to the model's depth), c = 2 (G-effect code), α = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..logprobs import IGNORE
from .base import Objective, ObjectiveConfig, hp, no_instance_weights, register_objective
from .reference import block_output
from .reduce import row_mean, sequence_mean
from .retain import RETAIN_TERMS, RetainTerm


def activation_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean_b [ Σ_t mask·mean_d (hidden − target)² / Σ_t mask ]; hidden (B,T,H), target broadcastable, mask (B,T)."""
    per_pos = (hidden.float() - target.detach().float()).pow(2).mean(-1)  # (B, T)
    return row_mean(sequence_mean(per_pos, mask))


def control_vector(hidden_size: int, steering_coeff: float, seed: int = 0) -> torch.Tensor:
    """c·u with u ~ U[0,1)^d from a seeded generator, scaled to unit norm; shape (H,)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=gen)
    return steering_coeff * u / u.norm()


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) mask of positions t whose next token t+1 is an answer label."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def _hidden_retain_term(model, batch, ref, config):
    hidden = block_output(model, batch, config.layer)
    ref_hidden = ref.hidden_states(batch, config.layer)
    return activation_mse(hidden, ref_hidden, predicting_positions(batch["labels"])), {}


RETAIN_TERMS.register("hidden")(RetainTerm(_hidden_retain_term, reference=("hidden_states",), config_fields=("layer",)))


@dataclass
class RMUConfig(ObjectiveConfig):
    retain: str = hp("hidden", "Retain regulariser: 'hidden' (RMU's MSE to the reference's hidden states at `layer`), "
                               "'nll', 'kl' or 'none'.")
    retain_weight: float = hp(1.0, "α: weight of the retain regulariser.")
    layer: int = hp(7, "ℓ: the decoder block whose output is steered, model.layers[ℓ] (0-based, as WMDP and "
                       "open-unlearning); must be < the model's number of layers.")
    steering_coeff: float = hp(2.0, "c: norm of the target vector c·u the forget activations are pushed to.")
    seed: int = hp(0, "Seed of the random direction u.")

    def __post_init__(self):
        super().__post_init__()
        self.require("layer", self.layer >= 0, "must be >= 0 (0 = the first decoder block)")
        self.require("steering_coeff", self.steering_coeff > 0, "must be > 0")


@register_objective("rmu")
class RMU(Objective):
    """Push forget hidden states at layer ℓ to c·u; keep retain hidden states at the reference's."""

    Config = RMUConfig
    paper = "Li et al. 2024 (WMDP), arXiv 2403.03218"

    instance_weights = no_instance_weights  # its update is not a weighting of ∇log p(s)

    def forget_loss(self, model, batch, ref):
        cfg = self.config
        hidden = block_output(model, batch.forget, cfg.layer)  # (B, T, H)
        target = control_vector(hidden.shape[-1], cfg.steering_coeff, cfg.seed).to(hidden.device)
        mask = predicting_positions(batch.forget["labels"])
        return activation_mse(hidden, target, mask), {"forget_hidden_norm": hidden[mask].norm(dim=-1).mean().item()}
