"""MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models") loader.

The benchmark's two corpora are hub datasets with one config per use: `muse-bench/MUSE-News` (BBC articles)
and `muse-bench/MUSE-Books` (Harry Potter). Configs and their rows:
  raw, scal, sust, train   {"text"}                 documents (unlearning / fine-tuning corpora)
  privleak                 {"text"}                 forget / retain / holdout texts for membership inference
  knowmem                  {"question", "answer"}   forget_qa, retain_qa and the 10-pair *_icl few-shot sets
  verbmem                  {"prompt", "gt"}         article openings and their true continuations

A local folder in the same layout is read instead of the hub: `<folder>/<corpus>/<config>/<split>.jsonl`
(`news/knowmem/retain_qa.jsonl` is `load_dataset("muse-bench/MUSE-News", "knowmem", split="retain_qa")`).
The folder is `source=` if given, else `$UNLEARNKIT_MUSE_DIR`, else `../shared/data/muse` next to the
working directory (as for TOFU); a split missing there is asked of the hub, and when neither has it the
`DataError` names both.

Scalability and sustainability (MUSE's criteria 5 and 6) unlearn the hub's `scal/forget_1..4` (nested: each
contains the one before) and `sust/forget_1..4` (pair-wise disjoint). The offline copy has only `raw/forget`,
so a spec can cut any document split into N equal, contiguous document sets with `part=`:
`muse:news/raw/forget,part=2/4` is the second of 4 disjoint quarters (the `sust` stand-in) and `part=1-3/4`
parts 1 to 3 together (the first three quarters: nested as k grows, the `scal` stand-in). Part k of N holds
documents [⌊(k−1)·n/N⌋, ⌊k·n/N⌋) of the n rows kept (after `limit=`), so the N parts cover every document
once. The parts are equal by document count, not by tokens, and smaller than the hub's sets (whose
`scal/forget_1` is raw/forget itself, per the offline copy's SOURCE.md): the protocol's shape at a smaller scale.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .documents import documents_from_rows, is_document_set, parse_limit
from .locate import shared_data_dir
from .records import DataError, QARecord, iter_jsonl, records_from_rows

HUB_IDS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
CONFIGS = ("raw", "verbmem", "knowmem", "privleak", "scal", "sust", "train")
ENV_VAR = "UNLEARNKIT_MUSE_DIR"


def default_local_dir() -> Path | None:
    """`$UNLEARNKIT_MUSE_DIR`, else `../shared/data/muse` next to the working directory, if present."""
    return shared_data_dir(ENV_VAR, "muse")


def _check(corpus: str, config: str) -> None:
    if corpus not in HUB_IDS:
        raise DataError(f"unknown MUSE corpus {corpus!r}; known: {', '.join(HUB_IDS)}")
    if config not in CONFIGS:
        raise DataError(f"unknown MUSE config {config!r}; known: {', '.join(CONFIGS)}")


def _hub_rows(hub_id: str, config: str, split: str) -> list[dict]:
    from datasets import load_dataset  # network path (or the datasets cache); not exercised offline

    return [dict(r) for r in load_dataset(hub_id, config, split=split)]


def load_muse_rows(corpus: str, config: str, split: str, source: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The raw rows of one MUSE split, from a local folder (see the module docstring) or the hub.

    `source`: a folder holding `<corpus>/<config>/<split>.jsonl` (or the corpus folder itself), or a
    `muse-bench/...` hub id (then no local folder is read).
    """
    _check(corpus, config)
    hub_id = HUB_IDS[corpus]
    if source is not None and str(source).startswith("muse-bench/"):
        hub_id, folder = str(source), None
    elif source is not None:  # source= wins over the environment (which is then not even read)
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"MUSE source={str(source)!r}: no such folder (expected a folder holding "
                            f"{corpus}/{config}/{split}.jsonl, or a hub id such as {HUB_IDS[corpus]!r})")
    else:
        folder = default_local_dir()
    local = None
    if folder is not None:
        cands = [folder / corpus / config / f"{split}.jsonl", folder / config / f"{split}.jsonl"]
        local = next((c for c in cands if c.is_file()), cands[0])
        if local.is_file():
            rows = [obj for _, obj in iter_jsonl(local)]
            if not rows:
                raise DataError(f"{local}: the split is empty (no rows)")
            return rows
    try:
        return _hub_rows(hub_id, config, split)
    except Exception as exc:  # offline, unknown split, no `datasets`: say where we looked
        where = f"{local}: no such file" if local is not None else (
            f"no local folder (set ${ENV_VAR} or put the data in ../shared/data/muse/{corpus}/)")
        raise DataError(f"MUSE {corpus}/{config}/{split}: not found locally ({where}) nor on the hub "
                        f"({hub_id!r}, config {config!r}, split {split!r}: {type(exc).__name__}: {exc}). "
                        f"Pass source=<folder with {corpus}/{config}/{split}.jsonl> or go online.") from None


