"""Batched greedy generation of answers: left padding, a preallocated KV cache, rows leave the batch when they stop.

Used once per question set; ROUGE, exact match and any other text metric reuse the same strings.

`greedy_decode` is a lean greedy loop instead of `model.generate`: the same forward calls (attention mask, position
ids counted over real tokens, logits of the last position only), the same argmax, hence the same tokens; but the KV
cache is written in place into a buffer sized once (`BufferLayer`, no `torch.cat` of the whole cache per step and
layer), finished rows are dropped from the batch instead of being fed padding to the end, and no per-step
logits-processor / stopping-criteria machinery runs.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data.collate import PromptFormat, encode_prompt, pad_batch

DEFAULT_MAX_NEW_TOKENS = 200
#: drop finished rows once this share of the batch has finished (each drop copies the live rows' cache once)
PRUNE_SHARE = 0.25


def generate_answers(model, tokenizer, questions: Sequence[str], fmt: PromptFormat | None = None,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 32) -> list[str]:
    """Greedy answers (decoded, special tokens dropped, stripped) in input order.

    Prompts are sorted by length and left-padded into batches of `batch_size`; each row stops at EOS or after
    `max_new_tokens` (default 200, as TOFU and open-unlearning use). See `greedy_decode`.
    """
    fmt = fmt or PromptFormat()
    prompts = [encode_prompt(tokenizer, q, fmt) for q in questions]
    return [t.strip() for t in generate_from_ids(model, tokenizer, prompts, max_new_tokens, batch_size)]


class StopOnStrings:
    """Per-row stop once the generated part of the row (decoded) contains any of `stops`. The caller still cuts
    the text at the stop (a stop may end mid-token)."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, [s for s in stops if s], prompt_len

    def __call__(self, input_ids, scores=None, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


def _buffer_layer_class():
    """`DynamicLayer` whose keys/values live in one buffer allocated at the first update (capacity = prompt +
    new tokens) and are returned as views of its filled part: no per-step copy of the cache."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states, value_states):
            b, h, _, d = key_states.shape
            self.device = key_states.device
            self.k_buf = key_states.new_empty(b, h, self.capacity, d)
            self.v_buf = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"KV buffer of {self.capacity} positions overflows at {end}")
            self.k_buf[:, :, self.length:end] = key_states
            self.v_buf[:, :, self.length:end] = value_states
            self.length = end
            self.keys, self.values = self.k_buf[:, :, :end], self.v_buf[:, :, :end]
            return self.keys, self.values

        def batch_select_indices(self, indices):
            if self.is_initialized:
                self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
                self.keys, self.values = self.k_buf[:, :, :self.length], self.v_buf[:, :, :self.length]

    return BufferLayer


def _new_cache(model, capacity: int):
    """A cache of `BufferLayer`s when every decoder layer is full attention; else the model's own `DynamicCache`
    (sliding-window / hybrid layers keep their own layer types)."""
    from transformers.cache_utils import Cache, DynamicCache

    config = model.config.get_text_config(decoder=True)
    types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    if any(t != "full_attention" for t in types):
        return DynamicCache(config=model.config)
    layer = _buffer_layer_class()
    return Cache(layers=[layer(capacity) for _ in types])


@torch.no_grad()
def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, eos_id,
                  stop=None) -> list[list[int]]:
    """Greedy continuation of a left-padded batch; per row the new tokens up to and including its EOS.

    Each step is the forward `model.generate` runs (2D attention mask over prompt + generated tokens, position ids
    = real tokens before the position, logits of the last position only) followed by an argmax in fp32, so the
    tokens are the same. A row finishes at `eos_id` (an id or a list), when `stop(generated ids of live rows)`
    says so, or after `max_new_tokens`; finished rows leave the batch once `PRUNE_SHARE` of it has finished.
    """
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    eos = torch.tensor([eos_id] if isinstance(eos_id, int) else list(eos_id or []), device=device)
    mask = torch.zeros(batch, prompt_len + max_new_tokens, dtype=attention_mask.dtype, device=device)
    mask[:, :prompt_len] = attention_mask
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    gen = torch.zeros(batch, max_new_tokens, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)  # original row of each live row
    live = torch.ones(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long)
    cache = _new_cache(model, prompt_len + max_new_tokens)
    keep = {"logits_to_keep": 1} if getattr(model, "_supports_logits_to_keep", lambda: False)() else {}
    step_ids = input_ids
    for t in range(max_new_tokens):
        width = prompt_len + t
        out = model(input_ids=step_ids, attention_mask=mask[:, :width], position_ids=positions, cache=cache,
                    use_cache=True, **keep)
        nxt = out.logits[:, -1].to(dtype=torch.float32).argmax(-1)
        del out
        gen[rows, t] = nxt
        done = torch.isin(nxt, eos) if eos.numel() else torch.zeros_like(live)
        if stop is not None:
            done |= stop(gen[rows, :t + 1]).to(device)
        done &= live
        if done.any():
            lengths[rows[done].cpu()] = t + 1
            live &= ~done
            if not live.any():
                break
            if (~live).float().mean() >= PRUNE_SHARE:
                keep_idx = live.nonzero().squeeze(-1)
                cache.batch_select_indices(keep_idx)
                rows, live, nxt, mask = rows[keep_idx], live[keep_idx], nxt[keep_idx], mask[keep_idx]
                positions = positions[keep_idx]
        mask[:, width] = 1
        positions = positions[:, -1:] + 1
        step_ids = nxt[:, None]
    gen = gen.cpu()
    return [gen[i, :int(lengths[i])].tolist() for i in range(batch)]


def generate_from_ids(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 32,
                      *, sort_by_length: bool = True, stops: Sequence[str] = (),
                      clean_up_tokenization_spaces: bool | None = None) -> list[str]:
    """Greedy continuations of token-id prompts, decoded (special tokens dropped, not stripped), in input order.

    `sort_by_length=False` keeps the input order in the batches (the batches another tool would form, for
    number-for-number comparisons); `stops`: strings after which a row stops generating (`StopOnStrings`).
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size={batch_size}, max_new_tokens={max_new_tokens}: both must be ≥ 1")
    device = next(model.parameters()).device
    order = list(range(len(prompts)))
    if sort_by_length:
        order.sort(key=lambda i: -len(prompts[i]))
    decode = {} if clean_up_tokenization_spaces is None else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
    stop = StopOnStrings(tokenizer, stops, prompt_len=0) if any(stops) else None
    out: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = pad_batch([{"input_ids": prompts[i]} for i in idx], tokenizer.pad_token_id, "left")
            new = greedy_decode(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                max_new_tokens, tokenizer.eos_token_id, stop)
            for i, t in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True, **decode)):
                out[i] = t
    finally:
        if was_training:
            model.train()
    return out  # type: ignore[return-value]
