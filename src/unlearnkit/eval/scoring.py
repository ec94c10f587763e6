"""Batched teacher-forced scoring of QA records: one padded forward per batch, every number from it.

`score_records` encodes each record's answer, paraphrased answer and perturbed answers, keeps all sequences of
one question in the same batch (so truth-ratio terms come from one forward), sorts questions by length to cut
padding, and from each forward keeps, per answer token: log p(label) (through `logprobs.answer_index` and
`label_logprobs`, which own the shift and mask with `sequence_logprobs`), whether the argmax equals the label
(exact memorisation, extraction strength), and optionally the mean/std of the vocabulary log-probs under the next-token distribution (min-k%++).
Everything downstream (`tofu_metrics`, `mia`, `memorization`) is pure arithmetic on these `TokenScores`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..data.collate import IGNORE, PromptFormat, encode_qa, pad_batch
from ..data.records import QARecord
from ..logprobs import answer_index, answer_window_forward, full_attention_only, label_logprobs
from . import prefix_sharing

FIELDS = ("answer", "paraphrased", "perturbed")


@dataclass
class TokenScores:
    """Per labelled token of one sequence: log p(label), argmax == label, the label id, and (optional) the vocab
    log-prob mean/std. `ends_with_eos`: the last label is the EOS the encoder appended (not answer text)."""

    logprobs: np.ndarray
    hits: np.ndarray
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    labels: np.ndarray | None = None
    ends_with_eos: bool = False

    @property
    def n_tokens(self) -> int:
        return int(self.logprobs.size)

    @property
    def mean_lp(self) -> float:
        """Length-normalised log-likelihood (1/|a|) Σ_t log p(a_t): −mean NLL, the TOFU quantity."""
        return float(self.logprobs.mean()) if self.logprobs.size else float("nan")

    def text_tokens(self, masking: str) -> "TokenScores":
        """The tokens that token-level metrics (exact memorisation, extraction strength, min-k%, min-k%++) see.

        * `masking="exact"`: the answer text's tokens — the appended EOS is dropped, because memorisation
          (Tirumala et al. 2022), extraction (Carlini et al. 2021; Wang et al. 2025) and pre-training-data
          detection (Shi et al. 2024; Zhang et al. 2024) are defined on the text, and EOS is not part of it.
          A truncated answer (no EOS) keeps all its tokens.
        * `masking="open-unlearning"`: the last labelled token is dropped whatever it is, as open-unlearning's
          `tokenwise_logprobs` / `tokenwise_vocab_logprobs` do (`[:-1]`, "ignore eos prediction").
        Sequence-level numbers (probability, truth ratio, loss/zlib attacks) keep every label, EOS included,
        in both modes (TOFU's and open-unlearning's `evaluate_probability`).
        """
        if masking not in ("exact", "open-unlearning"):
            raise ValueError(f"masking={masking!r}: expected 'exact' or 'open-unlearning'")
        drop = self.n_tokens > 0 and (masking == "open-unlearning" or self.ends_with_eos)
        if not drop:
            return self
        cut = slice(0, self.n_tokens - 1)
        opt = [None if a is None else a[cut] for a in (self.mu, self.sigma, self.labels)]
        return TokenScores(self.logprobs[cut], self.hits[cut], *opt, ends_with_eos=False)


@dataclass
class RecordScores:
    answer: TokenScores | None = None
    paraphrased: TokenScores | None = None
    perturbed: list[TokenScores] = field(default_factory=list)


def encode_feature(tokenizer, question: str, answer: str, fmt: PromptFormat) -> dict:
    """`input_ids`, `labels`, and `eos_last` (the final label is the EOS `encode_qa` appended, not truncated away)."""
    enc = encode_qa(tokenizer, question, answer, fmt)
    if all(l == IGNORE for l in enc.labels):
        raise ValueError(f"question {question[:60]!r}: no answer token left after truncation to "
                         f"max_length={fmt.max_length}; raise PromptFormat.max_length")
    eos_last = (fmt.add_eos and not enc.truncated and tokenizer.eos_token_id is not None
                and enc.labels[-1] == tokenizer.eos_token_id)
    return {"input_ids": enc.input_ids, "labels": enc.labels, "eos_last": bool(eos_last)}


def _pack(groups: Sequence[Sequence[int]], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of sequence indices; a group (one question's sequences) is never split; longest groups first."""
    order = sorted(range(len(groups)), key=lambda g: -max((lengths[i] for i in groups[g]), default=0))
    batches, cur = [], []
    for g in order:
        if cur and len(cur) + len(groups[g]) > batch_size:
            batches.append(cur)
            cur = []
        cur = cur + list(groups[g])
    if cur:
        batches.append(cur)
    return batches


#: elements of one chunk of gathered (rows × vocabulary) logits: bounds the fp32 temporaries of scoring
CHUNK_ELEMENTS = 1 << 24


