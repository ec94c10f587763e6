"""Streaming back end: equality with the in-memory back end, α = 0 exactness, checks, atomicity."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from unlearnkit.models.portable import portable_model_config
from unlearnkit.uipe import (CheckpointMismatchError, extrapolate, extrapolate_checkpoint, extrapolate_state_dict,
                             extrapolate_stream)
from unlearnkit.uipe import stream as stream_mod
from unlearnkit.uipe.plan import AlphaPlan

from uipe_fixtures import load_dir


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def _same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(_bits(a[k]), _bits(b[k])) for k in a)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("chunk_elems", [stream_mod.CHUNK_ELEMS, 1000])
def test_stream_equals_in_memory(checkpoints, tmp_path, dtype, chunk_elems):
    base_dir, un_dir = checkpoints[dtype]
    out = extrapolate_stream(base_dir, un_dir, tmp_path / "uipe", AlphaPlan.build(0.7), chunk_elems=chunk_elems)
    got = load_dir(out)
    want = extrapolate_state_dict(load_dir(base_dir), load_dir(un_dir), 0.7)
    assert _same_bits(got, want)
    assert got["lm_head.weight"].dtype == (torch.float32 if dtype == "fp32" else torch.bfloat16)
    # same sharding, index and config copied, provenance written
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(p.name for p in un_dir.glob("*.safetensors"))
    assert json.loads((out / "model.safetensors.index.json").read_text()) == \
        json.loads((un_dir / "model.safetensors.index.json").read_text())
    want_cfg = json.loads((un_dir / "config.json").read_text())
    portable_model_config(want_cfg)   # copied, plus the keys transformers 4.x reads (models/portable.py)
    assert json.loads((out / "config.json").read_text()) == want_cfg
    assert json.loads((out / "uipe.json").read_text())["alpha"] == 0.7


def test_stream_output_loads_as_model(checkpoints, tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir, un_dir = checkpoints["fp32"]
    out = extrapolate(str(base_dir), str(un_dir), 0.5, out_dir=tmp_path / "uipe")
    model = AutoModelForCausalLM.from_pretrained(out)
    un = AutoModelForCausalLM.from_pretrained(un_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    want = extrapolate(base, un, 0.5)
    assert all(torch.equal(v, want.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_alpha_zero_is_bit_exact(checkpoints, tmp_path, dtype):
    base_dir, un_dir = checkpoints[dtype]
    out = extrapolate_checkpoint(base_dir, un_dir, tmp_path / "uipe", 0.0)
    assert _same_bits(load_dir(out), load_dir(un_dir))
    assert _same_bits(extrapolate_state_dict(load_dir(base_dir), load_dir(un_dir), 0.0), load_dir(un_dir))


def test_selection_and_groups_stream_equals_in_memory(checkpoints, tmp_path):
    base_dir, un_dir = checkpoints["bf16"]
    kw = dict(select=[r"\.mlp\.", r"\.layers\.1\."], group_alphas=[(r"down_proj", 2.0), (r"self_attn", -0.5)])
    out = extrapolate_checkpoint(base_dir, un_dir, tmp_path / "uipe", 0.3, **kw)
    base, un, got = load_dir(base_dir), load_dir(un_dir), load_dir(out)
    assert _same_bits(got, extrapolate_state_dict(base, un, 0.3, **kw))
    assert torch.equal(got["model.embed_tokens.weight"], un["model.embed_tokens.weight"])  # not selected
    assert not torch.equal(got["model.layers.0.mlp.up_proj.weight"], un["model.layers.0.mlp.up_proj.weight"])


def _save_single(d, tensors):
    d.mkdir()
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    return d


@pytest.mark.parametrize("change, needle", [
    ("shape", "'b' : shape"), ("missing", "'b' is in base"), ("dtype", "'b': dtype"), ("extra", "'c' is in unlearned")])
def test_mismatch_names_the_tensor(tmp_path, change, needle):
    base = {"a": torch.ones(2, 3), "b": torch.zeros(4)}
    un = {"a": torch.ones(2, 3), "b": torch.zeros(4)}
    if change == "shape":
        un["b"] = torch.zeros(5)
    elif change == "missing":
        del un["b"]
    elif change == "dtype":
        un["b"] = torch.zeros(4, dtype=torch.bfloat16)
    else:
        un["c"] = torch.zeros(1)
    b, u = _save_single(tmp_path / "b", base), _save_single(tmp_path / "u", un)
    with pytest.raises(CheckpointMismatchError) as err:
        extrapolate_checkpoint(b, u, tmp_path / "out", 0.5)
    assert needle.replace(" :", ":") in str(err.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointMismatchError, match="'b'|'c'"):
        extrapolate_state_dict(base, un, 0.5)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(checkpoints, tmp_path, monkeypatch, exc):
    base_dir, un_dir = checkpoints["fp32"]
    real_write, calls = stream_mod.SafetensorsWriter.write, []

    def flaky(self, name, chunk):
        calls.append(name)
        if len(calls) == 12:  # a few shards in
            raise exc("simulated crash")
        return real_write(self, name, chunk)

    monkeypatch.setattr(stream_mod.SafetensorsWriter, "write", flaky)
    out = tmp_path / "out" / "uipe"
    with pytest.raises(exc):
        extrapolate_stream(base_dir, un_dir, out, AlphaPlan.build(0.5), chunk_elems=1000)
    assert len(calls) == 12
    assert not out.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no temp dir, no partial shard


def test_existing_output_and_overwrite(checkpoints, tmp_path):
    base_dir, un_dir = checkpoints["fp32"]
    out = tmp_path / "uipe"
    extrapolate_checkpoint(base_dir, un_dir, out, 0.0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        extrapolate_checkpoint(base_dir, un_dir, out, 0.5)
    extrapolate_checkpoint(base_dir, un_dir, out, 0.5, overwrite=True)
    assert json.loads((out / "uipe.json").read_text())["alpha"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["uipe"]
    with pytest.raises(ValueError, match="one of the inputs"):
        extrapolate_checkpoint(base_dir, un_dir, un_dir, 0.5, overwrite=True)
