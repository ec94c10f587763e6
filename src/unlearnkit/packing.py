"""Padding-free decoder passes: the real tokens of padded batches run back to back as one decoder row.

A TOFU step's batches are about a sixth padding, which a padded forward computes and throws away. Here the
rows' real tokens run as one row, each with its own position ids and no attention mask, and the hidden states
go back into each batch's padded layout, so everything after the decoder (the label-position head, every
objective, fine-tuning) is unchanged. Values agree with the padded pass to float rounding (matmuls of other
shapes; tested, gradients too).

No row may attend to another. How that is kept decides what a packed row costs:
* sdpa on CPU (the default there): each row's attention runs on its own, `is_causal`, on its slice of the packed
  queries, keys and values (`segment_attention`, registered with transformers' `AttentionInterface` and
  switched on only for the packed call; a sliding-window layer's rows get that window's mask). Attention then
  costs what the padded rows' does, less the padding, and no mask is built;
* flash attention: transformers reads the packed position ids itself (variable-length kernels);
* anything else (eager attention; sdpa on an accelerator, where per-row kernels would each pay a launch; sdpa
  under activation checkpointing, whose recomputation would run after the switch is undone): transformers
  builds a block-diagonal causal mask from the position ids (`masking_utils.find_packed_sequence_indices`),
  and attention covers the whole packed square.
`packing_pays` weighs the padding saved against that attention from the model's sizes.

Several batches can share one pass (`packed_hidden(model, [forget, retain])`, used by `label_logprobs.one_pass`):
the weights' gradients are then one matmul each instead of two summed, and each matmul is larger. On a SmolLM2
GradDiff step (`benchmarks/row_packing.py`): masked 2.49 s, per-row 2.33 s, per-row in one pass 2.10 s.
`row_packing(False)` switches packing off, `per_row_attention(False)` the per-row attention (for A/B tests and
benchmarks). Needs transformers 5.x (this package's floor), whose masks read packed position ids.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .logprobs import IGNORE, position_ids_from_mask

#: the attention implementation name under which `segment_attention` is registered with transformers
SEGMENT_ATTENTION = "unlearnkit_packed_sdpa"

_PACK = [True]
_PER_ROW = [True]


@contextlib.contextmanager
def switched(cell: list, enabled: bool):
    """Set a module switch (a one-element list such as `_PACK`) within the block, restoring it after."""
    before = cell[0]
    cell[0] = bool(enabled)
    try:
        yield
    finally:
        cell[0] = before


def row_packing(enabled: bool):
    """Within the block, padded batches run packed into one decoder row only if `enabled` (default: on)."""
    return switched(_PACK, enabled)


def per_row_attention(enabled: bool):
    """Within the block, sdpa models keep packed rows apart by per-row attention only if `enabled` (default: on);
    off, by the block-diagonal mask over the whole packed square (for A/B tests and benchmarks)."""
    return switched(_PER_ROW, enabled)


def segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, packed_lengths: Sequence[int] | None = None, **kwargs):
    """Causal sdpa over each packed row's own slice of the sequence (`packed_lengths` tokens each, in order).

    Same signature and output as transformers' `sdpa_attention_forward`, which runs each slice (GQA
    included). `attention_mask` is None here: no mask is built for this implementation. A sliding-window layer
    (`sliding_window` in the layer's kwargs) gets that window's mask on rows longer than it."""
    if packed_lengths is None:
        raise RuntimeError(f"attention implementation {SEGMENT_ATTENTION!r} runs only on packed rows "
                           f"(unlearnkit.packing passes their lengths)")
    lengths = list(packed_lengths)
    window = kwargs.get("sliding_window")              # Mistral / Qwen sliding-window layers pass theirs
    outputs = []
    for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2)):
        n = q.shape[2]
        mask = sliding_causal_mask(n, window, q.device) if window is not None and n > window else None
        outputs.append(sdpa_attention_forward(module, q, k, v, mask, dropout=dropout, scaling=scaling,
                                              is_causal=mask is None)[0])
    return torch.cat(outputs, dim=1), None


def sliding_causal_mask(n: int, window: int, device=None) -> torch.Tensor:
    """(1, 1, n, n) bool, True where query i may see key j: j <= i and i - j < `window` (transformers' sliding
    window), for a row longer than its layer's window."""
    i = torch.arange(n, device=device)
    offset = i[:, None] - i[None, :]
    return ((offset >= 0) & (offset < window))[None, None]


AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)


