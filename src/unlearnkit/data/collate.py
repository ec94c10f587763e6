"""Turn QA records into token ids with the prompt masked out of the labels.

Two prompt templates: the tokenizer's chat template when it has one (`template="auto"`), or the plain
`Question: … Answer:` template. By default the prompt and the answer are tokenised separately and
concatenated, so the prompt/answer boundary is a token boundary and every answer token is a label.
`masking="open-unlearning"` reproduces that toolkit's joint tokenisation (prompt ending in a space,
first answer token swallowed into the mask) so numbers can be set beside its published ones.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from ..logprobs import IGNORE
from .documents import document_windows, is_document_set
from .records import QARecord

log = logging.getLogger(__name__)


@dataclass
class PromptFormat:
    """How a question becomes a prompt."""

    template: str = "auto"  # auto | chat | plain
    plain_prompt: str = "Question: {question}\nAnswer:"
    system_prompt: str | None = None  # chat only; None keeps the tokenizer's default system turn
    masking: str = "exact"  # exact | open-unlearning
    max_length: int = 512
    add_eos: bool = True

    def __post_init__(self):
        if self.template not in ("auto", "chat", "plain"):
            raise ValueError(f"template={self.template!r}: expected 'auto', 'chat' or 'plain'")
        if self.masking not in ("exact", "open-unlearning"):
            raise ValueError(f"masking={self.masking!r}: expected 'exact' or 'open-unlearning'")

    def uses_chat(self, tokenizer) -> bool:
        if self.template == "chat":
            if not getattr(tokenizer, "chat_template", None):
                raise ValueError("template='chat' but the tokenizer has no chat template; use template='plain'")
            return True
        return self.template == "auto" and bool(getattr(tokenizer, "chat_template", None))


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    truncated: bool


def prompt_text(tokenizer, question: str, fmt: PromptFormat) -> str:
    if fmt.uses_chat(tokenizer):
        messages = [{"role": "user", "content": question}]
        if fmt.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": fmt.system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return fmt.plain_prompt.format(question=question)


def encode_prompt(tokenizer, question: str, fmt: PromptFormat) -> list[int]:
    """Token ids of the prompt alone, as generation starts from it."""
    text = prompt_text(tokenizer, question, fmt)
    if fmt.uses_chat(tokenizer):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if fmt.masking == "open-unlearning":
        text = text + " "
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def _answer_text(tokenizer, answer: str, fmt: PromptFormat) -> str:
    return answer if fmt.uses_chat(tokenizer) else " " + answer


def encode_qa(tokenizer, question: str, answer: str, fmt: PromptFormat) -> Encoded:
    """Ids and labels (-100 on the prompt) for one question/answer pair, EOS appended."""
    eos = [tokenizer.eos_token_id] if fmt.add_eos and tokenizer.eos_token_id is not None else []
    if fmt.masking == "open-unlearning" and not fmt.uses_chat(tokenizer):
        prompt = prompt_text(tokenizer, question, fmt) + " "
        full = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
        if eos and full[-1] != eos[0]:
            full = full + eos
        n_prompt = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        ids = full
    else:
        prompt_ids = encode_prompt(tokenizer, question, fmt)
        answer_ids = tokenizer(_answer_text(tokenizer, answer, fmt), add_special_tokens=False)["input_ids"]
        ids = prompt_ids + answer_ids + eos
        n_prompt = len(prompt_ids)
    labels = [IGNORE] * n_prompt + ids[n_prompt:]
    truncated = len(ids) > fmt.max_length
    if truncated:
        ids, labels = ids[: fmt.max_length], labels[: fmt.max_length]
    return Encoded(ids, labels, n_prompt, truncated)


def answer_token_spans(tokenizer, answer: str, fmt: PromptFormat) -> list[tuple[int, int]]:
    """Character span in `answer` of each answer token `encode_qa` makes (exact masking), so that a part of
    the answer can be taken out of the loss. Fast tokenizers give offsets; others are decoded prefix by
    prefix (a token that starts mid-character gets an empty span)."""
    text = _answer_text(tokenizer, answer, fmt)
    shift = len(text) - len(answer)        # the plain template's leading space
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = enc["offset_mapping"]
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        spans, prev = [], 0
        for i in range(1, len(ids) + 1):
            end = len(tokenizer.decode(ids[:i]))
            spans.append((min(prev, end), end))
            prev = max(prev, end)
    return [(max(a - shift, 0), max(b - shift, 0)) for a, b in spans]


def mask_answer_spans(tokenizer, encoded: Encoded, answer: str, fmt: PromptFormat,
                      spans: Sequence[tuple[int, int]]) -> int:
    """Set to IGNORE, in place, the labels of the answer tokens of `encoded` overlapping any character span
    of `answer` in `spans` (e.g. an entity's name in a self-generated text). Returns how many were masked.
    Exact masking only: open-unlearning's joint tokenisation has no clean answer/token alignment."""
    if fmt.masking != "exact":
        raise ValueError("mask_answer_spans needs PromptFormat(masking='exact')")
    masked = 0
    for j, (a, b) in enumerate(answer_token_spans(tokenizer, answer, fmt)):
        pos = encoded.prompt_len + j
        if pos >= len(encoded.labels):
            break
        if b > a and any(a < e and s < b for s, e in spans) and encoded.labels[pos] != IGNORE:
            encoded.labels[pos] = IGNORE
            masked += 1
    return masked


class QADataset(torch.utils.data.Dataset):
    """Records encoded once; truncation is counted and logged, never silent. A document set (`documents`) becomes
    its token windows instead: item i is window i, not record i."""

    def __init__(self, records: Sequence[QARecord], tokenizer, fmt: PromptFormat | None = None, answer_field: str = "answer"):
        self.records = list(records)
        self.fmt = fmt or PromptFormat()
        if is_document_set(self.records):  # a corpus: max_length-token windows, every token a label
            self.items = [Encoded(w, list(w), 0, False) for w in document_windows(tokenizer, self.records,
                                                                                  self.fmt.max_length)]
        else:
            self.items = [encode_qa(tokenizer, r.question, getattr(r, answer_field), self.fmt) for r in self.records]
        self.n_truncated = sum(e.truncated for e in self.items)
        if self.n_truncated:
            log.warning("%d of %d examples were truncated to max_length=%d", self.n_truncated, len(self.items),
                        self.fmt.max_length)
        empty = [i for i, e in enumerate(self.items) if all(l == IGNORE for l in e.labels)]
        if empty:
            raise ValueError(f"{len(empty)} example(s) have no answer token left after truncation (first: index "
                             f"{empty[0]}); raise max_length above {self.fmt.max_length}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        e = self.items[i]
        return {"input_ids": e.input_ids, "labels": e.labels, "index": i}


def pad_batch(features: Sequence[dict], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad `input_ids` (with pad_id) and `labels` (with -100); build the attention mask."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side={padding_side!r}: expected 'left' or 'right'")
    width = max(len(f["input_ids"]) for f in features)
    ids, labels, mask = [], [], []
    for f in features:
        n = len(f["input_ids"])
        pad = width - n
        lab = f.get("labels", f["input_ids"])
        if padding_side == "right":
            ids.append(list(f["input_ids"]) + [pad_id] * pad)
            labels.append(list(lab) + [IGNORE] * pad)
            mask.append([1] * n + [0] * pad)
        else:
            ids.append([pad_id] * pad + list(f["input_ids"]))
            labels.append([IGNORE] * pad + list(lab))
            mask.append([0] * pad + [1] * n)
    out = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
    }
    if "index" in features[0]:
        out["index"] = torch.tensor([f["index"] for f in features], dtype=torch.long)
    return out


@dataclass
class QACollator:
    """Collator for `QADataset` items (usable as an HF Trainer `data_collator`)."""

    pad_id: int
    padding_side: str = "right"

    def __call__(self, features):
        return pad_batch(features, self.pad_id, self.padding_side)
