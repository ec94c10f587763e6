"""Batched greedy generation of answers: left padding, the KV cache, per-row stop at EOS.

Used once per question set; ROUGE, exact match and any other text metric reuse the same strings.
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..data.collate import PromptFormat, encode_prompt, pad_batch

DEFAULT_MAX_NEW_TOKENS = 200


def generate_answers(model, tokenizer, questions: Sequence[str], fmt: PromptFormat | None = None,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 32) -> list[str]:
    """Greedy answers (decoded, special tokens dropped, stripped) in input order.

    Prompts are sorted by length and left-padded into batches of `batch_size`; `model.generate` runs with the
    attention mask (so positions skip the padding), `use_cache=True`, and stops each row at EOS (finished rows
    are padded until the batch ends or `max_new_tokens` is reached). Default 200 new tokens, as TOFU and
    open-unlearning use.
    """
    fmt = fmt or PromptFormat()
    prompts = [encode_prompt(tokenizer, q, fmt) for q in questions]
    return [t.strip() for t in generate_from_ids(model, tokenizer, prompts, max_new_tokens, batch_size)]


class StopOnStrings(StoppingCriteria):
    """Per-row stop once the generated part of the row (decoded) contains any of `stops`; the row is then
    padded while the others go on. The caller still cuts the text at the stop (a stop may end mid-token)."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, [s for s in stops if s], prompt_len

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


@torch.no_grad()
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
    out: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = pad_batch([{"input_ids": prompts[i]} for i in idx], tokenizer.pad_token_id, "left")
            ids = batch["input_ids"].to(device)
            stop = StoppingCriteriaList([StopOnStrings(tokenizer, stops, ids.shape[1])]) if stops else None
            gen = model.generate(input_ids=ids, attention_mask=batch["attention_mask"].to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                 temperature=None, top_p=None, top_k=None, stopping_criteria=stop)
            texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True, **decode)
            for i, t in zip(idx, texts):
                out[i] = t
    finally:
        if was_training:
            model.train()
    return out  # type: ignore[return-value]
