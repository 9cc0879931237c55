#!/usr/bin/env bash
# GPU check in one go, inside a wall-clock budget (default 540 s): the CUDA tests, then
# benchmarks (2) step cost and (3) inference on CUDA with bf16 autocast, then (1) SSL on the
# phantom with every remaining second: 5 methods x 3 seeds trained at once (15 processes on
# one GPU), the step count picked by a probe so that all of them finish inside the budget.
#
#   bash benchmarks/gpu.sh [OUT_DIR]
#   env: PY (python, default .venv/bin/python), BUDGET_S (default 540), WORK (scratch folder),
#        PARTS (default "tests step inference ssl"), SSL_STEPS (fixed steps instead of the budget),
#        SSL_EXTRA (more `dinomix bench ssl` options, e.g. "--methods mean-teacher,dinomix")
#
# OUT_DIR gets gpu.log, gpu_tests.xml, step_cost.json, inference.json, ssl_phantom.json;
# training runs and data go to WORK (default /tmp/dinomix-gpu) so OUT_DIR stays small.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_results}}
WORK=${WORK:-/tmp/dinomix-gpu}
PY=${PY:-.venv/bin/python}
BUDGET_S=${BUDGET_S:-540}
PARTS=${PARTS:-tests step inference ssl}
want() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
START=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
log() { echo "[$(date +%T) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/gpu.log"; }

log "device: $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA", "| torch", torch.__version__)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$OUT/gpu.log"

want tests && log "CUDA tests" && timeout 170 $PY -m pytest -q -m gpu -p no:xvfb -p no:cacheprovider --junitxml "$OUT/gpu_tests.xml" \
  tests/engine/test_trainer_cuda.py tests/engine/test_inferer.py tests/methods/test_methods_losses.py \
  tests/methods/test_methods_fkd.py tests/data/test_data_augment.py tests/data/test_data_token_cache.py 2>&1 \
  | tail -n 25 | tee -a "$OUT/gpu.log"

want step && log "benchmark 2: step cost (64x128x128 patches, medium phantom, full-size ViT-S/16 teacher)" && timeout 110 $PY -m dinomix_core.cli bench step-cost --device cuda --patch 64,128,128 --width 16 --depth 4 \
  --size medium --steps 20 --warmup 5 --out "$WORK/step_cost" --json "$OUT/step_cost.json" 2>&1 | tail -n 12 | tee -a "$OUT/gpu.log"

want inference && log "benchmark 3: inference vs MONAI (200x512x512, unet3d width 16 depth 4)" && timeout 110 $PY -m benchmarks.inference --device cuda --width 16 --depth 4 --breakdown --out "$OUT/inference.json" 2>&1 \
  | tail -n 12 | tee -a "$OUT/gpu.log"

SSL_ARGS=(--device cuda --jobs 15 --patch 32,96,96 --width 16 --depth 4 --out "$WORK/ssl" --json "$OUT/ssl_phantom.json" ${SSL_EXTRA:-})
if want ssl && [ -n "${SSL_STEPS:-}" ]; then
  log "benchmark 1: SSL on the phantom, 5 methods x 3 seeds at once, ${SSL_STEPS} steps"
  timeout $(($(left) - 10)) $PY -m dinomix_core.cli bench ssl "${SSL_ARGS[@]}" --steps "$SSL_STEPS" 2>&1 | tail -n 30 | tee -a "$OUT/gpu.log"
elif want ssl; then
  # What is left, less the probe (~60 s) and a safety margin, is the SSL runs' budget.
  SSL_BUDGET=$(($(left) - 110))
  if [ "$SSL_BUDGET" -lt 60 ]; then
    log "benchmark 1 skipped: only $(left) s left"
  else
    log "benchmark 1: SSL on the phantom, 5 methods x 3 seeds at once, ${SSL_BUDGET} s for the runs"
    timeout $(($(left) - 10)) $PY -m dinomix_core.cli bench ssl "${SSL_ARGS[@]}" --time-budget "$SSL_BUDGET" 2>&1 \
      | tail -n 30 | tee -a "$OUT/gpu.log"
  fi
fi
log "done"
