"""Exact-match recall of greedy answers: did the model memorise the facts? (the finetune demo's check)."""
from __future__ import annotations

import re
from typing import Sequence

from ..data.collate import PromptFormat
from ..data.records import QARecord
from .generation import generate_answers


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace, strip surrounding whitespace and trailing punctuation."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.rstrip(" .!?;,:")


def exact_match(generated: str, answer: str) -> bool:
    """Normalised exact match (`normalize_answer` on both sides)."""
    return normalize_answer(generated) == normalize_answer(answer)


def greedy_answers(model, tokenizer, questions: Sequence[str], fmt: PromptFormat | None = None,
                   max_new_tokens: int = 64, batch_size: int = 32) -> list[str]:
    """Alias of `generation.generate_answers` with a shorter default length (kept for existing callers)."""
    return generate_answers(model, tokenizer, questions, fmt, max_new_tokens=max_new_tokens, batch_size=batch_size)


def answer_recall(model, tokenizer, records: Sequence[QARecord], fmt: PromptFormat | None = None,
                  max_new_tokens: int = 64, batch_size: int = 32) -> tuple[float, list[str]]:
    """(fraction of records whose greedy answer exactly matches the reference after normalisation, the answers)."""
    if not records:
        raise ValueError("answer_recall: no records")
    gens = generate_answers(model, tokenizer, [r.question for r in records], fmt, max_new_tokens, batch_size)
    hits = [exact_match(g, r.answer) for g, r in zip(gens, records)]
    return sum(hits) / len(hits), gens
