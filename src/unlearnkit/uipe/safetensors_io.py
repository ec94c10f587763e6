"""Read and write .safetensors files a chunk at a time, in memory bounded by the chunk.

Format (https://github.com/huggingface/safetensors#format):

    8 bytes   N, little-endian unsigned 64-bit: length of the JSON header
    N bytes   JSON {"__metadata__": {str: str}, name: {"dtype": "BF16", "shape": [..],
                    "data_offsets": [begin, end]}, ...}, padded with spaces to a multiple of 8
    rest      the raw little-endian bytes of each tensor, row-major, back to back at its offsets
              (relative to the end of the header), with no gaps

Writing: `safetensors.torch.save_file` needs every tensor of a file in memory at once. Here all
dtypes and shapes are known first, so the header goes first and the data follows in the declared
order, chunk by chunk (`SafetensorsWriter`). The file is written as a hidden
`.<name>.partial-<pid>` beside its destination and renamed into place by `close()`; `abort()` (or
an exception inside a `with` block) deletes it, so a destination only ever holds a complete file.

Reading: `SafetensorsReader` reads row ranges with plain `readinto` into a fresh tensor. Not
`safe_open`: it memory-maps the file, and the pages it touches stay in the process's resident set
while the file is open; streaming a 2.55 GB bf16 checkpoint through `safe_open(...).get_slice`
peaked at 3.2 GB RSS (benchmarks/uipe_stream.py, first run), against ~0.3 GB with `readinto`.
Files written here are checked with `safe_open` in the tests.
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

# safetensors dtype name ↔ torch dtype (only those this torch build has).
_DTYPE_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
    "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
    "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
TORCH_DTYPES: dict[str, torch.dtype] = {k: getattr(torch, v) for k, v in _DTYPE_NAMES.items() if hasattr(torch, v)}
SAFETENSORS_DTYPES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}


def dtype_size(dtype: str) -> int:
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"safetensors dtype {dtype!r} is not supported here (known: {sorted(TORCH_DTYPES)})")
    return torch.empty((), dtype=TORCH_DTYPES[dtype]).element_size()


def tensor_bytes(t: torch.Tensor):
    """A zero-copy byte view (numpy uint8) of a tensor's data; works for bf16, which numpy lacks."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


class SafetensorsWriter:
    """Stream tensors into one safetensors file.

    >>> with SafetensorsWriter(path, [("w", "BF16", (4, 8))], metadata={"format": "pt"}) as w:
    ...     w.write("w", first_rows)      # chunks of one tensor are appended in order
    ...     w.write("w", other_rows)

    `entries` fixes the order of the tensors in the file; `write` must follow it.
    """

    def __init__(self, path: str | Path, entries: Sequence[tuple[str, str, Sequence[int]]],
                 metadata: Mapping[str, str] | None = None, fsync: bool = True):
        if sys.byteorder != "little":
            raise RuntimeError("safetensors stores little-endian data; writing from a big-endian host is not supported")
        self.path = Path(path)
        self.fsync = fsync
        header: dict = {}
        if metadata:
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
                raise TypeError(f"safetensors metadata must map str to str, got {dict(metadata)!r}")
            header["__metadata__"] = dict(metadata)
        self._sizes: list[tuple[str, int]] = []
        offset = 0
        for name, dtype, shape in entries:
            if name in header or name == "__metadata__":
                raise ValueError(f"tensor name {name!r} appears twice (or is reserved) in one safetensors file")
            size = math.prod(shape) * dtype_size(dtype)
            header[name] = {"dtype": dtype, "shape": [int(s) for s in shape], "data_offsets": [offset, offset + size]}
            self._sizes.append((name, size))
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self._index = 0
        self._written = 0  # bytes written of the current tensor
        self.partial = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self._fh = open(self.partial, "wb")
        try:
            self._fh.write(len(raw).to_bytes(8, "little"))
            self._fh.write(raw)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append `chunk`'s bytes to tensor `name`: the current tensor, or the next one once it is complete."""
        if self._fh is None:
            raise RuntimeError(f"{self.path}: writer is closed")
        while self._index < len(self._sizes) and self._written == self._sizes[self._index][1] \
                and self._sizes[self._index][0] != name:
            self._index += 1
            self._written = 0
        if self._index >= len(self._sizes) or self._sizes[self._index][0] != name:
            expected = self._sizes[self._index][0] if self._index < len(self._sizes) else "(none: file complete)"
            raise ValueError(f"{self.path}: got data for tensor {name!r}, expected {expected!r} (tensors must be "
                             f"written in the order given to the writer, each completely)")
        data = tensor_bytes(chunk)
        size = self._sizes[self._index][1]
        if self._written + data.nbytes > size:
            raise ValueError(f"{self.path}: tensor {name!r} takes {size} bytes; got {self._written + data.nbytes}")
        self._fh.write(memoryview(data))
        self._written += data.nbytes

    def close(self) -> Path:
        """Check every tensor is complete, flush (fsync) and rename into place."""
        if self._fh is None:
            raise RuntimeError(f"{self.path}: writer already closed")
        done = self._index + (1 if self._index < len(self._sizes) and self._written == self._sizes[self._index][1]
                              else 0)
        # zero-size tensors after the last write are complete without data
        while done < len(self._sizes) and self._sizes[done][1] == 0:
            done += 1
        if done != len(self._sizes):
            missing = self._sizes[done][0]
            self.abort()
            raise ValueError(f"{self.path}: tensor {missing!r} was not (completely) written; file discarded")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._fh is not None:
            self.close()


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                 fsync: bool = True) -> Path:
    """Write a dict of tensors (small ones: the whole dict is already in memory) atomically."""
    entries = [(n, SAFETENSORS_DTYPES[t.dtype], tuple(t.shape)) for n, t in tensors.items()]
    with SafetensorsWriter(path, entries, metadata, fsync=fsync) as w:
        for n, t in tensors.items():
            w.write(n, t)
    return Path(path)


