"""UIPE's Mechanism 2: are the gradients of a target fact and of its *related* facts aligned?

UIPE (arXiv 2503.04693) argues that unlearning a target leaves logically related knowledge in place, and that
this related knowledge sits close to the target in parameter space, so pushing further along the unlearning
update (θ_un + α(θ_un − θ_ini)) also removes it. The measurable version used here: for a fine-tuned model θ,

    g(x) = ∇_θ log p_θ(answer(x) | question(x))          (summed over answer tokens, `sequence_logprobs`)
    cos(x, y) = ⟨g(x), g(y)⟩ / (‖g(x)‖ ‖g(y)‖)

over all parameters (or a named subset), for pairs (target fact, related fact of the same person) against
control pairs (target vs an unrelated fact of the same person, vs another person's facts). Gradients are
computed one sample at a time (no batching, so no cross-sample mixing) with `torch.autograd.grad`, which
leaves `.grad` untouched; a small cache avoids recomputing a record that appears in several pairs.

`mean_ci` gives the mean with a 95 % t-interval (or a percentile bootstrap) via scipy.stats, and
`relation_pairs` builds the pairs for a `RelatedKnowledgeSet` (which relation each pair stands for).
"""
from __future__ import annotations

import math
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..data.collate import PromptFormat, encode_qa, pad_batch
from ..data.records import QARecord
from ..logprobs import sequence_logprobs

ALL = "all"
# the transformer blocks only: no token embeddings (whose gradient rows are shared by every sample that
# mentions the same name) and no output head
BLOCKS = r"\.layers\."
DEFAULT_GROUPS: Mapping[str, str | None] = {"all": None, "blocks": BLOCKS}


# -- per-sample gradients --------------------------------------------------------------------------------------
@dataclass
class FlatGradient:
    """∇ log p(answer | question) flattened over the chosen parameters, with each tensor's slice in `vector`."""

    vector: torch.Tensor            # fp32, 1-D
    slices: list[tuple[int, int]]   # per parameter tensor, [start, end) in `vector`
    sq_norms: torch.Tensor          # per parameter tensor: ‖g_k‖²


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Named parameters with requires_grad (tied weights counted once, as `named_parameters` does)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def record_feature(tokenizer, record: QARecord, fmt: PromptFormat) -> dict:
    e = encode_qa(tokenizer, record.question, record.answer, fmt)
    return {"input_ids": e.input_ids, "labels": e.labels}


def sample_gradient(model: torch.nn.Module, feature: dict, pad_id: int,
                    params: Sequence[tuple[str, torch.nn.Parameter]] | None = None) -> FlatGradient:
    """∇_θ log p(answer | question) of one encoded sample (`input_ids`, `labels` with −100 on the prompt)."""
    params = list(params) if params is not None else trainable_parameters(model)
    device = params[0][1].device
    batch = {k: v.to(device) for k, v in pad_batch([feature], pad_id).items()}
    logp = sequence_logprobs(model, batch).sum[0]
    grads = torch.autograd.grad(logp, [p for _, p in params], allow_unused=True)
    pieces, slices, start = [], [], 0
    for (_, p), g in zip(params, grads):
        g = torch.zeros(p.numel(), device=device) if g is None else g.detach().float().reshape(-1)
        pieces.append(g.cpu())
        slices.append((start, start + g.numel()))
        start += g.numel()
    vector = torch.cat(pieces)
    sq = torch.stack([vector[a:b].pow(2).sum() for a, b in slices]).double()
    return FlatGradient(vector, slices, sq)


def _group_masks(names: Sequence[str], groups: Mapping[str, str | None]) -> dict[str, torch.Tensor]:
    masks = {}
    for gname, pattern in groups.items():
        sel = [True if pattern is None else bool(re.search(pattern, n)) for n in names]
        if not any(sel):
            raise ValueError(f"groups[{gname!r}]={pattern!r} matches no parameter (names look like {names[0]!r}); "
                             f"fix the regular expression")
        masks[gname] = torch.tensor(sel)
    return masks


def cosine(a: FlatGradient, b: FlatGradient, mask: torch.Tensor | None = None) -> float:
    """Cosine of two flat gradients over the parameter tensors selected by `mask` (all when None).

    NaN when either gradient is zero on the selection (a cosine is undefined there)."""
    dots = torch.stack([(a.vector[s:e].double() * b.vector[s:e].double()).sum() for s, e in a.slices])
    if mask is None:
        mask = torch.ones(len(dots), dtype=torch.bool)
    den = math.sqrt(float(a.sq_norms[mask].sum()) * float(b.sq_norms[mask].sum()))
    return float(dots[mask].sum()) / den if den > 0 else float("nan")


