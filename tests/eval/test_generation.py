"""The pool decoder produces `model.generate`'s greedy tokens, with rows leaving the batch and slots refilled."""
import pytest
import torch

from unlearnkit.data import pad_batch
from unlearnkit.data.collate import encode_prompt
from unlearnkit.eval import decode_pool
from unlearnkit.eval.decode_pool import PoolDecoder
from unlearnkit.eval.generation import generate_from_ids


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


class _WriteOnce(list):
    """The decoder's results: each prompt's row is written exactly once (a finished slot that keeps decoding until
    it is refilled must never write again)."""

    def __setitem__(self, i, value):
        assert super().__getitem__(i) is None, f"row {i} written twice"
        super().__setitem__(i, value)


def _decoder(model, tok, prompts, new, eos=None, batch_size=None, refill=True):
    decoder = PoolDecoder(model, prompts, tok.pad_token_id, new, batch_size or len(prompts), eos, refill=refill)
    decoder.out = _WriteOnce(decoder.out)
    return decoder


def _pool(model, tok, prompts, new, eos=None, batch_size=None, refill=True):
    return _decoder(model, tok, prompts, new, eos, batch_size, refill).run()


@pytest.mark.parametrize("share", [0.25, 1.0])
def test_one_batch_is_token_identical_to_generate(tiny_model, tiny_tokenizer, prompts, monkeypatch, share):
    """A random model never emits its EOS, so a token it does emit often is made the EOS: rows then stop at
    different steps, finished rows are dropped (0.25) or kept to the end (1.0), and each row's tokens must be
    `model.generate`'s up to and including that EOS."""
    monkeypatch.setattr(decode_pool, "REFILL_SHARE", share)
    batch = pad_batch([{"input_ids": p} for p in prompts], tiny_tokenizer.pad_token_id, "left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    free = _pool(tiny_model, tiny_tokenizer, prompts, 12)
    eos = max({t for row in free for t in row[:11]}, key=lambda t: _spread(free, t))
    want = _hf_greedy(tiny_model, ids, mask, 12, eos, tiny_tokenizer.pad_token_id)
    got = _pool(tiny_model, tiny_tokenizer, prompts, 12, eos)
    assert got == want
    lengths = {len(r) for r in got}
    assert len(lengths) > 2 and max(lengths) == 12, "the fixture must stop rows at different steps"


def _one_by_one(model, tok, prompts, new, eos):
    out = []
    for p in prompts:
        ids = torch.tensor([p])
        out += _hf_greedy(model, ids, torch.ones_like(ids), new, eos, tok.pad_token_id)
    return out


@pytest.mark.parametrize("share", [0.25, 0.5])
def test_refilled_slots_give_each_prompt_its_own_greedy_tokens(tiny_model, tiny_tokenizer, prompts, monkeypatch,
                                                                share):
    """Ten prompts through 3 slots: finished rows hand their slot to the next prompt (longest first), whose states
    are placed at the current position; with a small buffer its unused head is cut off on the way. Every row must
    equal `model.generate` on its prompt alone, and rows must really have been refilled and cut."""
    monkeypatch.setattr(decode_pool, "REFILL_SHARE", share)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    ordered = [prompts[i] for i in order]
    free = _pool(tiny_model, tiny_tokenizer, ordered, 16, batch_size=3)
    eos = max({t for row in free for t in row[:15]}, key=lambda t: _spread(free, t))
    calls = {"refill": 0, "drop_head": 0}
    for name in calls:
        real = getattr(decode_pool._Slots, name)

        def counted(self, *a, _real=real, _name=name):
            calls[_name] += 1
            return _real(self, *a)
        monkeypatch.setattr(decode_pool._Slots, name, counted)
    decoder = _decoder(tiny_model, tiny_tokenizer, ordered, 16, eos, batch_size=3)
    decoder.longest = 2  # a small buffer (2 · (2 + 16) positions) so that its head is cut off while decoding
    got = decoder.run()
    assert got == _one_by_one(tiny_model, tiny_tokenizer, ordered, 16, eos)
    assert calls["refill"] >= 2 and calls["drop_head"] >= 1, calls
    assert len({len(r) for r in got}) > 2


def test_fixed_batches_keep_the_input_order(tiny_model, tiny_tokenizer, prompts):
    """refill=False: batches of the given order, each one `model.generate`'s batch (ragged prompts, left-padded)."""
    got = _pool(tiny_model, tiny_tokenizer, prompts, 8, batch_size=4, refill=False)
    want = []
    for a in range(0, len(prompts), 4):
        batch = pad_batch([{"input_ids": p} for p in prompts[a:a + 4]], tiny_tokenizer.pad_token_id, "left")
        want += _hf_greedy(tiny_model, batch["input_ids"], batch["attention_mask"], 8, -1, tiny_tokenizer.pad_token_id)
    assert got == want


def test_stop_strings_end_a_row_at_the_step_that_completes_them(tiny_model, tiny_tokenizer, prompts):
    free = generate_from_ids(tiny_model, tiny_tokenizer, prompts[:4], 10, batch_size=4)
    stop = free[0][len(free[0]) // 2:][:3]  # a piece of row 0's text
    assert stop
    cut = generate_from_ids(tiny_model, tiny_tokenizer, prompts[:4], 10, batch_size=4, stops=[stop])
    assert stop in cut[0] and len(cut[0]) < len(free[0]) and free[0].startswith(cut[0])
    for a, b in zip(free[1:], cut[1:]):
        assert a == b or (stop in b and a.startswith(b))


def test_buffer_cache_returns_the_concatenated_states():
    layer = decode_pool._buffer_layer_class()(capacity=5)
    k1, v1, k2, v2 = (torch.randn(2, 3, n, 4) for n in (3, 3, 1, 1))
    layer.update(k1, v1)
    keys, values = layer.update(k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], -2)) and torch.equal(values, torch.cat([v1, v2], -2))
    assert layer.get_seq_length() == 4
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, torch.cat([k1, k2], -2)[1:])
    with pytest.raises(RuntimeError, match="overflows"):
        layer.update(torch.randn(1, 3, 2, 4), torch.randn(1, 3, 2, 4))


