"""Streaming UIPE over safetensors checkpoints (sharded `model-0000x-of-0000N.safetensors` + index, or a
single `model.safetensors`), in memory bounded by a chunk, not by a shard or a model.

For each shard of θ_un, in θ_un's own sharding and tensor order: each tensor is read in row chunks
of at most `chunk_elems` elements (`SafetensorsReader`: plain reads, no memory map; see
`safetensors_io.py` for why not `safe_open`), together with the same rows of θ_ini, combined by
`extrapolate_tensor` (fp32 arithmetic, original dtype out) and appended to the output shard by
`SafetensorsWriter`. So at most three chunks (θ_ini, θ_un, result) are alive at once, whatever the size of the largest tensor or shard. Tensors whose α is 0 (not
selected, or α = 0) and integer tensors are copied from θ_un byte for byte.

Atomicity: each shard is written to a hidden partial file and renamed; the whole output is built
in a hidden temp dir `.<out>.tmp-*` beside `out_dir` and renamed into place at the end; any
exception (including KeyboardInterrupt) removes the temp dir. A process killed with SIGKILL can
leave a `.<out>.tmp-*` dir behind, never a partial `out_dir`; such a dir is safe to delete.

Besides the weights, `out_dir` gets the index (unchanged: same names, same shards, same sizes), the
model's config / generation config / tokenizer files, and `uipe.json` recording α, the selection
and the source directories. Optimizer, scheduler, RNG and trainer state are not copied: they
belong to θ_un's training run, not to θ_uipe.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

from ..runs import atomic_dir, refuse_overwriting_inputs
from .plan import AlphaPlan
from .safetensors_io import TORCH_DTYPES, SafetensorsReader, SafetensorsWriter
from .tensors import check_matching, extrapolate_tensor

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PROVENANCE_NAME = "uipe.json"
CHUNK_ELEMS = 1 << 23  # 8M elements: 16 MB per bf16 chunk, 32 MB per fp32 chunk
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
# files beside the weights that describe the model rather than the training run
_SIDE_SUFFIXES = {".json", ".txt", ".model", ".jinja", ".tiktoken", ".py", ".md"}
_SIDE_SKIP = {"trainer_state.json", PROVENANCE_NAME}


class Checkpoint:
    """The safetensors files of one checkpoint dir: tensor name → (file, dtype, shape)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: checkpoint directory does not exist")
        index = self.path / INDEX_NAME
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = sorted(set(weight_map.values()))
        elif (self.path / SINGLE_NAME).is_file():
            weight_map, self.files = None, [SINGLE_NAME]
        else:
            raise FileNotFoundError(
                f"{self.path}: no {INDEX_NAME} or {SINGLE_NAME}; expected a safetensors checkpoint (save it with "
                f"`save_pretrained(dir)`; pickled .bin checkpoints are not read)")
        self.specs: dict[str, tuple[str, tuple[int, ...]]] = {}
        self.file_of: dict[str, str] = {}
        self.order: dict[str, list[str]] = {}  # file → tensor names in file order
        for fname in self.files:
            fpath = self.path / fname
            if not fpath.is_file():
                raise FileNotFoundError(f"{fpath}: listed in {index} but missing")
            with SafetensorsReader(fpath) as r:
                self.order[fname] = r.order
                for name in r.order:
                    if name in self.file_of:
                        raise ValueError(f"{self.path}: tensor {name!r} is in both {self.file_of[name]} and {fname}")
                    self.specs[name] = r.specs[name]
                    self.file_of[name] = fname
        if weight_map is not None:
            for name, fname in weight_map.items():
                if self.file_of.get(name) != fname:
                    raise ValueError(f"{index}: tensor {name!r} is mapped to {fname} but that file does not hold it")
            extra = [n for n in self.file_of if n not in weight_map]
            if extra:
                raise ValueError(f"{index}: shard files hold tensors the index does not list, e.g. {extra[0]!r}")


