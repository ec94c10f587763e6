import pytest

from unlearnkit.data import DataError, generate_related_knowledge
from unlearnkit.data.specs import load_records


def test_deterministic_and_scales():
    a = generate_related_knowledge(30, seed=3).records()
    b = generate_related_knowledge(30, seed=3).records()
    assert [r.answer for r in a] == [r.answer for r in b]
    assert [r.answer for r in generate_related_knowledge(30, seed=4).records()] != [r.answer for r in a]
    big = generate_related_knowledge(2000, seed=0)
    assert len({p.name for p in big.people}) == 2000


def test_related_facts_bridge_to_targets():
    ds = generate_related_knowledge(20, seed=0)
    recs = ds.records(kinds=("target", "related", "world", "multihop", "unrelated"))
    world = {r.tags["value"]: r for r in recs if r.tags["kind"] == "world"}
    for person in range(20):
        mine = [r for r in recs if r.tags.get("person_id") == person]
        for cat in ("condition", "hometown", "profession"):
            target = next(r for r in mine if r.tags["kind"] == "target" and r.tags["category"] == cat)
            related = next(r for r in mine if r.tags["kind"] == "related" and r.tags["category"] == cat)
            hop = next(r for r in mine if r.tags["kind"] == "multihop" and r.tags["category"] == cat)
            value = target.tags["value"]
            assert value in target.answer and value not in related.answer
            # the world fact for this value names the clue that appears in the related fact
            bridge = world[value]
            assert value in bridge.answer
            clue_words = set(bridge.question.lower().rstrip("?").split()) & set(related.answer.lower().rstrip(".").split())
            assert clue_words - {"the", "is", "in", "which", "what", "with", "a"}, (bridge.question, related.answer)
            assert hop.answer == target.answer and hop.question != target.question
            assert 3 <= len(target.perturbed_answers) <= 5 and value not in " ".join(target.perturbed_answers)
            assert target.paraphrased_answer and target.paraphrased_answer != target.answer


def test_specs_and_split():
    train = load_records("synthetic:train,people=20,seed=1")
    forget = load_records("synthetic:forget,people=20,seed=1,forget_fraction=0.1")
    retain = load_records("synthetic:retain,people=20,seed=1,forget_fraction=0.1")
    assert {r.tags["kind"] for r in forget} == {"target"}
    forget_people = {r.tags["person_id"] for r in forget}
    assert forget_people == {18, 19}
    assert not forget_people & {r.tags.get("person_id") for r in retain}
    assert len(forget) == 6 and len(train) > len(retain)
    with pytest.raises(DataError, match="unknown synthetic option"):
        load_records("synthetic:train,peeple=3")
    with pytest.raises(DataError, match="unknown synthetic part"):
        load_records("synthetic:trian")
