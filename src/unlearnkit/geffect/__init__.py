"""G-effect (Wang et al. 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond",
arXiv 2502.19301): the dot product of a risk's gradient with an unlearning objective's gradient,

    e_u = ∇R(D_u)ᵀ ∇L_u(D_u)   (unlearning; wanted < 0)      e_r = ∇R(D_r)ᵀ ∇L_u(D_u)   (retaining; wanted ≈ 0)

per parameter group, per checkpoint and per forget instance.

    from unlearnkit.geffect import compute_geffect, make_slices, parameter_groups, instance_geffects, geffect_run

    groups = parameter_groups(model, blocks=3)            # embed / shallow / middle / deep / norm / lm_head / other
    eff = compute_geffect(model, build_objective("npo"), make_slices(forget_items, retain_items, pad_id), ref)
    eff.unlearn["deep"], eff.retain["total"]
    inst = instance_geffects(model, objective, slices.forget, slices.retain, ref)   # one 2-D point per sample
    geffect_run("runs/npo")                               # every checkpoint → runs/npo/geffect/*.csv + plots

Modules: `groups` (parameter groups), `compute` (e_u / e_r), `instance` (per-sample PG-effects),
`run` (run directories, CSVs, the TrainerCallback), `plots` (figures, multi-run comparison).
"""
from .compute import EMA, EvalSlices, GEffect, GEffectError, SharedForward, compute_geffect, make_slices, nll_risk
from .groups import ParamGroups, block_group_names, parameter_groups
from .instance import InstanceGEffects, instance_geffects, instance_weights
from .plots import compare, plot_curves, plot_instances
from .run import GEffectCallback, GEffectConfig, build_slices, geffect_run, read_csv

__all__ = ["EMA", "EvalSlices", "GEffect", "GEffectError", "SharedForward", "compute_geffect", "make_slices",
           "nll_risk", "ParamGroups", "block_group_names", "parameter_groups", "InstanceGEffects",
           "instance_geffects", "instance_weights", "compare", "plot_curves", "plot_instances", "GEffectCallback",
           "GEffectConfig", "build_slices", "geffect_run", "read_csv"]
