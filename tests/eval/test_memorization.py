"""Exact memorisation and extraction strength on hand-made hit patterns."""
import pytest

from unlearnkit.eval.memorization import exact_memorization, extraction_strength

T, F = True, False


def test_exact_memorization():
    r = exact_memorization([[T, T, F, T], [T, T]])
    assert r.per_item == pytest.approx([0.75, 1.0]) and r.value == pytest.approx(0.875)


def test_extraction_strength_paper():
    # [T,F,T,T]: suffix from k=2 matches -> 1 - 2/4 ; [T,T,T,F]: only the empty suffix -> 0 ; all right -> 1
    r = extraction_strength([[T, F, T, T], [T, T, T, F], [T, T], [F, F]])
    assert r.per_item == pytest.approx([0.5, 0.0, 1.0, 0.0])


def test_extraction_strength_open_unlearning_differs_when_last_token_wrong():
    r = extraction_strength([[T, F, T, T], [T, T, T, F], [T, T], [F, F]], variant="open-unlearning")
    assert r.per_item == pytest.approx([0.5, 0.25, 1.0, 0.5])
    with pytest.raises(ValueError, match="variant"):
        extraction_strength([[T]], variant="x")
