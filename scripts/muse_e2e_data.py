"""Shortened MUSE-News training text for the end-to-end scripts (`muse_e2e_tiny.sh`, `muse_e2e_smollm2.sh`).

Writes `forget.jsonl`, `retain.jsonl` and `all.jsonl` (`{"text"}` rows, read as `docs:` specs) into OUT from the
first N rows of the offline News copy:
- forget side: the N VerbMem excerpts (prompt + true continuation), the N forget KnowMem pairs in the few-shot
  `Question: … / Answer: …` format (repeated), and the first N PrivLeak forget articles, cut to CHARS characters;
- retain side: the N retain KnowMem pairs (repeated), the 20 in-context pairs (repeated) and N PrivLeak retain
  articles, cut the same way.

Why the QA pairs are trained on as text: the News articles behind the KnowMem questions are not identifiable in
the offline copy (the retain articles `raw/retain2` are absent), so a small target is taught the facts in the
format it is asked them; the VerbMem excerpts are the forget articles' own text.

Usage: python scripts/muse_e2e_data.py MUSE_NEWS_DIR OUT N [CHARS=1000] [REPEAT=4]
"""
import json
import sys
from pathlib import Path


def rows(muse: Path, rel: str) -> list[dict]:
    return [json.loads(line) for line in (muse / rel).read_text().splitlines() if line.strip()]


def qa(row: dict) -> str:
    return f"Question: {row['question']}\nAnswer: {row['answer']}\n\n"


def corpus(muse: Path, n: int, chars: int, repeat: int) -> dict[str, list[str]]:
    icl = [qa(r) for f in ("forget_qa_icl", "retain_qa_icl") for r in rows(muse, f"knowmem/{f}.jsonl")]
    forget = [f"{r['prompt']} {r['gt']}" for r in rows(muse, "verbmem/forget.jsonl")[:n]]
    forget += [qa(r) for r in rows(muse, "knowmem/forget_qa.jsonl")[:n]] * repeat
    forget += [r["text"][:chars] for r in rows(muse, "privleak/forget.jsonl")[:n]]
    retain = [qa(r) for r in rows(muse, "knowmem/retain_qa.jsonl")[:n]] * repeat + icl * repeat
    retain += [r["text"][:chars] for r in rows(muse, "privleak/retain.jsonl")[:n]]
    return {"forget": forget, "retain": retain, "all": forget + retain}


def main(argv: list[str]) -> None:
    muse, out, n = Path(argv[0]), Path(argv[1]), int(argv[2])
    chars = int(argv[3]) if len(argv) > 3 else 1000
    repeat = int(argv[4]) if len(argv) > 4 else 4
    out.mkdir(parents=True, exist_ok=True)
    for name, texts in corpus(muse, n, chars, repeat).items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


if __name__ == "__main__":
    main(sys.argv[1:])