def load_muse(corpus: str, config: str, split: str, source: str | os.PathLike | None = None,
              limit: int | None = None) -> list[QARecord]:
    """One MUSE split as records: `{"text"}` rows become documents (cut into windows when tokenised),
    `knowmem` rows question/answer records, `verbmem` rows records with the prompt as the question and the true
    continuation `gt` as the answer. `limit` keeps the first N rows (shortened corpora for CPU runs)."""
    rows = load_muse_rows(corpus, config, split, source)
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit={limit}: must be ≥ 1")
        rows = rows[:limit]
    name = f"muse:{corpus}/{config}/{split}"
    if config == "verbmem":
        rows = [{"question": r.get("prompt"), "answer": r.get("gt")} if isinstance(r, dict) else r for r in rows]
        return records_from_rows(rows, name)
    if config == "knowmem":
        return records_from_rows(rows, name)
    return documents_from_rows(rows, name)


def parse_muse_spec(text: str) -> tuple[str, list[tuple[str, str]]]:
    """`news/raw/forget` → ("news", [("raw", "forget")]); `news/raw/forget+privleak/retain` → two parts."""
    corpus, _, rest = text.strip("/").partition("/")
    parts = [tuple(p.split("/")) for p in rest.split("+")] if rest else []
    if not corpus or not parts or any(len(p) != 2 or not all(p) for p in parts):
        raise DataError(f"MUSE data spec {text!r}: expected muse:<corpus>/<config>/<split>, e.g. muse:news/raw/forget "
                        "(several joined with '+': muse:news/raw/forget+raw/retain1)")
    return corpus, parts  # type: ignore[return-value]


_PART = re.compile(r"^(\d+)(?:-(\d+))?/(\d+)$")


def parse_part(spec: str, value: str | None) -> tuple[int, int, int] | None:
    """The `part=k/N` or `part=a-b/N` option: (first, last, N) with 1 ≤ first ≤ last ≤ N, or None when absent."""
    if value is None:
        return None
    m = _PART.match(value.strip())
    first, last, n = (int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3))) if m else (0, 0, 0)
    if not m or not 1 <= first <= last <= n:
        raise DataError(f"{spec}: part={value!r} must be k/N (the k-th of N equal document sets, 1 ≤ k ≤ N) or "
                        "a-b/N (parts a to b together), e.g. part=2/4 or part=1-3/4")
    return first, last, n


def select_part(rows: list, part: tuple[int, int, int]) -> list:
    """Parts first..last of `rows` cut into N equal contiguous sets: rows[⌊(first−1)·n/N⌋ : ⌊last·n/N⌋]."""
    first, last, n = part
    lo, hi = (first - 1) * len(rows) // n, last * len(rows) // n
    return rows[lo:hi]


def muse_from_spec(where: str, opts: dict[str, str]) -> list[QARecord]:
    """Records of a `muse:<corpus>/<config>/<split>[+<config>/<split>...][,source=...][,limit=N][,part=k/N]` data
    spec; `limit` keeps the first N rows of each split (a shortened corpus), `part` then keeps parts of each split
    (see the module docstring: the offline stand-in for the `scal` / `sust` forget sets)."""
    unknown = set(opts) - {"source", "limit", "part"}
    if unknown:
        raise DataError(f"muse:{where}: unknown option(s) {sorted(unknown)}; known: source, limit, part")
    limit = parse_limit(f"muse:{where}", opts.get("limit"))
    part = parse_part(f"muse:{where}", opts.get("part"))
    corpus, parts = parse_muse_spec(where or "")
    records = []
    for config, split in parts:
        rows = load_muse(corpus, config, split, source=opts.get("source"), limit=limit)
        picked = select_part(rows, part) if part else rows
        if not picked:
            raise DataError(f"muse:{where}: part={opts['part']} of {len(rows)} rows of {config}/{split} is empty; "
                            "use fewer parts or more rows (limit=)")
        records += picked
    try:
        is_document_set(records)
    except DataError as exc:
        raise DataError(f"muse:{where}: {exc}") from None
    return records
