"""Per-instance G-effects ("PG-effect", paper Eq. 5): one 2-D point per forget sample.

    pg_u(s) = ∇R(D_u)ᵀ ∇log p(s; θ)        pg_r(s) = ∇R(D_r)ᵀ ∇log p(s; θ)

with log p(s) the answer's sequence log-probability (summed over answer tokens, as in NPO). A gradient-
ascent objective moves θ along −w(s)∇log p(s) for each s, so the sample contributes −w(s)·pg to the G-effect;
`weight` is the objective's per-sample weight w(s) for colouring the scatter (GA 1; NPO 2p^β/(p^β+p_ref^β);
SimNPO 2σ(β·mean log p + βδ); WGA / TNPO / WTNPO: the mean of their token weights over the answer; NaN for
objectives that declare they have none, such as RMU). Each objective defines it (`Objective.instance_weights`).

Per-sample gradients come from `torch.func` — `vmap(grad(f))` over `functional_call` of the model, in chunks
sized to a memory budget — which needs eager attention (`attn_implementation="eager"`). `method="loop"` takes
one sample at a time with `autograd.grad` instead; both give the same numbers (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..logprobs import IGNORE, logprobs_from_logits, position_ids_from_mask, sequence_logprobs
from .compute import GEffectError, _GradState, _Params, _up, nll_risk
from .groups import ParamGroups, parameter_groups

METHODS = ("auto", "vmap", "loop")


@dataclass
class InstanceGEffects:
    """Per forget sample (dataset `index`): pg_u, pg_r and the objective's weight."""

    index: list[int]
    unlearn: list[float]
    retain: list[float]
    weight: list[float]
    method: str = ""

    def rows(self) -> list[dict]:
        return [{"index": i, "unlearn": u, "retain": r, "weight": w}
                for i, u, r, w in zip(self.index, self.unlearn, self.retain, self.weight)]


def instance_weights(objective, model, batch: dict, ref=None) -> torch.Tensor:
    """The objective's per-sample weight on ∇log p(s) (`Objective.instance_weights`), shape (B,), detached.

    An objective that does not define one raises `NoInstanceWeightsError` (never silent NaN weights)."""
    with torch.no_grad():
        slp = sequence_logprobs(model, batch)
        return objective.instance_weights(slp, batch, ref).detach().float().cpu()


def risk_gradient(model, P: _Params, batches: Sequence[dict]) -> list[torch.Tensor]:
    """∇R(D) over the batches (token-weighted mean NLL), one tensor per grouped parameter, on the device."""
    n = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    for b in batches:
        risk, n_b = nll_risk(model, b)
        (risk * (n_b / n)).backward(inputs=P.tensors)
    out = [p.grad if p.grad is not None else torch.zeros_like(p) for p in P.tensors]
    for p in P.tensors:
        p.grad = None
    return out


def _vmap_dots(model, P: _Params, batch: dict, vecs: list[list[torch.Tensor]], chunk: int) -> torch.Tensor:
    """(len(vecs), B) dots of each sample's ∇log p(s) with each vector list, via vmap(grad(functional_call))."""
    from torch.func import functional_call, grad, vmap

    names = P.names
    params = {n: p.detach() for n, p in zip(names, P.tensors)}

    def logp(ps, ids, mask, labels):
        out = functional_call(model, ps, (), {"input_ids": ids[None], "attention_mask": mask[None],
                                              "position_ids": position_ids_from_mask(mask[None]), "use_cache": False})
        return logprobs_from_logits(out.logits, labels[None]).sum[0]

    per_sample = vmap(grad(logp), in_dims=(None, 0, 0, 0), chunk_size=chunk)
    g = per_sample(params, batch["input_ids"], batch["attention_mask"], batch["labels"])
    B = batch["input_ids"].shape[0]
    out = torch.zeros(len(vecs), B, dtype=P.dtype, device=P.device)
    for k, n in enumerate(names):
        gk = _up(g.pop(n).reshape(B, -1))
        for j, v in enumerate(vecs):
            out[j] += (gk @ _up(v[k].reshape(-1))).to(P.dtype)
    return out


def _loop_dots(model, P: _Params, batch: dict, vecs: list[list[torch.Tensor]]) -> torch.Tensor:
    B = batch["input_ids"].shape[0]
    out = torch.zeros(len(vecs), B, dtype=P.dtype, device=P.device)
    for i in range(B):
        row = {k: v[i:i + 1] for k, v in batch.items()}
        lp = sequence_logprobs(model, row).sum[0]
        grads = torch.autograd.grad(lp, P.tensors, allow_unused=True)
        for k, gk in enumerate(grads):
            if gk is None:
                continue
            for j, v in enumerate(vecs):
                out[j, i] += torch.dot(_up(gk.reshape(-1)), _up(v[k].reshape(-1))).to(P.dtype)
    return out


def choose_chunk(P: _Params, batch_rows: int, max_bytes: float) -> int:
    """Samples per vmap chunk so that the per-sample gradients fit in `max_bytes` (0 means: use the loop)."""
    per_sample = sum(p.numel() * p.element_size() for p in P.tensors)
    return int(min(batch_rows, max_bytes // max(per_sample, 1)))


def instance_geffects(model, objective, forget: Sequence[dict], retain: Sequence[dict], ref=None,
                      groups: ParamGroups | None = None, method: str = "auto",
                      max_bytes: float = 2 * 2**30) -> InstanceGEffects:
    """PG-effects of each forget sample against ∇R(D_u) (`forget` batches) and ∇R(D_r) (`retain` batches).

    `method`: 'vmap' (torch.func per-sample gradients, needs eager attention), 'loop' (one sample at a time),
    or 'auto' (vmap in chunks that fit `max_bytes` of per-sample gradients; loop if not even one fits).
    """
    if method not in METHODS:
        raise GEffectError(f"method={method!r}: expected one of {METHODS}")
    groups = groups or parameter_groups(model)
    P = _Params(model, groups)
    idx, pu, pr, ws = [], [], [], []
    used = method
    with _GradState(model, P.tensors):
        vecs = [risk_gradient(model, P, forget), risk_gradient(model, P, retain)]
        for fb in forget:
            B = fb["input_ids"].shape[0]
            chunk = choose_chunk(P, B, max_bytes) if method != "loop" else 0
            if method == "vmap" or (method == "auto" and chunk >= 1):
                _require_eager(model)
                used = "vmap"
                dots = _vmap_dots(model, P, fb, vecs, max(chunk, 1))
            else:
                used = "loop"
                dots = _loop_dots(model, P, fb, vecs)
            d = dots.tolist()
            pu += d[0]
            pr += d[1]
            w = instance_weights(objective, model, fb, ref)
            ws += [float(x) for x in w]
            idx += fb["index"].tolist() if "index" in fb else list(range(len(idx), len(idx) + B))
    return InstanceGEffects(idx, pu, pr, ws, used)


def _require_eager(model) -> None:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl not in (None, "eager"):
        raise GEffectError(f"per-instance G-effects with method='vmap' need eager attention, but the model uses "
                           f"attn_implementation={impl!r}: load it with attn_implementation='eager', or pass "
                           f"method='loop'")