def gradient_cosines(model: torch.nn.Module, tokenizer, pairs: Sequence[tuple[QARecord, QARecord]],
                     fmt: PromptFormat | None = None, *, groups: Mapping[str, str | None] | None = None,
                     cache_size: int = 64) -> dict[str, list[float]]:
    """Per-pair cosine of ∇ log p(answer|question) between the two records of each pair.

    Returns `{group: [cos per pair, in order]}`; `groups` maps a name to a regex over parameter names
    (None = every trainable parameter; default: `all` and `blocks`, the transformer blocks only). One
    backward pass per distinct record (an LRU cache of `cache_size` gradients holds the recent ones;
    memory ≈ cache_size × parameters × 4 bytes). The model is put in eval mode and restored afterwards.
    """
    if not pairs:
        raise ValueError("gradient_cosines: `pairs` is empty; pass (record, record) tuples (see relation_pairs)")
    if cache_size < 2:
        raise ValueError(f"cache_size={cache_size}: must be >= 2 (both records of a pair are held at once)")
    fmt = fmt or PromptFormat()
    groups = dict(groups) if groups is not None else dict(DEFAULT_GROUPS)
    params = trainable_parameters(model)
    masks = _group_masks([n for n, _ in params], groups)
    cache: OrderedDict = OrderedDict()

    def grad_of(rec: QARecord) -> FlatGradient:
        key = (rec.question, rec.answer)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        g = sample_gradient(model, record_feature(tokenizer, rec, fmt), tokenizer.pad_token_id, params)
        cache[key] = g
        if len(cache) > cache_size:
            cache.popitem(last=False)
        return g

    was_training = model.training
    model.eval()
    out: dict[str, list[float]] = {g: [] for g in groups}
    try:
        for a, b in pairs:
            ga, gb = grad_of(a), grad_of(b)
            for gname, mask in masks.items():
                out[gname].append(cosine(ga, gb, mask))
    finally:
        model.train(was_training)
    return out


# -- which pairs ---------------------------------------------------------------------------------------------
RELATIONS = ("related (same person)", "unrelated (same person)", "world bridge (same value)",
             "related (other person)", "unrelated (other person)")


def relation_pairs(dataset, people: Sequence[int], seed: int = 0) -> dict[str, list[tuple[QARecord, QARecord]]]:
    """Pairs (target fact, other fact) for each relation in `RELATIONS`, for the given people of a
    `RelatedKnowledgeSet`:

    * related (same person): target of category c vs the related fact of c (the clue that rebuilds it);
    * unrelated (same person): target of c vs each unrelated fact of that person (colour, hobby);
    * world bridge (same value): target of c vs the world fact linking the person's clue to the value;
    * related / unrelated (other person): target of c vs the related fact of c / an unrelated fact of a
      randomly drawn other person (same templates, different entity: the control for template overlap).
    """
    if len(dataset.people) < 2:
        raise ValueError("relation_pairs needs at least 2 people in the dataset (other-person controls)")
    rng = random.Random(seed)
    world = {(r.tags["category"], r.tags["value"]): r for r in dataset.world_records()}

    def facts(i: int, kind: str) -> list[QARecord]:
        return dataset.records(kinds=(kind,), people=[i])

    out: dict[str, list[tuple[QARecord, QARecord]]] = {r: [] for r in RELATIONS}
    for i in people:
        related = {r.tags["category"]: r for r in facts(i, "related")}
        unrelated = facts(i, "unrelated")
        for t in facts(i, "target"):
            cat = t.tags["category"]
            other = rng.choice([j for j in range(len(dataset.people)) if j != i])
            other_related = {r.tags["category"]: r for r in facts(other, "related")}
            out["related (same person)"].append((t, related[cat]))
            out["unrelated (same person)"].extend((t, u) for u in unrelated)
            out["world bridge (same value)"].append((t, world[(cat, t.tags["value"])]))
            out["related (other person)"].append((t, other_related[cat]))
            out["unrelated (other person)"].append((t, rng.choice(facts(other, "unrelated"))))
    return out


# -- confidence intervals ------------------------------------------------------------------------------------
@dataclass
class MeanCI:
    mean: float
    low: float
    high: float
    n: int
    level: float
    method: str

    def to_json(self) -> dict:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n, "level": self.level,
                "method": self.method}


def mean_ci(values: Sequence[float], level: float = 0.95, method: str = "t", n_resamples: int = 2000,
            seed: int = 0) -> MeanCI:
    """Mean and a `level` confidence interval: Student-t (mean ± t_{(1+level)/2, n−1}·s/√n) or a percentile
    bootstrap (scipy.stats.bootstrap). NaNs are dropped (and counted out of `n`)."""
    import numpy as np
    from scipy import stats

    if method not in ("t", "bootstrap"):
        raise ValueError(f"method={method!r}: expected 't' or 'bootstrap'")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must be in (0, 1), e.g. 0.95")
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) < 2:
        raise ValueError(f"mean_ci needs at least 2 finite values, got {len(x)}")
    mean = float(x.mean())
    if method == "t":
        sem = float(stats.sem(x))
        if sem == 0:
            return MeanCI(mean, mean, mean, len(x), level, method)
        low, high = stats.t.interval(level, len(x) - 1, loc=mean, scale=sem)
    else:
        res = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_resamples, method="percentile",
                              random_state=np.random.default_rng(seed))
        low, high = res.confidence_interval.low, res.confidence_interval.high
    return MeanCI(mean, float(low), float(high), len(x), level, method)


def similarity_table(cosines: Mapping[str, Sequence[float]], level: float = 0.95, method: str = "t") -> list[dict]:
    """One row per relation: `{"relation", "mean", "ci_low", "ci_high", "n", ...}`."""
    return [{"relation": rel, **mean_ci(vals, level, method).to_json()} for rel, vals in cosines.items()]
