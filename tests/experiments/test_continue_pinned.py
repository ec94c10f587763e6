"""Training on from θ_un until ‖θ − θ_ini‖ reaches a target, pinned: the same steps, norms and losses as the
hand-written loop gave before the continuation went through the shared trainer."""
from __future__ import annotations

import json

import pytest
import torch

# recorded from the pre-consolidation loop (commit 7638beb): tiny 2-layer Llama, grad_diff, seed 0, one thread
PINNED = ({"near": {"target": 0.0, "step": 1, "norm": 0.8201764716283538, "reached": True},
           "mid": {"target": 1.1, "step": 3, "norm": 1.2028129944370616, "reached": True},
           "far": {"target": 1e9, "step": 4, "norm": 1.3797457951918168, "reached": False}},
          [[0, 0.6115708289306979, None], [1, 0.8201764716283538, -0.35263919830322266],
           [2, 1.0208604129242287, -0.3683786392211914], [3, 1.2028129944370616, -0.42313671112060547],
           [4, 1.3797457951918168, -0.664149284362793]])


def _theta_ini(tok, folder) -> str:
    from unlearnkit.models import tiny_llama

    model = tiny_llama(len(tok), hidden=64, layers=2, heads=4, intermediate=128, seed=0,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _continue(theta_ini, tmp_path):
    from unlearnkit.train.continuation import continue_until_norm
    from unlearnkit.train.unlearn import UnlearnConfig, unlearn

    spec = "synthetic:forget,people=10,seed=0,forget_fraction=0.3"
    retain = "synthetic:retain,people=10,seed=0,forget_fraction=0.3"
    base = tmp_path / "base"
    unlearn(UnlearnConfig(model=theta_ini, forget=spec, retain=retain, method="grad_diff", run=str(base),
                          max_steps=2, lr=1e-3, scheduler="constant", forget_batch_size=4, grad_accum=1,
                          precision="fp32", save_steps=2, keep_checkpoints=1, seed=0, template="plain"))
    hits = continue_until_norm(base, {"near": 0.0, "mid": 1.1, "far": 1e9}, tmp_path / "longer", 4,
                               echo=lambda *_: None)
    log = [json.loads(l) for l in (tmp_path / "longer" / "log.jsonl").read_text().splitlines()]
    return hits, [[r["step"], r["norm"], r.get("loss")] for r in log if "norm" in r]


def test_continuation_matches_the_recorded_numbers(tiny_tokenizer, tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = _continue(_theta_ini(tiny_tokenizer, tmp_path / "ini"), tmp_path)
    finally:
        torch.set_num_threads(n)
    hits, log = got
    want_hits, want_log = PINNED
    assert set(hits) == set(want_hits)
    for name, want in want_hits.items():
        assert hits[name]["step"] == want["step"] and hits[name]["reached"] == want["reached"], name
        assert hits[name]["norm"] == pytest.approx(want["norm"], rel=1e-5), name
    assert [r[0] for r in log] == [r[0] for r in want_log]
    assert [r[1] for r in log] == pytest.approx([r[1] for r in want_log], rel=1e-5)
    assert [r[2] for r in log[1:]] == pytest.approx([r[2] for r in want_log[1:]], rel=1e-5, abs=1e-6)