def attention_kind(model) -> str:
    """How a packed row of `model` keeps rows apart: 'segments' (sdpa per row), 'varlen' (flash attention's
    own), or 'mask' (a block-diagonal mask over the whole packed square).

    Per-row sdpa only on CPU, where it was measured: on an accelerator each row's attention would be a kernel
    launch of its own, while one masked kernel per layer is cheap at these lengths."""
    decoder = model.get_decoder()
    impl = getattr(decoder.config, "_attn_implementation", None) or ""
    if impl.startswith("flash_attention"):
        return "varlen"
    checkpointing = getattr(decoder, "is_activation_checkpointing", None)        # transformers >= 5.x's name
    if checkpointing is None:
        checkpointing = getattr(decoder, "is_gradient_checkpointing", False)
    first = next(decoder.parameters(), None)
    on_cpu = first is None or first.device.type == "cpu"
    if impl == "sdpa" and not checkpointing and on_cpu and _PER_ROW[0]:
        return "segments"
    return "mask"


def packing_pays(config, lengths: Sequence[int], widths: Sequence[int], segmented: bool) -> bool:
    """Whether rows of `lengths` real tokens cost fewer multiply-adds packed than padded to `widths` (per row).

    Per token, the blocks' linear layers cost the same either way; attention costs 2·d per layer for each
    (query, key) pair it covers: a padded row its width², a packed row its own length² (`segmented`) or the
    whole packed square. A config without the sizes this needs is never packed."""
    try:
        d, layers, ffn = int(config.hidden_size), int(config.num_hidden_layers), int(config.intermediate_size)
        kv = d * int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads) // int(
            config.num_attention_heads)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return False
    linear = layers * (2 * d * d + 2 * d * kv + 3 * d * ffn)
    attention = 2 * d * layers
    n_real = sum(lengths)
    pairs = sum(n * n for n in lengths) if segmented else n_real * n_real
    padded = sum(w * (linear + attention * w) for w in widths)
    return n_real * linear + attention * pairs < padded


def packable(batch: dict) -> torch.Tensor | None:
    """The real-token mask (B, T) of a padded batch that can run packed exactly, else None: no attention mask,
    the caller's own position ids, or a label read from a padding position's hidden state."""
    mask = batch.get("attention_mask")
    if mask is None or batch.get("position_ids") is not None:
        return None
    real = mask.bool()
    labels = batch.get("labels")
    if labels is not None and bool(((labels[:, 1:] != IGNORE) & ~real[:, :-1]).any()):
        return None
    return real


def packed_hidden(model, batches: Sequence[dict]) -> list[torch.Tensor] | None:
    """The decoder's last hidden states (B, T, d) of each padded batch, from one packed decoder pass over all of
    them; padding positions hold zeros. None when packing is switched off, would not be exact, or would not pay
    (then run each batch padded, `decoder_hidden`)."""
    config = getattr(model, "config", None)
    reals = [packable(b) for b in batches]
    if not _PACK[0] or config is None or not reals or any(r is None for r in reals):
        return None
    kind = attention_kind(model)
    rows = [[int(n) for n in r.sum(-1)] for r in reals]                  # real tokens of each row, batch by batch
    lengths = [n for row in rows for n in row]
    widths = [r.shape[1] for r in reals for _ in range(r.shape[0])]
    if not packing_pays(config, lengths, widths, segmented=kind != "mask"):
        return None
    ids = torch.cat([b["input_ids"][r] for b, r in zip(batches, reals)]).unsqueeze(0)
    positions = torch.cat([position_ids_from_mask(b["attention_mask"])[r] for b, r in zip(batches, reals)])
    decoder = model.get_decoder()
    extra = {"packed_lengths": tuple(n for n in lengths if n)} if kind == "segments" else {}
    with _attention_implementation(decoder.config, SEGMENT_ATTENTION if kind == "segments" else None):
        hidden = decoder(input_ids=ids, attention_mask=None, position_ids=positions.unsqueeze(0), use_cache=False,
                         **extra).last_hidden_state[0]
    out = []
    for real, part in zip(reals, hidden.split([sum(row) for row in rows])):
        out.append(part.new_zeros(*real.shape, part.shape[-1]).masked_scatter(real.unsqueeze(-1), part))
    return out


@contextlib.contextmanager
def _attention_implementation(config, name: str | None):
    """Within the block, the model's layers (which read `config._attn_implementation` on each forward) use `name`."""
    if name is None:
        yield
        return
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


def decoder_hidden(model, batch: dict) -> torch.Tensor:
    """The decoder's last hidden states (B, T, d) of a padded batch, from one packed row where that pays.

    Position ids come from the attention mask (as `logprobs.model_forward`), so left padding is handled
    unless the batch brings its own `position_ids`; padding positions of a packed batch hold zeros."""
    packed = packed_hidden(model, [batch])
    if packed is not None:
        return packed[0]
    mask = batch.get("attention_mask")
    position_ids = batch.get("position_ids")
    if position_ids is None and mask is not None:
        position_ids = position_ids_from_mask(mask)
    return model.get_decoder()(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state
