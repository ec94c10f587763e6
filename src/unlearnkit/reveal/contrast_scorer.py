"""Entity-contrast scorer: how much a generation depends on *this* entity, measured with the model itself.

A name-mention scorer is fooled twice by an unlearning loop: a model that has only learnt to avoid saying
the name looks forgotten, and a text that repeats the name says nothing. This scorer asks the model instead.
For an instruction x naming the entity and a generation y, let x'_j, y'_j be the same texts with every
surface form of the name replaced by placeholder name j (a person the model knows nothing about). Then

    ℓ(x, y) = Σ_{t ∉ name} log π(y_t | x, y_<t)
    Δ(x, y) = ℓ(x, y) − log( (1/k) Σ_j exp ℓ(x'_j, y'_j) )
    score   = 1 − exp(−max(Δ, 0) / scale)

where ℓ skips the tokens of the name (or placeholder) in the generation and the EOS. Δ is the evidence, in
nats, that the content of y comes from what the model holds about the entity rather than about "some other
person" (the mixture of the placeholders): "… was born in Beijing" scores high only if Beijing is likelier
after this name than after the others; a fact true of one placeholder too, a generation about somebody
else, or generic filler gets Δ ≤ 0. `scale` (nats) sets where the score saturates.

Placeholders should be names the model treats like the entity's kind: the defaults suit a general LM; for
a model fine-tuned on a closed set of people, pass other people it knows (unknown names make everything
after them unlikely, and every generation looks revealing).

The scorer needs the current model: the Reveal-and-Release loop calls `use_model(model, tokenizer, fmt)`
before every round (the model changes as rounds are unlearned), and passes each text's instruction. With
`base=True` (the loop's `score_reference=base`) it rates with the round adapters disabled, i.e. under θ_ini:
text a partly unlearned model now produces counts only if it carries what θ_ini knew about the entity.
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import replace
from typing import Sequence

import torch

from ..data.collate import PromptFormat, encode_qa, mask_answer_spans, pad_batch
from ..logprobs import sequence_logprobs
from .scorers import _check_texts, mention_pattern, register_scorer

#: Placeholder people for the contrast: common names no fine-tuned fact is about.
DEFAULT_PLACEHOLDERS = ("John Smith", "Maria Garcia", "Wei Chen")


@register_scorer("entity_contrast")
class EntityContrastScorer:
    """Score = 1 − exp(−max(Δ, 0)/scale), Δ the log-likelihood gain of a generation's non-name tokens from
    the entity's name over placeholder names (module docstring)."""

    def __init__(self, names: Sequence[str] = (), placeholders: Sequence[str] = DEFAULT_PLACEHOLDERS,
                 scale: float = 2.0, batch_size: int = 16):
        if isinstance(names, str):
            names = (names,)
        names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
        if not names:
            raise ValueError("entity_contrast scorer needs names=[the entity's name, aliases...]")
        if scale <= 0:
            raise ValueError(f"scale={scale} must be > 0 (nats)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.names = names
        self._name = mention_pattern(names)
        taken = {n.casefold() for n in names}
        self.placeholders = [p.strip() for p in placeholders if p.strip() and p.strip().casefold() not in taken]
        if not self.placeholders:
            raise ValueError("entity_contrast scorer needs at least one placeholder name that is not the entity's")
        self._placeholder = {p: mention_pattern([p]) for p in self.placeholders}
        self.scale, self.batch_size = scale, batch_size
        self.model = self.tokenizer = None
        self.base = False
        self.fmt = PromptFormat()

    def use_model(self, model, tokenizer, fmt: PromptFormat | None = None, base: bool = False
                  ) -> "EntityContrastScorer":
        """Score with `model` from now on (the loop's current model). `base=True` scores with its adapters
        disabled (θ_ini), so that only text carrying the original model's knowledge of the entity counts."""
        self.model, self.tokenizer, self.base = model, tokenizer, base
        self.fmt = replace(fmt or PromptFormat(), add_eos=False, masking="exact")
        return self

    def _content_logprob(self, pairs: list[tuple[str, str, re.Pattern]]) -> list[float]:
        """Σ log π over the answer tokens of each (question, answer) outside the spans `pattern` matches."""
        tok, fmt = self.tokenizer, self.fmt
        device = next(self.model.parameters()).device
        items = []
        for q, a, pattern in pairs:
            enc = encode_qa(tok, q, a, fmt)
            mask_answer_spans(tok, enc, a, fmt, [m.span() for m in pattern.finditer(a)])
            items.append({"input_ids": enc.input_ids, "labels": enc.labels})
        out: list[float] = []
        was_training = self.model.training
        self.model.eval()
        adapters_off = self.base and hasattr(self.model, "disable_adapter")
        try:
            with torch.no_grad(), (self.model.disable_adapter() if adapters_off else contextlib.nullcontext()):
                for i in range(0, len(items), self.batch_size):
                    batch = {k: v.to(device) for k, v in pad_batch(items[i:i + self.batch_size],
                                                                   tok.pad_token_id).items()}
                    out += sequence_logprobs(self.model, batch).sum.float().tolist()
        finally:
            self.model.train(was_training)
        return out

    def deltas(self, texts: Sequence[str], instructions: Sequence[str]) -> list[float]:
        """Δ per text, in nats (see the module docstring)."""
        pairs = [(x, y, self._name) for x, y in zip(instructions, texts)]
        for p in self.placeholders:
            pairs += [(self._name.sub(p, x), self._name.sub(p, y), self._placeholder[p])
                      for x, y in zip(instructions, texts)]
        lps = self._content_logprob(pairs)
        n, k = len(texts), len(self.placeholders)
        others = torch.tensor(lps[n:], dtype=torch.float64).view(k, n)
        mixture = (torch.logsumexp(others, 0) - math.log(k)).tolist()
        return [lps[i] - mixture[i] for i in range(n)]

    def __call__(self, texts: Sequence[str], instructions: Sequence[str] | None = None) -> list[float]:
        texts = _check_texts(texts)
        if instructions is None or len(instructions) != len(texts):
            raise ValueError("entity_contrast scores a text against its instruction: pass instructions=[...] "
                             f"(one per text; got {None if instructions is None else len(instructions)} "
                             f"for {len(texts)} texts)")
        if self.model is None:
            raise RuntimeError("entity_contrast needs the model: call scorer.use_model(model, tokenizer, fmt) first")
        if not texts:
            return []
        return [1.0 - math.exp(-max(d, 0.0) / self.scale) for d in self.deltas(texts, list(instructions))]
