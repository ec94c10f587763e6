"""Whole training runs give the same per-step losses with the fast paths (the label-position LM head, padded
batches packed into one decoder row) on and off."""
from __future__ import annotations

import json

import pytest

from unlearnkit.label_logprobs import label_head
from unlearnkit.packing import packed_hidden, row_packing


def _losses(run, keys):
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [tuple(r[k] for k in keys) for r in rows if "learning_rate" in r]


@pytest.mark.parametrize("method", ["npo", pytest.param("grad_diff", marks=pytest.mark.slow),
                                    pytest.param("simnpo", marks=pytest.mark.slow)])
def test_unlearning_losses_equal_with_and_without_the_fast_paths(theta_ini, tmp_path, method, monkeypatch):
    """Per-step losses of a 3-step run (each step's weights depend on the previous ones) within 1e-5 relative."""
    from unlearnkit.train.unlearn import UnlearnConfig, unlearn

    import unlearnkit.packing as packing

    packed = []

    def spy(model, batches):
        hidden = packed_hidden(model, batches)
        packed.append(len(batches) if hidden is not None else 0)
        return hidden

    monkeypatch.setattr(packing, "packed_hidden", spy)
    monkeypatch.setattr(packing, "packing_pays", lambda *a, **k: True)   # the tiny model's sizes alone would not pack
    logs = {}
    for enabled in (True, False):
        run = tmp_path / f"{method}-{enabled}"
        cfg = UnlearnConfig(model=theta_ini, method=method, params={"retain": "nll"}, run=str(run),
                            forget="synthetic:forget,people=20,forget_fraction=0.2",
                            retain="synthetic:retain_targets,people=20", max_steps=3, save_steps=100,
                            forget_batch_size=4, grad_accum=1, lr=1e-3, precision="fp32", warmup=0.0)
        with label_head(enabled), row_packing(enabled):
            unlearn(cfg)
        logs[enabled] = _losses(run, ("loss", "forget_loss", "retain_loss"))
    assert len(logs[True]) == 3
    assert 2 in packed                          # forget and retain batches ran packed, in one decoder pass
    for on, off in zip(logs[True], logs[False]):
        assert on == pytest.approx(off, rel=1e-5)
    assert logs[True][0] != logs[True][-1]
    fields = _losses(tmp_path / f"{method}-True", ("flops_per_s", "peak_share"))      # the throughput callback
    assert all(rate > 0 and share > 0 for rate, share in fields)                # the weights moved: later steps test the updates too
