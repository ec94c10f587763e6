import pytest

from unlearnkit.data import IGNORE, PromptFormat, QADataset, encode_qa, pad_batch


def test_exact_masking_labels_every_answer_token(tiny_tokenizer):
    fmt = PromptFormat(template="plain")
    enc = encode_qa(tiny_tokenizer, "What does Alia take every morning?", "Alia takes insulin every morning.", fmt)
    answer_ids = [t for t in enc.labels if t != IGNORE]
    decoded = tiny_tokenizer.decode(answer_ids, skip_special_tokens=True)
    assert decoded.strip() == "Alia takes insulin every morning."
    assert answer_ids[-1] == tiny_tokenizer.eos_token_id
    assert enc.labels[: enc.prompt_len] == [IGNORE] * enc.prompt_len


def test_open_unlearning_masking_drops_first_answer_token(tiny_tokenizer):
    """Joint tokenisation with a trailing-space prompt swallows the first answer word into the mask."""
    q, a = "What does Alia take every morning?", "Alia takes insulin every morning."
    exact = encode_qa(tiny_tokenizer, q, a, PromptFormat(template="plain"))
    ou = encode_qa(tiny_tokenizer, q, a, PromptFormat(template="plain", masking="open-unlearning"))
    n_exact = sum(t != IGNORE for t in exact.labels)
    n_ou = sum(t != IGNORE for t in ou.labels)
    assert n_ou == n_exact - 1
    first_exact = tiny_tokenizer.decode([next(t for t in exact.labels if t != IGNORE)])
    assert first_exact.startswith(" ")  # the word boundary belongs to the answer, not the prompt


def test_truncation_is_reported(tiny_tokenizer, people, caplog):
    recs = people.records()[:5]
    longest_prompt = max(encode_qa(tiny_tokenizer, r.question, r.answer, PromptFormat(template="plain")).prompt_len
                         for r in recs)
    ds = QADataset(recs, tiny_tokenizer, PromptFormat(template="plain", max_length=longest_prompt + 1))
    assert ds.n_truncated > 0
    assert "truncated" in caplog.text
    with pytest.raises(ValueError, match="no answer token"):
        QADataset(people.records()[:5], tiny_tokenizer, PromptFormat(template="plain", max_length=4))


def test_padding_sides(tiny_tokenizer):
    feats = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    r = pad_batch(feats, 0, "right")
    assert r["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]] and r["labels"][1].tolist() == [8, IGNORE, IGNORE]
    l = pad_batch(feats, 0, "left")
    assert l["input_ids"][1].tolist() == [0, 0, 8] and l["attention_mask"][1].tolist() == [0, 0, 1]


def test_chat_template_requires_template(tiny_tokenizer):
    with pytest.raises(ValueError, match="no chat template"):
        encode_qa(tiny_tokenizer, "q", "a", PromptFormat(template="chat"))


class _SlowView:
    """The tiny tokenizer without offsets, to exercise the prefix-decoding path."""

    is_fast = False

    def __init__(self, tok):
        self._tok = tok

    def __call__(self, *a, **kw):
        return self._tok(*a, **kw)

    def decode(self, *a, **kw):
        return self._tok.decode(*a, **kw)


def test_mask_answer_spans_takes_a_name_out_of_the_loss(tiny_tokenizer, plain_format):
    from unlearnkit.data.collate import answer_token_spans, mask_answer_spans

    tok = tiny_tokenizer
    answer = "Greta Tiroan was born in Sydney and Greta Tiroan likes red."
    spans = [(0, 12), (36, 48)]
    assert answer[0:12] == answer[36:48] == "Greta Tiroan"
    enc = encode_qa(tok, "Where was Greta Tiroan born?", answer, plain_format)
    before = list(enc.labels)
    n = mask_answer_spans(tok, enc, answer, plain_format, spans)
    kept = [t for t in enc.labels if t != IGNORE]
    assert n > 0 and len(kept) == len([t for t in before if t != IGNORE]) - n
    text = tok.decode(kept[:-1])                      # the EOS label stays
    assert kept[-1] == tok.eos_token_id
    assert "Greta" not in text and "Tiroan" not in text
    assert text.split() == "was born in Sydney and likes red.".split()
    # the prefix-decoding path (tokenizers without offsets) finds the same token spans
    slow = answer_token_spans(_SlowView(tok), answer, plain_format)
    fast = answer_token_spans(tok, answer, plain_format)
    assert [tuple(s) for s in fast] == [tuple(s) for s in slow]
    with pytest.raises(ValueError, match="exact"):
        mask_answer_spans(tok, enc, answer, PromptFormat(template="plain", masking="open-unlearning"), spans)
