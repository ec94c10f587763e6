import pytest
import torch

from unlearnkit.reveal.instructions import (InstructionPool, build_pool, dedupe, embed_instructions, paraphrase,
                                            recombine, seed_instructions)
from unlearnkit.reveal.target import Target


def test_seed_instructions_per_kind():
    ent = seed_instructions(Target.entity("Ada Lovelace", aliases=["Countess of Lovelace"]))
    assert ent[0] == "Tell me everything you know about Ada Lovelace."
    assert "Write a short biography of Ada Lovelace." in ent
    assert "Who is Countess of Lovelace?" in ent
    code = seed_instructions(Target.skill("code"))
    assert "Write a Python function that reverses a string." in code
    tox = seed_instructions(Target.behaviour("toxicity"))
    assert all(t.strip() for t in tox) and len(tox) == len(set(tox)) >= 20
    assert seed_instructions(Target.skill("chess"))[0] == "Show me how to do chess, step by step."


def test_dedupe_normalised_and_jaccard():
    texts = ["Who is Ada Lovelace?", "who is ada lovelace", "Who is Ada Lovelace, really?",
             "Write a poem about the sea."]
    # 'who is ada lovelace' is the same normalised text; the third shares 3 of 4 bigrams (Jaccard 0.75)
    assert dedupe(texts, threshold=0.7) == ["Who is Ada Lovelace?", "Write a poem about the sea."]
    assert dedupe(texts, threshold=0.8) == ["Who is Ada Lovelace?", "Who is Ada Lovelace, really?",
                                            "Write a poem about the sea."]
    assert dedupe(texts[1:], existing=texts[:1], threshold=1.0) == texts[2:]
    with pytest.raises(ValueError, match="threshold"):
        dedupe(texts, threshold=0.0)


def test_recombine_is_deterministic_and_new():
    base = seed_instructions(Target.entity("Ada Lovelace"))
    a, b = recombine(base, 30, seed=3), recombine(base, 30, seed=3)
    assert a == b and len(a) == 30
    assert recombine(base, 30, seed=4) != a
    assert not set(a) & set(base) and len(set(a)) == 30
    many = recombine(base, 200, seed=0)
    assert any(", tell me everything you know about Ada Lovelace." in t for t in many)  # style lower-cases
    assert not any(", Tell me" in t for t in many)
    # fragments run out: one base, one choice of each fragment -> at most one new instruction
    assert recombine(["Who is X?"], 5, prefixes=["Q: "], styles=[""], suffixes=[""]) == ["Q: Who is X?"]


def test_paraphrase_with_stub_generator():
    calls = []

    def generate_fn(prompts):
        calls.append(prompts)
        return ['  "Give me all the information you have on Ada."\nmore text', "Who is Ada?", "ok"]

    out = paraphrase(["Tell me about Ada.", "Who is Ada?", "Describe Ada."], generate_fn)
    assert len(calls) == 1 and "Instruction: Describe Ada." in calls[0][2]
    # cut to the first line and unquoted; a copy of its source and a too-short output are dropped
    assert out == ["Give me all the information you have on Ada."]
    with pytest.raises(ValueError, match="returned 3 texts for 2 prompts"):
        paraphrase(["a b c", "d e f"], generate_fn)


def test_pool_and_build_pool_deterministic():
    pool = InstructionPool()
    assert pool.add(["Who is Ada?", "who is ada"], "seed") == ["Who is Ada?"]
    assert len(pool) == 1 and pool.origins == ["seed"]
    p1 = build_pool(Target.entity("Ada Lovelace"), n_recombined=20, seed=1,
                    generate_fn=lambda ps: [f"Kindly explain item number {i} about Ada" for i in range(len(ps))])
    p2 = build_pool(Target.entity("Ada Lovelace"), n_recombined=20, seed=1,
                    generate_fn=lambda ps: [f"Kindly explain item number {i} about Ada" for i in range(len(ps))])
    assert p1.texts == p2.texts
    assert {"seed", "recombined", "paraphrase"} <= set(p1.origins)


def test_embed_instructions_lm_and_callable(tiny_model, tiny_tokenizer):
    texts = ["Who is Ada?", "Write a short biography of Ada Lovelace, please.", "Hi"]
    emb = embed_instructions(tiny_model, tiny_tokenizer, texts, batch_size=2)
    assert emb.shape == (3, tiny_model.config.hidden_size) and torch.isfinite(emb).all()
    # padding does not change a text's embedding
    alone = embed_instructions(tiny_model, tiny_tokenizer, texts[2:], batch_size=1)
    torch.testing.assert_close(emb[2], alone[0], atol=1e-5, rtol=1e-4)
    stub = embed_instructions(lambda ts: [[len(t), 1.0] for t in ts], None, texts)
    assert stub.tolist() == [[11.0, 1.0], [48.0, 1.0], [2.0, 1.0]]
    with pytest.raises(ValueError, match="expected \\[N, H\\]"):
        embed_instructions(lambda ts: [1.0] * len(ts), None, texts)
