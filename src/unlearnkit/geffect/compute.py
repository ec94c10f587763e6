"""G-effects at one checkpoint: e = ∇R(D)ᵀ ∇L_u(D_u), per parameter group (Wang et al. 2025, arXiv 2502.19301).

* unlearning G-effect  e_u = ∇R(D_u)ᵀ ∇L_u(D_u)     (wanted: clearly negative — the objective raises R on D_u)
* retaining G-effect   e_r = ∇R(D_r)ᵀ ∇L_u(D_u)     (wanted: ≈ 0 or positive — no collateral damage)

R is the NLL averaged over answer tokens (the HF `outputs.loss`), over the whole eval slice: with several
batches R(D) = Σ_b (n_b/N) R_b (n_b answer tokens of batch b). L_u is the objective's loss as trained
(`term="total"`: γ·forget term + α·retain regulariser; `term="forget"`: γ·forget term only), over the slice as
the sample-weighted mean of its batch losses (exact for sequence-mean objectives; for token-mean ones it
equals the slice loss when batches hold equal token counts).

The retain regulariser's rows (`EvalSlices.regulariser`) must be disjoint from the measured retain slice.
Were they the same rows, an NLL regulariser would add α·‖∇R(D_r)‖² ≥ 0 to e_r (a KL or hidden-state one a
similar self-term), which can hide collateral damage; the G-effect authors measure ∇R(D_r) on TOFU retain
rows beyond the first 400 and keep those 400 apart. With `term="total"` both decompositions are returned:
`unlearn`/`retain` for the total and `forget_unlearn`/`forget_retain` for the γ·forget term alone, so that
e(total) − e(forget) = α·∇R(D)ᵀ∇L_reg(D_reg) is the regulariser's own share. A first-order step θ' = θ − η∇L_u changes R by
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
3. The retain risk is streamed the same way, batch by batch, against every gradient list (total and forget
   term). The regulariser batch (b mod the number of regulariser batches) is a separate forward.
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

from ..logprobs import IGNORE, SequenceLogprobs, sequence_logprobs
from ..objectives import UnlearnBatch
from ..objectives.reference import block_output_pending
from ..objectives.reduce import token_mean
from .groups import ParamGroups, parameter_groups

TERMS = ("total", "forget")


class GEffectError(ValueError):
    """Bad input for a G-effect computation (no gradient, no checkpoints, …)."""


@dataclass
class EvalSlices:
    """Fixed evaluation data: lists of padded batches (`pad_batch` dicts).

    `forget`: D_u; `retain`: the slice on which ∇R(D_r) is measured; `regulariser`: the retain rows the
    objective's retain term reads (needed with term='total' by objectives that have one), disjoint from
    `retain` (checked row by row); `idk`: IdK answers to the forget questions, batch for batch.
    """

    forget: list[dict]
    retain: list[dict]
    idk: list[dict] | None = None
    regulariser: list[dict] | None = None

    def __post_init__(self):
        if not self.forget:
            raise GEffectError("EvalSlices.forget is empty: the unlearning G-effect needs forget data")
        if not self.retain:
            raise GEffectError("EvalSlices.retain is empty: the retaining G-effect needs retain data")
        if self.idk is not None and len(self.idk) != len(self.forget):
            raise GEffectError(f"EvalSlices.idk has {len(self.idk)} batches but forget has {len(self.forget)}; "
                               f"IdK batch b must answer the questions of forget batch b")
        if self.regulariser is not None:
            if not self.regulariser:
                raise GEffectError("EvalSlices.regulariser is empty: pass None, or retain rows for the regulariser")
            shared = _token_rows(self.retain) & _token_rows(self.regulariser)
            if shared:
                raise GEffectError(f"EvalSlices: {len(shared)} row(s) are both in the measured retain slice and in "
                                   f"the regulariser's rows; the regulariser would add α·‖∇R(D_r)‖² to e_r. Draw the "
                                   f"regulariser rows from elsewhere (build_slices: regulariser_offset)")

    def to(self, device) -> "EvalSlices":
        move = lambda bs: None if bs is None else [{k: v.to(device) for k, v in b.items()} for b in bs]
        return EvalSlices(move(self.forget), move(self.retain), move(self.idk), move(self.regulariser))


def _token_rows(batches: Sequence[dict]) -> set[tuple[int, ...]]:
    """Each row's non-padding token ids, to compare slices row by row."""
    rows = set()
    for b in batches:
        mask = b.get("attention_mask", torch.ones_like(b["input_ids"])).bool()
        rows.update(tuple(ids[m].tolist()) for ids, m in zip(b["input_ids"], mask))
    return rows


