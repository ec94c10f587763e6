"""`sequence_logprobs`: the one place where answer-token log-probabilities are computed.

Objectives, metrics, membership inference, the G-effect and the reference cache all call this, so
the label shift, the mask and the position ids for padded batches are done exactly once. Results are
invariant to batch composition: a sample scores the same alone and inside a left- or right-padded batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # the label of a position that is not scored (prompt, padding); defined here only


@dataclass
class SequenceLogprobs:
    """Per-token log p(label) (0 where masked) and the mask, both shaped (B, T-1) after the shift."""

    token_logprobs: torch.Tensor
    mask: torch.Tensor

    @property
    def n_tokens(self) -> torch.Tensor:
        return self.mask.sum(-1)

    @property
    def sum(self) -> torch.Tensor:
        """log π(y|x): summed over answer tokens (what NPO and DPO use)."""
        return self.token_logprobs.sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """Length-normalised log-prob (mean over answer tokens); −mean is the per-sample NLL."""
        return self.sum / self.n_tokens.clamp(min=1)


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> SequenceLogprobs:
    """Shift (logits at t predict label t+1), gather in fp32 and mask labels == -100."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (batch, time)")
    logits = logits[:, :-1, :]
    target = labels[:, 1:]
    mask = target != IGNORE
    safe = torch.where(mask, target, torch.zeros_like(target))
    nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), safe.reshape(-1), reduction="none")
    lp = torch.where(mask, -nll.view_as(safe), torch.zeros((), dtype=torch.float32, device=logits.device))
    return SequenceLogprobs(token_logprobs=lp, mask=mask)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions count real tokens only, so left padding does not shift a sample's positions."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)


def model_forward(model, batch: dict, **kwargs):
    """Forward with position ids derived from the attention mask (correct for left padding)."""
    mask = batch.get("attention_mask")
    extra = {}
    if mask is not None:
        extra["attention_mask"] = mask
        extra["position_ids"] = position_ids_from_mask(mask)
    return model(input_ids=batch["input_ids"], use_cache=False, **extra, **kwargs)


def supports_logits_to_keep(model) -> bool:
    """Whether `model`'s forward takes HF's `logits_to_keep` (apply the LM head to the last k positions only)."""
    check = getattr(model, "_supports_logits_to_keep", None)
    return bool(check()) if callable(check) else False


def full_attention_only(model) -> bool:
    """Whether every decoder layer of `model` is full attention, so a plain KV cache can be repeated per row,
    extended and written in place (sliding-window and hybrid layers keep their own caches; a module that is no
    transformers model has no layer types and counts as not)."""
    config = getattr(model, "config", None)
    if not hasattr(config, "get_text_config"):
        return False
    config = config.get_text_config(decoder=True)
    return all(t == "full_attention" for t in getattr(config, "layer_types", None) or ["full_attention"])


def answer_window_forward(model, batch: dict, **forward_kwargs):
    """`model_forward` that applies the LM head only from the earliest position whose next label is scored.

    Returns `(outputs, labels)` with `labels` cut to the same window, so `logprobs_from_logits(outputs.logits,
    labels)` or `answer_index(labels)` give the same per-token values as on the full sequence: the prompt
    positions' B×P×V logits are never computed (open-unlearning-style scoring spends a third of its LM-head work
    and memory there). Models without `logits_to_keep` get the full forward and the full labels.
    """
    labels = batch["labels"]
    scored = (labels[:, 1:] != IGNORE).any(0).nonzero()
    start = int(scored[0]) if len(scored) else 0  # the logit at position s predicts label s + 1
    if start > 0 and supports_logits_to_keep(model):
        return model_forward(model, batch, logits_to_keep=labels.shape[1] - start, **forward_kwargs), labels[:, start:]
    return model_forward(model, batch, **forward_kwargs), labels


def answer_index(labels: torch.Tensor):
    """The shift and mask of `logprobs_from_logits` as indices: `(mask, rows, cols, target)` where the logit at
    `[rows[i], cols[i]]` predicts the scored label `target[i]`; row-major order (= `tensor[mask]` order)."""
    target = labels[:, 1:]
    mask = target != IGNORE
    rows, cols = mask.nonzero(as_tuple=True)
    return mask, rows, cols, target[rows, cols]


def label_logprobs(logit_rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log p(target) per row of (N, V) logits, in fp32: the per-row cross-entropy `logprobs_from_logits` uses
    (same kernel, so the same values), without a log-softmax over positions that are not scored."""
    return -F.cross_entropy(logit_rows.float(), target, reduction="none")


def sequence_logprobs(model, batch: dict, return_outputs: bool = False, **forward_kwargs):
    """Answer-token log-probs of `batch` (keys input_ids, labels, attention_mask) under `model`.

    Returns `SequenceLogprobs`, or `(SequenceLogprobs, outputs)` with `return_outputs=True` so callers
    that also need logits or hidden states (KL, RMU) reuse the same forward pass.
    """
    outputs = model_forward(model, batch, **forward_kwargs)
    slp = logprobs_from_logits(outputs.logits, batch["labels"])
    return (slp, outputs) if return_outputs else slp
