import pytest

from unlearnkit.reveal.target import Target


def test_entity_normalises_aliases():
    t = Target.entity("  Harry Potter ", aliases=["the Boy Who Lived", "harry potter", " the boy who lived "])
    assert t.name == "Harry Potter"
    assert t.aliases == ("the Boy Who Lived",)
    assert t.surface_forms == ("Harry Potter", "the Boy Who Lived")


def test_skill_and_behaviour():
    assert Target.skill("code").kind == "skill"
    assert Target.behaviour("toxicity").surface_forms == ("toxicity",)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="person", name="x"), "kind='person'"),
    (dict(kind="entity", name="  "), "non-empty"),
    (dict(kind="entity", name="x", aliases="y"), "not one string"),
    (dict(kind="entity", name="x", aliases=("",)), "non-empty"),
    (dict(kind="skill", name="code", aliases=("python",)), "only apply to kind 'entity'"),
])
def test_invalid_targets(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Target(**kwargs)
