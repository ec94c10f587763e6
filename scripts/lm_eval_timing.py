"""Time `suite=lm_eval` scoring on a model with local WMDP-format tasks, and extrapolate to WMDP and MMLU.

WMDP and MMLU are hub data (not offline), so this times local multiple-choice tasks whose prompts have the
token lengths of the real ones, `--n` questions each, through the same harness path (`run_harness`), and
scales the seconds per question by the real question counts. A multiple-choice question with one-token
answer letters costs one forward pass of its prompt (the harness scores the four letters from one pass).

    OMP_NUM_THREADS=1 python scripts/lm_eval_timing.py --model default --n 16
"""
from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time

from unlearnkit.eval.harness_tasks import MCQ, write_mcq_task
from unlearnkit.eval.lm_eval import HarnessSettings, run_harness
from unlearnkit.models import load_model

# (task, questions in the real benchmark, mean prompt length in tokens, assumed for the extrapolation)
REAL = (("wmdp_bio", 1273, 120), ("wmdp_cyber", 1987, 400), ("mmlu (57 subjects)", 14042, 110))
WORDS = "the a of cell virus protein code packet memory buffer kernel strain host vector gene assay".split()


def questions(tok, n: int, target_tokens: int, seed: int) -> list[MCQ]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = []
        while len(tok(" ".join(words))["input_ids"]) < target_tokens - 30:
            words += rng.sample(WORDS, 5)
        out.append(MCQ(" ".join(words) + "?", tuple(" ".join(rng.sample(WORDS, 3)) for _ in range(4)), rng.randrange(4)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    model, tok = load_model(args.model)
    model.eval()
    with tempfile.TemporaryDirectory() as tasks:
        per_q = {}
        for length in sorted({L for _, _, L in REAL}):
            write_mcq_task(tasks, f"len{length}", questions(tok, args.n, length, length), "")
            settings = HarnessSettings([f"len{length}"], batch_size=args.batch_size, include=tasks)
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime, time.time()
            run_harness(model, tok, settings)
            cpu, wall = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0, time.time() - wall0
            per_q[length] = (cpu / args.n, wall / args.n)
            print(f"{length:4d}-token prompts: {cpu / args.n:.3f} CPU-s/question, {wall / args.n:.3f} wall-s/question")
    for name, count, length in REAL:
        cpu_q, wall_q = per_q[length]
        print(f"{name:20s} {count:6d} questions x ~{length} tokens: ~{count * cpu_q / 60:.0f} CPU-minutes "
              f"(~{count * wall_q / 60:.0f} wall-minutes as measured here)")


if __name__ == "__main__":
    main()
