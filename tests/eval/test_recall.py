from unlearnkit.eval.recall import exact_match, normalize_answer


def test_normalize_and_exact_match():
    assert normalize_answer("  The  Cat\tsat.  ") == "the cat sat"
    assert exact_match("Paris!", "paris")
    assert exact_match("Alia was born in Rome.", "alia was  born in rome")
    assert not exact_match("Rome", "Paris")


def test_answer_recall_returns_fraction_and_answers(tiny_model, tiny_tokenizer, people, plain_format):
    from unlearnkit.eval import answer_recall

    recs = people.records(kinds=("target",), people=[0])
    frac, gens = answer_recall(tiny_model, tiny_tokenizer, recs, plain_format, max_new_tokens=3)
    assert 0.0 <= frac <= 1.0 and len(gens) == len(recs) and all(isinstance(g, str) for g in gens)
