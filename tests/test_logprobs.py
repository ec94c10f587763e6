"""`sequence_logprobs` against a slow per-token reference, with padding on either side."""
import pytest
import torch

from unlearnkit.data import QADataset, pad_batch
from unlearnkit.logprobs import logprobs_from_logits, sequence_logprobs


def slow_reference(model, ids, labels):
    """One sample, no padding: log p(label_t | ids_<t) token by token, from a fresh forward each time."""
    total, n = 0.0, 0
    for t in range(1, len(ids)):
        if labels[t] == -100:
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1].double()
        total += torch.log_softmax(logits, -1)[ids[t]].item()
        n += 1
    return total, n


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_slow_reference(tiny_tokenizer, people, plain_format, seed):
    from unlearnkit.models import tiny_llama

    model = tiny_llama(len(tiny_tokenizer), hidden=32, layers=2, heads=2, intermediate=64, seed=seed,
                       attn_implementation="eager").eval()
    ds = QADataset(people.records()[:3], tiny_tokenizer, plain_format)
    batch = pad_batch([ds[i] for i in range(3)], tiny_tokenizer.pad_token_id, "right")
    with torch.no_grad():
        slp = sequence_logprobs(model, batch)
    for i in range(3):
        ref, n = slow_reference(model, ds[i]["input_ids"], ds[i]["labels"])
        assert int(slp.n_tokens[i]) == n
        assert slp.sum[i].item() == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_batch_invariance(tiny_tokenizer, people, plain_format, side, attn):
    from unlearnkit.models import tiny_llama

    model = tiny_llama(len(tiny_tokenizer), hidden=64, layers=2, heads=4, intermediate=128, seed=3,
                       attn_implementation=attn).eval()
    recs = people.records(kinds=("target", "world"))[:6]
    ds = QADataset(recs, tiny_tokenizer, plain_format)
    lengths = [len(ds[i]["input_ids"]) for i in range(len(ds))]
    assert len(set(lengths)) > 1, "fixture must mix lengths"
    batch = pad_batch([ds[i] for i in range(len(ds))], tiny_tokenizer.pad_token_id, side)
    with torch.no_grad():
        together = sequence_logprobs(model, batch)
        for i in range(len(ds)):
            alone = sequence_logprobs(model, pad_batch([ds[i]], tiny_tokenizer.pad_token_id, side))
            assert alone.sum[0].item() == pytest.approx(together.sum[i].item(), abs=1e-5)
            assert alone.mean[0].item() == pytest.approx(together.mean[i].item(), abs=1e-5)


def test_shape_mismatch_names_tensors():
    with pytest.raises(ValueError, match="logits"):
        logprobs_from_logits(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))


def test_masked_positions_are_zero_not_nan():
    logits = torch.full((1, 4, 3), float("nan"))
    logits[0, 1] = torch.tensor([0.0, 0.0, 0.0])
    labels = torch.tensor([[-100, -100, 2, -100]])
    slp = logprobs_from_logits(logits, labels)
    assert torch.isfinite(slp.token_logprobs).all()
    assert slp.sum.item() == pytest.approx(-torch.log(torch.tensor(3.0)).item(), abs=1e-6)


def test_ignore_label_is_defined_once():
    """-100 lives in logprobs only: every module that masks labels imports it instead of repeating the literal."""
    import re
    from pathlib import Path

    import unlearnkit
    from unlearnkit import data, logprobs

    assert data.IGNORE is logprobs.IGNORE == -100
    src = Path(unlearnkit.__file__).parent
    code = {p: "\n".join(l.split("#")[0] for l in p.read_text().splitlines() if not l.lstrip().startswith(("`", "\"")))
            for p in src.rglob("*.py")}
    defs = [p.name for p, c in code.items() if re.search(r"^IGNORE\s*=", c, re.M)]
    literals = [p.name for p, c in code.items() if re.search(r"[!=]=\s*-100\b", c)]
    assert defs == ["logprobs.py"] and literals == []
