"""Shared fixtures: a tiny from-scratch Llama with a tokenizer trained on synthetic data (no download)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from unlearnkit.data import PromptFormat, generate_related_knowledge
from unlearnkit.models import tiny_model_and_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_TOFU = REPO.parent / "shared" / "data" / "tofu"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    if not SHARED_TOFU.is_dir():
        pytest.skip("../shared/data/tofu not present")
    return SHARED_TOFU


@pytest.fixture(scope="session")
def people():
    """20 synthetic people (deterministic)."""
    return generate_related_knowledge(n_people=20, seed=0)


@pytest.fixture(scope="session")
def plain_format():
    return PromptFormat(template="plain", max_length=128)


def _corpus(ds):
    recs = ds.records(kinds=("target", "related", "unrelated", "world", "multihop"))
    return [f"Question: {r.question}\nAnswer: {r.answer} {r.paraphrased_answer or ''} {' '.join(r.perturbed_answers or [])}"
            for r in recs]


@pytest.fixture(scope="session")
def tiny_tokenizer(people):
    _, tok = tiny_model_and_tokenizer(_corpus(people), vocab_size=1024)
    return tok


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    """A fresh random 2-layer Llama (fp32, eager attention so torch.func works)."""
    from unlearnkit.models import tiny_llama

    model = tiny_llama(len(tiny_tokenizer), hidden=64, layers=2, heads=4, intermediate=128, seed=0,
                       attn_implementation="eager", pad_token_id=tiny_tokenizer.pad_token_id,
                       eos_token_id=tiny_tokenizer.eos_token_id)
    return model.eval()


def _memorise(model, batches, steps: int, lr: float) -> dict:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    from unlearnkit.logprobs import sequence_logprobs

    for _ in range(steps):
        loss = sum(-sequence_logprobs(model, b).mean.mean() for b in batches)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return copy.deepcopy(model.state_dict())


@pytest.fixture(scope="session")
def memorise():
    """memorise(model, batches, steps, lr) -> the model's state dict after `steps` AdamW steps on the
    answers of `batches` (a θ_ini that "knows" them), for the objectives and G-effect tests."""
    return _memorise

