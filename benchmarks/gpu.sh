#!/usr/bin/env bash
# GPU check in one go (about 10 minutes on one H100/H200): the CUDA tests, then benchmarks
# (1) SSL on the phantom, (2) step cost and (3) inference, all on CUDA with AMP (bf16).
# Usage: bash benchmarks/gpu.sh [OUT_DIR]   (results: OUT_DIR/*.json and a log)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_results}}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/gpu.log"; }

log "device: $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")')"
log "CUDA tests"
$PY -m pytest -q -m gpu -p no:xvfb tests 2>&1 | tail -n 15 | tee -a "$OUT/gpu.log"

log "benchmark 2: step cost (64x128x128 patches, full ViT-S/16 teacher)"
timeout 180 $PY -m dinomix_core.cli bench step-cost --device cuda --patch 64,128,128 --width 16 --depth 4 \
  --size medium --steps 20 --warmup 5 --out "$OUT/step_cost" --json "$OUT/step_cost.json" 2>&1 | tail -n 12 | tee -a "$OUT/gpu.log"

log "benchmark 3: inference vs MONAI"
timeout 180 $PY -m benchmarks.inference --device cuda --out "$OUT/inference.json" 2>&1 | tail -n 12 | tee -a "$OUT/gpu.log"

log "benchmark 1: SSL on the phantom (5 methods x 3 seeds, GPU budget)"
timeout 300 $PY -m dinomix_core.cli bench ssl --device cuda --steps 400 --patch 32,96,96 --width 16 --depth 4 \
  --out "$OUT/ssl" --json "$OUT/ssl_phantom.json" 2>&1 | tail -n 12 | tee -a "$OUT/gpu.log"
log "done"