def test_buffer_cache_places_rows_and_drops_its_head():
    layer = decode_pool._buffer_layer_class()(capacity=6)
    k, v = torch.randn(2, 1, 4, 2), torch.randn(2, 1, 4, 2)
    layer.update(k, v)
    new_k, new_v = torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2)
    layer.place(torch.tensor([1]), new_k, new_v)  # row 1 now ends with the new states at positions 2, 3
    assert torch.equal(layer.keys[1, :, 2:], new_k[0]) and torch.equal(layer.keys[0], k[0])
    layer.drop_head(2)
    assert layer.get_seq_length() == 2
    assert torch.equal(layer.keys[1], new_k[0]) and torch.equal(layer.values[1], new_v[0])
    assert torch.equal(layer.keys[0], k[0, :, 2:])


def test_a_finished_slot_never_writes_again(tiny_model, tiny_tokenizer, prompts, monkeypatch):
    """A finished slot goes on decoding (its own continuation) until it is refilled or dropped. Made the EOS, a
    token that comes twice in one row's continuation ends that row at its first occurrence while other rows live
    on; the slot reaches the second occurrence and must not finish (and write) a second time."""
    monkeypatch.setattr(decode_pool, "REFILL_SHARE", 1.0)  # keep finished slots in the batch to the end
    free = _pool(tiny_model, tiny_tokenizer, prompts, 12)
    found = [(r, t) for r, row in enumerate(free) for t in set(row)
             if row.count(t) >= 2 and any(t not in other[:row.index(t, row.index(t) + 1) + 1] for other in free)]
    assert found, "the fixture needs a row that repeats a token"
    r, t = found[0]
    got = _pool(tiny_model, tiny_tokenizer, prompts, 12, eos=t)  # _WriteOnce fails on a second write
    assert got[r] == free[r][:free[r].index(t) + 1]


def test_refill_refuses_unsorted_prompts(tiny_model):
    with pytest.raises(ValueError, match="longest first"):
        PoolDecoder(tiny_model, [[5, 6], [5, 6, 7]], 0, 4, 1)
    PoolDecoder(tiny_model, [[5, 6], [5, 6, 7]], 0, 4, 1, refill=False)  # fixed batches take any order
    PoolDecoder(tiny_model, [[5, 6], [5, 6, 7]], 0, 4, 2)  # one batch: nothing is refilled
