"""Fixed small batches (3 forget, 3 retain, 3 IdK rows) and a briefly fine-tuned θ_ini that knows them."""
from __future__ import annotations

import pytest

from unlearnkit.data import QADataset, QARecord, pad_batch
from unlearnkit.models import tiny_llama
from unlearnkit.objectives import UnlearnBatch

IDK = "I have no idea about that."


def make_model(tokenizer, seed: int = 0):
    return tiny_llama(len(tokenizer), hidden=64, layers=2, heads=4, intermediate=128, seed=seed,
                      attn_implementation="eager", pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id).eval()


@pytest.fixture(scope="session")
def datasets(tiny_tokenizer, people, plain_format):
    recs = people.records()
    forget = recs[:3]
    retain = recs[40:43]
    idk = [QARecord(question=r.question, answer=IDK) for r in forget]
    return {name: QADataset(r, tiny_tokenizer, plain_format)
            for name, r in (("forget", forget), ("retain", retain), ("idk", idk))}


def collate(ds, tokenizer, side="right", order=None):
    order = range(len(ds)) if order is None else order
    return pad_batch([ds[i] for i in order], tokenizer.pad_token_id, side)


@pytest.fixture(scope="session")
def collate_fn(tiny_tokenizer):
    """collate_fn(dataset, side="right", order=None) -> padded batch dict."""
    return lambda ds, side="right", order=None: collate(ds, tiny_tokenizer, side, order)


@pytest.fixture(scope="session")
def batch(datasets, tiny_tokenizer) -> UnlearnBatch:
    return UnlearnBatch(**{k: collate(ds, tiny_tokenizer) for k, ds in datasets.items()})


@pytest.fixture(scope="session")
def left_batch(datasets, tiny_tokenizer) -> UnlearnBatch:
    return UnlearnBatch(**{k: collate(ds, tiny_tokenizer, "left") for k, ds in datasets.items()})


@pytest.fixture(scope="session")
def theta_ini_state(tiny_tokenizer, batch, memorise):
    """State dict of the tiny model after 25 AdamW steps on forget + retain answers (it "knows" them)."""
    return memorise(make_model(tiny_tokenizer), (batch.forget, batch.retain), steps=25, lr=5e-3)


@pytest.fixture()
def theta_ini(tiny_tokenizer, theta_ini_state):
    model = make_model(tiny_tokenizer)
    model.load_state_dict(theta_ini_state)
    return model.eval()


@pytest.fixture()
def ref_model(tiny_tokenizer):
    """A different random model, so reference quantities differ from the trained model's."""
    return make_model(tiny_tokenizer, seed=1)