class SafetensorsReader:
    """Header of a safetensors file plus row-range reads that never map the file.

    >>> with SafetensorsReader(path) as r:
    ...     r.specs["w"]            # ('BF16', (4096, 4096))
    ...     r.read("w", 0, 128)     # rows 0..127 as a bf16 tensor
    """

    MAX_HEADER = 100 * 2**20

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = open(self.path, "rb", buffering=0)
        try:
            size = os.fstat(self._fh.fileno()).st_size
            n = int.from_bytes(self._read_exact(0, 8), "little") if size >= 8 else -1
            if not 0 < n <= min(self.MAX_HEADER, size - 8):
                raise ValueError(f"{self.path}: not a safetensors file (header length {n}, file size {size})")
            header = json.loads(self._read_exact(8, n))
            self.data_start = 8 + n
            self.metadata: dict[str, str] | None = header.pop("__metadata__", None)
            self.specs: dict[str, tuple[str, tuple[int, ...]]] = {}
            self._offsets: dict[str, tuple[int, int]] = {}
            for name, info in header.items():
                dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
                if end - begin != math.prod(shape) * dtype_size(dtype) or end > size - self.data_start:
                    raise ValueError(f"{self.path}: tensor {name!r} has inconsistent offsets {begin}..{end} for "
                                     f"{dtype} {list(shape)} (file truncated or corrupt)")
                self.specs[name] = (dtype, shape)
                self._offsets[name] = (begin, end)
            self.order = sorted(self.specs, key=lambda k: self._offsets[k])
        except BaseException:
            self._fh.close()
            raise

    def _read_exact(self, pos: int, n: int, into=None):
        out = bytearray(n) if into is None else into
        view, got = memoryview(out).cast("B"), 0
        while got < n:
            k = os.preadv(self._fh.fileno(), [view[got:]], pos + got)
            if k == 0:
                raise ValueError(f"{self.path}: unexpected end of file")
            got += k
        return out

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Rows `start:stop` (dim 0) of tensor `name`, or the whole tensor."""
        dtype, shape = self.specs[name]
        begin, end = self._offsets[name]
        if start is not None and shape:
            row = (end - begin) // shape[0] if shape[0] else 0
            stop = shape[0] if stop is None else stop
            begin, end, shape = begin + start * row, begin + stop * row, (stop - start, *shape[1:])
        buf = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            self._read_exact(self.data_start + begin, end - begin, into=buf.numpy())
        return buf.view(TORCH_DTYPES[dtype]).reshape(shape)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
