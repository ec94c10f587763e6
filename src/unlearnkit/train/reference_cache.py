"""Reference log-probs of the fixed forget (and IdK) data, computed once with θ_ini and kept in the run dir.

NPO, TNPO, WTNPO and IdK-DPO compare π_θ with π_ref = π_θ_ini on the forget answers. Those answers never
change during unlearning, so the reference's per-token log-probs are computed once before training,
written to `<run>/reference/logprobs.safetensors` and served by `CachedReference`: no reference forward
pass per step.

File layout (safetensors): for each split (`forget`, `idk`) a flat float32 vector `<split>.values` of every
row's answer-token log-probs, row after row, and `<split>.offsets` (int64, N+1) so row i is
`values[offsets[i]:offsets[i+1]]`. The metadata holds a `fingerprint` of the reference weights, the
tokenised rows (so tokenizer, template, masking and max_length) and the precision: a rerun or a resume
with the same fingerprint reuses the file, anything else recomputes it.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.collate import QADataset, pad_batch
from ..objectives import precompute_token_logprobs
from ..precision import autocast

log = logging.getLogger(__name__)

CACHE_FILE = Path("reference") / "logprobs.safetensors"
FORMAT = "unlearnkit.reference-logprobs/1"
SPLITS = ("forget", "idk")


class TokenLogprobTable(Sequence):
    """Row i → 1-D tensor of the reference's answer-token log-probs (what `CachedReference` looks up)."""

    def __init__(self, values: torch.Tensor, offsets: torch.Tensor):
        if offsets.ndim != 1 or offsets.numel() < 1 or int(offsets[-1]) != values.numel():
            raise ValueError("TokenLogprobTable: offsets must be 1-D, start at 0 and end at values.numel()")
        self.values, self.offsets = values, offsets
        self._bounds = offsets.tolist()

    @classmethod
    def from_rows(cls, rows: Sequence[torch.Tensor]) -> "TokenLogprobTable":
        lengths = torch.tensor([0] + [r.numel() for r in rows], dtype=torch.int64)
        values = torch.cat([r.float().reshape(-1) for r in rows]) if rows else torch.zeros(0)
        return cls(values.contiguous(), lengths.cumsum(0))

    def __len__(self) -> int:
        return len(self._bounds) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.values[self._bounds[i]:self._bounds[i + 1]]

    def to(self, device) -> "TokenLogprobTable":
        """The same table with its values on `device` (so lookups during training need no host copy)."""
        return TokenLogprobTable(self.values.to(device), self.offsets)

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size() + self.offsets.numel() * self.offsets.element_size()


# -- fingerprint ---------------------------------------------------------------------------------------
def model_fingerprint(model: torch.nn.Module) -> str:
    """Digest of every tensor's name, shape, dtype, sum, absolute sum and 16 strided values (on-device, fast)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            flat = t.detach().reshape(-1)
            stats = torch.stack([flat.double().sum(), flat.double().abs().sum()]) if flat.numel() else torch.zeros(2)
            step = max(1, flat.numel() // 16)
            sample = flat[::step][:16].double()
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
            h.update(stats.cpu().numpy().tobytes())
            h.update(sample.cpu().numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(dataset: QADataset) -> str:
    """Digest of the tokenised rows (ids and labels): changes with the data, tokenizer, template or max_length."""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        item = dataset[i]
        h.update(torch.tensor(item["input_ids"], dtype=torch.int64).numpy().tobytes())
        h.update(b"|")
        h.update(torch.tensor(item["labels"], dtype=torch.int64).numpy().tobytes())
        h.update(b";")
    return h.hexdigest()


def cache_fingerprint(model_digest: str, datasets: dict[str, QADataset], precision: str) -> str:
    parts = [FORMAT, model_digest, precision] + [f"{k}:{data_fingerprint(v)}" for k, v in sorted(datasets.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


# -- file I/O ------------------------------------------------------------------------------------------
def save_tables(path: Path, tables: dict[str, TokenLogprobTable], fingerprint: str) -> None:
    """Write atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for split, table in tables.items():
        tensors[f"{split}.values"] = table.values.contiguous()
        tensors[f"{split}.offsets"] = table.offsets.contiguous()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "fingerprint": fingerprint,
                                           "splits": ",".join(sorted(tables))})
    os.replace(tmp, path)


def load_tables(path: Path) -> tuple[dict[str, TokenLogprobTable], dict[str, str]]:
    """(tables, metadata) of a cache file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        splits = [s for s in meta.get("splits", "").split(",") if s]
        tables = {s: TokenLogprobTable(fh.get_tensor(f"{s}.values"), fh.get_tensor(f"{s}.offsets")) for s in splits}
    return tables, meta


# -- build or reuse ------------------------------------------------------------------------------------
def compute_table(provider, dataset: QADataset, split: str, pad_id: int, batch_size: int, device,
                  precision: str = "fp32") -> TokenLogprobTable:
    """One reference forward per batch of `dataset`; rows in dataset order."""
    def batches():
        for start in range(0, len(dataset), batch_size):
            batch = pad_batch([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], pad_id)
            yield {k: v.to(device) for k, v in batch.items()}

    with autocast(precision, torch.device(device).type):
        rows = precompute_token_logprobs(provider, batches(), split)
    return TokenLogprobTable.from_rows([rows[i] for i in range(len(dataset))])


def reference_cache(run_path: Path, provider, model_digest: str, datasets: dict[str, QADataset], *, pad_id: int,
                    batch_size: int, device, precision: str = "fp32") -> tuple[dict[str, TokenLogprobTable], str]:
    """Tables for `datasets` (split → dataset): reused from `<run>/reference/` when the fingerprint matches,
    otherwise computed with `provider` (a model-backed reference on θ_ini) and written. Returns (tables, status)
    with status 'reused' or 'computed'."""
    unknown = set(datasets) - set(SPLITS)
    if unknown:
        raise ValueError(f"reference cache splits {sorted(unknown)}: expected a subset of {SPLITS}")
    path = Path(run_path) / CACHE_FILE
    fingerprint = cache_fingerprint(model_digest, datasets, precision)
    if path.is_file():
        try:
            tables, meta = load_tables(path)
        except Exception as exc:  # a corrupt file is recomputed, never trusted
            log.warning("reference cache %s unreadable (%s); recomputing", path, exc)
        else:
            if meta.get("fingerprint") == fingerprint and set(tables) == set(datasets):
                log.info("reference cache reused: %s", path)
                return tables, "reused"
            log.info("reference cache %s is stale (model, data, tokenisation or precision changed); recomputing", path)
    tables = {split: compute_table(provider, ds, split, pad_id, batch_size, device, precision)
              for split, ds in datasets.items()}
    save_tables(path, tables, fingerprint)
    log.info("reference cache written: %s (%d bytes)", path, path.stat().st_size)
    return tables, "computed"
