#!/usr/bin/env bash
# End-to-end MUSE-News run on CPU with SmolLM2-135M-Instruct (the default model), through the `unlearnkit` CLI:
#   1. a target: SmolLM2 fine-tuned through a LoRA adapter (rank 32, every linear layer, merged after) on the
#      shortened forget + retain text; a retain model the same way on the retain text only;
#   2. NPO and GradDiff unlearning of the forget text from the target (all weights, each method's preset);
#   3. `evaluate suite=muse` of the target, the retain model, both unlearned models and the untouched SmolLM2
#      on the same first N rows (PrivLeak against the retain model), then `report`.
# A rerun skips every phase whose output is there. The corpus is the first N rows of each News file
# (scripts/muse_e2e_data.py says what it holds and why).
# Measured on 2 CPU cores (fp32, no avx512_bf16), N=10: README "MUSE" quotes the phase times.
# Usage: scripts/muse_e2e_smollm2.sh OUT_DIR [N=10] [FINETUNE_EPOCHS=10] [UNLEARN_STEPS=32] [UNLEARN_LR=5e-5]
set -euo pipefail
OUT=${1:?usage: muse_e2e_smollm2.sh OUT_DIR [N] [FINETUNE_EPOCHS] [UNLEARN_STEPS] [UNLEARN_LR]}; N=${2:-10}
EPOCHS=${3:-10}; UN_STEPS=${4:-32}; UN_LR=${5:-5e-5}
HERE=$(cd "$(dirname "$0")/.." && pwd)
MUSE=${UNLEARNKIT_MUSE_DIR:-$HERE/../shared/data/muse}/news
PY=${PYTHON:-python}; UK="$PY -m unlearnkit.cli"
"$PY" "$HERE/scripts/muse_e2e_data.py" "$MUSE" "$OUT" "$N"
T0=$(date +%s)
LORA="lora=true lora_r=32 lora_alpha=64 lora_targets=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
COMMON="model=default template=plain max_length=1024 batch_size=2 lr=1e-3 epochs=$EPOCHS warmup=0.05 freeze_embeddings=true recall_max=-1 keep_checkpoints=1 $LORA"
[ -f "$OUT/target/model/config.json" ] || $UK finetune $COMMON data="docs:$OUT/all.jsonl" run="$OUT/target"
[ -f "$OUT/retain/model/config.json" ] || $UK finetune $COMMON data="docs:$OUT/retain.jsonl" run="$OUT/retain"
T1=$(date +%s)
for m in npo grad_diff; do
  [ -f "$OUT/$m/model/config.json" ] || $UK unlearn model="$OUT/target/model" method=$m forget="docs:$OUT/forget.jsonl" \
    retain="docs:$OUT/retain.jsonl" template=plain max_length=512 forget_batch_size=2 retain_batch_size=2 grad_accum=1 \
    lr="$UN_LR" max_steps="$UN_STEPS" save_steps="$UN_STEPS" warmup=0 run="$OUT/$m"
done
T2=$(date +%s)
EVAL="suite=muse corpus=news limit=$N"
done_eval() { [ -f "$OUT/$1/eval/muse.json" ]; }
done_eval retain || $UK evaluate run="$OUT/retain" $EVAL save_oracle_stats=true
for r in target npo grad_diff; do done_eval $r || $UK evaluate run="$OUT/$r" $EVAL oracle="$OUT/retain"; done
done_eval base || $UK evaluate model=default run="$OUT/base" $EVAL oracle="$OUT/retain"   # the untouched SmolLM2
T3=$(date +%s)
$UK report "$OUT/base" "$OUT/target" "$OUT/retain" "$OUT/npo" "$OUT/grad_diff" out="$OUT/report" title="MUSE-News, SmolLM2-135M, CPU"
echo "[e2e] fine-tune $((T1-T0)) s, unlearn $((T2-T1)) s, evaluate $((T3-T2)) s"
