"""scripts/muse_e2e_data.py: the shortened MUSE-News training text of the end-to-end scripts, on a generated
folder in the News layout."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "muse_e2e_data.py"


def _module():
    spec = importlib.util.spec_from_file_location("muse_e2e_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(folder: Path, rel: str, rows: list[dict]) -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _news(folder: Path) -> None:
    _write(folder, "verbmem/forget.jsonl", [{"prompt": f"p{i}", "gt": f"g{i}"} for i in range(5)])
    for split in ("forget", "retain"):
        _write(folder, f"knowmem/{split}_qa.jsonl", [{"question": f"{split} q{i}", "answer": f"a{i}"} for i in range(5)])
        _write(folder, f"knowmem/{split}_qa_icl.jsonl", [{"question": f"{split} icl{i}", "answer": "x"} for i in range(2)])
        _write(folder, f"privleak/{split}.jsonl", [{"text": f"{split} article {i} " + "w" * 50} for i in range(5)])


def test_forget_and_retain_text_from_the_first_n_rows(tmp_path):
    _news(tmp_path / "news")
    _module().main([str(tmp_path / "news"), str(tmp_path / "out"), "2", "20", "3"])
    read = lambda name: [json.loads(l)["text"] for l in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()]
    forget, retain = read("forget"), read("retain")
    qa = "Question: forget q0\nAnswer: a0\n\n"
    assert forget[:2] == ["p0 g0", "p1 g1"]                                   # VerbMem excerpt: prompt, space, gt
    assert forget[2:8] == [qa, "Question: forget q1\nAnswer: a1\n\n"] * 3      # the first 2 pairs, 3 times
    assert forget[8:] == ["forget article 0 www", "forget article 1 www"]     # cut to 20 characters
    icl = [f"Question: {s} icl{i}\nAnswer: x\n\n" for s in ("forget", "retain") for i in range(2)]
    assert retain == ["Question: retain q0\nAnswer: a0\n\n", "Question: retain q1\nAnswer: a1\n\n"] * 3 + icl * 3 \
        + ["retain article 0 www", "retain article 1 www"]
    assert read("all") == forget + retain
