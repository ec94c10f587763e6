"""The related-knowledge experiment's probe of one model: how much of the forget people's targets it still holds,
directly, through related facts and through multi-hop questions, and its utility on retain people.

Used by `unlearnkit experiment related-knowledge` (experiments/related_knowledge.py) on every model it compares.
"""
from __future__ import annotations

import math

from ..data.collate import PromptFormat
from ..data.synthetic import LINKED, RelatedKnowledgeSet
from .generation import generate_answers
from .related import run_related
from .scoring import score_records

P1_KINDS = ("target", "related", "unrelated", "world")
P2_KINDS = ("target", "unrelated", "world")


class Probe:
    """The related-knowledge probe on the forget people and the utility on retain people, for one model.

    forget/<kind>/{probability, rouge_l_recall, truth_ratio}   `eval.related.run_related` (target, related, multihop)
    forget/<kind>/value_recall      greedy answer contains the value (target, multihop) or the clue (related)
    forget/chain_recovery           greedy related answer names the clue AND greedy world answer names the value:
                                    the target rebuilt through related knowledge in two explicit hops
    forget/score                    mean of the target, related and multi-hop probabilities (lower = more forgotten)
    retain/<kind>/probability       teacher-forced exp(−mean NLL) on the first `retain_people` retain people
    utility                         mean of retain/<kind>/probability over the kinds the model was trained on
    """

    def __init__(self, dataset: RelatedKnowledgeSet, fmt: PromptFormat, forget_fraction: float, retain_people: int,
                 max_new_tokens: int):
        self.ds, self.fmt, self.max_new_tokens = dataset, fmt, max_new_tokens
        self.forget, retain = dataset.split(forget_fraction)
        self.retain = retain[:retain_people]

    def __call__(self, model, tok, trained: tuple[str, ...] = P1_KINDS) -> dict[str, float]:
        model.eval()
        out = {f"forget/{k}": m.value for k, m in run_related(
            model, tok, self.ds, self.forget, self.fmt, kinds=("target", "related", "multihop"),
            max_new_tokens=self.max_new_tokens).items()}
        out.update(self._recall(model, tok))
        out["forget/score"] = sum(out[f"forget/{k}/probability"] for k in ("target", "related", "multihop")) / 3
        kinds = ("target", "related", "unrelated", "world")
        recs = self.ds.records(kinds=kinds, people=self.retain)
        scores = score_records(model, tok, recs, self.fmt, fields=("answer",))
        for kind in kinds:
            ps = [math.exp(s.answer.mean_lp) for r, s in zip(recs, scores) if r.tags["kind"] == kind]
            out[f"retain/{kind}/probability"] = sum(ps) / len(ps)
        out["utility"] = sum(out[f"retain/{k}/probability"] for k in trained) / len(trained)
        return out

    def _recall(self, model, tok) -> dict[str, float]:
        items = []  # (kind, question, expected substring)
        for i in self.forget:
            p = self.ds.people[i]
            for r in self.ds.records(kinds=("target", "related", "multihop"), people=[i]):
                value, clue = p.linked[r.tags["category"]]
                items.append((r.tags["kind"], r.question, clue if r.tags["kind"] == "related" else value))
        world = {(r.tags["category"], r.tags["value"]): r for r in self.ds.world_records(self.forget)}
        chain = []
        for i in self.forget:
            for cat in LINKED:
                value, clue = self.ds.people[i].linked[cat.name]
                items.append(("world", world[(cat.name, value)].question, value))
                chain.append((len(items) - 1, i, cat.name))
        gens = generate_answers(model, tok, [q for _, q, _ in items], self.fmt, self.max_new_tokens)
        hit = [want.lower() in g.lower() for (_, _, want), g in zip(items, gens)]
        out = {}
        for kind in ("target", "related", "multihop"):
            h = [x for (k, _, _), x in zip(items, hit) if k == kind]
            out[f"forget/{kind}/value_recall"] = sum(h) / len(h)
        related_hit = {(items[j][1]): hit[j] for j in range(len(items)) if items[j][0] == "related"}
        ok = []
        for j, i, cat in chain:
            rq = next(r.question for r in self.ds.records(kinds=("related",), people=[i]) if r.tags["category"] == cat)
            ok.append(related_hit[rq] and hit[j])
        out["forget/chain_recovery"] = sum(ok) / len(ok)
        return out
