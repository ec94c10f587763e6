"""Greedy decoding of many prompts through a fixed set of batch slots, refilled as rows finish (continuous batching).

Why: a fixed batch runs until its longest row stops. On TOFU a few rows run to the 200-token limit while most stop
after 30–60 tokens, so most decode steps carried a handful of live rows and their cost was the model call's fixed
overhead (measured on a 5.2M-parameter Llama: 3 ms per step at one row, 9 ms at 32; 3,663 steps for 37k tokens).
Here a finished row's slot takes the next prompt: the prompt is prefilled on its own and its key/value states are
written into the slot's part of the shared cache, aligned to end at the current position.

Every forward is the one `model.generate` runs for greedy decoding: a 2D attention mask over the cache, position
ids counted over real tokens (so a row's positions do not depend on where its states sit in the buffer), the logits
of the last position only, the argmax in fp32. A row's tokens therefore equal `model.generate`'s on the same prompt
up to floating-point ties (the batch it shares a matmul with differs, as it does between any two batchings).

Slot positions in the buffer carry no meaning beyond the mask: keys are stored after the rotary embedding. At each
refill (and whenever the buffer is full) its unused head, the positions before the oldest live row, is cut off:
every row attends over, and reads from the cache, the whole width, which costs more than the matmuls on small
models (a 5.2M Llama's decode step at 32 rows: 6.3 ms at width 20, 16.8 ms at width 400). Models whose layers are
not all full attention (sliding-window or hybrid caches) keep their own cache: their slots are refilled only when
the whole batch has finished, i.e. fixed batches.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Callable, Sequence

import torch

from ..data.collate import pad_batch
from ..logprobs import full_attention_only, position_ids_from_mask, supports_logits_to_keep

#: refill (or, with no prompts left, drop) finished slots once this share of the batch has finished; each refill is
#: one prefill call, each drop one copy of the live rows' cache
REFILL_SHARE = 0.25


def _buffer_layer_class():
    """`DynamicLayer` whose keys/values live in one buffer allocated at the first update (capacity positions) and
    are returned as views of its filled part: no per-step copy of the cache; rows can be written in place (`place`)
    and the unused head of the buffer cut off (`drop_head`)."""
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

        def _views(self):
            self.keys, self.values = self.k_buf[:, :, :self.length], self.v_buf[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"KV buffer of {self.capacity} positions overflows at {end}")
            self.k_buf[:, :, self.length:end] = key_states
            self.v_buf[:, :, self.length:end] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices):
            if self.is_initialized:
                self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
                self._views()

        def place(self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
            """Write other rows' states into `slots` so that they end at the current length."""
            start = self.length - keys.shape[-2]
            self.k_buf[slots, :, start:self.length] = keys
            self.v_buf[slots, :, start:self.length] = values

        def drop_head(self, n: int):
            """Forget the first `n` positions (no live row attends to them); the rest moves to the front."""
            keep = self.length - n
            self.k_buf[:, :, :keep] = self.k_buf[:, :, n:self.length].clone()
            self.v_buf[:, :, :keep] = self.v_buf[:, :, n:self.length].clone()
            self.length = keep
            self._views()

    return BufferLayer


def new_cache(model, capacity: int):
    """A cache of `BufferLayer`s when every decoder layer is full attention; else the model's own `DynamicCache`
    (sliding-window / hybrid layers keep their own layer types)."""
    from transformers.cache_utils import Cache, DynamicCache

    if not full_attention_only(model):
        return DynamicCache(config=model.config)
    layer = _buffer_layer_class()
    layers = model.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[layer(capacity) for _ in range(layers)])


