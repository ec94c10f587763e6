"""Teacher-forced scoring of several answers to one prompt, with the prompt's forward run once.

Why: TOFU scores each question with 6–7 answers (the answer, its paraphrase, 5 perturbed answers), and each of those
sequences used to repeat the question's forward. Here a batch's distinct prompts run once, left-padded, into a
KV cache; the cache is repeated for each sequence of that prompt, and only the answers (right-padded) run on top.

Where a sequence is cut: its prefix is everything before its last prompt token, so the answer forward starts at
the last prompt token and yields every logit that scores a label (the last prompt token's logit predicts the first
answer token), in the same (logits, labels-from-the-window) form as `logprobs.answer_window_forward`. Sequences
are grouped by their exact prefix token ids, so a question whose tokenisation differs at the answer boundary is
simply not shared.

Values: each logit is the same function of the same tokens (position ids count real tokens, the mask hides the
padding), computed in differently shaped matmuls, so it moves by float rounding only (≈1e-6 relative in fp32),
as it already does between two batchings of the same sequences.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data.collate import IGNORE, pad_batch
from ..logprobs import position_ids_from_mask, supports_logits_to_keep


def prefix_cut(labels: Sequence[int]) -> int:
    """Length of the shareable prefix: the tokens before the last prompt token (0 when nothing is scored)."""
    first = next((t for t, lab in enumerate(labels) if lab != IGNORE), 0)
    return max(first - 1, 0)


def shared_rows(features: Sequence[dict]) -> tuple[list[tuple[int, ...]], list[int], list[int]] | None:
    """(distinct prefixes, prefix row of each feature, cut of each feature), or None when no two features share a
    prefix (the plain forward is then as cheap) or some feature has no prefix to share."""
    cuts = [prefix_cut(f["labels"]) for f in features]
    if min(cuts, default=0) < 1:
        return None
    rows: dict[tuple[int, ...], int] = {}
    row_of = [rows.setdefault(tuple(f["input_ids"][:c]), len(rows)) for f, c in zip(features, cuts)]
    return (list(rows), row_of, cuts) if len(rows) < len(features) else None


@torch.no_grad()
def shared_prefix_forward(model, features: Sequence[dict], pad_id: int):
    """`(outputs, labels)` for `features` (`input_ids`, `labels`), each distinct prefix run once; None when
    nothing is shared (`shared_rows`). `labels` are each feature's labels from its cut on, right-padded with
    IGNORE, aligned with `outputs.logits` as `answer_window_forward`'s are."""
    from transformers.cache_utils import DynamicCache

    plan = shared_rows(features)
    if plan is None:
        return None
    prefixes, row_of, cuts = plan
    device = next(model.parameters()).device
    pre = pad_batch([{"input_ids": p} for p in prefixes], pad_id, "left")
    p_ids, p_mask = pre["input_ids"].to(device), pre["attention_mask"].to(device)
    cache = DynamicCache(config=model.config)
    p_pos = position_ids_from_mask(p_mask)
    keep = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}  # no prefix logit is needed
    model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, cache=cache, use_cache=True, **keep)
    rows = torch.tensor(row_of, device=device)
    cache.batch_select_indices(rows)
    answers = pad_batch([{"input_ids": f["input_ids"][c:], "labels": f["labels"][c:]} for f, c in zip(features, cuts)],
                        pad_id, "right")
    s_ids, s_mask, labels = (answers[k].to(device) for k in ("input_ids", "attention_mask", "labels"))
    s_pos = p_mask.sum(-1)[rows, None] + position_ids_from_mask(s_mask)
    outputs = model(input_ids=s_ids, attention_mask=torch.cat([p_mask[rows], s_mask], -1), position_ids=s_pos,
                    cache=cache, use_cache=True)
    return outputs, labels
