"""Set unlearnkit's TOFU numbers beside open-unlearning's, aggregate by aggregate and row by row.

    # 1. a copy of a model folder that transformers 4.45 (open-unlearning's pin) loads
    python scripts/compare_open_unlearning.py prepare MODEL_DIR COPY_DIR
    # 2. both tools on the same copy, with the settings that reproduce open-unlearning
    OU_HOME=... bash ../shared/tools/open-unlearning/eval.sh COPY_DIR OU_OUT forget01   (RETAIN_LOGS=...)
    unlearnkit evaluate run=RUN model=COPY_DIR masking=open-unlearning template=plain precision=fp32 \
        oracle=<retain oracle_stats.json or the retain model's TOFU_EVAL.json>
    # 3. the table (exit status 1 when an aggregate differs by more than --tol)
    python scripts/compare_open_unlearning.py compare OU_OUT/TOFU_EVAL.json RUN/eval/tofu.json [--tol 1e-4]

A quicker slice (both tools on the first N rows of every set): unlearnkit `limit=N`; open-unlearning the hydra
override `<path>.hf_args.split='train[:N]'` for each of its 23 dataset paths (print them with
`src/eval.py experiment=eval/tofu/default model=phi-1_5 --cfg job` and look for `hf_args`). Shorter generations:
unlearnkit `max_new_tokens=N`; open-unlearning `eval.tofu.metrics.forget_Q_A_ROUGE.generation_args.max_new_tokens=N`
and `eval.tofu.metrics.model_utility.pre_compute.{retain,ra,wf}_Q_A_ROUGE.generation_args.max_new_tokens=N`.

Row by row: open-unlearning's `value_by_index` against unlearnkit's (min-k scores change sign: open-unlearning
scores −mean log p, unlearnkit +mean log p, both AUCs read 1 = forget set recognised).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

#: (open-unlearning key, where its aggregate lives, unlearnkit key, per-row field in open-unlearning, sign)
ROWS = [
    ("forget_quality", (), "forget_quality", None, 1),
    ("forget_truth_ratio", (), "forget/truth_ratio", "score", 1),
    ("forget_Q_A_Prob", (), "forget/probability", "prob", 1),
    ("forget_Q_A_ROUGE", (), "forget/rouge_l_recall", "rougeL_recall", 1),
    ("extraction_strength", (), "forget/extraction_strength", "score", 1),
    ("exact_memorization", (), "forget/exact_memorization", "score", 1),
    ("mia_min_k", ("privleak", "pre_compute"), "mia/min_k", "score", -1),
    ("privleak", (), "privleak", None, 1),
    ("model_utility", (), "model_utility", None, 1),
] + [(f"{ou}_{m}", ("model_utility", "pre_compute"), f"{uk}/{k}", field, 1)
     for ou, uk in (("retain", "retain"), ("ra", "real_authors"), ("wf", "world_facts"))
     for m, k, field in (("Q_A_Prob" if ou == "retain" else "Q_A_Prob_normalised", "probability", "prob"),
                         ("Q_A_ROUGE", "rouge_l_recall", "rougeL_recall"), ("Truth_Ratio", "truth_ratio", "score"))]


def prepare(src: Path, dst: Path) -> None:
    """Copy a model folder and make it loadable by transformers 4.45: a tokenizer class it knows, and the
    RoPE base at the top level of config.json (transformers 5 nests it in `rope_parameters`; 4.45 would
    silently fall back to 10000)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    tok = dst / "tokenizer_config.json"
    cfg = json.loads(tok.read_text())
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        tok.write_text(json.dumps(cfg, indent=2))
    conf = dst / "config.json"
    c = json.loads(conf.read_text())
    rope = c.get("rope_parameters") or {}
    if "rope_theta" not in c and "rope_theta" in rope:
        c["rope_theta"] = rope["rope_theta"]
    if "torch_dtype" not in c and "dtype" in c:
        c["torch_dtype"] = c["dtype"]
    conf.write_text(json.dumps(c, indent=2))
    print(f"prepared {dst}")


def _find(ou: dict, key: str, where: tuple) -> dict | None:
    """open-unlearning's result for `key`: top level, else nested in the metric that pre-computed it."""
    if key in ou:
        return ou[key]
    node = ou
    for part in where:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node.get(key) if isinstance(node, dict) else None


