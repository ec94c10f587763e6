"""G-effects at one checkpoint: e = ∇R(D)ᵀ ∇L_u(D_u), per parameter group (Wang et al. 2025, arXiv 2502.19301).

* unlearning G-effect  e_u = ∇R(D_u)ᵀ ∇L_u(D_u)     (wanted: clearly negative — the objective raises R on D_u)
* retaining G-effect   e_r = ∇R(D_r)ᵀ ∇L_u(D_u)     (wanted: ≈ 0 or positive — no collateral damage)

R is the NLL averaged over answer tokens (the HF `outputs.loss`), over the whole eval slice: with several
batches R(D) = Σ_b (n_b/N) R_b (n_b answer tokens of batch b). L_u is the objective's loss as trained
(`term="total"`: forget term + retain regulariser; `term="forget"`: γ·forget term only), over the slice as
the sample-weighted mean of its batch losses (exact for sequence-mean objectives; for token-mean ones it
equals the slice loss when batches hold equal token counts). A first-order step θ' = θ − η∇L_u changes R by
≈ −η·e, so e < 0 means the objective increases the risk.

How it is computed (methods.md B.3 describes the authors' scheme: three forward/backward passes per batch,
gradients flattened to the CPU and EMA-smoothed there, 0.6·old + 0.4·new):
1. One forward pass of each forget batch serves both L_u and R(D_u) (`SharedForward` caches the outputs of
   that batch, so the objective's own `sequence_logprobs` call and ours reuse them). ∇L_u is taken with
   `torch.autograd.grad(..., retain_graph=True)` and kept as a per-parameter list on the device.
2. ∇R(D_u) is then back-propagated through the same graph; each parameter's gradient is dotted with its
   ∇L_u entry as soon as it is accumulated (a post-accumulate-grad hook) and freed, so at most one risk
   gradient tensor is alive at a time. With several forget batches ∇L_u is not complete until the last one,
   so ∇R(D_u) is accumulated in `.grad` instead and dotted at the end (one extra gradient copy).
3. The retain risk is streamed the same way, batch by batch. The objective's retain batch, when it needs
   one, is the retain slice too, so its forward is shared as well when both are one batch.
Dot products are per parameter, on the device (float32 products, float64 sums where the device has them),
summed per group, and read back with one host transfer per checkpoint.

Gradient reachability: parameters that receive no gradient from L_u (e.g. RMU at layer ℓ: blocks above ℓ,
the final norm and lm_head) are listed in `GEffect.no_grad`. A group none of whose parameters is reached gets
NaN and a warning by default; if the caller named that group in `select`, it is an error. A loss with no
`grad_fn` (nothing trainable reached at all) is an error.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..logprobs import SequenceLogprobs, sequence_logprobs
from ..objectives import UnlearnBatch
from ..objectives.reduce import token_mean
from .groups import ParamGroups, parameter_groups

TERMS = ("total", "forget")


class GEffectError(ValueError):
    """Bad input for a G-effect computation (no gradient, no checkpoints, …)."""


@dataclass
class EvalSlices:
    """Fixed evaluation data: lists of padded batches (`pad_batch` dicts) of forget, retain and IdK rows."""

    forget: list[dict]
    retain: list[dict]
    idk: list[dict] | None = None

    def __post_init__(self):
        if not self.forget:
            raise GEffectError("EvalSlices.forget is empty: the unlearning G-effect needs forget data")
        if not self.retain:
            raise GEffectError("EvalSlices.retain is empty: the retaining G-effect needs retain data")
        if self.idk is not None and len(self.idk) != len(self.forget):
            raise GEffectError(f"EvalSlices.idk has {len(self.idk)} batches but forget has {len(self.forget)}; "
                               f"IdK batch b must answer the questions of forget batch b")

    def to(self, device) -> "EvalSlices":
        move = lambda bs: None if bs is None else [{k: v.to(device) for k, v in b.items()} for b in bs]
        return EvalSlices(move(self.forget), move(self.retain), move(self.idk))


def make_slices(forget_items: Sequence[dict], retain_items: Sequence[dict], pad_id: int, batch_size: int | None = None,
                idk_items: Sequence[dict] | None = None) -> EvalSlices:
    """Pad dataset items (`QADataset[i]`) into batches of `batch_size` (None: the whole slice in one batch)."""
    def chunks(items):
        items = list(items)
        n = batch_size or max(len(items), 1)
        from ..data.collate import pad_batch
        return [pad_batch(items[i:i + n], pad_id) for i in range(0, len(items), n)]

    return EvalSlices(chunks(forget_items), chunks(retain_items), chunks(idk_items) if idk_items else None)


@dataclass
class GEffect:
    """G-effects of one checkpoint per group (plus `total` = their sum over groups that got a gradient)."""

    unlearn: dict[str, float]
    retain: dict[str, float]
    no_grad: list[str] = field(default_factory=list)
    loss: float = math.nan
    risk_forget: float = math.nan
    risk_retain: float = math.nan

    def rows(self) -> list[dict]:
        """Tidy rows: {group, kind ('unlearn'|'retain'), value}."""
        return [{"group": g, "kind": kind, "value": v}
                for kind, d in (("unlearn", self.unlearn), ("retain", self.retain)) for g, v in d.items()]


class SharedForward:
    """Wraps a model so forward calls on the registered batches run once and are reused.

    The objective calls `model(...)` through `sequence_logprobs`/`model_forward`; so do we for the risk. The
    first call on a registered batch (matched by the identity of its `input_ids` tensor) runs the model with
    `output_hidden_states=True` (so RMU's call and an NLL call can share it) and caches the outputs; later calls
    on that batch return them. Calls on other inputs pass straight through. Attribute access is delegated.
    """

    _SAFE = {"input_ids", "attention_mask", "position_ids", "use_cache", "output_hidden_states"}

    def __init__(self, model, batches: Sequence[dict] = ()):
        self.__dict__["_model"] = model
        self.__dict__["_keys"] = {id(b["input_ids"]) for b in batches if b is not None}
        self.__dict__["_cache"] = {}
        self.__dict__["hits"] = 0

    def __call__(self, *args, **kwargs):
        ids = kwargs.get("input_ids")
        if args or ids is None or id(ids) not in self._keys or set(kwargs) - self._SAFE:
            return self._model(*args, **kwargs)
        if id(ids) in self._cache:
            self.__dict__["hits"] += 1
            return self._cache[id(ids)]
        kwargs["output_hidden_states"] = True
        out = self._model(**kwargs)
        self._cache[id(ids)] = out
        return out

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)


def nll_risk(model, batch: dict) -> tuple[torch.Tensor, int]:
    """R = mean NLL over the batch's answer tokens (the HF loss), and the token count."""
    slp = sequence_logprobs(model, batch)
    return -token_mean(slp.token_logprobs, slp.mask), int(slp.mask.sum())


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float64 if device.type in ("cpu", "cuda") else torch.float32


def _up(t: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors are multiplied in float32; float32/float64 stay as they are."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _dot(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.dot(_up(a).reshape(-1), _up(b).reshape(-1)).to(dtype)


class _Params:
    """The grouped parameters as parallel lists, with group indices, on which the dot products run."""

    def __init__(self, model, groups: ParamGroups):
        rows = list(groups.parameters(model))
        if not rows:
            raise GEffectError("the model has no trainable parameters to take the G-effect over "
                               "(every parameter has requires_grad=False)")
        self.names = [n for n, _, _ in rows]
        self.group_names = list(groups.names)
        self.gidx = [self.group_names.index(g) for _, g, _ in rows]
        self.tensors = [p for _, _, p in rows]
        self.device = self.tensors[0].device
        self.dtype = _acc_dtype(self.device)

    def zeros(self) -> torch.Tensor:
        return torch.zeros(len(self.group_names), dtype=self.dtype, device=self.device)


def _stream_dot(loss: torch.Tensor, P: _Params, gl: list, acc: torch.Tensor, retain_graph: bool = False) -> None:
    """Back-propagate `loss`; dot each parameter's gradient with gl[k] the moment it lands, then free it."""
    handles = []
    inputs = []
    for k, p in enumerate(P.tensors):
        if gl[k] is None:
            continue

        def hook(param, k=k):
            acc[P.gidx[k]] += _dot(param.grad, gl[k], P.dtype)
            param.grad = None

        handles.append(p.register_post_accumulate_grad_hook(hook))
        inputs.append(p)
    try:
        if inputs:
            loss.backward(inputs=inputs, retain_graph=retain_graph)
    finally:
        for h in handles:
            h.remove()


def _flush_dot(P: _Params, gl: list, acc: torch.Tensor) -> None:
    """Dot the gradients accumulated in `.grad` with gl, then free them."""
    for k, p in enumerate(P.tensors):
        if p.grad is not None and gl[k] is not None:
            acc[P.gidx[k]] += _dot(p.grad, gl[k], P.dtype)
        p.grad = None


class _GradState:
    """Stash existing `.grad`s (e.g. mid-training) and the train/eval mode; restore both on exit."""

    def __init__(self, model, tensors):
        self.model, self.tensors = model, tensors

    def __enter__(self):
        self.saved = [p.grad for p in self.tensors]
        for p in self.tensors:
            p.grad = None
        self.training = self.model.training
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for p, g in zip(self.tensors, self.saved):
            p.grad = g
        self.model.train(self.training)


def _check_loss(loss: torch.Tensor, objective) -> None:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise GEffectError(f"objective {getattr(objective, 'name', objective)!r} returned {type(loss).__name__} "
                           f"{tuple(getattr(loss, 'shape', ()))}; expected a scalar tensor")
    if loss.grad_fn is None:
        raise GEffectError(f"objective {getattr(objective, 'name', objective)!r}: its loss has no grad_fn, so it has no "
                           f"gradient w.r.t. any parameter (was it computed under torch.no_grad(), or are all "
                           f"parameters frozen?); the G-effect is undefined")


def objective_loss(objective, model, batch: UnlearnBatch, ref, term: str = "total") -> torch.Tensor:
    """L_u of one batch: the objective's full loss, or γ·forget term alone (`term='forget'`)."""
    if term == "total":
        loss, _ = objective.loss(model, batch, ref)
    elif term == "forget":
        objective.check_inputs(retain=True, idk=batch.idk is not None, reference=ref is not None)
        loss, _ = objective.forget_loss(model, batch, ref)
        loss = objective.config.forget_weight * loss
    else:
        raise GEffectError(f"term={term!r}: expected one of {TERMS}")
    return loss


def compute_geffect(model, objective, slices: EvalSlices, ref=None, groups: ParamGroups | None = None,
                    select: Sequence[str] | None = None, term: str = "total") -> GEffect:
    """e_u and e_r per group of `model` at its current weights (see the module docstring).

    `groups`: a `ParamGroups` (default: `parameter_groups(model)`, embed/shallow/middle/deep/norm/lm_head).
    `select`: group names the caller insists on; an error if one gets no gradient from L_u.
    `ref`: the reference provider the objective needs (NPO, TNPO, …).
    """
    groups = groups or parameter_groups(model)
    if select:
        unknown = [g for g in select if g not in groups.names]
        if unknown:
            raise GEffectError(f"select={list(select)}: no group {unknown[0]!r}; groups are {groups.names}")
    P = _Params(model, groups)
    needs_retain = objective.needs_retain if term == "total" else False
    if objective.needs_idk and slices.idk is None:
        raise GEffectError(f"objective {objective.name!r} needs IdK answers: pass EvalSlices(idk=...)")
    n_u = sum(int((b["labels"][:, 1:] != -100).sum()) for b in slices.forget)
    n_r = sum(int((b["labels"][:, 1:] != -100).sum()) for b in slices.retain)
    n_rows = sum(len(b["input_ids"]) for b in slices.forget)
    single = len(slices.forget) == 1
    e_u, e_r = P.zeros(), P.zeros()
    gl: list = [None] * len(P.tensors)
    loss_value = risk_u = risk_r = 0.0
    with _GradState(model, P.tensors):
        proxy = None
        for b, fb in enumerate(slices.forget):
            rb = slices.retain[b % len(slices.retain)] if needs_retain else None
            ib = slices.idk[b] if slices.idk is not None else None
            proxy = SharedForward(model, [fb, rb])
            loss = objective_loss(objective, proxy, UnlearnBatch(forget=fb, retain=rb, idk=ib), ref, term)
            _check_loss(loss, objective)
            w_l = len(fb["input_ids"]) / n_rows
            grads = torch.autograd.grad(loss * w_l, P.tensors, retain_graph=True, allow_unused=True)
            for k, g in enumerate(grads):
                if g is not None:
                    gl[k] = g if gl[k] is None else gl[k] + g
            del grads
            risk, n_b = nll_risk(proxy, fb)
            loss_value += w_l * loss.item()
            risk_u += n_b / n_u * risk.item()
            if single:
                _stream_dot(risk * (n_b / n_u), P, gl, e_u)
            else:
                inputs = [p for k, p in enumerate(P.tensors) if gl[k] is not None]
                if inputs:
                    (risk * (n_b / n_u)).backward(inputs=inputs)
            del loss, risk
            if not single:
                proxy = None
        if not single:
            _flush_dot(P, gl, e_u)
        for rb in slices.retain:
            risk, n_b = nll_risk(proxy if proxy is not None else model, rb)
            risk_r += n_b / n_r * risk.item()
            _stream_dot(risk * (n_b / n_r), P, gl, e_r)
            del risk
        del proxy
    return _finish(P, gl, e_u, e_r, select, loss_value, risk_u, risk_r, objective)


def _finish(P: _Params, gl, e_u, e_r, select, loss_value, risk_u, risk_r, objective) -> GEffect:
    no_grad = [n for n, g in zip(P.names, gl) if g is None]
    reached = [False] * len(P.group_names)
    for k, g in enumerate(gl):
        if g is not None:
            reached[P.gidx[k]] = True
    dead = [g for g, ok in zip(P.group_names, reached) if not ok]
    if select:
        bad = [g for g in select if g in dead]
        if bad:
            raise GEffectError(f"group {bad[0]!r} (selected) receives no gradient from objective "
                               f"{getattr(objective, 'name', objective)!r}'s loss, so its G-effect is undefined; "
                               f"parameters without gradient: {_short(no_grad)}. Deselect it, or use an objective "
                               f"that reaches it (e.g. RMU at a later layer)")
    if dead:
        warnings.warn(f"G-effect: group(s) {dead} get no gradient from objective "
                      f"{getattr(objective, 'name', objective)!r}'s loss (parameters: {_short(no_grad)}); "
                      f"their values are NaN and left out of 'total'", RuntimeWarning, stacklevel=3)
    vu, vr = e_u.tolist(), e_r.tolist()  # one host transfer each

    def table(vals):
        out = {g: (v if ok else math.nan) for g, v, ok in zip(P.group_names, vals, reached)}
        out["total"] = sum(v for v, ok in zip(vals, reached) if ok)
        return out

    return GEffect(unlearn=table(vu), retain=table(vr), no_grad=no_grad, loss=loss_value, risk_forget=risk_u,
                   risk_retain=risk_r)


def _short(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" … (+{len(names) - n} more)" if len(names) > n else "")


class EMA:
    """Exponential smoothing of G-effects across checkpoints: s_t = decay·s_{t-1} + (1−decay)·e_t, s_0 = e_0.

    decay = 0.6 is the authors' constant. Note: they smooth the *gradients* across training batches
    (`new = 0.6·old + 0.4·cur`, methods.md B.3) and dot the smoothed gradients; smoothing the dot products of
    successive checkpoints, as here, is the analogous low-pass filter on the reported curve, not the same number.
    """

    def __init__(self, decay: float = 0.6):
        if not 0 <= decay < 1:
            raise ValueError(f"decay={decay}: must be in [0, 1)")
        self.decay = decay
        self.state: dict = {}

    def __call__(self, key, value: float) -> float:
        old = self.state.get(key)
        new = value if old is None or math.isnan(old) else self.decay * old + (1 - self.decay) * value
        self.state[key] = new
        return new

    def smooth(self, effect: GEffect) -> GEffect:
        u = {g: self(("unlearn", g), v) for g, v in effect.unlearn.items()}
        r = {g: self(("retain", g), v) for g, v in effect.retain.items()}
        return GEffect(u, r, effect.no_grad, effect.loss, effect.risk_forget, effect.risk_retain)


__all__ = ["GEffect", "GEffectError", "EvalSlices", "make_slices", "compute_geffect", "SharedForward", "EMA",
           "nll_risk", "objective_loss", "SequenceLogprobs"]
