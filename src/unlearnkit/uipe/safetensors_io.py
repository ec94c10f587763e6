"""Write a .safetensors file incrementally, tensor by tensor (or chunk by chunk), in bounded memory.

`safetensors.torch.save_file` needs every tensor of a file in memory at once. The format is simple
enough to write as a stream (https://github.com/huggingface/safetensors#format):

    8 bytes   N, little-endian unsigned 64-bit: length of the JSON header
    N bytes   JSON {"__metadata__": {str: str}, name: {"dtype": "BF16", "shape": [..],
                    "data_offsets": [begin, end]}, ...}, padded with spaces to a multiple of 8
    rest      the raw little-endian bytes of each tensor, back to back, at its offsets (relative to the
              end of the header), with no gaps

Since all dtypes and shapes are known before any data is written, the header goes first and the
tensors follow in the declared order. The file is written as a hidden `.<name>.partial-<pid>`
beside its destination and renamed into place by `close()`; `abort()` (or an exception inside a
`with` block) deletes it, so a destination path only ever holds a complete file.
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
