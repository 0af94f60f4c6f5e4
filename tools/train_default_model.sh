#!/usr/bin/env bash
# Trains the embedded default model (clip/models/default) on the synthetic shapes set.
# CPU only, one torch thread (faster than two on 2 shared cores), torch's fused AdamW
# (--fused-adamw: the dense update of the 49,408 x 64 token embedding dominates the step
# otherwise). Budget: <= 20 minutes wall on 2 shared cores; see MODEL_CARD.md for the measured time.
# The run's own metrics go into OUT_DIR/metrics.json; the model-card metrics come from
# tools/eval_default_model.py.
#
#   tools/train_default_model.sh [OUT_DIR]      (default: runs/default-model)
#   then: cp OUT_DIR/{config.json,model.safetensors,preprocessor_config.json,tokenizer*.json,vocab.json,merges.txt,special_tokens_map.json} clip/models/default/
#         .venv/bin/python tools/eval_default_model.py clip/models/default
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/default-model}"
PYTHON="${PYTHON:-.venv/bin/python}"

"$PYTHON" -m clip train \
  --backend pt --fused-adamw \
  --config shapes \
  --synthetic 200000 --val-fraction 0.01 \
  --batch-size 64 --lr 1e-3 --warmup-steps 100 --steps 5000 \
  --weight-decay 0.1 --grad-clip 1.0 --precision fp32 --seed 0 --threads 1 \
  --save-every 500 --eval-every 1000 --eval-max 1000 --save-dtype float16 \
  --out "$OUT" "${@:2}"