def _left_padded(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pad_batch([{"input_ids": p} for p in prompts], pad_id, "left")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


class _Slots:
    """The batch being decoded: per slot its prompt (`owner`, -1 once finished), tokens so far, next position id
    and attention-mask row over the cache; the cache's length is the position the next token is written at."""

    def __init__(self, decoder: "PoolDecoder", first: list[int]):
        d = self.d = decoder
        ids, mask = _left_padded([d.prompts[i] for i in first], d.pad_id, d.device)
        width = ids.shape[1]
        self.capacity = 2 * (d.longest + d.max_new) if d.refill else width + d.max_new
        self.cache = new_cache(d.model, self.capacity)
        self.refillable = d.refill and hasattr(self.cache.layers[0], "place")
        self.mask = torch.zeros(len(first), self.capacity, dtype=torch.long, device=d.device)
        self.mask[:, :width] = mask
        self.start = [0] * len(first)  # first buffer position of each slot's row
        self.owner, self.tokens = list(first), [[] for _ in first]
        self.alive = torch.ones(len(first), 1, dtype=torch.long, device=d.device)  # 0: finished, position frozen
        positions = position_ids_from_mask(mask)
        logits = d.forward(ids, mask, positions, self.cache)
        self.positions = positions[:, -1:] + 1
        self.record(torch.arange(len(first), device=d.device), logits)

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def live(self) -> list[int]:
        return [s for s, o in enumerate(self.owner) if o >= 0]

    def record(self, slots: torch.Tensor, logits: torch.Tensor):
        """Take each slot's argmax as its next token; finish rows at EOS, at a stop string or at the length limit."""
        nxt = logits.to(dtype=torch.float32).argmax(-1)
        self.last = nxt if len(slots) == len(self.owner) else self.last.index_put((slots,), nxt)
        ended = set()
        for s, t in zip(slots.tolist(), nxt.tolist()):
            if self.owner[s] < 0:  # a finished slot waiting for a refill: its token means nothing
                continue
            self.tokens[s].append(t)
            if t in self.d.eos or len(self.tokens[s]) >= self.d.max_new:
                ended.add(s)
        if self.d.stop is not None:
            open_ = [s for s in slots.tolist() if s not in ended and self.owner[s] >= 0]
            ended.update(s for s, hit in zip(open_, self.d.stop([self.tokens[s] for s in open_])) if hit)
        for s in ended:
            self.d.out[self.owner[s]] = self.tokens[s]
            self.owner[s], self.tokens[s] = -1, []
            self.alive[s] = 0

    def step(self):
        """One decode step of every slot (finished slots too: their rows are ignored until refilled)."""
        if self.length >= self.capacity:
            self.drop_head(min(self.start[s] for s in self.live()))
        width = self.length
        self.mask[:, width] = 1
        logits = self.d.forward(self.last[:, None], self.mask[:, :width + 1], self.positions, self.cache)
        self.positions = self.positions + self.alive
        self.record(torch.arange(len(self.owner), device=self.d.device), logits)

    def drop_head(self, n: int):
        for layer in self.cache.layers:
            layer.drop_head(n)
        keep = self.capacity - n
        self.mask[:, :keep] = self.mask[:, n:].clone()
        self.mask[:, keep:] = 0
        self.start = [max(0, s - n) for s in self.start]

    def refill(self, new: list[int]):
        """Prefill prompts `new` on their own and place their states in free slots, ending at the current length."""
        free = [s for s, o in enumerate(self.owner) if o < 0][:len(new)]
        ids, mask = _left_padded([self.d.prompts[i] for i in new], self.d.pad_id, self.d.device)
        unused = min(min(self.start[s] for s in self.live()), self.length - ids.shape[1])
        if unused > 0:  # keep the width every row attends over (and reads from the cache) as small as it can be
            self.drop_head(unused)
        cache = new_cache(self.d.model, ids.shape[1])
        positions = position_ids_from_mask(mask)
        logits = self.d.forward(ids, mask, positions, cache)
        slots = torch.tensor(free, device=self.d.device)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.place(slots, theirs.keys, theirs.values)
        width = self.length
        self.mask[slots] = 0
        self.mask[slots, width - ids.shape[1]:width] = mask
        self.positions = self.positions.index_put((slots,), positions[:, -1:] + 1)
        self.alive[slots] = 1
        for s, i in zip(free, new):
            self.owner[s], self.tokens[s], self.start[s] = i, [], width - ids.shape[1]
        self.record(slots, logits)

    def keep(self, slots: list[int]):
        """Drop every other slot from the batch (one copy of the kept rows' cache)."""
        idx = torch.tensor(slots, device=self.d.device)
        self.cache.batch_select_indices(idx)
        self.mask, self.positions, self.last, self.alive = (t[idx] for t in (self.mask, self.positions, self.last,
                                                                                 self.alive))
        self.owner, self.tokens = [self.owner[s] for s in slots], [self.tokens[s] for s in slots]
        self.start = [self.start[s] for s in slots]


class PoolDecoder:
    """Greedy continuations of `prompts` (token-id lists) through `batch_size` slots; see the module docstring.

    `refill=False` decodes fixed batches in the given order (another tool's batches, for number-for-number
    comparisons); with `refill=True` and more prompts than slots the prompts must come longest first (a refilled
    prompt is aligned to end at the current position, so it must fit before it)."""

    def __init__(self, model, prompts: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int, batch_size: int,
                 eos_id=None, stop: Callable[[list[list[int]]], list[bool]] | None = None, refill: bool = True):
        self.model, self.prompts, self.pad_id = model, prompts, pad_id
        self.max_new, self.batch_size, self.stop, self.refill = max_new_tokens, batch_size, stop, refill
        self.eos = {eos_id} if isinstance(eos_id, int) else set(eos_id or [])
        self.device = next(model.parameters()).device
        self.longest = max((len(p) for p in prompts), default=0)
        if refill and len(prompts) > batch_size and any(len(a) < len(b) for a, b in zip(prompts, prompts[1:])):
            raise ValueError("PoolDecoder(refill=True) needs the prompts sorted longest first")
        self.keep_logits = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}
        self.out: list[list[int] | None] = [None] * len(prompts)

    def forward(self, ids, mask, positions, cache) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                         **self.keep_logits)
        return out.logits[:, -1]

    @torch.no_grad()
    def run(self) -> list[list[int]]:
        pending = deque(range(len(self.prompts)))
        batch = None
        threshold = max(1, math.ceil(REFILL_SHARE * self.batch_size))
        while pending or (batch is not None and batch.live()):
            if batch is None or not batch.live():
                batch = _Slots(self, [pending.popleft() for _ in range(min(self.batch_size, len(pending)))])
                continue
            free = len(batch.owner) - len(batch.live())
            if free >= threshold and pending and batch.refillable:
                batch.refill([pending.popleft() for _ in range(min(free, len(pending)))])
            elif free >= threshold:  # nothing to refill with: drop the finished rows
                batch.keep(batch.live())
            if batch.live():
                batch.step()
        return self.out  # type: ignore[return-value]
