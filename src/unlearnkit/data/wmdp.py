"""WMDP's unlearning corpora as documents: `wmdp:<corpus>[+<corpus>][,limit=N][,source=<dir>][,min_chars=50][,max_chars=2000]`.

RMU as WMDP defines it (Li et al. 2024, arXiv 2403.03218; the `wmdp` repository's `rmu/utils.py`) unlearns
on raw text, not questions: the forget corpora are PubMed papers (bio) and GitHub passages (cyber), the retain
corpus is Wikitext. Each corpus here becomes document records (`data.documents`), cut into token windows when
tokenised like any `docs:` corpus. The reference keeps texts longer than `min_chars` = 50 characters and cuts
each to its first `max_chars` = 2000 characters; both are options (0 turns the cut off).

    corpus        hub id, config, split                                       note
    bio-forget    cais/wmdp-bio-forget-corpus, -, train                      GATED: request access on the hub
                                                                             (log in with `hf auth login`)
    cyber-forget  cais/wmdp-corpora, cyber-forget-corpus, train
    bio-retain    cais/wmdp-corpora, bio-retain-corpus, train
    cyber-retain  cais/wmdp-corpora, cyber-retain-corpus, train
    wikitext      Salesforce/wikitext, wikitext-2-raw-v1, test               RMU's general-text retain set

None of these is available offline. A local copy is read first when present: `source=<folder>` or
`$UNLEARNKIT_WMDP_DIR` holding `<corpus>.jsonl` (`{"text": ...}` lines, e.g. the bio corpus's
`bio_remove_dataset.jsonl` renamed). Without either, the hub is tried and a failure names all three ways.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .documents import documents_from_rows, parse_limit
from .records import DataError, QARecord, iter_jsonl

ENV_VAR = "UNLEARNKIT_WMDP_DIR"
CORPORA: dict[str, tuple[str, str | None, str]] = {
    "bio-forget": ("cais/wmdp-bio-forget-corpus", None, "train"),
    "cyber-forget": ("cais/wmdp-corpora", "cyber-forget-corpus", "train"),
    "bio-retain": ("cais/wmdp-corpora", "bio-retain-corpus", "train"),
    "cyber-retain": ("cais/wmdp-corpora", "cyber-retain-corpus", "train"),
    "wikitext": ("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
}
GATED = {"bio-forget"}
OPTIONS = ("limit", "source", "min_chars", "max_chars")


def _hub_rows(hub_id: str, config: str | None, split: str) -> list[dict]:
    from datasets import load_dataset  # network path (or the datasets cache); not exercised offline

    return [dict(r) for r in load_dataset(hub_id, config, split=split)]


def load_wmdp_rows(corpus: str, source: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The rows of one corpus: `<source or $UNLEARNKIT_WMDP_DIR>/<corpus>.jsonl` if present, else the hub."""
    if corpus not in CORPORA:
        raise DataError(f"unknown WMDP corpus {corpus!r}; known: {', '.join(CORPORA)}")
    folder = Path(source) if source is not None else (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    if source is not None and not folder.is_dir():
        raise DataError(f"wmdp:{corpus}: source={str(source)!r} is not a folder (expected one holding {corpus}.jsonl)")
    local = folder / f"{corpus}.jsonl" if folder is not None else None
    if local is not None and local.is_file():
        return [obj for _, obj in iter_jsonl(local)]
    hub_id, config, split = CORPORA[corpus]
    try:
        return _hub_rows(hub_id, config, split)
    except Exception as exc:  # offline, gated, no `datasets`: say where we looked and what to do
        gated = (f" {hub_id} is gated: request access on huggingface.co and log in (`hf auth login`)."
                 if corpus in GATED else "")
        looked = f"{local}: no such file" if local is not None else f"no local copy (source= or ${ENV_VAR})"
        raise DataError(f"wmdp:{corpus}: {looked}, and the hub failed ({hub_id!r}, config {config!r}, split "
                        f"{split!r}: {type(exc).__name__}: {exc}).{gated} Go online, or put {{\"text\": ...}} lines "
                        f"in <folder>/{corpus}.jsonl and pass source=<folder>; offline, any docs:<file.jsonl> corpus "
                        f"works the same way") from None


def select_texts(rows: list[dict], min_chars: int, max_chars: int, name: str) -> list[dict]:
    """WMDP's filter: texts longer than `min_chars`, each cut to its first `max_chars` (0: no cut)."""
    out = []
    for i, row in enumerate(rows, start=1):
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise DataError(f"{name}: row {i} has no string field 'text'")
        if len(text) > min_chars:
            out.append({"text": text[:max_chars] if max_chars else text})
    return out


def wmdp_from_spec(where: str, opts: dict[str, str]) -> list[QARecord]:
    """Records of a `wmdp:<corpus>[+<corpus>...][,limit=N][,source=...][,min_chars=..][,max_chars=..]` spec
    (`limit`: the first N texts of each corpus kept by the filter)."""
    where = where or ""
    unknown = set(opts) - set(OPTIONS)
    if unknown:
        raise DataError(f"wmdp:{where}: unknown option(s) {sorted(unknown)}; known: {', '.join(OPTIONS)}")
    chars = {}
    for key, default in (("min_chars", 50), ("max_chars", 2000)):
        value = opts.get(key, str(default))
        if not value.isdigit():
            raise DataError(f"wmdp:{where}: {key}={value!r} must be a whole number ≥ 0")
        chars[key] = int(value)
    limit = parse_limit(f"wmdp:{where}", opts.get("limit"))
    rows = []
    for corpus in where.split("+"):  # bio-forget+cyber-forget: both forget corpora, as the reference unlearns
        kept = select_texts(load_wmdp_rows(corpus, opts.get("source")), chars["min_chars"], chars["max_chars"],
                            f"wmdp:{corpus}")
        rows += kept if limit is None else kept[:limit]
    return documents_from_rows(rows, f"wmdp:{where}")
