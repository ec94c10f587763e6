"""Exact-match recall of greedy answers: did the model memorise the facts? (the finetune demo's check)."""
from __future__ import annotations

import re
from typing import Sequence

from ..data.collate import PromptFormat
from ..data.records import QARecord
from .generation import generate_answers
from .result import MetricResult


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


#: tokens beyond the longest reference answer that a generation may still use and match it: a space or final
#: punctuation (which `normalize_answer` strips) may tokenise apart from the answer's own last token
MATCH_SLACK = 8


def answer_recall(model, tokenizer, records: Sequence[QARecord], fmt: PromptFormat | None = None,
                  max_new_tokens: int | None = None, batch_size: int = 32) -> tuple[float, list[str]]:
    """(fraction of records whose greedy answer exactly matches the reference after normalisation, the answers).

    `max_new_tokens=None` generates at most the longest answer's token count + `MATCH_SLACK`: a longer
    generation cannot match, so the figure is the same as with unbounded generation, and a model that does
    not know the answers (it rambles until the limit) costs no more than one that does."""
    hits, gens = _answer_hits(model, tokenizer, records, fmt, max_new_tokens, batch_size)
    return sum(hits) / len(hits), gens


def _answer_hits(model, tokenizer, records: Sequence[QARecord], fmt: PromptFormat | None, max_new_tokens: int | None,
                 batch_size: int) -> tuple[list[bool], list[str]]:
    """(exact match per record, greedy answers): the one generation and check behind both recall functions."""
    if not records:
        raise ValueError("answer_recall: no records")
    if max_new_tokens is None:
        longest = max(len(tokenizer(" " + r.answer, add_special_tokens=False)["input_ids"]) for r in records)
        max_new_tokens = longest + MATCH_SLACK
    gens = generate_answers(model, tokenizer, [r.question for r in records], fmt, max_new_tokens, batch_size)
    return [exact_match(g, r.answer) for g, r in zip(gens, records)], gens


def recall_metric(model, tokenizer, records: Sequence[QARecord], fmt: PromptFormat | None = None,
                  batch_size: int = 32) -> MetricResult:
    """`answer_recall` as a `MetricResult`: the share of exactly recalled answers, one 0/1 per record.

    The demo's plain-language check that fine-tuning taught the facts and unlearning took them away: unlike a
    probability or ROUGE, "the model still says 'X has diabetes'" needs no explanation."""
    hits = [float(h) for h in _answer_hits(model, tokenizer, records, fmt, None, batch_size)[0]]
    return MetricResult(sum(hits) / len(hits), "exact_match_recall[greedy, normalised]", len(hits), per_item=hits)
