"""Word n-gram novelty of a generation against what was already collected, and the bandit reward built from it.

Reveal-and-Release collects the model's own generations as forget data. A generation that repeats what
is already collected adds little, so the bandit reward for an instruction is its reveal score damped by
novelty (`reveal_reward`). The same n-gram machinery de-duplicates instructions (`instructions.dedupe`).
"""
from __future__ import annotations

import re
from typing import Iterable

_WORD = re.compile(r"\w+", re.UNICODE)


def normalise_text(text: str) -> str:
    """Case-folded words joined by single spaces (punctuation and extra whitespace dropped)."""
    return " ".join(_WORD.findall(text.casefold()))


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of the normalised text; a text shorter than n gives its one whole-text gram."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    words = normalise_text(text).split()
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b|, with 1.0 for two empty sets."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NgramNovelty:
    """Fraction of a text's word n-grams not seen in the collected texts.

    novelty(x) = |G_n(x) \\ C| / |G_n(x)| where G_n(x) are the word n-grams of x (n=3 by default) and C is
    the union of the n-grams of every text passed to `add`. An empty text has novelty 0 (it reveals nothing).
    """

    def __init__(self, n: int = 3, texts: Iterable[str] = ()):
        if n < 1:
            raise ValueError(f"NgramNovelty n={n} must be >= 1")
        self.n = n
        self.seen: set[tuple[str, ...]] = set()
        for t in texts:
            self.add(t)

    def novelty(self, text: str) -> float:
        grams = word_ngrams(text, self.n)
        if not grams:
            return 0.0
        return len(grams - self.seen) / len(grams)

    def add(self, text: str) -> None:
        self.seen |= word_ngrams(text, self.n)

    def __call__(self, texts: Iterable[str]) -> list[float]:
        """Novelty of each text against the collected set (texts in the batch do not count against each other)."""
        return [self.novelty(t) for t in texts]


def reveal_reward(score: float, novelty: float, novelty_weight: float = 1.0) -> float:
    """Bandit reward r = score · ((1 − w) + w · novelty), both inputs in [0, 1].

    w = 1 (default) gives score × novelty: a generation is worth as much as it reveals and is new;
    w = 0 ignores novelty. Our choice: the paper's reward is not public (reference/methods.md §C.3).
    """
    if not 0.0 <= novelty_weight <= 1.0:
        raise ValueError(f"novelty_weight={novelty_weight} must be in [0, 1]")
    for label, v in (("score", score), ("novelty", novelty)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{label}={v} must be in [0, 1]")
    return float(score) * ((1.0 - novelty_weight) + novelty_weight * float(novelty))
