"""The data an unlearning step sees: forget rows (paired with their IdK rows) and a retain stream.

* `ForgetDataset` is the Trainer's train dataset: item i is `{"forget": f[i]}` (+ `"idk": idk[i]`, the same
  question with a refusal answer), so `batch.idk[j]` answers the question of `batch.forget[j]` as the IdK
  objectives require. `UnlearnCollator` pads each part on its own.
* `RetainStream` draws retain batches independently of the forget loader: an endless seeded shuffle,
  sharded over processes so that a 2-process run sees, at each draw, the same rows as a 1-process run with
  twice the batch, and a resumed run continues where the killed one stopped.
* `idk_records` builds the IdK set: forget questions with (seeded) random answers from a refusal list.
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import torch

from ..data.collate import QADataset, pad_batch
from ..data.documents import is_document_set
from ..data.records import DataError, QARecord, text_lines
from ..data.tofu import default_local_dir

IDK_FILE = "idontknow.jsonl"


def resolve_idk_path(spec: str) -> Path:
    """`auto` → `idontknow.jsonl` in the TOFU folder (`$UNLEARNKIT_TOFU_DIR` or `../shared/data/tofu`); else a path."""
    if spec in ("", "auto"):
        folder = default_local_dir()
        if folder is None or not (folder / IDK_FILE).is_file():
            raise FileNotFoundError(
                f"idk=auto: no {IDK_FILE} found (looked in $UNLEARNKIT_TOFU_DIR and ../shared/data/tofu); pass "
                f"idk=<file> with one refusal answer per line")
        return folder / IDK_FILE
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"idk={spec!r}: no such file (expected one refusal answer per line)")
    return path


def load_idk_answers(path: str | Path) -> list[str]:
    """Refusal answers, one per line: plain text, a JSON string, or a JSON object with an `answer`/`text` field."""
    answers = []
    for lineno, line in text_lines(path):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = line
        if isinstance(obj, dict):
            obj = obj.get("answer", obj.get("text"))
        if not isinstance(obj, str) or not obj.strip():
            raise DataError(f"{path}:{lineno}: expected a refusal answer (text, a JSON string or {{\"answer\": ...}})")
        answers.append(obj.strip())
    if not answers:
        raise DataError(f"{path}: no refusal answers in the file")
    return answers


def idk_records(forget: Sequence[QARecord], answers: Sequence[str], seed: int) -> list[QARecord]:
    """Forget question i with a refusal answer drawn with `random.Random(seed)` (same seed → same answers)."""
    if is_document_set(forget):
        raise DataError("the IdK objectives pair each forget question with a refusal, and a document window has no "
                        "question; use a method without IdK (ga, grad_diff, npo, simnpo, rmu, ...) on documents")
    rng = random.Random(seed)
    return [QARecord(question=r.question, answer=rng.choice(list(answers)), tags={**r.tags, "idk": True})
            for r in forget]


class ForgetDataset(torch.utils.data.Dataset):
    """Item i: `{"forget": forget[i], "idk": idk[i]}` (idk only when given; same length and order)."""

    def __init__(self, forget: QADataset, idk: QADataset | None = None):
        if idk is not None and len(idk) != len(forget):
            raise ValueError(f"the IdK set has {len(idk)} rows but the forget set {len(forget)}; build it with idk_records")
        self.forget, self.idk = forget, idk

    def __len__(self):
        return len(self.forget)

    def __getitem__(self, i):
        item = {"forget": self.forget[i]}
        if self.idk is not None:
            item["idk"] = self.idk[i]
        return item


class UnlearnCollator:
    """Pads each part (`forget`, `idk`) of `ForgetDataset` items separately."""

    def __init__(self, pad_id: int, padding_side: str = "right"):
        self.pad_id, self.padding_side = pad_id, padding_side

    def __call__(self, features):
        return {part: pad_batch([f[part] for f in features], self.pad_id, self.padding_side) for part in features[0]}


class RetainStream:
    """Retain batches as a pure function of the draw number, independent of the forget loader.

    The stream is the concatenation of permutations perm_0, perm_1, … of the retain set (perm_e seeded with
    `seed + e`). Draw k of process r takes the positions [k·B·W + r·B, k·B·W + (r+1)·B) of that stream
    (B = batch size, W = number of processes): the union over processes of draw k is draw k of a single
    process with batch B·W, and a resumed run starts again at draw k = global_step · grad_accum.
    """

    def __init__(self, dataset: QADataset, batch_size: int, pad_id: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, padding_side: str = "right"):
        if len(dataset) == 0:
            raise ValueError("the retain set is empty")
        if batch_size <= 0:
            raise ValueError(f"retain_batch_size={batch_size}: must be > 0")
        self.dataset, self.batch_size, self.pad_id, self.seed = dataset, batch_size, pad_id, seed
        self.rank, self.world_size, self.padding_side = rank, world_size, padding_side

    @lru_cache(maxsize=4)
    def _perm(self, cycle: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed + cycle)
        return torch.randperm(len(self.dataset), generator=gen).tolist()

    def indices(self, draw: int) -> list[int]:
        n = len(self.dataset)
        start = draw * self.batch_size * self.world_size + self.rank * self.batch_size
        return [self._perm(p // n)[p % n] for p in range(start, start + self.batch_size)]

    def batch(self, draw: int) -> dict[str, torch.Tensor]:
        return pad_batch([self.dataset[i] for i in self.indices(draw)], self.pad_id, self.padding_side)
