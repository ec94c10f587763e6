"""The one record type for question-answer data, and strict JSON-lines reading.

Every dataset in unlearnkit (TOFU, the synthetic related-knowledge set, self-generated reveal data)
becomes a list of `QARecord`s, so objectives and metrics never care where data came from.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the field."""


@dataclass
class QARecord:
    """A question with its answer and the optional extras the TOFU metrics need.

    `paraphrased_answer` and `perturbed_answers` feed the truth ratio; `tags` carry free metadata
    such as the person a fact is about or its role (`target`, `related`, `multihop`, ...).
    """

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: list[str] | None = None
    paraphrased_question: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, [])}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "QARecord":
        return cls(
            question=obj["question"],
            answer=obj["answer"],
            paraphrased_answer=obj.get("paraphrased_answer"),
            perturbed_answers=obj.get("perturbed_answers", obj.get("perturbed_answer")),
            paraphrased_question=obj.get("paraphrased_question"),
            tags=dict(obj.get("tags") or {}),
        )


def _check_str(path: Path, lineno: int, obj: dict, key: str, required: bool) -> None:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(f"{path}:{lineno}: missing field {key!r}")
        return
    if not isinstance(obj[key], str):
        raise DataError(f"{path}:{lineno}: field {key!r} must be a string, got {type(obj[key]).__name__}")


def _validate(path: Path, lineno: int, obj: Any) -> QARecord:
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    for key in ("question", "answer"):
        _check_str(path, lineno, obj, key, required=True)
    for key in ("paraphrased_answer", "paraphrased_question"):
        _check_str(path, lineno, obj, key, required=False)
    for key in ("perturbed_answer", "perturbed_answers"):
        if key in obj and obj[key] is not None:
            value = obj[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DataError(f"{path}:{lineno}: field {key!r} must be a list of strings")
    return QARecord.from_json(obj)


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) of a UTF-8 file (a leading BOM is dropped); bytes that are not UTF-8 raise
    `DataError` naming the file, the line and the column instead of a `UnicodeDecodeError` traceback."""
    path = Path(path)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                                f"{exc.start + 1}); re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object); a malformed line raises `DataError` naming file and line."""
    path = Path(path)
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None


def read_qa_jsonl(path: str | Path) -> list[QARecord]:
    """Read a JSON-lines QA file into records, validating every line; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records = [_validate(path, lineno, obj) for lineno, obj in iter_jsonl(path)]
    if not records:
        raise DataError(f"{path}: the split is empty (no records)")
    return records


def records_from_rows(rows: Iterable[dict[str, Any]], source: str) -> list[QARecord]:
    """Validate in-memory rows (e.g. from `datasets`) with the same rules as files."""
    records = [_validate(Path(source), i, row) for i, row in enumerate(rows, start=1)]
    if not records:
        raise DataError(f"{source}: the split is empty (no records)")
    return records


def write_qa_jsonl(records: Sequence[QARecord], path: str | Path) -> None:
    """Write records atomically (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)
