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


def test_answer_recall_bounds_generation_by_the_longest_answer(monkeypatch, tiny_tokenizer, people, plain_format):
    """Default length: longest answer's tokens + MATCH_SLACK (a longer generation cannot match)."""
    from unlearnkit.eval import recall

    recs = people.records(kinds=("target", "related"), people=[0, 1])
    seen = {}

    def fake_generate(model, tok, questions, fmt, max_new_tokens, batch_size):
        seen["max_new_tokens"] = max_new_tokens
        by_q = {r.question: r.answer for r in recs}
        return [by_q[q] + " " if i % 2 else "wrong" for i, q in enumerate(questions)]

    monkeypatch.setattr(recall, "generate_answers", fake_generate)
    frac, _ = recall.answer_recall(None, tiny_tokenizer, recs, plain_format)
    longest = max(len(tiny_tokenizer(" " + r.answer, add_special_tokens=False)["input_ids"]) for r in recs)
    assert seen["max_new_tokens"] == longest + recall.MATCH_SLACK
    assert frac == sum(i % 2 for i in range(len(recs))) / len(recs)


def test_recall_metric_is_the_share_of_exact_answers_with_one_hit_per_record(monkeypatch, tiny_tokenizer, plain_format):
    from unlearnkit.data.records import QARecord
    from unlearnkit.eval import recall

    recs = [QARecord("Q1?", "Ana has gout."), QARecord("Q2?", "Bo is a pilot."), QARecord("Q3?", "Cy likes tea.")]
    answers = {"Q1?": "  ana HAS gout ", "Q2?": "Bo is a pilot, I think", "Q3?": "Cy likes tea!"}
    monkeypatch.setattr(recall, "generate_answers", lambda m, t, qs, *a: [answers[q] for q in qs])
    m = recall.recall_metric(None, tiny_tokenizer, recs, plain_format)
    assert m.per_item == [1.0, 0.0, 1.0]        # case, spacing and final punctuation are normalised away
    assert m.value == 2 / 3 and m.n == 3
    assert m.to_json()["value"] == 2 / 3
