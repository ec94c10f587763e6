"""Answer-token log-probabilities with the LM head applied at label positions only (training's fast path).

A causal LM computes logits at every position, but a QA loss reads them only where the next token is an
answer label; the prompt and padding positions' logits are thrown away by the -100 labels. The LM head is a
large matmul (SmolLM2: 49k × 576, about a sixth of a TOFU step's forward) followed by a log-softmax over the
whole vocabulary, and both have a backward. Here the decoder runs on every position (the answer needs the
prompt's hidden states) but the head and the cross-entropy only on the N label positions: the same
`SequenceLogprobs` as `logprobs.sequence_logprobs` (values equal to float rounding; tested, including the
per-step losses of whole unlearning runs), less work per step.

Used only where it is exactly the model's own computation: a bare `nn.Module` (so wrappers that must see
the forward — DDP, DeepSpeed, the G-effect's forward cache — take the usual path) of a decoder-only
architecture whose head is a plain linear map of the last hidden state (no logit scaling or soft-capping).
`label_head(False)` switches the fast path off (for A/B tests and benchmarks).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .logprobs import IGNORE, SequenceLogprobs, position_ids_from_mask, sequence_logprobs

#: model_type values whose causal-LM logits are `lm_head(decoder(x).last_hidden_state)`, nothing more
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})

_ENABLED = [True]


@contextlib.contextmanager
def label_head(enabled: bool):
    """Within the block, `answer_logprobs` uses the label-position head only if `enabled` (default: on)."""
    before = _ENABLED[0]
    _ENABLED[0] = bool(enabled)
    try:
        yield
    finally:
        _ENABLED[0] = before


def supports_label_head(model) -> bool:
    """True if `model` (a bare HF causal LM, or a peft wrapper of one) computes logits as a plain head."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in PLAIN_HEAD_TYPES:
        return False
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return False
    try:
        return model.get_decoder() is not None and model.get_output_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False


def label_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll, keep): fp32 next-token NLL at the N label positions (shape (N,)), and where they are ((B, T-1) bool).

    Position ids come from the attention mask (as `logprobs.model_forward`), so left padding is handled
    unless the batch brings its own `position_ids`."""
    mask = batch.get("attention_mask")
    position_ids = batch.get("position_ids")
    if position_ids is None and mask is not None:
        position_ids = position_ids_from_mask(mask)
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids,
                                 use_cache=False).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])          # [N, V], N = label positions
    return F.cross_entropy(logits.float(), target[keep], reduction="none"), keep


def answer_logprobs(model, batch: dict) -> SequenceLogprobs:
    """`sequence_logprobs(model, batch)`, computing the LM head at label positions only where that is exact."""
    if not (_ENABLED[0] and supports_label_head(model)):
        return sequence_logprobs(model, batch)
    nll, keep = label_nll(model, batch)
    zeros = torch.zeros(keep.shape, dtype=torch.float32, device=nll.device)
    return SequenceLogprobs(token_logprobs=zeros.masked_scatter(keep, -nll), mask=keep)
