"""MUSE metrics (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models",
arXiv 2407.06460), as pure functions of strings and numbers.

* VerbMem: greedy continuation (128 new tokens) of a forget-article opening, ROUGE-L **F1** against the true
  continuation. KnowMem: greedy answer (32 new tokens) to a question after the 10 in-context pairs, cut at the
  first stop string, ROUGE-L F1 against the answer; on the forget QA (lower = forgotten) and on the retain QA
  (the utility). ROUGE-L is `rouge-score`'s LCS F-measure with its default tokenizer (lower-case, split on
  non-alphanumerics) and Porter stemming (`use_stemmer=True`), `scorer.score(reference, generation)`, as
  open-unlearning's `eval_text_similarity` (`rougeL_f1`) computes it.
* PrivLeak and the other membership scores are `mia.py`'s (min-k% with k = 0.4, `mia.privleak`); extraction
  strength and exact memorisation are `memorization.py`'s. This module adds only what is MUSE-specific: the
  few-shot prompt, the stop strings, and the F1 variant of ROUGE-L.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .result import MetricResult
from .tofu_metrics import _scorer

#: open-unlearning's MUSE knowmem `stopwords` (generation ends at a blank line or at the next question)
KNOWMEM_STOPS = ("\n\n", "\nQuestion", "Question:")
VERBMEM_NEW_TOKENS = 128
KNOWMEM_NEW_TOKENS = 32


def knowmem_prompt(icl: Sequence[tuple[str, str]], question: str) -> str:
    """The few-shot KnowMem prompt: each in-context pair as `Question: {q}\\nAnswer: {a}\\n\\n`, then
    `Question: {question}\\nAnswer: ` (ending in a space; the model continues with the answer).

    This is the plain template of open-unlearning's MUSE model config (user_start_tag "Question: ",
    user_end_tag "\\n", asst_start_tag "Answer: ", asst_end_tag "\\n\\n"), itself the MUSE authors' prompt.
    """
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl)
    return f"{shots}Question: {question}\nAnswer: "


def knowmem_chat(icl: Sequence[tuple[str, str]], question: str) -> list[dict[str, str]]:
    """The same few shots as chat turns (user question, assistant answer), ending with the user's question:
    what open-unlearning builds when the model's template applies a chat template."""
    turns = [m for q, a in icl for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    return turns + [{"role": "user", "content": question}]


def cut_at_stops(text: str, stops: Sequence[str] = KNOWMEM_STOPS) -> str:
    """`text` up to the earliest occurrence of any stop string, then stripped of surrounding whitespace
    (open-unlearning cuts at each stop word in turn, which ends at the earliest one, then strips)."""
    end = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:end].strip()


def rouge_l_f1(generated: Sequence[str], references: Sequence[str], name: str = "rouge_l_f1") -> MetricResult:
    """Mean ROUGE-L F1 (LCS-based F-measure, Porter-stemmed `rouge-score` tokens) of each generation against its
    reference: F1 = 2·P·R/(P+R) with P = LCS/|gen|, R = LCS/|ref| (0 when either side has no token)."""
    if len(generated) != len(references):
        raise ValueError(f"{name}: {len(generated)} generations but {len(references)} references")
    sc = _scorer()
    vals = [sc.score(ref, gen)["rougeL"].fmeasure for gen, ref in zip(generated, references)]
    return MetricResult(float(np.mean(vals)) if vals else float("nan"), f"{name}[rougeL_f1,stemmed]", len(vals), vals)
