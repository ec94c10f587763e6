"""Strict text reading of data files: non-UTF-8 bytes name the file and line (issue 21.9)."""
import pytest

from unlearnkit.data import DataError, read_qa_jsonl
from unlearnkit.train.unlearn_data import load_idk_answers


def test_non_utf8_bytes_name_file_line_and_column(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"question": "q", "answer": "a"}\n\n{"question": "caf\xe9", "answer": "a"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:3: not UTF-8 text \(byte 0xe9 at column 18\)"):
        read_qa_jsonl(p)
    idk = tmp_path / "idk.txt"
    idk.write_bytes(b"I don't know.\nNo id\xe9a.\n")
    with pytest.raises(DataError, match=r"idk\.txt:2: not UTF-8"):
        load_idk_answers(idk)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes('\ufeff{"question": "q", "answer": "é"}\n'.encode("utf-8"))
    assert read_qa_jsonl(p)[0].answer == "é"
