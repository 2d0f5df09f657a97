#!/usr/bin/env bash
# The check to run when an NVIDIA GPU is at hand (docs/benchmarks.md): builds the `cuda` feature,
# pre-trains scripts/gpu-check.yaml (the quickstart's pre-training, 28 steps) once on the CPU and
# once on cuda:0 into separate caches, compares the two loss curves within a stated tolerance, and
# prints the GPU's step time and the achieved fraction of its peak f32 throughput.
#
#   scripts/gpu-check.sh                 # on the GPU machine (about 5 minutes on 16 cores)
#   scripts/gpu-check.sh --no-build      # use an existing binary ($UMDFLOW_BIN, else target/release/umdflow)
#   scripts/gpu-check.sh --device cpu    # no GPU: two CPU runs, which must agree bit for bit
#
# Env: CUDA_DIR (default target/cuda-toolkit), GPU_PEAK_TFLOPS (for a GPU not in the table of
# scripts/gpu_check.py), GPU_CHECK_WORK (scratch folder, default a new temp folder).
# Exit 0 when every step passed; otherwise 1 and one line `gpu-check: FAILED: <reason>`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEVICE=cuda:0
BUILD=1
usage() { echo "usage: $0 [--no-build] [--device cpu]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --device) [ "${2:-}" = cpu ] || usage; DEVICE=cpu; shift ;;
    *) usage ;;
  esac
  shift
done
WORK=${GPU_CHECK_WORK:-$(mktemp -d -t gpu-check.XXXXXX)}
mkdir -p "$WORK"
CUDA_DIR=$(realpath -m "${CUDA_DIR:-target/cuda-toolkit}")
HELPER=(python3 "$ROOT/scripts/gpu_check.py")

fail() { echo "gpu-check: FAILED: $*" >&2; exit 1; }
say() { echo "gpu-check: $*"; }

# 1. The GPU (skipped in --device cpu).
if [ "$DEVICE" != cpu ]; then
  command -v nvidia-smi >/dev/null || fail "no NVIDIA GPU found (nvidia-smi is not installed)"
  GPU=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>"$WORK/nvidia-smi.err" | head -1)
  [ -n "$GPU" ] || fail "no NVIDIA GPU found (nvidia-smi lists none: $(head -1 "$WORK/nvidia-smi.err"))"
  GPU_NAME=${GPU%%,*}
  CAP=$(echo "${GPU#*,}" | tr -d ' .')
  PEAK=${GPU_PEAK_TFLOPS:-$("${HELPER[@]}" peak "$GPU_NAME")} || fail "unknown peak for $GPU_NAME; set GPU_PEAK_TFLOPS"
  say "GPU: $GPU_NAME (compute capability $CAP), assumed peak f32 $PEAK TFLOP/s"
fi

# 2. The build.
if [ "$BUILD" = 1 ]; then
  if [ "$DEVICE" = cpu ]; then
    cargo build --release -p umdflow >"$WORK/build.log" 2>&1 \
      || fail "cargo build failed (log: $WORK/build.log)"
  else
    CUDA_COMPUTE_CAP=$CAP scripts/build-cuda.sh "$CUDA_DIR" >"$WORK/build.log" 2>&1 \
      || fail "the cuda build failed (scripts/build-cuda.sh; log: $WORK/build.log)"
  fi
  say "built target/release/umdflow (log: $WORK/build.log)"
fi
BIN=$(realpath -m "${UMDFLOW_BIN:-${CARGO_TARGET_DIR:-target}/release/umdflow}")
[ -x "$BIN" ] || fail "no umdflow binary at $BIN (build it, or set UMDFLOW_BIN)"
export LD_LIBRARY_PATH="$CUDA_DIR/site/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 3. Two pre-trainings of the same pipeline and seeds, into separate caches.
run_on() { # NAME DEVICE: leaves $WORK/NAME/loss_curve.csv, metrics.json, pretrain.log
  local name=$1 device=$2 out="$WORK/$1"
  mkdir -p "$out"
  "$BIN" run scripts/gpu-check.yaml --cache "$WORK/cache-$name" --no-lock-file -q \
    --set "pretrain.params.device=$device" --set "curve.params.dest=$out" \
    >"$out/run.log" 2>&1 || fail "the $name run (device $device) failed (log: $out/run.log)"
  "$BIN" log scripts/gpu-check.yaml pretrain --cache "$WORK/cache-$name" >"$out/pretrain.log" 2>&1 \
    || fail "cannot read the $name run's pretrain log (umdflow log; see $out/pretrain.log)"
  read -r STEPS SECONDS_TOTAL < <("${HELPER[@]}" steptime "$out/pretrain.log") \
    || fail "no step time in the $name run's pretrain log ($out/pretrain.log)"
  say "$name ($device): $STEPS steps in $SECONDS_TOTAL s"
}
run_on cpu cpu
if [ "$DEVICE" = cpu ]; then
  run_on cpu-again cpu
  OTHER=cpu-again
  EXACT=(--exact)
else
  run_on gpu cuda:0
  grep -q '"device": "cuda' "$WORK/gpu/metrics.json" \
    || fail "the gpu run did not train on a CUDA device ($WORK/gpu/metrics.json)"
  OTHER=gpu
  EXACT=()
fi

# 4. The loss curves.
VERDICT=$("${HELPER[@]}" compare "$WORK/cpu/loss_curve.csv" "$WORK/$OTHER/loss_curve.csv" "${EXACT[@]}" 2>&1) \
  || fail "$VERDICT"
say "$VERDICT"

# 5. Step time and the fraction of the GPU's peak (FLOPs per step from the train_step bench,
#    which counts the matrix products of this configuration from the model's shapes).
if [ "$DEVICE" != cpu ]; then
  (export CUDA_HOME="$CUDA_DIR/site/nvidia/cu13" PATH="$CUDA_DIR/site/nvidia/cu13/bin:$PATH" \
     CUDA_COMPUTE_CAP=$CAP UMD_BENCH_PRESETS=tiny UMD_BENCH_STEPS=1
   cargo bench -p umdflow-model --features cuda --bench train_step) >"$WORK/bench.log" 2>&1 \
    || fail "the train_step bench (FLOPs per step) failed (log: $WORK/bench.log)"
  GFLOP=$("${HELPER[@]}" bench-gflop "$WORK/bench.log") || fail "no GFLOP/step in $WORK/bench.log"
  python3 - "$STEPS" "$SECONDS_TOTAL" "$GFLOP" "$PEAK" <<'PY'
import sys
steps, seconds, gflop, peak = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
step = seconds / steps
achieved = gflop / step / 1e3
print(f"gpu-check: GPU pre-training step {step * 1e3:.1f} ms (mean of {steps}, first step's set-up included); "
      f"{gflop:.2f} GFLOP/step -> {achieved:.3f} TFLOP/s = {100 * achieved / peak:.2f} % of the {peak} TFLOP/s f32 peak")
PY
fi
say "passed (work folder: $WORK)"
