"""The entity-contrast scorer against a per-example recomputation of its formula."""
from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.data import IGNORE, PromptFormat, encode_qa
from unlearnkit.data.collate import mask_answer_spans
from unlearnkit.reveal.scorers import get_scorer, mention_pattern
from unlearnkit.reveal.selfdata import score_texts


def _content_logprob(model, tok, question, answer, name, fmt):
    """Σ log π of the answer tokens outside `name`, EOS excluded: one unpadded forward, gathered by hand."""
    enc = encode_qa(tok, question, answer, fmt)
    mask_answer_spans(tok, enc, answer, fmt, [m.span() for m in mention_pattern([name]).finditer(answer)])
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(float(lp[t - 1, enc.input_ids[t]]) for t in range(1, len(enc.input_ids))
               if enc.labels[t] != IGNORE)


def test_deltas_and_scores_match_the_formula(tiny_model, tiny_tokenizer, people):
    name, *others = [p.name for p in people.people[:4]]
    fmt = PromptFormat(template="plain", add_eos=False)
    scorer = get_scorer("entity_contrast", names=[name], placeholders=others, scale=1.5, batch_size=2)
    scorer.use_model(tiny_model, tiny_tokenizer, PromptFormat(template="plain"))
    instructions = [f"Who is {name}?", f"Tell me about {name.upper()}.", "Write a poem."]
    texts = [f"{name} was born in Rome and {name} likes red.", "A pilot flies planes.", f"{others[0]} is kind."]
    got = scorer.deltas(texts, instructions)
    for x, y, d in zip(instructions, texts, got):
        own = _content_logprob(tiny_model, tiny_tokenizer, x, y, name, fmt)
        pattern = mention_pattern([name])
        alt = [_content_logprob(tiny_model, tiny_tokenizer, pattern.sub(p, x), pattern.sub(p, y), p, fmt) for p in others]
        want = own - (math.log(sum(math.exp(a) for a in alt)) - math.log(len(alt)))
        assert d == pytest.approx(want, abs=2e-4)
    scores = scorer(texts, instructions=instructions)
    assert scores == pytest.approx([1 - math.exp(-max(d, 0) / 1.5) for d in got], abs=1e-9)
    # the loop's helper hands the instructions over
    assert score_texts(scorer, texts, instructions=instructions) == pytest.approx(scores)


def test_contrast_scorer_errors(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="names"):
        get_scorer("entity_contrast")
    with pytest.raises(ValueError, match="placeholder"):
        get_scorer("entity_contrast", names=["John Smith"], placeholders=["john smith"])
    scorer = get_scorer("entity_contrast", names=["Ann Lee"])
    with pytest.raises(RuntimeError, match="use_model"):
        scorer(["Ann Lee is tall."], instructions=["Who is Ann Lee?"])
    scorer.use_model(tiny_model, tiny_tokenizer)
    with pytest.raises(ValueError, match="instructions"):
        scorer(["Ann Lee is tall."])
    assert scorer([], instructions=[]) == []


def test_base_scoring_disables_the_adapters(tiny_model, tiny_tokenizer, people):
    import copy

    from peft import LoraConfig, get_peft_model

    name, *others = [p.name for p in people.people[:3]]
    texts, instructions = [f"{name} was born in Rome."], [f"Who is {name}?"]
    scorer = get_scorer("entity_contrast", names=[name], placeholders=others)
    plain = scorer.use_model(tiny_model, tiny_tokenizer).deltas(texts, instructions)
    peft_model = get_peft_model(copy.deepcopy(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    for n, p in peft_model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0.0, 0.5)
    adapted = scorer.use_model(peft_model, tiny_tokenizer).deltas(texts, instructions)
    base = scorer.use_model(peft_model, tiny_tokenizer, base=True).deltas(texts, instructions)
    assert base == pytest.approx(plain, abs=1e-4) and abs(adapted[0] - plain[0]) > 1e-3