def _gathered_scores(logits: torch.Tensor, labels: torch.Tensor, token_stats: bool):
    """Per scored token, from the logits of one batch: log p(label), argmax == label, label id, and (with
    `token_stats`) mean/std of the vocabulary log-probs. Only the scored positions are gathered, `CHUNK_ELEMENTS`
    at a time, so neither a B×T×V log-softmax nor an N×V copy of all scored rows is ever materialised; every
    operation is per row, so the values equal those of the full-tensor computation."""
    mask, rows, cols, target = answer_index(labels)
    step = max(1, CHUNK_ELEMENTS // logits.shape[-1])
    parts: dict[str, list] = {"lps": [], "hits": [], "mu": [], "sigma": []}
    for a in range(0, len(rows), step):
        x = logits[rows[a:a + step], cols[a:a + step]].float()
        t = target[a:a + step]
        parts["lps"].append(label_logprobs(x, t))
        parts["hits"].append(x.argmax(-1) == t)
        if token_stats:
            logp = torch.log_softmax(x, dim=-1)
            p = logp.exp()
            m = (p * logp).sum(-1)
            parts["mu"].append(m)
            parts["sigma"].append(((p * logp.square()).sum(-1) - m.square()).clamp(min=0).sqrt())
    if not len(rows):  # nothing scored in this batch: empty arrays of the right kinds
        parts = {k: [torch.zeros(0, dtype=torch.bool if k == "hits" else torch.float32)]
                 for k in ("lps", "hits") + (("mu", "sigma") if token_stats else ())}
    out = {k: torch.cat(v).cpu().numpy() if k == "hits" else torch.cat(v).double().cpu().numpy()
           for k, v in parts.items() if v}
    return mask.sum(-1).tolist(), out, target.cpu().numpy()


@torch.no_grad()
def score_features(model, features: Sequence[dict], pad_id: int, batch_size: int = 32,
                   groups: Sequence[Sequence[int]] | None = None, token_stats: bool = False,
                   share_prompts: bool = True) -> list[TokenScores]:
    """Score pre-encoded sequences (`input_ids`, `labels`) in right-padded batches of ≤ `batch_size` sequences
    (a group larger than that gets its own batch). Returns one `TokenScores` per feature, in input order.
    The LM head runs only from the batch's first answer position on (`answer_window_forward`); with
    `share_prompts`, sequences of one batch that start with the same prompt run it once (`prefix_sharing`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be ≥ 1")
    groups = [[i] for i in range(len(features))] if groups is None else groups
    lengths = [len(f["input_ids"]) for f in features]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    share_prompts = share_prompts and full_attention_only(model)
    out: list[TokenScores | None] = [None] * len(features)
    try:
        for idx in _pack(groups, lengths, batch_size):
            feats = [features[i] for i in idx]
            shared = prefix_sharing.shared_prefix_forward(model, feats, pad_id) if share_prompts else None
            if shared is None:
                batch = {k: v.to(device) for k, v in pad_batch(feats, pad_id, "right").items()}
                shared = answer_window_forward(model, batch)
            outputs, labels = shared
            counts, got, label_ids = _gathered_scores(outputs.logits, labels, token_stats)
            del outputs
            start = 0
            for i, c in zip(idx, counts):
                s = slice(start, start + c)
                mu, sigma = (got[k][s] if k in got else None for k in ("mu", "sigma"))
                out[i] = TokenScores(got["lps"][s], got["hits"][s], mu, sigma, label_ids[s],
                                     bool(features[i].get("eos_last", False)))
                start += c
    finally:
        if was_training:
            model.train()
    return out  # type: ignore[return-value]


def score_records(model, tokenizer, records: Sequence[QARecord], fmt: PromptFormat | None = None, *,
                  fields: Sequence[str] = FIELDS, batch_size: int = 32, token_stats: bool = False,
                  share_prompts: bool = True) -> list[RecordScores]:
    """Teacher-forced scores of each record's `answer`, `paraphrased_answer` and `perturbed_answers`
    (whichever of `fields` the record has), all sequences of one record in one batch, its prompt run once
    (`share_prompts`, see `score_features`)."""
    bad = set(fields) - set(FIELDS)
    if bad:
        raise ValueError(f"fields={list(fields)}: unknown {sorted(bad)}; available: {FIELDS}")
    fmt = fmt or PromptFormat()
    feats: list[dict] = []
    groups: list[list[int]] = []
    slots: list[tuple[int, str]] = []  # (record index, field) per feature
    for r_i, rec in enumerate(records):
        texts: list[tuple[str, str]] = []
        if "answer" in fields:
            texts.append(("answer", rec.answer))
        if "paraphrased" in fields and rec.paraphrased_answer is not None:
            texts.append(("paraphrased", rec.paraphrased_answer))
        if "perturbed" in fields:
            texts.extend(("perturbed", t) for t in rec.perturbed_answers or [])
        grp = []
        for name, text in texts:
            grp.append(len(feats))
            feats.append(encode_feature(tokenizer, rec.question, text, fmt))
            slots.append((r_i, name))
        groups.append(grp)
    scores = score_features(model, feats, tokenizer.pad_token_id, batch_size, groups, token_stats, share_prompts)
    out = [RecordScores() for _ in records]
    for (r_i, name), sc in zip(slots, scores):
        if name == "perturbed":
            out[r_i].perturbed.append(sc)
        else:
            setattr(out[r_i], name, sc)
    return out
