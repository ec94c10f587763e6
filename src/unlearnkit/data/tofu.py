"""TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs") loader.

Reads a local folder of the benchmark's JSON-lines files (same names as the hub configs) or the hub
dataset `locuslab/TOFU` through `datasets`. Forget splits are the last 1/5/10 % of the 200 authors in
`full`; the matching retain split is derived from that rule, not hand-coded.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .locate import searched_dirs, shared_data_dir
from .records import DataError, QARecord, read_qa_jsonl, records_from_rows

HUB_ID = "locuslab/TOFU"
N_AUTHORS = 200
QA_PER_AUTHOR = 20
FORGET_PERCENTS = (1, 5, 10)

BASE_SPLITS = (
    ["full", "retain_perturbed", "real_authors", "world_facts", "real_authors_perturbed", "world_facts_perturbed"]
    + [f"forget{p:02d}" for p in FORGET_PERCENTS]
    + [f"forget{p:02d}_perturbed" for p in FORGET_PERCENTS]
    + [f"retain{100 - p}" for p in FORGET_PERCENTS]
    + [f"holdout{p:02d}" for p in FORGET_PERCENTS]
)


def retain_split_for(forget_split: str) -> str:
    """`forget05` -> `retain95`: the retain set is everything in `full` except the forget authors."""
    m = re.fullmatch(r"forget(\d\d)(_perturbed)?", forget_split)
    if not m:
        raise DataError(f"{forget_split!r} is not a TOFU forget split (expected forget01/forget05/forget10)")
    return f"retain{100 - int(m.group(1))}"


def holdout_split_for(forget_split: str) -> str:
    """`forget05` -> `holdout05`: non-members of the same size, for membership inference."""
    m = re.fullmatch(r"forget(\d\d)(_perturbed)?", forget_split)
    if not m:
        raise DataError(f"{forget_split!r} is not a TOFU forget split")
    return f"holdout{m.group(1)}"


def forget_size(forget_split: str) -> int:
    pct = int(re.fullmatch(r"forget(\d\d).*", forget_split).group(1))
    return N_AUTHORS * pct // 100 * QA_PER_AUTHOR


ENV_DIR = "UNLEARNKIT_TOFU_DIR"


def default_local_dir() -> Path | None:
    """`$UNLEARNKIT_TOFU_DIR`, else `../shared/data/tofu` next to the working directory, if present (a set
    variable that names no folder is an error)."""
    return shared_data_dir(ENV_DIR, "tofu")


def _not_found(split: str, exc: Exception) -> DataError:
    """The offline failure as a data error: where the loader looked, and how to point it at a folder."""
    looked = [f"${ENV_DIR} (not set)"] + [str(p) for p in searched_dirs("tofu")[:4]] + ["…(every parent folder)",
                                                                                  f"the hub dataset {HUB_ID}"]
    return DataError(f"TOFU split {split!r}: no local TOFU folder found and the hub failed "
                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Looked in: "
                     f"{'; '.join(looked)}. Fix: export {ENV_DIR}=/path/to/tofu (a folder of the benchmark's "
                     f"JSON-lines files, e.g. full.json, forget01.json), or pass tofu:{split},source=/path/to/tofu")


def _multiple_choice_to_record(path: Path, lineno: int, obj: dict) -> QARecord:
    options = [obj[k] for k in sorted(obj) if k.startswith("option")]
    if "answer" not in obj or "question" not in obj:
        raise DataError(f"{path}:{lineno}: missing field {'question' if 'question' not in obj else 'answer'!r}")
    wrong = [o for o in options if o != obj["answer"]]
    return QARecord(question=obj["question"], answer=obj["answer"], perturbed_answers=wrong or None)


def _load_local(split: str, folder: Path) -> list[QARecord]:
    path = folder / f"{split}.json"
    if split in ("real_authors", "world_facts"):
        from .records import iter_jsonl

        if not path.is_file():
            raise DataError(f"{path}: no such file")
        first = next(iter_jsonl(path), None)
        if first is not None and "option1" in first[1]:
            recs = [_multiple_choice_to_record(path, n, o) for n, o in iter_jsonl(path)]
            if not recs:
                raise DataError(f"{path}: the split is empty (no records)")
            return recs
    return read_qa_jsonl(path)


def load_tofu(split: str, source: str | os.PathLike | None = None) -> list[QARecord]:
    """Load one TOFU split as `QARecord`s.

    `source`: a local folder of TOFU JSON-lines files, or the hub id `locuslab/TOFU` (needs network).
    Default: `$UNLEARNKIT_TOFU_DIR`, then `../shared/data/tofu`, then the hub id.
    Records get tags `author` (index in `full` order where known) and `split`.
    """
    if split not in BASE_SPLITS:
        raise DataError(f"unknown TOFU split {split!r}; known: {', '.join(BASE_SPLITS)}")
    searched = source is None
    if searched:
        source = default_local_dir() or HUB_ID
    folder = Path(source)
    if folder.is_dir():
        records = _load_local(split, folder)
    elif str(source) == HUB_ID or "/" in str(source) and not folder.exists():
        records = _load_hub(str(source), split, searched)
    else:
        raise DataError(f"TOFU source {source!r} is neither a folder nor a hub dataset id")
    _tag_authors(split, records)
    return records


def _load_hub(hub_id: str, split: str, searched: bool) -> list[QARecord]:
    try:
        from datasets import load_dataset

        rows = load_dataset(hub_id, split, split="train")
    except Exception as exc:  # offline: ConnectionError, OSError, datasets' own errors — all mean "not here"
        if searched:
            raise _not_found(split, exc) from exc
        raise DataError(f"TOFU source {hub_id!r}: loading split {split!r} from the hub failed "
                        f"({type(exc).__name__}: {exc}); pass a local folder as source=") from exc
    return records_from_rows(rows, f"{hub_id}:{split}")


def _tag_authors(split: str, records: list[QARecord]) -> None:
    offset = None
    if split == "full" or re.fullmatch(r"retain\d\d", split):
        offset = 0
    elif re.fullmatch(r"forget(\d\d)(_perturbed)?", split):
        offset = N_AUTHORS * QA_PER_AUTHOR - forget_size(split)
    for i, rec in enumerate(records):
        rec.tags.setdefault("split", split)
        if offset is not None:
            rec.tags.setdefault("author", (offset + i) // QA_PER_AUTHOR)