def _row_chunks(shape: tuple[int, ...], chunk_elems: int):
    """Row ranges (dim 0) of at most `chunk_elems` elements (at least one row); None for 0-d tensors."""
    if len(shape) == 0 or math.prod(shape) == 0:
        yield None
        return
    row = math.prod(shape[1:])
    step = max(1, chunk_elems // max(row, 1))
    for start in range(0, shape[0], step):
        yield start, min(start + step, shape[0])


def _read(r: SafetensorsReader, name: str, rows):
    return r.read(name) if rows is None else r.read(name, *rows)


def copy_side_files(src: Path, dst: Path, skip: set[str] = frozenset()) -> list[str]:
    """Copy config, tokenizer and index files (not weights, not training state) from `src` to `dst`."""
    copied = []
    for p in sorted(src.iterdir()):
        if p.is_file() and p.suffix in _SIDE_SUFFIXES and p.name not in _SIDE_SKIP and p.name not in skip:
            shutil.copy2(p, dst / p.name)
            copied.append(p.name)
    return copied


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path, overwrite: bool = False, protect: tuple[Path, ...] = ()):
    """`runs.atomic_dir` for θ_uipe: refuses an input as output and an existing dir unless `overwrite`, and
    fsyncs the side files (the shard writer fsyncs the shards) before the rename."""
    from ..models.portable import make_portable

    out = Path(out_dir).absolute()
    refuse_overwriting_inputs(out, protect)  # is / contains / inside an input, or replaces the run it belongs to
    if out.exists() and not overwrite:
        raise FileExistsError(f"out_dir={str(out_dir)!r} already exists; remove it or pass overwrite=True")
    with atomic_dir(out) as tmp:
        yield tmp
        make_portable(tmp)  # side files copied from a Trainer checkpoint carry 5.x-only tokenizer names
        for f in tmp.iterdir():  # the directory entry is fsynced by the renames; make file data durable
            if f.is_file() and f.suffix != ".safetensors":
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())


def write_provenance(dst: Path, backend: str, plan: AlphaPlan, base, unlearned, extra: dict | None = None) -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("unlearnkit")
    except PackageNotFoundError:
        ver = None
    record = {"method": "uipe", "formula": "theta_un + alpha * (theta_un - theta_ini)", "backend": backend,
              **plan.describe(), "base": str(base) if base is not None else None, "unlearned": str(unlearned),
              "unlearnkit_version": ver, **(extra or {})}
    (dst / PROVENANCE_NAME).write_text(json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def _torch_threads(n: int | None):
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def extrapolate_stream(base_dir: str | Path, unlearned_dir: str | Path, out_dir: str | Path, plan: AlphaPlan,
                       overwrite: bool = False, chunk_elems: int = CHUNK_ELEMS, fsync: bool = True,
                       threads: int | None = 1) -> Path:
    """Write θ_uipe for two safetensors checkpoint dirs to `out_dir` (atomic); returns `out_dir`.

    `threads`: torch intra-op threads while streaming (restored afterwards; None leaves torch's
    setting). One is the default because the fused kernel is memory-bound: one core does ≈1.5 G
    bf16 elements/s, faster than the disk, while extra threads only add synchronisation, which on a
    loaded machine costs ≈20 ms per kernel call (measured: 8M-element lerp, 2 threads on 2 busy
    cores 22 ms vs 5 ms on one thread; 64k elements 19 ms vs 0.02 ms).

    Raises `CheckpointMismatchError` (naming the tensor) before writing anything if names, shapes or
    dtypes differ, and `ValueError` if a selection / group pattern decides no tensor.
    """
    if chunk_elems < 1:
        raise ValueError(f"chunk_elems={chunk_elems}: must be >= 1")
    base, un = Checkpoint(base_dir), Checkpoint(unlearned_dir)
    check_matching(base.specs, un.specs, f"base ({base.path})", f"unlearned ({un.path})")
    alphas = plan.assign(un.specs)
    with atomic_output_dir(out_dir, overwrite, protect=(base.path, un.path)) as tmp, contextlib.ExitStack() as stack, \
            _torch_threads(threads):
        base_files = {}
        for fname in un.files:
            with SafetensorsReader(un.path / fname) as fu:
                entries = [(n, *un.specs[n]) for n in un.order[fname]]
                with SafetensorsWriter(tmp / fname, entries, metadata=fu.metadata, fsync=fsync) as writer:
                    for name in un.order[fname]:
                        dtype, shape = un.specs[name]
                        if dtype not in TORCH_DTYPES:
                            raise ValueError(f"tensor {name!r}: dtype {dtype} is not supported by this torch build")
                        alpha = alphas[name] if dtype in _FLOAT_DTYPES else 0.0
                        fb = None
                        if alpha != 0:
                            bname = base.file_of[name]
                            if bname not in base_files:
                                base_files[bname] = stack.enter_context(SafetensorsReader(base.path / bname))
                            fb = base_files[bname]
                        for rows in _row_chunks(shape, chunk_elems):
                            u = _read(fu, name, rows)
                            out = u if fb is None else extrapolate_tensor(_read(fb, name, rows), u, alpha)
                            writer.write(name, out)
                            del u, out
        copy_side_files(un.path, tmp)
        write_provenance(tmp, "stream", plan, base.path, un.path)
    return Path(out_dir)
