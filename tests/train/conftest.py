"""Fixtures of the training tests: a saved tiny θ_ini (for unlearn and the fault-injection tests)."""
from __future__ import annotations

import pytest

from unlearnkit.models import tiny_llama


@pytest.fixture(scope="session")
def theta_ini(tiny_tokenizer, tmp_path_factory) -> str:
    """A tiny random Llama saved like a finetune run's model/ dir."""
    out = tmp_path_factory.mktemp("theta_ini") / "model"
    tok = tiny_tokenizer
    model = tiny_llama(len(tok), hidden=64, layers=2, heads=4, intermediate=128, seed=0,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
