"""Agreement of unlearnkit's MUSE suite with open-unlearning's (`src/eval.py experiment=eval/muse/default`).

Steps (each skipped when its output exists, so a rerun only redoes what is missing):
  1. a small target: `unlearnkit finetune model=tiny` on MUSE-News text (VerbMem articles, KnowMem QA pairs,
     PrivLeak forget texts) given as a `docs:` corpus, i.e. through the document-window path;
  2. a copy of its model folder that transformers 4.45 loads (`tokenizer_class: PreTrainedTokenizerFast`);
  3. open-unlearning's MUSE evaluation of that copy with the shared harness (`$OU_HOME`, default /work/ou: its
     venv, source and offline muse-bench/MUSE-News), fp32 on CPU;
  4. unlearnkit's MUSE suite on the same folder, `masking=open-unlearning` (and `exact`, for information);
  5. a table: each metric's two values, their difference, and the largest per-sample difference.

Usage: python scripts/muse_agreement.py OUT_DIR [--muse-dir ../shared/data/muse] [--steps 600]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PAIRS = {  # open-unlearning metric -> unlearnkit metric
    "forget_verbmem_ROUGE": "verbmem_forget/rouge_l_f1",
    "forget_knowmem_ROUGE": "knowmem_forget/rouge_l_f1",
    "retain_knowmem_ROUGE": "knowmem_retain/rouge_l_f1",
    "extraction_strength": "forget/extraction_strength",
    "exact_memorization": "forget/exact_memorization",
    "mia_min_k": "mia/min_k",
    "privleak": "privleak",
}
PER_ITEM_KEY = {"forget_verbmem_ROUGE": "rougeL_f1", "forget_knowmem_ROUGE": "rougeL_f1",
                "retain_knowmem_ROUGE": "rougeL_f1", "extraction_strength": "score", "exact_memorization": "score"}


def training_corpus(muse_news: Path, out: Path) -> Path:
    """VerbMem prompt + continuation, KnowMem pairs (3 times) in the few-shot format, PrivLeak forget texts."""
    def rows(rel):
        return [json.loads(line) for line in (muse_news / rel).read_text().splitlines() if line.strip()]

    texts = [f"{r['prompt']} {r['gt']}" for r in rows("verbmem/forget.jsonl")]
    qa = [r for f in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl") for r in rows(f"knowmem/{f}.jsonl")]
    texts += [f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in qa] * 3
    texts += [r["text"] for r in rows("privleak/forget.jsonl")]
    out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return out


def build_target(out: Path, muse_dir: Path, steps: int) -> Path:
    from unlearnkit.train.finetune import FinetuneConfig, finetune

    run = out / "target"
    corpus = training_corpus(muse_dir / "news", out / "train_corpus.jsonl")
    t0 = time.time()
    finetune(FinetuneConfig(model="tiny", data=f"docs:{corpus}", run=str(run), max_steps=steps, lr=2e-3,
                            batch_size=8, max_length=128, precision="fp32", template="plain", recall_max=-1,
                            tiny_hidden=128, tiny_layers=2, warmup=0.05, logging_steps=50, save_steps=steps))
    print(f"[agreement] target fine-tuned in {time.time() - t0:.0f} s", flush=True)
    return run / "model"


def ou_copy(model_dir: Path, out: Path) -> Path:
    dst = out / "model_tf445"
    if not dst.is_dir():
        shutil.copytree(model_dir, dst)
        cfg = dst / "tokenizer_config.json"
        data = json.loads(cfg.read_text())
        data["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg.write_text(json.dumps(data, indent=2))
    return dst


def run_open_unlearning(model_dir: Path, out: Path, ou_home: Path) -> dict:
    res = out / "ou" / "MUSE_EVAL.json"
    if res.is_file():
        return json.loads(res.read_text())
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HYDRA_FULL_ERROR": "1"}
    extra = [f"+eval/muse_metrics@eval.muse.metrics.{m}={m}" for m in ("exact_memorization", "mia_min_k")]
    cmd = [str(ou_home / "venv/bin/python"), "src/eval.py", "experiment=eval/muse/default",
           f"model.model_args.pretrained_model_name_or_path={model_dir}",
           f"model.tokenizer_args.pretrained_model_name_or_path={model_dir}", "model.model_args.device_map=cpu",
           "model.model_args.attn_implementation=sdpa", "model.model_args.torch_dtype=float32",
           "eval.muse.overwrite=true", "task_name=muse_agreement", f"paths.output_dir={out / 'ou'}", *extra]
    t0 = time.time()
    subprocess.run(cmd, cwd=ou_home / "open-unlearning", env=env, check=True)
    print(f"[agreement] open-unlearning MUSE eval: {time.time() - t0:.0f} s", flush=True)
    return json.loads(res.read_text())


def run_unlearnkit(model_dir: Path, out: Path, muse_dir: Path, masking: str) -> dict:
    res = out / f"unlearnkit_{masking}.json"
    if res.is_file():
        return json.loads(res.read_text())
    from unlearnkit.data.collate import PromptFormat
    from unlearnkit.eval.muse import load_muse_sets, run_muse
    from unlearnkit.models import load_model

    model, tok = load_model(str(model_dir))
    t0 = time.time()
    sets = load_muse_sets("news", source=muse_dir)
    result = run_muse(model.eval(), tok, sets, fmt=PromptFormat(template="plain", masking=masking))
    print(f"[agreement] unlearnkit MUSE suite ({masking}): {time.time() - t0:.0f} s", flush=True)
    data = {"metrics": result.to_json(), "generations": result.generations, "references": result.references}
    res.write_text(json.dumps(data))
    return data


def _per_item(ou_metric: dict, key: str) -> list[float] | None:
    if "forget" in ou_metric and "holdout" in ou_metric:  # an MIA: its score is −(ours), members first
        return [-v["score"] for part in ("forget", "holdout")
                for _, v in sorted(ou_metric[part]["value_by_index"].items(), key=lambda kv: int(kv[0]))]
    by_index = ou_metric.get("value_by_index")
    if not by_index or key is None:
        return None
    return [by_index[k][key] for k in sorted(by_index, key=int)]


def _uk_items(metric: dict) -> list[float] | None:
    """unlearnkit's per-sample values in open-unlearning's order: an MIA keeps members in `per_item` and
    non-members in `holdout_value_by_index`, so members come first, then non-members by index."""
    items = metric.get("per_item")
    holdout = metric.get("holdout_value_by_index")
    if items is None or holdout is None:
        return items
    return list(items) + [holdout[k] for k in sorted(holdout, key=int)]


def compare(ou: dict, uk: dict) -> list[tuple]:
    rows = []
    for ou_name, uk_name in PAIRS.items():
        if ou_name not in ou or uk_name not in uk["metrics"]:
            rows.append((ou_name, uk_name, None, None, None, None))
            continue
        a, b = ou[ou_name]["agg_value"], uk["metrics"][uk_name]["value"]
        items_a = _per_item(ou[ou_name], PER_ITEM_KEY.get(ou_name, "score"))
        items_b = _uk_items(uk["metrics"][uk_name])
        item_diff = (max(abs(x - y) for x, y in zip(items_a, items_b))
                     if items_a is not None and items_b is not None and len(items_a) == len(items_b) else None)
        rows.append((ou_name, uk_name, a, b, abs(a - b), item_diff))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--muse-dir", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/muse")
    ap.add_argument("--ou-home", type=Path, default=Path(os.environ.get("OU_HOME", "/work/ou")))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--model", type=Path, default=None, help="evaluate this model folder instead of training one")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or (out / "target" / "model")
    if not (model_dir / "config.json").is_file():
        model_dir = build_target(out, args.muse_dir, args.steps)
    tf445 = ou_copy(model_dir, out)
    ou = run_open_unlearning(tf445, out, args.ou_home)
    uk = run_unlearnkit(model_dir, out, args.muse_dir, "open-unlearning")
    exact = run_unlearnkit(model_dir, out, args.muse_dir, "exact")
    rows = compare(ou, uk)
    lines = ["| open-unlearning | unlearnkit | open-unlearning value | unlearnkit (masking=open-unlearning) | |diff| "
             "| max per-sample |diff| | unlearnkit (exact) |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.6g}"  # noqa: E731
    for ou_name, uk_name, a, b, d, di in rows:
        ex = exact["metrics"].get(uk_name, {}).get("value")
        lines.append(f"| {ou_name} | {uk_name} | {fmt(a)} | {fmt(b)} | {fmt(d)} | {fmt(di)} | {fmt(ex)} |")
    table = "\n".join(lines)
    print(table)
    (out / "agreement.md").write_text(table + "\n")
    worst = max((d for *_, d, _ in rows if d is not None), default=float("nan"))
    print(f"[agreement] largest aggregate difference: {worst:.3g} (tolerance 1e-4)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
