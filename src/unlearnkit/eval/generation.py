"""Batched greedy generation of answers, for every metric that reads generated text.

Used once per question set; ROUGE, exact match and any other text metric reuse the same strings. The decoding
itself (`decode_pool.PoolDecoder`) is a lean greedy loop instead of `model.generate`: the same forward calls and
argmax, hence the same tokens up to floating-point ties, with a preallocated KV cache and batch slots refilled with
the next prompt as rows finish.
"""
from __future__ import annotations

from typing import Sequence

from ..data.collate import PromptFormat, encode_prompt
from .decode_pool import PoolDecoder

DEFAULT_MAX_NEW_TOKENS = 200


def generate_answers(model, tokenizer, questions: Sequence[str], fmt: PromptFormat | None = None,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 32) -> list[str]:
    """Greedy answers (decoded, special tokens dropped, stripped) in input order.

    Prompts go longest first through `batch_size` batch slots; each row stops at EOS or after `max_new_tokens`
    (default 200, as TOFU and open-unlearning use). See `generate_from_ids`.
    """
    fmt = fmt or PromptFormat()
    prompts = [encode_prompt(tokenizer, q, fmt) for q in questions]
    return [t.strip() for t in generate_from_ids(model, tokenizer, prompts, max_new_tokens, batch_size)]


class StopOnStrings:
    """Per-row stop once a row's generated tokens (decoded) contain any of `stops`. The caller still cuts the text
    at the stop (a stop may end mid-token)."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]

    def __call__(self, rows: Sequence[Sequence[int]]) -> list[bool]:
        texts = self.tokenizer.batch_decode(list(rows), skip_special_tokens=True)
        return [any(s in t for s in self.stops) for t in texts]


def generate_from_ids(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 32,
                      *, sort_by_length: bool = True, stops: Sequence[str] = (),
                      clean_up_tokenization_spaces: bool | None = None) -> list[str]:
    """Greedy continuations of token-id prompts, decoded (special tokens dropped, not stripped), in input order.

    Prompts go longest first through `batch_size` slots that are refilled as rows finish (`PoolDecoder`).
    `sort_by_length=False` decodes fixed batches in the input order instead (the batches another tool would form,
    for number-for-number comparisons); `stops`: strings after which a row stops generating (`StopOnStrings`).
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size={batch_size}, max_new_tokens={max_new_tokens}: both must be ≥ 1")
    order = list(range(len(prompts)))
    if sort_by_length:
        order.sort(key=lambda i: -len(prompts[i]))
    decode = {} if clean_up_tokenization_spaces is None else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
    stop = StopOnStrings(tokenizer, stops) if any(stops) else None
    was_training = model.training
    model.eval()
    try:
        new = PoolDecoder(model, [prompts[i] for i in order], tokenizer.pad_token_id, max_new_tokens, batch_size,
                          tokenizer.eos_token_id, stop, refill=sort_by_length).run()
    finally:
        if was_training:
            model.train()
    out: list[str | None] = [None] * len(prompts)
    for i, t in zip(order, tokenizer.batch_decode(new, skip_special_tokens=True, **decode)):
        out[i] = t
    return out  # type: ignore[return-value]
