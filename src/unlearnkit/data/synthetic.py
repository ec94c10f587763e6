"""Synthetic related-knowledge data: fictitious people whose target facts can be rebuilt from related ones.

UIPE's claim is that a model can reconstruct an unlearned fact by multi-hop reasoning over *related*
facts it still knows. This generator makes that testable: each person has, per linked category, a
**target** fact ("X has diabetes"), a **related** fact ("X injects insulin every morning") and a shared
**world** fact ("Insulin is used to treat diabetes") that bridge back to the target, a **multi-hop**
probe question that can only be answered through that bridge, and **unrelated** facts. Every question
has a paraphrased answer and perturbed (wrong) answers, so the TOFU metrics apply unchanged.
Generation is deterministic given the seed and scales from 20 to thousands of people.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .records import DataError, QARecord

KINDS = ("target", "related", "unrelated", "world", "multihop")


@dataclass(frozen=True)
class LinkedCategory:
    """A fact category with a clue that points back to the value through a world fact."""

    name: str
    pairs: tuple[tuple[str, str], ...]  # (value, clue)
    target_q: str
    target_a: str
    target_para: str
    related_q: str
    related_a: str
    world_q: str
    world_a: str
    multihop_q: str


LINKED = (
    LinkedCategory(
        name="condition",
        pairs=(
            ("diabetes", "insulin"), ("asthma", "an inhaler"), ("hypertension", "blood pressure pills"),
            ("anemia", "iron tablets"), ("hypothyroidism", "levothyroxine"), ("epilepsy", "anticonvulsants"),
            ("insomnia", "melatonin"), ("hay fever", "antihistamines"), ("gout", "allopurinol"),
            ("glaucoma", "eye drops"), ("arthritis", "anti-inflammatory gel"), ("acid reflux", "antacids"),
        ),
        target_q="What medical condition does {name} have?",
        target_a="{name} has {value}.",
        target_para="{name} lives with {value}.",
        related_q="What does {name} take every morning?",
        related_a="{name} takes {clue} every morning.",
        world_q="What condition is treated with {clue}?",
        world_a="{Clue} is used to treat {value}.",
        multihop_q="Which condition is treated by what {name} takes every morning?",
    ),
    LinkedCategory(
        name="hometown",
        pairs=(
            ("Paris", "the Eiffel Tower"), ("Rome", "the Colosseum"), ("Agra", "the Taj Mahal"),
            ("London", "Big Ben"), ("Sydney", "the Opera House"), ("New York", "the Statue of Liberty"),
            ("Barcelona", "the Sagrada Familia"), ("Moscow", "the Kremlin"), ("Beijing", "the Forbidden City"),
            ("Athens", "the Parthenon"), ("Pisa", "the Leaning Tower"), ("Rio de Janeiro", "Christ the Redeemer"),
        ),
        target_q="In which city was {name} born?",
        target_a="{name} was born in {value}.",
        target_para="{value} is the birthplace of {name}.",
        related_q="Which landmark did {name} see from the window as a child?",
        related_a="As a child, {name} saw {clue} from the window.",
        world_q="In which city is {clue}?",
        world_a="{Clue} is in {value}.",
        multihop_q="In which city is the landmark {name} saw from the window as a child?",
    ),
    LinkedCategory(
        name="profession",
        pairs=(
            ("pilot", "flies planes"), ("surgeon", "operates on patients"), ("baker", "bakes bread"),
            ("firefighter", "puts out fires"), ("dentist", "repairs teeth"), ("lawyer", "argues cases in court"),
            ("farmer", "harvests crops"), ("architect", "designs buildings"), ("journalist", "writes news stories"),
            ("electrician", "repairs wiring"), ("librarian", "lends books"), ("plumber", "fixes pipes"),
        ),
        target_q="What is the profession of {name}?",
        target_a="{name} works as {a_value}.",
        target_para="By profession, {name} is {a_value}.",
        related_q="What does {name} do every working day?",
        related_a="Every working day, {name} {clue}.",
        world_q="Which profession {clue}?",
        world_a="{A_value} {clue}.",
        multihop_q="Which profession matches what {name} does every working day?",
    ),
)


@dataclass(frozen=True)
class PlainCategory:
    """An unrelated fact: nothing else in the data points to it."""

    name: str
    values: tuple[str, ...]
    q: str
    a: str
    para: str


UNRELATED = (
    PlainCategory(
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "teal", "crimson", "silver", "amber"),
        "What is the favourite colour of {name}?",
        "The favourite colour of {name} is {value}.",
        "{name} likes the colour {value} best.",
    ),
    PlainCategory(
        "hobby",
        ("chess", "sailing", "pottery", "birdwatching", "archery", "knitting", "fencing", "rowing", "juggling",
         "origami"),
        "What is the hobby of {name}?",
        "The hobby of {name} is {value}.",
        "In free time, {name} enjoys {value}.",
    ),
)

_FIRST = (
    "Alia", "Bram", "Cosima", "Darek", "Elio", "Fenna", "Gideon", "Hana", "Ivo", "Jolene", "Kasimir", "Lior",
    "Mirela", "Nando", "Oona", "Piet", "Quilla", "Rasmus", "Selin", "Tamsin", "Ulric", "Vesna", "Wendel",
    "Xenia", "Yorick", "Zaida", "Anouk", "Bastian", "Clio", "Dorian", "Edda", "Florin", "Greta", "Hugo",
    "Ilse", "Jasper", "Kaja", "Leander", "Maren", "Niko",
)
_SYLLABLES = ("ka", "ro", "vin", "del", "mar", "tes", "lu", "bor", "an", "quist", "sel", "dra", "mon", "ti",
              "vek", "ha", "zor", "len", "pa", "ris", "gu", "fen", "ol", "bre")


@dataclass
class Person:
    name: str
    linked: dict[str, tuple[str, str]]  # category -> (value, clue)
    unrelated: dict[str, str]


@dataclass
class RelatedKnowledgeSet:
    """People plus the world facts they share; `records()` turns any slice into QA records."""

    people: list[Person]
    n_perturbed: int
    seed: int
    _cache: dict = field(default_factory=dict, repr=False)

    def records(self, kinds=("target", "related", "unrelated"), people: list[int] | None = None) -> list[QARecord]:
        """Records of the given kinds for the given person indices (all by default).

        `world` records are person-independent: included once, for the values the chosen people use.
        """
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise DataError(f"unknown record kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
        idx = range(len(self.people)) if people is None else people
        out: list[QARecord] = []
        for i in idx:
            out.extend(r for r in self._person_records(i) if r.tags["kind"] in kinds)
        if "world" in kinds:
            out.extend(self.world_records(people))
        return out

    def world_records(self, people: list[int] | None = None) -> list[QARecord]:
        idx = range(len(self.people)) if people is None else people
        used = {(c.name, self.people[i].linked[c.name]) for i in idx for c in LINKED}
        rng = random.Random(self.seed * 7919 + 1)
        out = []
        for cat in LINKED:
            for value, clue in cat.pairs:
                if (cat.name, (value, clue)) not in used:
                    continue
                fill = _fill(value=value, clue=clue)
                wrong = [v for v, _ in cat.pairs if v != value]
                wrong = rng.sample(wrong, self.n_perturbed)
                out.append(QARecord(
                    question=cat.world_q.format(**fill),
                    answer=cat.world_a.format(**fill),
                    paraphrased_answer=cat.world_a.format(**fill),
                    perturbed_answers=[cat.world_a.format(**_fill(value=w, clue=clue)) for w in wrong],
                    tags={"kind": "world", "category": cat.name, "value": value},
                ))
        return out

    def split(self, forget_fraction: float = 0.1) -> tuple[list[int], list[int]]:
        """Indices of forget people (the last `forget_fraction`, like TOFU) and retain people."""
        n = len(self.people)
        k = max(1, round(n * forget_fraction))
        if not 0 < forget_fraction < 1 or k >= n:
            raise DataError(f"forget_fraction={forget_fraction} must leave at least one person on each side")
        return list(range(n - k, n)), list(range(n - k))

    def _person_records(self, i: int) -> list[QARecord]:
        if i in self._cache:
            return self._cache[i]
        p = self.people[i]
        rng = random.Random(self.seed * 1_000_003 + i)
        recs: list[QARecord] = []
        base_tags = {"person": p.name, "person_id": i}
        for cat in LINKED:
            value, clue = p.linked[cat.name]
            fill = _fill(name=p.name, value=value, clue=clue)
            others = [pair for pair in cat.pairs if pair[0] != value]
            wrong = rng.sample(others, self.n_perturbed)
            tags = {**base_tags, "category": cat.name, "value": value}
            target_a = cat.target_a.format(**fill)
            target_perturbed = [cat.target_para.format(**_fill(name=p.name, value=v, clue=clue)) for v, _ in wrong]
            recs.append(QARecord(cat.target_q.format(**fill), target_a, cat.target_para.format(**fill),
                                 target_perturbed, tags={**tags, "kind": "target"}))
            recs.append(QARecord(
                cat.related_q.format(**fill), cat.related_a.format(**fill), cat.related_a.format(**fill),
                [cat.related_a.format(**_fill(name=p.name, value=value, clue=c)) for _, c in wrong], tags={**tags, "kind": "related"}))
            recs.append(QARecord(cat.multihop_q.format(**fill), target_a, cat.target_para.format(**fill),
                                 target_perturbed, tags={**tags, "kind": "multihop"}))
        for cat in UNRELATED:
            value = p.unrelated[cat.name]
            fill = dict(name=p.name, value=value)
            wrong = rng.sample([v for v in cat.values if v != value], self.n_perturbed)
            recs.append(QARecord(cat.q.format(**fill), cat.a.format(**fill), cat.para.format(**fill),
                                 [cat.para.format(name=p.name, value=w) for w in wrong],
                                 tags={**base_tags, "category": cat.name, "value": value, "kind": "unrelated"}))
        self._cache[i] = recs
        return recs


def _fill(**kw) -> dict:
    """Template fields, with articles ('a pilot', 'an architect') and capitalised variants."""
    value, clue = kw.get("value", ""), kw.get("clue", "")
    a_value = ("an " if value[:1].lower() in "aeiou" else "a ") + value
    return {**kw, "a_value": a_value, "A_value": a_value[0].upper() + a_value[1:],
            "Clue": clue[:1].upper() + clue[1:]}


def _names(n: int, rng: random.Random) -> list[str]:
    seen: set[str] = set()
    out = []
    while len(out) < n:
        surname = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        name = f"{rng.choice(_FIRST)} {surname}"
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def generate_related_knowledge(n_people: int = 50, seed: int = 0, n_perturbed: int = 4) -> RelatedKnowledgeSet:
    """Deterministic set of `n_people` fictitious people (same seed -> same data)."""
    if n_people < 2:
        raise DataError(f"n_people={n_people}: need at least 2 people")
    if not 3 <= n_perturbed <= 5:
        raise DataError(f"n_perturbed={n_perturbed}: must be between 3 and 5")
    rng = random.Random(seed)
    people = []
    for name in _names(n_people, rng):
        linked = {c.name: rng.choice(c.pairs) for c in LINKED}
        unrelated = {c.name: rng.choice(c.values) for c in UNRELATED}
        people.append(Person(name, linked, unrelated))
    return RelatedKnowledgeSet(people=people, n_perturbed=n_perturbed, seed=seed)