def _row_diff(ou_entry: dict, uk_entry: dict, field: str, sign: int) -> tuple[float, int] | None:
    """(max |diff| over common rows, rows compared), or None when either side has no per-row values."""
    a, b = ou_entry.get("value_by_index") or {}, uk_entry.get("value_by_index") or {}
    if field == "score" and "forget" in ou_entry and not a:  # an MIA result: its forget side
        a = ou_entry["forget"].get("value_by_index") or {}
    common = sorted(set(a) & set(b), key=int)
    if not common:
        return None
    diffs = []
    for i in common:
        v = a[i][field] if isinstance(a[i], dict) else a[i]
        v = sum(v) / len(v) if isinstance(v, list) else v
        diffs.append(abs(sign * v - b[i]))
    return max(diffs), len(common)


def agreement(ou: dict, uk: dict) -> list[dict]:
    """One row per aggregate of `ROWS`: open-unlearning's value, unlearnkit's, |diff| (None when either side lacks
    it) and the per-row (max |diff|, n) where both keep per-row values. `ou`: a TOFU_EVAL.json; `uk`: eval/tofu.json."""
    rows = []
    for ou_key, where, uk_key, field, sign in ROWS:
        o, u = _find(ou, ou_key, where), uk["metrics"].get(uk_key)
        ov = None if o is None else o.get("agg_value")
        uv = None if u is None else u.get("value")
        diff = abs(ov - uv) if ov is not None and uv is not None else None
        per_row = _row_diff(o, u, field, sign) if field and o is not None and u is not None else None
        rows.append({"aggregate": ou_key, "open_unlearning": ov, "unlearnkit": uv, "diff": diff, "rows": per_row})
    return rows


def worst_diff(rows: list[dict]) -> float:
    """The largest aggregate |diff| (NaN differences, e.g. forget quality on a slice, are skipped)."""
    return max((r["diff"] for r in rows if r["diff"] is not None and r["diff"] == r["diff"]), default=0.0)


def print_table(rows: list[dict]) -> None:
    print(f"{'aggregate':<26} {'open-unlearning':>16} {'unlearnkit':>16} {'|diff|':>10}  rows: max |diff| (n)")
    for r in rows:
        if r["diff"] is None:
            print(f"{r['aggregate']:<26} {'-' if r['open_unlearning'] is None else r['open_unlearning']!s:>16.16} "
                  f"{'-' if r['unlearnkit'] is None else r['unlearnkit']!s:>16.16} {'n/a':>10}")
            continue
        row_txt = "" if r["rows"] is None else f"{r['rows'][0]:.2e} ({r['rows'][1]})"
        print(f"{r['aggregate']:<26} {r['open_unlearning']!s:>16.16} {r['unlearnkit']!s:>16.16} "
              f"{r['diff']:>10.2e}  {row_txt}")


def compare(ou_path: Path, uk_path: Path, tol: float) -> int:
    ou = json.loads(ou_path.read_text())
    uk = json.loads(uk_path.read_text())
    settings = uk.get("settings", {})
    print(f"open-unlearning: {ou_path}\nunlearnkit:      {uk_path}  (masking={settings.get('masking')}, "
          f"template={settings.get('template')}, precision={settings.get('precision')})")
    rows = agreement(ou, uk)
    print_table(rows)
    worst = worst_diff(rows)
    print(f"largest aggregate |diff|: {worst:.2e} (tolerance {tol:g})")
    return 0 if worst <= tol else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="copy a model folder so that transformers 4.45 loads it")
    a.add_argument("src", type=Path)
    a.add_argument("dst", type=Path)
    b = sub.add_parser("compare", help="print the agreement table of two TOFU evaluations")
    b.add_argument("ou", type=Path, help="open-unlearning's TOFU_EVAL.json")
    b.add_argument("uk", type=Path, help="unlearnkit's eval/tofu.json")
    b.add_argument("--tol", type=float, default=1e-4)
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.src, args.dst)
        return 0
    return compare(args.ou, args.uk, args.tol)


if __name__ == "__main__":
    sys.exit(main())
