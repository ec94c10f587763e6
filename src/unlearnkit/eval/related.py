"""Related-knowledge probe (UIPE's question): after unlearning a person's target facts, does the model still
know the related facts that let it rebuild them, and can it answer the multi-hop questions?

For a set of people from `generate_related_knowledge`, reports probability (exp(−mean answer NLL)), ROUGE-L
recall of greedy answers and the truth-ratio score mean(max(0, 1−R)) separately for each record kind:
`target`, `related`, `multihop` (and `unrelated` as a control). Same scoring/generation path as TOFU.
"""
from __future__ import annotations

from typing import Sequence

from ..data.collate import PromptFormat
from ..data.synthetic import RelatedKnowledgeSet
from . import tofu_metrics
from .generation import DEFAULT_MAX_NEW_TOKENS, generate_answers
from .result import MetricResult
from .scoring import score_records

PROBE_KINDS = ("target", "related", "multihop", "unrelated")


def run_related(model, tokenizer, dataset: RelatedKnowledgeSet, people: Sequence[int], fmt: PromptFormat | None = None,
                *, kinds: Sequence[str] = PROBE_KINDS, batch_size: int = 32,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, truth_ratio_mean: str = "geometric") -> dict[str, MetricResult]:
    """Metrics keyed `<kind>/probability`, `<kind>/rouge_l_recall`, `<kind>/truth_ratio` for the given people."""
    if not people:
        raise ValueError("run_related: `people` is empty; pass the indices to probe (e.g. dataset.split()[0])")
    fmt = fmt or PromptFormat()
    out: dict[str, MetricResult] = {}
    for kind in kinds:
        recs = dataset.records(kinds=(kind,), people=list(people))
        if not recs:
            continue
        scores = score_records(model, tokenizer, recs, fmt, batch_size=batch_size)
        gens = generate_answers(model, tokenizer, [r.question for r in recs], fmt, max_new_tokens, batch_size)
        out[f"{kind}/probability"] = tofu_metrics.probability([s.answer.mean_lp for s in scores])
        out[f"{kind}/rouge_l_recall"] = tofu_metrics.rouge_l_recall(gens, [r.answer for r in recs])
        ratios = tofu_metrics.truth_ratios([(s.paraphrased or s.answer).mean_lp for s in scores],
                                           [[p.mean_lp for p in s.perturbed] for s in scores], truth_ratio_mean)
        out[f"{kind}/truth_ratio"] = tofu_metrics.truth_ratio_score(ratios, "retain", truth_ratio_mean)
    return out


def evaluate_related(model, tokenizer, dataset: RelatedKnowledgeSet, people: Sequence[int],
                     fmt: PromptFormat | None = None, **kwargs) -> dict[str, dict]:
    """`run_related(...)` as a JSON-ready dict of {"value", "definition", "n"}."""
    return {k: m.to_json() for k, m in run_related(model, tokenizer, dataset, people, fmt, **kwargs).items()}
