#!/usr/bin/env bash
# End-to-end MUSE-News run on CPU with a tiny from-scratch model, through the `unlearnkit` CLI only:
#   1. a target fine-tuned on forget + retain text, a retain model on retain text only (same tokenizer),
#      both as document windows (docs: specs);
#   2. NPO and GradDiff unlearning of the forget documents from the target;
#   3. `evaluate suite=muse` of all four (PrivLeak against the retain model), then `report`.
# The corpus is shortened so that a 2-layer model can memorise it in minutes (scripts/muse_e2e_data.py says
# what it holds); evaluation uses the same first N rows (limit=N).
# Usage: scripts/muse_e2e_tiny.sh OUT_DIR [N=10] [FINETUNE_STEPS=800] [UNLEARN_STEPS=20]
set -euo pipefail
OUT=${1:?usage: muse_e2e_tiny.sh OUT_DIR [N] [FINETUNE_STEPS] [UNLEARN_STEPS]}; N=${2:-10}
FT_STEPS=${3:-800}; UN_STEPS=${4:-20}
HERE=$(cd "$(dirname "$0")/.." && pwd)
MUSE=${UNLEARNKIT_MUSE_DIR:-$HERE/../shared/data/muse}/news
PY=${PYTHON:-python}; UK="$PY -m unlearnkit.cli"
mkdir -p "$OUT"
"$PY" "$HERE/scripts/muse_e2e_data.py" "$MUSE" "$OUT" "$N"
T0=$(date +%s)
COMMON="model=tiny template=plain max_length=512 batch_size=2 lr=2e-3 precision=fp32 recall_max=-1 tiny_hidden=128 tiny_layers=2 warmup=0.05 max_steps=$FT_STEPS save_steps=$FT_STEPS"
$UK finetune $COMMON data="docs:$OUT/all.jsonl" run="$OUT/target"
$UK finetune $COMMON data="docs:$OUT/retain.jsonl" run="$OUT/retain" tiny_tokenizer="$OUT/target/tokenizer"
T1=$(date +%s)
for m in npo grad_diff; do
  $UK unlearn model="$OUT/target/model" method=$m forget="docs:$OUT/forget.jsonl" retain="docs:$OUT/retain.jsonl" \
    template=plain max_length=512 forget_batch_size=2 grad_accum=1 lr=5e-4 max_steps=$UN_STEPS save_steps=$UN_STEPS \
    warmup=0 precision=fp32 run="$OUT/$m"
done
T2=$(date +%s)
$UK evaluate run="$OUT/retain" suite=muse corpus=news limit=$N save_oracle_stats=true
for r in target npo grad_diff; do $UK evaluate run="$OUT/$r" suite=muse corpus=news limit=$N oracle="$OUT/retain"; done
T3=$(date +%s)
$UK report "$OUT/target" "$OUT/retain" "$OUT/npo" "$OUT/grad_diff" out="$OUT/report" title="MUSE-News, tiny model, CPU"
echo "[e2e] fine-tune $((T1-T0)) s, unlearn $((T2-T1)) s, evaluate $((T3-T2)) s"
