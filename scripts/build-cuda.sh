#!/usr/bin/env bash
# Builds umdflow with the `cuda` feature (candle's CUDA path through cudarc) on a machine that has
# no GPU and no system CUDA: CUDA 13.0 build tools come from PyPI wheels into a git-ignored folder,
# plus a link-only stub of the driver library (the real libcuda.so.1 comes with the NVIDIA driver
# on the GPU machine at run time).
#
#   scripts/build-cuda.sh [CUDA_DIR]          # default CUDA_DIR: target/cuda-toolkit
#   CUDA_COMPUTE_CAP=90 scripts/build-cuda.sh  # 90 = H100/H200 (sm_90a); set your GPU's value
#
# Then run the binary on the GPU machine with the CUDA 13 libraries on the loader path:
#   LD_LIBRARY_PATH=$CUDA_DIR/site/nvidia/cu13/lib target/release/umdflow run p.yaml   (device: cuda:0)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(realpath -m "${1:-target/cuda-toolkit}")
mkdir -p "$DIR"
ROOT="$DIR/site/nvidia/cu13"
# 1. Toolkit pieces, pinned to CUDA 13.0 (match the GPU machine's driver).
[ -x "$ROOT/bin/nvcc" ] || python3 -m pip install -q --no-deps --no-compile --target "$DIR/site" \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
# 2. Unversioned names the linker looks for; the wheels ship only the sonames.
for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "$ROOT/lib/lib$l.so"; done
ln -sf libcurand.so.10 "$ROOT/lib/libcurand.so"
# 3. Link-time stub of libcuda.so with every driver symbol cudarc declares.
CUDARC_DIR=$(cargo metadata --format-version 1 --features umdflow/cuda 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "cudarc"))')
mkdir -p "$ROOT/lib/stubs"
sed -nE 's/^pub unsafe fn (cu[A-Za-z0-9_]+)\(.*/void \1(void) {}/p' "$CUDARC_DIR/src/driver/sys/mod.rs" \
  | sort -u > "$DIR/libcuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib/stubs/libcuda.so" "$DIR/libcuda_stub.c"
export CUDA_HOME="$ROOT"
export PATH="$ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
nvcc --version | tail -1
cargo build --release -p umdflow --features cuda
echo "built ${CARGO_TARGET_DIR:-target}/release/umdflow with the cuda feature (compute capability $CUDA_COMPUTE_CAP)"
