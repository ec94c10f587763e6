"""Fixed forget/retain slices and a briefly fine-tuned tiny θ_ini for the G-effect tests."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.data import QADataset
from unlearnkit.geffect import make_slices
from unlearnkit.models import tiny_llama


def make_model(tokenizer, seed: int = 0, layers: int = 3):
    return tiny_llama(len(tokenizer), hidden=32, layers=layers, heads=2, intermediate=64, seed=seed,
                      attn_implementation="eager", pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id).eval()


@pytest.fixture(scope="session")
def qa(tiny_tokenizer, people, plain_format):
    recs = people.records()
    return {"forget": QADataset(recs[:4], tiny_tokenizer, plain_format),
            "retain": QADataset(recs[40:44], tiny_tokenizer, plain_format),
            "regulariser": QADataset(recs[44:48], tiny_tokenizer, plain_format)}


@pytest.fixture(scope="session")
def slices(qa, tiny_tokenizer):
    """Forget, measured retain and (disjoint) regulariser rows, one batch each."""
    return make_slices([qa["forget"][i] for i in range(4)], [qa["retain"][i] for i in range(4)],
                       tiny_tokenizer.pad_token_id, regulariser_items=[qa["regulariser"][i] for i in range(4)])


@pytest.fixture(scope="session")
def theta_ini_state(tiny_tokenizer, slices, memorise):
    return memorise(make_model(tiny_tokenizer), slices.forget + slices.retain, steps=15, lr=1e-2)


@pytest.fixture()
def theta_ini(tiny_tokenizer, theta_ini_state):
    model = make_model(tiny_tokenizer)
    model.load_state_dict(theta_ini_state)
    return model.eval()


@pytest.fixture()
def model_t(tiny_tokenizer, theta_ini_state):
    """θ_ini moved a little (a stand-in unlearned checkpoint), so NPO's ratio is not exactly 1."""
    model = make_model(tiny_tokenizer)
    model.load_state_dict(theta_ini_state)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="session")
def new_model(tiny_tokenizer):
    """new_model() -> a fresh 3-layer tiny Llama matching `theta_ini_state`."""
    return lambda: make_model(tiny_tokenizer)
