"""UnlearnTrainer's hooks: an extra penalty in the same step, a stop condition, a caller's batch order."""
from __future__ import annotations

import random

import pytest
import torch

from unlearnkit.data import QADataset
from unlearnkit.objectives import GradientAscent
from unlearnkit.runs import open_run
from unlearnkit.train.hf_glue import JsonlLogCallback, training_arguments
from unlearnkit.train.hooks import FixedDraws, OffsetDraws, StopWhen, loader_batches, shuffled_batches
from unlearnkit.train.settings import TrainingSettings
from unlearnkit.train.unlearn import UnlearnTrainer
from unlearnkit.train.unlearn_data import ForgetDataset, UnlearnCollator


class _SeenGA(GradientAscent):
    """Gradient ascent that notes the forget indices of every batch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forget_loss(self, model, batch, ref):
        self.seen.append(batch.forget["index"].tolist())
        return super().forget_loss(model, batch, ref)


def _trainer(model, tok, ds, run, objective, **kw):
    settings = TrainingSettings(max_steps=kw.pop("max_steps", 3), lr=1e-3, scheduler="constant", precision="fp32",
                                save_steps=-1, logging_steps=1)
    return UnlearnTrainer(model=model, args=training_arguments(run, settings, batch_size=2),
                          train_dataset=ForgetDataset(ds), data_collator=UnlearnCollator(tok.pad_token_id),
                          processing_class=tok, callbacks=[JsonlLogCallback(run)], objective=objective, run=run, **kw)


@pytest.fixture()
def forget_ds(people, tiny_tokenizer, plain_format):
    return QADataset(people.records(kinds=("target",))[:6], tiny_tokenizer, plain_format)


def test_penalty_is_added_to_the_step_and_logged(tiny_model, tiny_tokenizer, forget_ds, tmp_path):
    run = open_run(tmp_path / "run")

    def penalty(model):
        value = sum(p.pow(2).sum() for p in model.parameters())
        return 0.5 * value, {"sq": float(value.detach())}

    _trainer(tiny_model, tiny_tokenizer, forget_ds, run, GradientAscent(), penalty=penalty).train()
    rows = [r for r in run.read_log() if "learning_rate" in r]
    assert len(rows) == 3
    for r in rows:
        assert r["loss"] == pytest.approx(r["objective_loss"] + 0.5 * r["sq"], rel=1e-5)
    assert not (tmp_path / "run" / "checkpoints").exists()   # save_steps < 0: no checkpoints, not even a folder


def test_stop_condition_and_fixed_batch_order(tiny_model, tiny_tokenizer, forget_ds, tmp_path):
    order = [[5, 0], [3, 1], [2, 4], [0, 1], [2, 3]]
    objective = _SeenGA()
    stop = StopWhen(lambda model, step: step >= 2)
    trainer = _trainer(tiny_model, tiny_tokenizer, forget_ds, open_run(tmp_path / "run"), objective, max_steps=5,
                       batch_order=order)
    trainer.add_callback(stop)
    trainer.train()
    assert trainer.state.global_step == 2 and objective.seen == order[:2]


def test_draw_sources():
    rng = random.Random(3)
    batches = shuffled_batches(5, 2, rng)
    first = [next(batches) for _ in range(6)]
    assert sorted(i for b in first[:3] for i in b) == list(range(5)) and [len(b) for b in first[:3]] == [2, 2, 1]
    # the order a seeded DataLoader gives, pass after pass
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(range(5), batch_size=2, shuffle=True,
                                         generator=torch.Generator().manual_seed(0), collate_fn=list)
    want = list(loader) + list(loader)
    assert loader_batches(5, 2, gen, 5) == want[:5]

    class Stream:
        def batch(self, k):
            return k

    assert OffsetDraws(Stream(), 7).batch(2) == 9


def test_fixed_draws_pad_the_given_rows(forget_ds, tiny_tokenizer):
    draws = FixedDraws(forget_ds, [[1, 4]], tiny_tokenizer.pad_token_id)
    assert draws.batch(0)["index"].tolist() == [1, 4]
    with pytest.raises(IndexError):
        draws.batch(1)


def test_batch_order_is_refused_under_data_parallelism(monkeypatch, tiny_model, tiny_tokenizer, forget_ds, tmp_path):
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match="batch_order fixes one process"):
        _trainer(tiny_model, tiny_tokenizer, forget_ds, open_run(tmp_path / "run"), GradientAscent(), batch_order=[[0]])
