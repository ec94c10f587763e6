"""Unlearning objectives: named losses over a forget (+ retain, + IdK) batch.

Getting one by name, with hyper-parameters from a config dict (unknown keys and bad values are
refused with the field, the value and the reason):

    from unlearnkit.objectives import build_objective, UnlearnBatch, FrozenModelReference

    objective = build_objective("npo", {"beta": 0.1, "retain": "nll", "retain_weight": 1.0})
    objective.check_inputs(retain=True, idk=False, reference=True)   # before training: clear error if not
    ref = FrozenModelReference(copy_of_initial_model)                  # or DisabledAdapterReference(peft_model),
                                                                       # or CachedReference(forget=cache, fallback=...)
    loss, logs = objective.loss(model, UnlearnBatch(forget=f, retain=r), ref)
    loss.backward()                       # logs: {"forget_loss", "retain_loss", "loss", ...} as floats

Each batch part is a padded dict from `unlearnkit.data.pad_batch` (input_ids, labels with -100 on the
prompt, attention_mask, index). What an objective needs is on the instance: `needs_retain`,
`needs_reference`, `needs_idk`; `OBJECTIVES.names()` lists every name, and `Objective.Config` is the
hyper-parameter dataclass (each field's help in `field.metadata["help"]`) the CLI can build from YAML
(`unlearnkit.config.load_config(OBJECTIVES.get(name).Config, ...)`).

Every objective is `γ·forget_term + α·retain_term` with `forget_weight` (γ), `retain` ∈ {none, nll, kl}
(+ `hidden` for rmu) and `retain_weight` (α); the retain terms are written once in `retain.py`.

| name        | forget term (minimised)                                   | needs           | module            |
|-------------|-----------------------------------------------------------|-----------------|-------------------|
| ga          | E log π_θ(y|x)                                            | –               | ga.py             |
| grad_diff   | ga, retain='nll' by default                               | retain          | ga.py (preset)    |
| kl          | ga, retain='kl' by default                                | retain, ref     | ga.py (preset)    |
| npo         | −(2/β) E log σ(−β(log π_θ − log π_ref))                   | ref             | npo.py            |
| simnpo      | −(2/β) E log σ(−(β/|y|) log π_θ − βδ)                     | –               | npo.py            |
| idk_nll     | −E log π_θ(y_idk|x)                                       | idk             | idk.py            |
| idk_dpo     | −(2/β) E log σ(β(Δ_idk − Δ_forget)), Δ = log π_θ − log π_ref | idk, ref     | idk.py            |
| wga         | token mean of p^β·log p (weights detached)                | –               | token_weighted.py |
| tnpo        | token mean of 2p^β/(p^β+p_ref^β)·log p                    | ref             | token_weighted.py |
| wtnpo       | tnpo with an extra p^α (α = 1.5)                          | ref             | token_weighted.py |
| rmu         | mse(φ_ℓ(forget), c·u); retain='hidden' by default         | retain, ref     | rmu.py            |
| undial      | CE to the reference's distribution with the label logit −β | ref            | undial.py         |

Each loss is a pure tensor function (`npo_loss`, `simnpo_loss`, `dpo_loss`, `ga_loss`, `nll_loss`,
`kl_to_reference`, `wga_weights`, `tnpo_weights`, `weighted_logprob_loss`, `activation_mse`,
`undial_loss`) that the classes call; log-probs always come from `unlearnkit.logprobs`.

A new objective: subclass `Objective`, give it a `Config` dataclass (fields made with `hp(default, help)`,
checks in `__post_init__` via `self.require(name, ok, reason)`), write `forget_loss(model, batch, ref)`,
and decorate it with `@register_objective("name")`; a variant with other defaults is `register_preset`.
Also say what its per-sample G-effect weight is: `instance_weights(slp, batch, ref)`, or
`instance_weights = no_instance_weights` when it has none (the base raises `NoInstanceWeightsError`).
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import (NoInstanceWeightsError, Objective, ObjectiveConfig, UnlearnBatch, hp, make_config,
                   no_instance_weights, register_objective, register_preset)
from .ga import GAConfig, GradientAscent, ga_loss
from .idk import IdkDPO, IdkDPOConfig, IdkNLL, dpo_loss
from .npo import NPO, NPOConfig, SimNPO, SimNPOConfig, npo_loss, npo_weights, simnpo_loss
from .reduce import sequence_mean, token_mean
from .reference import (CachedReference, DisabledAdapterReference, FrozenModelReference, ReferenceProvider,
                        precompute_token_logprobs)
from .registry import OBJECTIVES, Registry, UnknownNameError
from .retain import RETAIN_TERMS, RetainTerm, kl_to_reference, nll_loss
from .rmu import RMU, RMUConfig, activation_mse, control_vector
from .token_weighted import TNPO, WGA, TNPOConfig, WGAConfig, tnpo_weights, weighted_logprob_loss, wga_weights
from .undial import UNDIAL, UNDIALConfig, undial_loss


def build_objective(name: str, config: Mapping[str, Any] | ObjectiveConfig | None = None) -> Objective:
    """The objective registered as `name`, with hyper-parameters from a dict (or its Config instance)."""
    return OBJECTIVES.get(name)(config)


__all__ = [
    "OBJECTIVES", "Registry", "UnknownNameError", "build_objective",
    "Objective", "ObjectiveConfig", "UnlearnBatch", "hp", "make_config", "register_objective", "register_preset",
    "NoInstanceWeightsError", "no_instance_weights",
    "ReferenceProvider", "FrozenModelReference", "DisabledAdapterReference", "CachedReference",
    "precompute_token_logprobs",
    "RETAIN_TERMS", "RetainTerm", "nll_loss", "kl_to_reference", "token_mean", "sequence_mean",
    "GradientAscent", "GAConfig", "ga_loss",
    "NPO", "NPOConfig", "npo_loss", "npo_weights", "SimNPO", "SimNPOConfig", "simnpo_loss",
    "IdkNLL", "IdkDPO", "IdkDPOConfig", "dpo_loss",
    "WGA", "WGAConfig", "TNPO", "TNPOConfig", "wga_weights", "tnpo_weights", "weighted_logprob_loss",
    "RMU", "RMUConfig", "activation_mse", "control_vector",
    "UNDIAL", "UNDIALConfig", "undial_loss",
]
