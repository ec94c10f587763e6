"""Helpers for the UIPE tests: tiny Llama models, perturbation, reading a checkpoint dir."""
from __future__ import annotations

from pathlib import Path

import torch

from unlearnkit.models import tiny_llama

VOCAB = 256


def make_model(seed: int = 0):
    return tiny_llama(vocab_size=VOCAB, hidden=64, layers=2, heads=4, intermediate=128, seed=seed,
                      attn_implementation="eager").eval()


def perturbed(model, seed: int = 1, scale: float = 0.02):
    """θ_un: every parameter moved by N(0, scale²), as an unlearning run would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors checkpoint dir, read with safetensors itself."""
    from safetensors import safe_open

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(f, "pt") as fh:
            for k in fh.keys():
                out[k] = fh.get_tensor(k)
    return out


