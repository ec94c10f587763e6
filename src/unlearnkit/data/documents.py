"""Document corpora for pre-training-style unlearning (MUSE's news articles and books, any `{"text"}` corpus).

Pre-training unlearning does not ask questions: it trains on (or away from) raw text. A corpus is carried
through the rest of unlearnkit as `QARecord`s with an empty question, the document as the answer and the tag
`document=True`, so specs, the forget/retain split logic and the run record need nothing new. When such a set
is tokenised (`QADataset`), the documents are concatenated — the tokenizer's EOS after each — and the token
stream is cut into consecutive `max_length`-token windows in which every token is a label. A window is then an
ordinary batch row (prompt length 0), so every objective that takes forget/retain batches works unchanged.

Window rule (tested): windows are `stream[i·L:(i+1)·L]`, so their concatenation is the stream — no token lost
or duplicated. A final window of a single token is dropped: it has no next-token target (the first token of
any window is only context). open-unlearning's `PretrainingDataset` differs in two ways, named here so numbers
can be compared: it joins documents with "\\n\\n" instead of EOS, and it decodes each window to text and
re-tokenises it (adding BOS where the tokenizer has one).

File spec (`docs:<path>`): a `.jsonl` file holds one `{"text": ...}` object per line; any other file is
plain text, one document (the whole file).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from .records import DataError, QARecord, iter_jsonl

DOCUMENT_TAG = "document"


def document_records(texts: Iterable[str], source: str) -> list[QARecord]:
    """One record per document: empty question, the text as the answer, tags `document`, `source`, `doc` (index)."""
    records = [QARecord(question="", answer=t, tags={DOCUMENT_TAG: True, "source": source, "doc": i})
               for i, t in enumerate(texts)]
    if not records:
        raise DataError(f"{source}: no documents")
    return records


def documents_from_rows(rows: Iterable[Any], source: str, key: str = "text") -> list[QARecord]:
    """Document records from `{"text": ...}` rows (hub rows or parsed JSON lines); a bad row names its number."""
    texts = []
    for i, row in enumerate(rows, start=1):
        value = row.get(key) if isinstance(row, dict) else None
        if not isinstance(value, str):
            raise DataError(f"{source}:{i}: expected an object with a string field {key!r}, got "
                            f"{type(row).__name__ if not isinstance(row, dict) else sorted(row)}")
        texts.append(value)
    return document_records(texts, source)


def read_documents(path: str | Path) -> list[QARecord]:
    """Documents of a `.jsonl` file (`{"text"}` per line) or of a plain-text file (one document)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a .jsonl file of {{\"text\": ...}} lines or a text file)")
    if path.suffix == ".jsonl":
        lines = list(iter_jsonl(path))
        bad = next(((n, o) for n, o in lines if not isinstance(o, dict) or not isinstance(o.get("text"), str)), None)
        if bad is not None:
            raise DataError(f"{path}:{bad[0]}: expected an object with a string field 'text'")
        return document_records([o["text"] for _, o in lines], str(path))
    return document_records([path.read_text(encoding="utf-8")], str(path))


def is_document_set(records: Sequence[QARecord]) -> bool:
    """True when every record is a document, False when none is; a mix is an error (a window has no question)."""
    flags = [bool(r.tags.get(DOCUMENT_TAG)) for r in records]
    if any(flags) and not all(flags):
        raise DataError(f"{sum(flags)} of {len(flags)} records are documents and the rest question/answer pairs; "
                        "a data set must be one or the other (use separate forget/retain specs)")
    return bool(flags) and all(flags)


def token_stream(tokenizer, texts: Iterable[str]) -> list[int]:
    """All documents' token ids (no special tokens added), each followed by the tokenizer's EOS."""
    if tokenizer.eos_token_id is None:
        raise ValueError("document windows need a tokenizer with an EOS token to separate documents")
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return ids


def cut_windows(ids: Sequence[int], length: int) -> list[list[int]]:
    """Consecutive `length`-token windows of `ids`; a last window of one token (no target) is dropped."""
    if length < 2:
        raise ValueError(f"max_length={length}: a window needs at least 2 tokens (one context, one target)")
    windows = [list(ids[i:i + length]) for i in range(0, len(ids), length)]
    if windows and len(windows[-1]) < 2:
        windows.pop()
    return windows


def document_windows(tokenizer, records: Sequence[QARecord], length: int) -> list[list[int]]:
    """The windows `QADataset` trains on for a document set (see the module docstring)."""
    return cut_windows(token_stream(tokenizer, (r.answer for r in records)), length)


def documents_from_spec(where: str, opts: dict[str, str]) -> list[QARecord]:
    """Records of a `docs:<path>[,limit=N]` data spec (`limit`: the first N documents)."""
    unknown = set(opts) - {"limit"}
    if unknown:
        raise DataError(f"docs:{where}: unknown option(s) {sorted(unknown)}; known: limit")
    if not where:
        raise DataError("docs: needs a path, e.g. docs:corpus.jsonl (one {\"text\": ...} per line) or docs:book.txt")
    limit = parse_limit(f"docs:{where}", opts.get("limit"))
    records = read_documents(where)
    return records if limit is None else records[:limit]


def parse_limit(spec: str, value: str | None) -> int | None:
    """The `limit=N` option of a document spec: None when absent, else a whole number ≥ 1."""
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise DataError(f"{spec}: limit={value!r} must be a whole number ≥ 1 (the first N documents)")
    return int(value)