def make_slices(forget_items: Sequence[dict], retain_items: Sequence[dict], pad_id: int, batch_size: int | None = None,
                idk_items: Sequence[dict] | None = None, regulariser_items: Sequence[dict] | None = None) -> EvalSlices:
    """Pad dataset items (`QADataset[i]`) into batches of `batch_size` (None: the whole slice in one batch)."""
    def chunks(items):
        items = list(items)
        n = batch_size or max(len(items), 1)
        from ..data.collate import pad_batch
        return [pad_batch(items[i:i + n], pad_id) for i in range(0, len(items), n)]

    return EvalSlices(chunks(forget_items), chunks(retain_items), chunks(idk_items) if idk_items else None,
                      chunks(regulariser_items) if regulariser_items else None)


@dataclass
class GEffect:
    """G-effects of one checkpoint per group (plus `total` = their sum over groups that got a gradient).

    `unlearn`/`retain`: of L_u as asked (`term`); `forget_unlearn`/`forget_retain`: of the γ·forget term alone,
    filled when term='total' (equal to the total for objectives without a retain regulariser).
    """

    unlearn: dict[str, float]
    retain: dict[str, float]
    no_grad: list[str] = field(default_factory=list)
    loss: float = math.nan
    risk_forget: float = math.nan
    risk_retain: float = math.nan
    forget_unlearn: dict[str, float] | None = None
    forget_retain: dict[str, float] | None = None
    loss_forget: float = math.nan

    def rows(self) -> list[dict]:
        """Tidy rows: {group, kind, value}; kind 'unlearn'|'retain' (L_u as asked) and, with term='total',
        'unlearn_forget'|'retain_forget' (the forget term alone)."""
        tables = [("unlearn", self.unlearn), ("retain", self.retain)]
        if self.forget_unlearn is not None:
            tables += [("unlearn_forget", self.forget_unlearn), ("retain_forget", self.forget_retain)]
        return [{"group": g, "kind": kind, "value": v} for kind, d in tables for g, v in d.items()]


class SharedForward:
    """Wraps a model so forward calls on the registered batches run once and are reused.

    The objective calls `model(...)` through `sequence_logprobs`/`model_forward`; so do we for the risk. The
    first call on a registered batch (matched by the identity of its `input_ids` tensor) runs the model with
    `output_hidden_states=True` (so any caller can read hidden states from it) and caches the outputs; later calls
    on that batch return them, unless a forward hook waits on a decoder block (RMU reads its block's output
    with one, `block_output`): then the forward runs again. Calls on other inputs pass straight through.
    Attribute access is delegated.
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
            if block_output_pending():  # a block-output read (RMU) needs the forward to really run
                return self._model(**kwargs)
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


Pairs = Sequence[tuple[list, torch.Tensor]]  # (per-parameter ∇L list, per-group accumulator)


def _stream_dot(loss: torch.Tensor, P: _Params, pairs: Pairs, retain_graph: bool = False) -> None:
    """Back-propagate `loss`; dot each parameter's gradient with every gl[k] the moment it lands, then free it."""
    handles = []
    inputs = []
    for k, p in enumerate(P.tensors):
        if all(gl[k] is None for gl, _ in pairs):
            continue

        def hook(param, k=k):
            for gl, acc in pairs:
                if gl[k] is not None:
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


