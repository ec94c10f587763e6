from unlearnkit.eval.recall import exact_match, normalize_answer


def test_normalize_and_exact_match():
    assert normalize_answer("  The  Cat\tsat.  ") == "the cat sat"
    assert exact_match("Paris!", "paris")
    assert exact_match("Alia was born in Rome.", "alia was  born in rome")
    assert not exact_match("Rome", "Paris")
