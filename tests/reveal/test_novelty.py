import pytest

from unlearnkit.reveal.novelty import NgramNovelty, jaccard, normalise_text, reveal_reward, word_ngrams


def test_ngrams_and_normalisation():
    assert normalise_text("  Hello,  WORLD! ") == "hello world"
    assert word_ngrams("a b c", 2) == {("a", "b"), ("b", "c")}
    assert word_ngrams("a", 3) == {("a",)}
    assert word_ngrams("...", 2) == set()
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)


def test_novelty_against_collected():
    nov = NgramNovelty(n=2, texts=["the cat sat on the mat"])
    assert nov.novelty("the cat sat on the mat") == 0.0
    assert nov.novelty("the cat ran away") == pytest.approx(2 / 3)   # 'cat ran', 'ran away' are new
    assert nov.novelty("") == 0.0
    nov.add("the cat ran away")
    assert nov(["the cat ran away", "a dog"]) == [0.0, 1.0]


def test_reveal_reward():
    assert reveal_reward(0.8, 0.5) == pytest.approx(0.4)
    assert reveal_reward(0.8, 0.5, novelty_weight=0.0) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="score"):
        reveal_reward(1.5, 0.5)