def _flush_dot(P: _Params, pairs: Pairs) -> None:
    """Dot the gradients accumulated in `.grad` with every gl, then free them."""
    for k, p in enumerate(P.tensors):
        if p.grad is not None:
            for gl, acc in pairs:
                if gl[k] is not None:
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
    With term='total' the forget term's G-effects are computed alongside (`GEffect.forget_unlearn/_retain`).
    """
    groups = groups or parameter_groups(model)
    if select:
        unknown = [g for g in select if g not in groups.names]
        if unknown:
            raise GEffectError(f"select={list(select)}: no group {unknown[0]!r}; groups are {groups.names}")
    if term not in TERMS:
        raise GEffectError(f"term={term!r}: expected one of {TERMS}")
    _check_slices(objective, slices, term)
    P = _Params(model, groups)
    terms = TERMS if term == "total" else (term,)   # 'total' first: it is the one asked for
    n_u = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in slices.forget)
    n_r = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in slices.retain)
    single = len(slices.forget) == 1
    grads = {t: [None] * len(P.tensors) for t in terms}
    e_u, e_r = {t: P.zeros() for t in terms}, {t: P.zeros() for t in terms}
    values = {t: 0.0 for t in terms}
    risk_u = risk_r = 0.0
    with _GradState(model, P.tensors):
        for b, fb in enumerate(slices.forget):
            proxy = SharedForward(model, [fb])
            _accumulate_objective_grads(objective, proxy, slices, b, ref, P, grads, values)
            risk, n_b = nll_risk(proxy, fb)
            risk_u += n_b / n_u * risk.item()
            if single:
                _stream_dot(risk * (n_b / n_u), P, [(grads[t], e_u[t]) for t in terms])
            else:
                inputs = [p for k, p in enumerate(P.tensors) if any(grads[t][k] is not None for t in terms)]
                if inputs:
                    (risk * (n_b / n_u)).backward(inputs=inputs)
            del risk, proxy
        if not single:
            _flush_dot(P, [(grads[t], e_u[t]) for t in terms])
        for rb in slices.retain:
            risk, n_b = nll_risk(model, rb)
            risk_r += n_b / n_r * risk.item()
            _stream_dot(risk * (n_b / n_r), P, [(grads[t], e_r[t]) for t in terms])
            del risk
    out = _finish(P, grads[term], e_u[term], e_r[term], select, values[term], risk_u, risk_r, objective)
    if term == "total":
        forget = _finish(P, grads["forget"], e_u["forget"], e_r["forget"], (), values["forget"], risk_u, risk_r,
                         objective, warn=False)
        out.forget_unlearn, out.forget_retain, out.loss_forget = forget.unlearn, forget.retain, forget.loss
    return out


def _check_slices(objective, slices: EvalSlices, term: str) -> None:
    if objective.needs_idk and slices.idk is None:
        raise GEffectError(f"objective {objective.name!r} needs IdK answers: pass EvalSlices(idk=...)")
    if term == "total" and objective.needs_retain and slices.regulariser is None:
        raise GEffectError(f"objective {objective.name!r} has a retain regulariser (retain={objective.config.retain!r}), "
                           f"so term='total' needs its rows: pass EvalSlices(regulariser=...) (retain rows disjoint "
                           f"from the measured retain slice; build_slices draws them), or use term='forget'")


def _accumulate_objective_grads(objective, proxy, slices: EvalSlices, b: int, ref, P: _Params, grads: dict,
                                values: dict) -> None:
    """Add w_b·∇L (each term in `grads`) of forget batch b to the per-parameter lists; add w_b·L to `values`."""
    fb = slices.forget[b]
    n_rows = sum(len(x["input_ids"]) for x in slices.forget)
    w = len(fb["input_ids"]) / n_rows
    rb = slices.regulariser[b % len(slices.regulariser)] if slices.regulariser and "total" in grads else None
    ib = slices.idk[b] if slices.idk is not None else None
    batch = UnlearnBatch(forget=fb, retain=rb if objective.needs_retain else None, idk=ib)
    for t, gl in grads.items():
        loss = objective_loss(objective, proxy, batch, ref, t)
        _check_loss(loss, objective)
        new = torch.autograd.grad(loss * w, P.tensors, retain_graph=True, allow_unused=True)
        for k, g in enumerate(new):
            if g is not None:
                gl[k] = g if gl[k] is None else gl[k] + g
        values[t] += w * loss.item()


def _finish(P: _Params, gl, e_u, e_r, select, loss_value, risk_u, risk_r, objective, warn: bool = True) -> GEffect:
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
    if dead and warn:
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
        table = lambda kind, d: None if d is None else {g: self((kind, g), v) for g, v in d.items()}
        return GEffect(table("unlearn", effect.unlearn), table("retain", effect.retain), effect.no_grad, effect.loss,
                       effect.risk_forget, effect.risk_retain, table("unlearn_forget", effect.forget_unlearn),
                       table("retain_forget", effect.forget_retain), effect.loss_forget)


__all__ = ["GEffect", "GEffectError", "EvalSlices", "make_slices", "compute_geffect", "SharedForward", "EMA",
           "nll_risk", "objective_loss", "SequenceLogprobs"]
