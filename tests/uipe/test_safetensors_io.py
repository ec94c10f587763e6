"""The incremental safetensors writer: files load with safe_open, order and completeness are enforced."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from unlearnkit.uipe import SafetensorsWriter, save_tensors


def test_roundtrip_mixed_dtypes_and_chunks(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "w.bf16": torch.randn(7, 5, generator=g).bfloat16(),
        "w.f16": torch.randn(3, generator=g).half(),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "w.f64": torch.randn(2, 2, generator=g, dtype=torch.float64),
    }
    entries = [(n, {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.int64: "I64",
                    torch.bool: "BOOL", torch.float64: "F64"}[t.dtype], tuple(t.shape)) for n, t in tensors.items()]
    path = tmp_path / "x.safetensors"
    with SafetensorsWriter(path, entries, metadata={"format": "pt"}) as w:
        for n, t in tensors.items():
            if n == "w.bf16":  # in row chunks
                for a in range(0, 7, 3):
                    w.write(n, t[a:a + 3])
            elif n != "empty":
                w.write(n, t)
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
    assert n % 8 == 0
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert list(f.offset_keys()) == list(tensors)
        for k, t in tensors.items():
            got = f.get_tensor(k)
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t)


def test_order_size_and_completeness_are_checked(tmp_path):
    path = tmp_path / "x.safetensors"
    entries = [("a", "F32", (2,)), ("b", "F32", (3,))]
    with pytest.raises(ValueError, match="expected 'a'"):
        with SafetensorsWriter(path, entries) as w:
            w.write("b", torch.zeros(3))
    with pytest.raises(ValueError, match="takes 8 bytes"):
        with SafetensorsWriter(path, entries) as w:
            w.write("a", torch.zeros(3))
    w = SafetensorsWriter(path, entries)
    w.write("a", torch.zeros(2))
    with pytest.raises(ValueError, match="'b' was not"):
        w.close()
    assert list(tmp_path.iterdir()) == []  # partial files are removed, nothing at the destination


def test_save_tensors(tmp_path):
    t = {"x": torch.randn(4, 4).bfloat16()}
    with safe_open(save_tensors(tmp_path / "y.safetensors", t), "pt") as f:
        assert torch.equal(f.get_tensor("x"), t["x"])


def test_reader_rows_match_safe_open(tmp_path):
    from safetensors.torch import save_file

    from unlearnkit.uipe.safetensors_io import SafetensorsReader

    g = torch.Generator().manual_seed(0)
    t = {"a": torch.randn(9, 4, generator=g).bfloat16(), "s": torch.tensor(2.0), "i": torch.arange(5)}
    save_file(t, str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    with SafetensorsReader(tmp_path / "x.safetensors") as r, safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert r.metadata == {"format": "pt"} and r.order == list(f.offset_keys())
        assert r.specs["a"] == ("BF16", (9, 4))
        for k in t:
            assert torch.equal(r.read(k), t[k]) and r.read(k).dtype == t[k].dtype
        assert torch.equal(r.read("a", 2, 7), f.get_slice("a")[2:7])
    (tmp_path / "bad.safetensors").write_bytes((tmp_path / "x.safetensors").read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        SafetensorsReader(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a safetensors file"):
        SafetensorsReader(tmp_path / "junk.safetensors")
