"""Every parameter in exactly one named group; bucketing; tied embeddings; unmatched → `other`."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.geffect import block_group_names, parameter_groups
from unlearnkit.models import tiny_llama


def test_covers_every_parameter_once(tiny_model):
    g = parameter_groups(tiny_model, blocks=2)
    names = [n for n, _ in tiny_model.named_parameters()]
    assert sorted(g.assignment) == sorted(names)
    assert g.names == ["embed", "blocks_00-00", "blocks_01-01", "norm", "lm_head"]
    assert sum(g.sizes(tiny_model).values()) == sum(p.numel() for p in tiny_model.parameters())
    assert g.assignment["model.norm.weight"] == "norm"
    assert g.assignment["lm_head.weight"] == "lm_head"
    assert g.assignment["model.embed_tokens.weight"] == "embed"
    assert "other" not in g.names


def test_buckets():
    assert block_group_names(6, 3) == ["shallow"] * 2 + ["middle"] * 2 + ["deep"] * 2
    assert block_group_names(30, 3).count("shallow") == 10
    assert block_group_names(4, 2) == ["blocks_00-01"] * 2 + ["blocks_02-03"] * 2
    assert block_group_names(3, "each") == ["block_00", "block_01", "block_02"]
    with pytest.raises(ValueError, match="buckets"):
        block_group_names(2, 3)
    with pytest.raises(ValueError, match="'each'"):
        block_group_names(2, "many")


def test_tied_embeddings_counted_once(tiny_tokenizer):
    model = tiny_llama(len(tiny_tokenizer), hidden=32, layers=3, heads=2, intermediate=64)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    g = parameter_groups(model)
    assert g.assignment["model.embed_tokens.weight"] == "embed+lm_head"
    assert "lm_head" not in g.names and "embed" not in g.names
    assert g.aliases["model.embed_tokens.weight"] == ["lm_head.weight"]
    assert sum(g.sizes(model).values()) == sum(p.numel() for p in model.parameters())


def test_unmatched_goes_to_other_and_frozen_listed(tiny_model):
    tiny_model.extra_scale = torch.nn.Parameter(torch.ones(3))
    tiny_model.model.embed_tokens.weight.requires_grad_(False)
    g = parameter_groups(tiny_model, blocks="each")
    assert g.assignment["extra_scale"] == "other" and g.names[-1] == "other"
    assert g.frozen == ["model.embed_tokens.weight"] and "embed" not in g.names
    assert len(parameter_groups(tiny_model, "each", trainable_only=False).assignment) == len(list(tiny_model.parameters()))


def test_lora_adapters_grouped_by_block(tiny_model):
    from unlearnkit.models import LoraSettings, apply_lora

    peft_model = apply_lora(tiny_model, LoraSettings(r=2, alpha=4))
    g = parameter_groups(peft_model, blocks=2)
    assert g.names == ["blocks_00-00", "blocks_01-01"]
    assert all("lora_" in n for n in g.assignment)
