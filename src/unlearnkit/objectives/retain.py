"""Retain regularisers, written once and composed into every objective by `retain="nll"|"kl"|...`.

    loss = γ · forget_term + α · retain_term        (γ = forget_weight, α = retain_weight)

* `nll`: NLL of the retain answers, token-averaged over the batch (GradDiff's retain term).
      L_r = −(1/N) Σ_{answer tokens} log π_θ(y_t | x, y_<t)
* `kl`:  KL(π_ini ‖ π_θ) over the retain sequence's next-token distributions, token-averaged
      L_r = (1/N) Σ_t Σ_v π_ini(v|·) (log π_ini(v|·) − log π_θ(v|·))
  as in the G-effect code (`F.kl_div(log_softmax(current), log_softmax(oracle), reduction='batchmean',
  log_target=True)` over flattened logits, methods.md B.4) and open-unlearning's `KL` retain loss.
  Difference, on purpose: that code averages over *every* position of the padded batch, pad included; we
  average over the positions of the attention mask, so the value does not depend on how a batch was
  padded. On an unpadded batch the two agree (`kl_to_reference(..., mask=None)` gives the all-positions
  value; both are tested).
* `hidden` (registered by `rmu.py`): MSE between hidden states and the reference's at RMU's layer.

New kinds register a `RetainTerm` in `RETAIN_TERMS`; an objective's config then accepts its name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..label_logprobs import answer_logprobs
from ..logprobs import model_forward
from .reduce import token_mean
from .registry import Registry


@dataclass(frozen=True)
class RetainTerm:
    """`fn(model, retain_batch, ref, config) -> (scalar, logs)`; `reference`: the `ReferenceProvider` methods it
    calls (empty: none); `config_fields`: hyper-parameters it reads from the objective's config (checked at
    construction); `scores_answers`: whether it scores the retain answers with `answer_logprobs` under the trained
    model (then it shares the forget term's decoder pass, `Objective.scored_parts`)."""

    fn: Callable
    reference: tuple[str, ...] = ()
    config_fields: tuple[str, ...] = ()
    scores_answers: bool = False

    @property
    def needs_reference(self) -> bool:
        return bool(self.reference)


RETAIN_TERMS: Registry = Registry("retain regulariser")
NO_RETAIN = "none"


def nll_loss(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """−token_mean(log p): the HF `outputs.loss` of the answer tokens."""
    return -token_mean(token_logprobs, mask)


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) per position, averaged over `mask` positions (every position when None).

    logits, ref_logits: (B, T, V); mask: (B, T) or None. Gradients flow into `logits` only.
    """
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and reference logits {tuple(ref_logits.shape)} differ; "
                         f"the reference must score the same retain batch with the same vocabulary")
    logp = F.log_softmax(logits.float(), dim=-1)
    ref_logp = F.log_softmax(ref_logits.detach().float(), dim=-1)
    per_pos = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # (B, T)
    if mask is None:
        return per_pos.mean()
    return token_mean(per_pos, mask.bool())


def _nll_term(model, batch, ref, config):
    slp = answer_logprobs(model, batch)
    return nll_loss(slp.token_logprobs, slp.mask), {}


def _kl_term(model, batch, ref, config):
    logits = model_forward(model, batch).logits
    ref_logits = ref.retain_logits(batch)
    return kl_to_reference(logits, ref_logits, batch.get("attention_mask")), {}


RETAIN_TERMS.register("nll")(RetainTerm(_nll_term, scores_answers=True))
RETAIN_TERMS.register("kl")(RetainTerm(_kl_term, reference=("retain_logits",)))


def retain_kinds() -> list[str]:
    return [NO_RETAIN, *RETAIN_TERMS.names()]
