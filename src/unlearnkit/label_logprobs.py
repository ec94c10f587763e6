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

Padding-free decoder passes come from `packing`. Inside `Objective.loss`, `one_pass(model, [forget,
retain])` lets the batches an objective scores share one decoder pass and one head matmul (computed when the
first of them is asked for): the weights' gradients are then one matmul each, not two summed.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .logprobs import IGNORE, SequenceLogprobs, sequence_logprobs
from . import packing
from .packing import switched

#: model_type values whose causal-LM logits are `lm_head(decoder(x).last_hidden_state)`, nothing more
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})

_ENABLED = [True]
_SHARE = [True]


def label_head(enabled: bool):
    """Within the block, `answer_logprobs` uses the label-position head only if `enabled` (default: on)."""
    return switched(_ENABLED, enabled)


def shared_passes(enabled: bool):
    """Within the block, `one_pass` shares one decoder pass among its batches only if `enabled` (default: on)."""
    return switched(_SHARE, enabled)


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

    Read from the enclosing `one_pass` when it holds `batch` for `model` (computed with the same grad mode)."""
    for shared in reversed(_SHARED):
        i = shared.index(model, batch)
        if i is not None:
            return shared.result(i)
    return label_nll_many(model, [batch])[0]


def label_nll_many(model, batches: Sequence[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`label_nll` of each batch, from one decoder pass (`packing.packed_hidden`, else a padded pass each) and one head
    matmul over all their label positions."""
    hiddens = packing.packed_hidden(model, batches) if len(batches) > 1 else None
    if hiddens is None:
        hiddens = [packing.decoder_hidden(model, b) for b in batches]
    targets = [b["labels"][:, 1:] for b in batches]
    keeps = [t != IGNORE for t in targets]
    states = torch.cat([h[:, :-1][k] for h, k in zip(hiddens, keeps)])
    logits = model.get_output_embeddings()(states)                              # [N, V], N = label positions
    nll = F.cross_entropy(logits.float(), torch.cat([t[k] for t, k in zip(targets, keeps)]), reduction="none")
    return list(zip(nll.split([int(k.sum()) for k in keeps]), keeps))


@dataclass
class _SharedPass:
    """The batches of one `one_pass` block and, once the first is asked for, all their `label_nll`s."""

    model: object
    batches: list
    grad: bool | None = None
    results: list = field(default_factory=list)

    def index(self, model, batch) -> int | None:
        """Where `batch` sits among this pass's batches, if the pass serves `model` in the current grad mode."""
        if model is not self.model or self.grad not in (None, torch.is_grad_enabled()):
            return None
        return next((i for i, b in enumerate(self.batches) if b is batch), None)

    def result(self, i: int):
        if not self.results:
            self.grad = torch.is_grad_enabled()
            self.results = label_nll_many(self.model, self.batches)
        return self.results[i]


_SHARED: list[_SharedPass] = []


@contextlib.contextmanager
def one_pass(model, batches: Sequence[dict | None]):
    """Within the block, `answer_logprobs(model, b)` for the given batches (None ones are skipped) comes from one
    decoder pass and one head over all of them, computed when the first is asked for (never, if none is).

    Does nothing for fewer than two batches or where the label-position head does not apply. A request made
    with another grad mode than the pass was computed in runs on its own."""
    batches = [b for b in batches if b is not None]
    if len(batches) < 2 or not (_SHARE[0] and _ENABLED[0] and supports_label_head(model)):
        yield
        return
    _SHARED.append(_SharedPass(model, batches))
    try:
        yield
    finally:
        _SHARED.pop()


def answer_logprobs(model, batch: dict) -> SequenceLogprobs:
    """`sequence_logprobs(model, batch)`, computing the LM head at label positions only where that is exact."""
    if not (_ENABLED[0] and supports_label_head(model)):
        return sequence_logprobs(model, batch)
    nll, keep = label_nll(model, batch)
    zeros = torch.zeros(keep.shape, dtype=torch.float32, device=nll.device)
    return SequenceLogprobs(token_logprobs=zeros.masked_scatter(keep, -nll), mask=keep)
