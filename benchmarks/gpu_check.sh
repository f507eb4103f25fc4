#!/usr/bin/env bash
# vitzoo's GPU check: how fast the zoo runs on one GPU, in one go, under 8 minutes on an H100/H200.
#
#   bash benchmarks/gpu_check.sh                  # results in ./gpu_check/, or in $OUT when it is set
#
# What it runs, in this order (each phase has a time limit; a phase that cannot start inside the
# overall budget is skipped and says so, so the figures measured so far always come back):
#   1. `vitzoo bench` for deit-small and vit-base in bf16, eager: ZooModel.predict, the raw
#      transformers and timm models, transformers.pipeline, the training step, the data pipeline,
#      MFU against the bf16 matrix-multiply peak measured in the same run      -> bench_eager.json
#   2. the same with --compile for deit-small (the MFU target: >= 30% for training)
#                                                                              -> bench_compile_deit-small.json
#   3. the fine-tuning recipe for a few hundred steps on synthetic data (bf16, default data
#      workers), as `vitzoo finetune` runs it                                 -> finetune_results.json, finetune_metrics.jsonl
#   4. `vitzoo bench --compile` for vit-base                                   -> bench_compile_vit-base.json
#   5. the fine-tuning recipe again with --compile                            -> finetune_compile_results.json
# Everything printed goes to gpu_check.log; the end of it is a summary with the tables.
#
# Packages: on a machine that has torch but lacks vitzoo (or has other versions of its
# dependencies), put wheels in $WHEELS (default .whl/; benchmarks/gpu_wheels.sh downloads them
# and builds vitzoo's own): they are installed into a private folder put first on PYTHONPATH,
# so the machine's own torch and CUDA are used as they are. Without that folder, vitzoo must be
# importable already (pip install -e .).
#
# Knobs (environment): GPU_CHECK_BUDGET (seconds for all phases, default 420), GPU_CHECK_MODELS
# (default deit-small,vit-base), GPU_CHECK_BATCH (default 256), GPU_CHECK_IMAGE_SIZE (default 224),
# GPU_CHECK_STEPS (fine-tuning steps, default 300), GPU_CHECK_MIN_SECONDS (per measurement, default 1),
# GPU_CHECK_PHASES (comma-separated phases to run, e.g. "finetune": all of them by default).
set -u
SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"

OUT_DIR="${OUT:-$PWD/gpu_check}"
WHEELS="${WHEELS:-.whl}"
BUDGET="${GPU_CHECK_BUDGET:-420}"
MODELS="${GPU_CHECK_MODELS:-deit-small,vit-base}"
BATCH="${GPU_CHECK_BATCH:-256}"
SIZE="${GPU_CHECK_IMAGE_SIZE:-224}"
STEPS="${GPU_CHECK_STEPS:-300}"
MIN_SECONDS="${GPU_CHECK_MIN_SECONDS:-1}"
FIRST_MODEL="${MODELS%%,*}"
OTHER_MODELS="${MODELS#"$FIRST_MODEL"}"
OTHER_MODELS="${OTHER_MODELS#,}"
WORK="$(mktemp -d)"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
START=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

log() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# phase NAME LIMIT COMMAND...: run COMMAND for at most LIMIT seconds (less if the budget is nearly spent)
phase() {
    local name=$1 limit=$2 left rc
    shift 2
    if [ -n "${GPU_CHECK_PHASES:-}" ] && [[ ",$GPU_CHECK_PHASES," != *",${name%%_*},"* && ",$GPU_CHECK_PHASES," != *",$name,"* ]]; then
        return 0
    fi
    left=$((BUDGET - ($(date +%s) - START)))
    if ((left < 45)); then
        log "skip $name: ${left}s left of the ${BUDGET}s budget"
        return 0
    fi
    ((limit > left)) && limit=$left
    log "start $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    log "end $name: exit status $rc$( ((rc == 124 || rc == 137)) && echo ' (time limit)')"
}

if [ -d "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    log "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $WORK/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl >>"$LOG" 2>&1 || {
        log "wheel install failed"
        exit 1
    }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# run from a scratch folder: from the checkout, `python -m` would import its vitzoo/ folder instead of the
# installed package that this check measures
cd "$WORK" || exit 1
VITZOO=(python3 -m vitzoo.cli)

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    python3 - <<'EOF'
import platform, torch, transformers, timm, accelerate, vitzoo
print("vitzoo from", vitzoo.__file__)
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}, timm {timm.__version__}, accelerate {accelerate.__version__}, "
      f"vitzoo {vitzoo.__version__}")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU: the check measures the CPU")
EOF
} 2>&1 | tee -a "$LOG"

BENCH=(bench --dtype bf16 --batch-sizes "$BATCH" --image-sizes "$SIZE" --min-seconds "$MIN_SECONDS")
phase bench_eager 150 "${VITZOO[@]}" "${BENCH[@]}" --models "$MODELS" --output "$OUT_DIR/bench_eager.json"
phase "bench_compile_$FIRST_MODEL" 170 "${VITZOO[@]}" "${BENCH[@]}" --models "$FIRST_MODEL" --compile --no-pipeline --no-data \
    --output "$OUT_DIR/bench_compile_$FIRST_MODEL.json"

# a synthetic dataset just long enough for STEPS optimizer steps, plus a small eval split
TRAIN_IMAGES=$((STEPS * BATCH))
FINETUNE=(finetune --model "$FIRST_MODEL" --scratch --dataset "synthetic:$((TRAIN_IMAGES * 21 / 20 + 1024)):256" --val-fraction 0.05
    --max-train-samples "$TRAIN_IMAGES" --max-eval-samples 1024 --image-size "$SIZE" --epochs 1 --batch-size "$BATCH"
    --learning-rate 5e-4 --log-steps 25 --keep-checkpoints 1)
phase finetune 120 "${VITZOO[@]}" "${FINETUNE[@]}" --output-dir "$WORK/finetune"
cp "$WORK/finetune/results.json" "$OUT_DIR/finetune_results.json" 2>/dev/null
cp "$WORK/finetune/metrics.jsonl" "$OUT_DIR/finetune_metrics.jsonl" 2>/dev/null

for model in ${OTHER_MODELS//,/ }; do
    phase "bench_compile_$model" 170 "${VITZOO[@]}" "${BENCH[@]}" --models "$model" --compile --no-pipeline --no-data \
        --output "$OUT_DIR/bench_compile_$model.json"
done
phase finetune_compile 150 "${VITZOO[@]}" "${FINETUNE[@]}" --compile --output-dir "$WORK/finetune_compile"
cp "$WORK/finetune_compile/results.json" "$OUT_DIR/finetune_compile_results.json" 2>/dev/null

log "summary"
python3 "$SCRIPT_DIR/gpu_summary.py" "$OUT_DIR" 2>&1 | tee "$OUT_DIR/summary.md" | tee -a "$LOG"
log "done in $(($(date +%s) - START))s; files in $OUT_DIR"
rm -rf "$WORK"
