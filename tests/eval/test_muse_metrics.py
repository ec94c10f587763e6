"""MUSE metrics by hand: the few-shot prompt string, stop strings, ROUGE-L F1, PrivLeak's sign."""
from __future__ import annotations

import pytest

from unlearnkit.eval import mia
from unlearnkit.eval.muse_metrics import KNOWMEM_STOPS, cut_at_stops, knowmem_chat, knowmem_prompt, rouge_l_f1


def test_knowmem_prompt_string_exactly():
    icl = [("Who won?", "Alice"), ("When?", "In 1472")]
    assert knowmem_prompt(icl, "Where?") == (
        "Question: Who won?\nAnswer: Alice\n\n"
        "Question: When?\nAnswer: In 1472\n\n"
        "Question: Where?\nAnswer: ")
    assert knowmem_prompt([], "Where?") == "Question: Where?\nAnswer: "
    assert knowmem_chat(icl[:1], "Where?") == [{"role": "user", "content": "Who won?"},
                                                {"role": "assistant", "content": "Alice"},
                                                {"role": "user", "content": "Where?"}]


@pytest.mark.parametrize("text,expected", [
    ("1472\n\nQuestion: What next?", "1472"),            # blank line
    (" Dame Alison Rose\nQuestion: Who?", "Dame Alison Rose"),  # the next question
    ("Paris Question: Who?", "Paris"),                   # "Question:" without a newline
    ("the BBC\nand more\n\n", "the BBC\nand more"),       # a single newline is kept
    ("\n\nQuestion: x", ""),                              # stops at once: empty answer
    ("  no stop at all  ", "no stop at all"),
    ("A\nQuestion\n\nB", "A"),                            # earliest of several stops
])
def test_cut_at_stops(text, expected):
    assert cut_at_stops(text) == expected
    assert KNOWMEM_STOPS == ("\n\n", "\nQuestion", "Question:")


def test_rouge_l_f1_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3 tokens: P = 3/3, R = 3/6, F1 = 2·1·0.5/1.5 = 2/3
    r = rouge_l_f1(["the cat sat"], ["the cat sat on the mat"])
    assert r.value == pytest.approx(2 / 3) and r.n == 1
    # stemming: "cats running" ~ "cat run"; case and punctuation ignored
    assert rouge_l_f1(["Cats running!"], ["cat run"]).value == pytest.approx(1.0)
    # LCS("a b c d", "a x c y") = "a c": P = R = 2/4, F1 = 0.5; an empty generation scores 0; mean over items
    r = rouge_l_f1(["a b c d", ""], ["a x c y", "anything"])
    assert r.per_item == pytest.approx([0.5, 0.0]) and r.value == pytest.approx(0.25)
    assert "rougeL_f1" in r.definition
    with pytest.raises(ValueError, match="2 generations but 1 references"):
        rouge_l_f1(["a", "b"], ["a"])


def test_privleak_sign_and_value_from_min_k_auc():
    # members' min-k scores all above the non-members': AUC 1 (forget set recognisable) → strongly negative
    auc = mia.roc_auc(mia.min_k_scores([[-0.1, -0.2, -3.0], [-0.2, -0.3, -2.0]], 0.4),
                      mia.min_k_scores([[-2.0, -2.5, -4.0], [-1.5, -5.0, -6.0]], 0.4)).value
    assert auc == 1.0
    assert mia.privleak(auc, 0.5).value == pytest.approx(-100.0)          # ((1-1) - 0.5) / 0.5 · 100
    assert mia.privleak(0.9, 0.6).value == pytest.approx((0.1 - 0.4) / 0.4 * 100)  # under-unlearned: < 0
    assert mia.privleak(0.3, 0.6).value == pytest.approx((0.7 - 0.4) / 0.4 * 100)  # over-unlearned: > 0
    assert mia.privleak(0.6, 0.6).value == pytest.approx(0.0)             # like the retain model


def test_stop_on_strings_is_per_row(tiny_tokenizer):
    from unlearnkit.eval.generation import StopOnStrings

    tok = tiny_tokenizer
    gen = [tok(" Alice\n\nQuestion", add_special_tokens=False)["input_ids"],
           tok(" Alice Smith", add_special_tokens=False)["input_ids"]]  # rows of different lengths
    assert StopOnStrings(tok, KNOWMEM_STOPS)(gen) == [True, False]
