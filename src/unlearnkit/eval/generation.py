"""Batched greedy generation of answers: left padding, the KV cache, per-row stop at EOS.

Used once per question set; ROUGE, exact match and any other text metric reuse the same strings.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data.collate import PromptFormat, encode_prompt, pad_batch

DEFAULT_MAX_NEW_TOKENS = 200


@torch.no_grad()
def generate_answers(model, tokenizer, questions: Sequence[str], fmt: PromptFormat | None = None,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 32) -> list[str]:
    """Greedy answers (decoded, special tokens dropped, stripped) in input order.

    Prompts are sorted by length and left-padded into batches of `batch_size`; `model.generate` runs with the
    attention mask (so positions skip the padding), `use_cache=True`, and stops each row at EOS (finished rows
    are padded until the batch ends or `max_new_tokens` is reached). Default 200 new tokens, as TOFU and
    open-unlearning use.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size={batch_size}, max_new_tokens={max_new_tokens}: both must be ≥ 1")
    fmt = fmt or PromptFormat()
    device = next(model.parameters()).device
    prompts = [encode_prompt(tokenizer, q, fmt) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = pad_batch([{"input_ids": prompts[i]} for i in idx], tokenizer.pad_token_id, "left")
            ids = batch["input_ids"].to(device)
            gen = model.generate(input_ids=ids, attention_mask=batch["attention_mask"].to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                 temperature=None, top_p=None, top_k=None)
            texts = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
            for i, t in zip(idx, texts):
                out[i] = t.strip()
    finally:
        if was_training:
            model.train()
    return out  # type: ignore[return-value]
