import pytest

from unlearnkit.reveal.scorers import available_scorers, get_scorer, scorer_for_target
from unlearnkit.reveal.target import Target

PROSE = "The committee met on Tuesday to discuss the budget. Everyone agreed that the park needs new benches."
CODE = "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
BROKEN_CODE = "Here is how:\nfor (int i = 0; i < n; i++) {\n    total += a[i];\n}\nThat sums it."


def test_code_scorer_separates_code_from_prose():
    s = get_scorer("code")
    prose, code, fenced, broken, word = s([PROSE, CODE, f"Sure:\n```python\n{CODE}```\nDone.", BROKEN_CODE, "hello"])
    assert prose == 0.0 and word == 0.0   # "hello" parses as a bare Name: not code
    assert code == 1.0 and fenced == 1.0
    assert broken == pytest.approx(3 / 5)  # three code-shaped lines of five (C does not parse as Python)


def test_entity_scorer_mentions_facts_and_confidence():
    s = get_scorer("entity", names=["Marie Curie", "Maria Sklodowska"])
    texts = ["Marie Curie won two Nobel prizes. marie curie was born in Warsaw as Maria Sklodowska.",
             "Curie studied in Paris.", "MARIE  CURIE", "Nothing relevant here."]
    assert s(texts) == pytest.approx([1.0, 0.0, 1 / 3, 0.0])
    # confidence: score · (0.5 + 0.5·exp(mean log-prob))
    assert s(texts[:1], mean_logprobs=[0.0]) == pytest.approx([1.0])
    assert s(texts[:1], mean_logprobs=[-1.0]) == pytest.approx([0.5 + 0.5 * 2.718281828 ** -1])
    f = get_scorer("entity", names=["Marie Curie"], facts=["Nobel", "Warsaw", "radium"])
    assert f(texts[:1]) == pytest.approx([0.5 * (2 / 3) + 0.5 * (2 / 3)])
    with pytest.raises(ValueError, match="log-probability"):
        s(["Marie Curie"], mean_logprobs=[0.5])
    with pytest.raises(TypeError, match="wrap it in a list"):
        s("Marie Curie")


def test_toxicity_scorer_offline():
    pytest.importorskip("profanity_check", reason="alt-profanity-check is the optional 'toxicity' extra")
    s = get_scorer("toxicity")
    rude, neutral = s(["You are a worthless fucking idiot, shut your stupid mouth.",
                       "Thank you for helping me plant the tomatoes this morning."])
    assert rude > 0.9 and neutral < 0.1


def test_registry_errors_and_target_defaults():
    with pytest.raises(ValueError, match="unknown scorer 'entiy'; did you mean 'entity'\\? available: "):
        get_scorer("entiy")
    assert "hf:<hub classifier id>" in available_scorers()
    assert scorer_for_target(Target.entity("Ada Lovelace"))(["Ada Lovelace"]) == pytest.approx([1 / 3])
    assert scorer_for_target(Target.skill("code")).name == "code"
    assert scorer_for_target(Target.behaviour("toxicity")).name == "toxicity"
    with pytest.raises(ValueError, match="no default scorer"):
        scorer_for_target(Target.skill("chess"))
    with pytest.raises(ValueError, match="needs a model id"):
        get_scorer("hf:")


def test_hf_scorer_is_lazy_and_fails_clearly_offline(tmp_path):
    s = get_scorer("hf:" + str(tmp_path / "no-such-classifier"))  # construction touches nothing
    with pytest.raises(RuntimeError, match="could not load hub classifier"):
        s(["some text"])
