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

Padding-free decoder pass (`packed_rows`): when a batch carries enough padding, its rows' real tokens run as
one row, back to back, with each row's own position ids and no attention mask; transformers then builds a
block-diagonal causal mask from the position ids (`masking_utils.find_packed_sequence_indices`), so no row sees
another. The hidden states are put back in the padded layout before the head, so everything after is
unchanged. About a sixth of a TOFU batch's positions are padding, which the decoder no longer computes; the
values agree with the padded pass to float rounding (matmuls of other shapes). `packing_pays` decides from the
model's sizes (attention over one long row can cost more than the padding it saves); `row_packing(False)`
switches it off. Needs transformers 5.x (this package's floor), whose masks read packed position ids.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .logprobs import IGNORE, SequenceLogprobs, position_ids_from_mask, sequence_logprobs

#: model_type values whose causal-LM logits are `lm_head(decoder(x).last_hidden_state)`, nothing more
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})

_ENABLED = [True]
_PACK = [True]


@contextlib.contextmanager
def _switched(cell: list, enabled: bool):
    """Set a module switch (`_ENABLED`, `_PACK`) within the block, restoring it after."""
    before = cell[0]
    cell[0] = bool(enabled)
    try:
        yield
    finally:
        cell[0] = before


def label_head(enabled: bool):
    """Within the block, `answer_logprobs` uses the label-position head only if `enabled` (default: on)."""
    return _switched(_ENABLED, enabled)


def row_packing(enabled: bool):
    """Within the block, `label_nll` packs padded batches into one row only if `enabled` (default: on)."""
    return _switched(_PACK, enabled)


def packing_pays(config, n_real: int, rows: int, width: int) -> bool:
    """Whether one packed row of `n_real` tokens costs fewer multiply-adds than `rows` padded rows of `width`.

    Per token, the blocks' linear layers cost the same either way, but attention reads every position of its
    row: 2·d per layer and position, in both layouts over the whole (masked) square. So packing saves the padding's
    linear work and pays attention over a longer row: worth it for short rows with much padding, not for long
    ones (SmolLM2, TOFU batches of 4 + 4 with 16% padding: a 7–8% faster step, measured). A config without the
    sizes this needs is never packed."""
    try:
        d, layers, ffn = int(config.hidden_size), int(config.num_hidden_layers), int(config.intermediate_size)
        kv = d * int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads) // int(
            config.num_attention_heads)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return False
    linear = layers * (2 * d * d + 2 * d * kv + 3 * d * ffn)
    attention = 2 * d * layers
    return n_real * (linear + attention * n_real) < rows * width * (linear + attention * width)


def packed_rows(batch: dict, config=None) -> dict | None:
    """The batch's real tokens as one row (`input_ids`, `position_ids`, `real`: where they sit in the padded
    batch), or None when packing would not pay (`packing_pays` with the model's `config`) or not be exact: no
    mask, one row, the caller's own position ids, or a label read from a padding position's hidden state."""
    mask = batch.get("attention_mask")
    if not _PACK[0] or config is None or mask is None or batch.get("position_ids") is not None or mask.shape[0] < 2:
        return None
    real = mask.bool()
    if not packing_pays(config, int(real.sum()), *real.shape):
        return None
    labelled = batch["labels"][:, 1:] != IGNORE
    if bool((labelled & ~real[:, :-1]).any()):
        return None
    return {"input_ids": batch["input_ids"][real].unsqueeze(0),
            "position_ids": position_ids_from_mask(mask)[real].unsqueeze(0), "real": real}


def decoder_hidden(model, batch: dict) -> torch.Tensor:
    """The decoder's last hidden states (B, T, d) of a padded batch, from one packed row where that pays.

    Position ids come from the attention mask (as `logprobs.model_forward`), so left padding is handled
    unless the batch brings its own `position_ids`; padding positions of a packed batch hold zeros."""
    decoder = model.get_decoder()
    packed = packed_rows(batch, getattr(model, "config", None))
    if packed is not None:
        hidden = decoder(input_ids=packed["input_ids"], attention_mask=None, position_ids=packed["position_ids"],
                         use_cache=False).last_hidden_state[0]
        real = packed["real"]
        return hidden.new_zeros(*real.shape, hidden.shape[-1]).masked_scatter(real.unsqueeze(-1), hidden)
    mask = batch.get("attention_mask")
    position_ids = batch.get("position_ids")
    if position_ids is None and mask is not None:
        position_ids = position_ids_from_mask(mask)
    return decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids,
                   use_cache=False).last_hidden_state


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
    """(nll, keep): fp32 next-token NLL at the N label positions (shape (N,)), and where they are ((B, T-1) bool)."""
    hidden = decoder_hidden(model, batch)
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
