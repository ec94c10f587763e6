"""The lean greedy decoder produces exactly `model.generate`'s greedy tokens, with rows leaving the batch."""
import pytest
import torch

from unlearnkit.data import pad_batch
from unlearnkit.data.collate import encode_prompt
from unlearnkit.eval import generation
from unlearnkit.eval.generation import generate_from_ids, greedy_decode


@pytest.fixture()
def prompts(people, tiny_tokenizer, plain_format):
    recs = people.records(kinds=("target", "unrelated", "world"), people=[0, 1, 2])[:10]
    return [encode_prompt(tiny_tokenizer, r.question, plain_format) for r in recs]


def _hf_greedy(model, ids, mask, new, eos, pad):
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, use_cache=True,
                         eos_token_id=eos, pad_token_id=pad, temperature=None, top_p=None, top_k=None)
    rows = []
    for r in out[:, ids.shape[1]:].tolist():
        rows.append(r[:r.index(eos) + 1] if eos in r else r)
    return rows


def _spread(rows, tok):
    """How many different stop lengths `tok` as EOS gives (a row without it runs to the end)."""
    return len({r.index(tok) + 1 if tok in r else len(r) for r in rows})


@pytest.mark.parametrize("prune_share", [0.25, 1.0])
def test_greedy_decode_is_token_identical_to_generate(tiny_model, tiny_tokenizer, prompts, monkeypatch, prune_share):
    """A random model never emits its EOS, so a token it does emit often is made the EOS: rows then stop at
    different steps, finished rows are dropped (0.25) or kept to the end (1.0), and each row's tokens must be
    `model.generate`'s up to and including that EOS."""
    monkeypatch.setattr(generation, "PRUNE_SHARE", prune_share)
    batch = pad_batch([{"input_ids": p} for p in prompts], tiny_tokenizer.pad_token_id, "left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    free = greedy_decode(tiny_model, ids, mask, 12, None)
    eos = max({t for row in free for t in row[:11]}, key=lambda t: _spread(free, t))
    want = _hf_greedy(tiny_model, ids, mask, 12, eos, tiny_tokenizer.pad_token_id)
    got = greedy_decode(tiny_model, ids, mask, 12, eos)
    assert got == want
    lengths = {len(r) for r in got}
    assert len(lengths) > 2 and max(lengths) == 12, "the fixture must stop rows at different steps"


def test_stop_strings_end_a_row_at_the_step_that_completes_them(tiny_model, tiny_tokenizer, prompts):
    free = generate_from_ids(tiny_model, tiny_tokenizer, prompts[:4], 10, batch_size=4)
    stop = free[0][len(free[0]) // 2:][:3]  # a piece of row 0's text
    assert stop
    cut = generate_from_ids(tiny_model, tiny_tokenizer, prompts[:4], 10, batch_size=4, stops=[stop])
    assert stop in cut[0] and len(cut[0]) < len(free[0]) and free[0].startswith(cut[0])
    for a, b in zip(free[1:], cut[1:]):
        assert a == b or (stop in b and a.startswith(b))


def test_buffer_cache_returns_the_concatenated_states():
    layer = generation._buffer_layer_class()(capacity=5)
    k1, v1, k2, v2 = (torch.randn(2, 3, n, 4) for n in (3, 3, 1, 1))
    layer.update(k1, v1)
    keys, values = layer.update(k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], -2)) and torch.equal(values, torch.cat([v1, v2], -2))
    assert layer.get_seq_length() == 4
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, torch.cat([k1, k2], -2)[1:])
    with pytest.raises(RuntimeError, match="overflows"):
        layer.update(torch.randn(1, 3, 2, 4), torch.randn(1, 3, 2, 4))

