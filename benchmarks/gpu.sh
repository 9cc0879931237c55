#!/usr/bin/env bash
# GPU check in one go, inside a wall-clock budget (default 540 s): the CUDA tests, benchmark
# (1) SSL on the phantom (5 methods x 3 seeds trained at once, 15 processes on one GPU, the
# step count picked by a probe so every run fits the time given), then (2) step cost with a
# per-operator profile and (3) inference vs MONAI, on CUDA with bf16 autocast.
#
#   bash benchmarks/gpu.sh [OUT_DIR]
#   env: PY          python (default .venv/bin/python)
#        BUDGET_S    wall-clock seconds for everything (default 540)
#        PARTS       which parts, in this order (default "tests ssl step inference")
#        TAIL_S      seconds kept for the parts after ssl (default 110)
#        SSL_STEPS   fixed SSL steps instead of the probe
#        SSL_ARGS    protocol options for `dinomix bench ssl` (default: the CPU table's protocol,
#                    patch 16,64,64, width 8, depth 3, AdamW 3e-3)
#        TESTS       test files to run with -m gpu (default: every file that has CUDA tests)
#        WORK        scratch folder for data and runs (default /tmp/dinomix-gpu)
#        WHEELS      folder of wheels installed (no index, into WORK/site) when PY lacks one of
#                    SimpleITK, timm, monai, platformdirs, tqdm: a bare GPU image without internet
#                    (default .whl; fill it here with `pip download --no-deps ...`)
#
# OUT_DIR gets gpu.log, gpu_tests.xml, ssl_phantom.json, step_cost.json, step_profile.txt,
# inference.json (a handful of files; everything bulky stays in WORK).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu_results}}
WORK=${WORK:-/tmp/dinomix-gpu}
PY=${PY:-.venv/bin/python}
BUDGET_S=${BUDGET_S:-540}
TAIL_S=${TAIL_S:-110}
PARTS=${PARTS:-tests ssl step inference}
SSL_ARGS=${SSL_ARGS:---patch 16,64,64 --width 8 --depth 3}
TESTS=${TESTS:-tests/engine/test_trainer_cuda.py tests/engine/test_inferer.py tests/methods/test_methods_losses.py \
tests/methods/test_methods_fkd.py tests/data/test_data_augment.py tests/data/test_data_token_cache.py}
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
START=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
log() { echo "[$(date +%T) +$(($(date +%s) - START))s] $*" | tee -a "$OUT/gpu.log"; }

WHEELS=${WHEELS:-.whl}
if ! $PY -c "import SimpleITK, timm, monai, platformdirs, tqdm" 2>/dev/null; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    log "installing the carried wheels from $WHEELS into $WORK/site"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      "$WHEELS"/*.whl 2>&1 | tail -n 5 | tee -a "$OUT/gpu.log"
    export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  else
    log "warning: $PY lacks one of SimpleITK, timm, monai, platformdirs, tqdm and $WHEELS has no wheels"
  fi
fi

run_tests() {
  log "CUDA tests"
  timeout 170 $PY -m pytest -q -m gpu -p no:xvfb -p no:cacheprovider --junitxml "$OUT/gpu_tests.xml" $TESTS 2>&1 \
    | tail -n 25 | tee -a "$OUT/gpu.log"
}

run_ssl() {
  local common=(--device cuda --jobs 15 --resume $SSL_ARGS --out "$WORK/ssl" --json "$OUT/ssl_phantom.json")
  if [ -n "${SSL_STEPS:-}" ]; then
    log "benchmark 1: SSL on the phantom, 5 methods x 3 seeds at once, ${SSL_STEPS} steps ($SSL_ARGS)"
    timeout $(($(left) - 10)) $PY -m dinomix_core.cli bench ssl "${common[@]}" --steps "$SSL_STEPS" 2>&1 \
      | tail -n 30 | tee -a "$OUT/gpu.log"
    return
  fi
  # What is left, less the later parts, the probe (~60 s) and a margin, is the runs' budget.
  local budget=$(($(left) - TAIL_S - 90))
  if [ "$budget" -lt 60 ]; then
    log "benchmark 1 skipped: only $(left) s left"
    return
  fi
  log "benchmark 1: SSL on the phantom, 5 methods x 3 seeds at once, ${budget} s for the runs ($SSL_ARGS)"
  timeout $(($(left) - TAIL_S)) $PY -m dinomix_core.cli bench ssl "${common[@]}" --time-budget "$budget" 2>&1 \
    | tail -n 30 | tee -a "$OUT/gpu.log"
}

run_step() {
  log "benchmark 2: step cost (64x128x128 patches, medium phantom, full-size ViT-S/16 teacher)"
  timeout 110 $PY -m dinomix_core.cli bench step-cost --device cuda --patch 64,128,128 --width 16 --depth 4 \
    --size medium --steps 20 --warmup 5 --out "$WORK/step_cost" --json "$OUT/step_cost.json" \
    --profile "$OUT/step_profile.txt" 2>&1 | tail -n 12 | tee -a "$OUT/gpu.log"
}

run_inference() {
  log "benchmark 3: inference vs MONAI (200x512x512, unet3d width 16 depth 4)"
  timeout 110 $PY -m benchmarks.inference --device cuda --width 16 --depth 4 --breakdown --out "$OUT/inference.json" 2>&1 \
    | tail -n 12 | tee -a "$OUT/gpu.log"
}

log "device: $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA", "| torch", torch.__version__)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$OUT/gpu.log"
for part in $PARTS; do
  case "$part" in
    tests) run_tests ;;
    ssl) run_ssl ;;
    step) run_step ;;
    inference) run_inference ;;
    *) log "unknown part '$part'" ;;
  esac
done
log "done"
