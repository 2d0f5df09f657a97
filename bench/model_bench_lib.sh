# Shared by bench/train_step_vs_pytorch.sh and bench/products_vs_pytorch.sh, which source it from
# the repository root: the Python that has torch, and a release build of one umdflow-model bench.

# Sets `python` to $TORCH_PYTHON (default /work/venv-torch/bin/python); exits if it has no torch.
find_torch_python() {
    python="${TORCH_PYTHON:-/work/venv-torch/bin/python}"
    if ! "$python" -c 'import torch' 2>/dev/null; then
        echo "error: $python cannot import torch (set TORCH_PYTHON to a Python with torch)" >&2
        exit 2
    fi
}

# Builds the umdflow-model bench named $1 (`cargo bench --no-run`) and sets `bench` to its
# executable; exits if there is none.
build_model_bench() {
    echo "building: cargo bench -p umdflow-model --bench $1 --no-run" >&2
    bench=$(cargo bench -p umdflow-model --bench "$1" --no-run 2>&1 |
        sed -n "s/.*Executable .*(\(.*$1-[^)]*\)).*/\1/p" | tail -1)
    if [ ! -x "$bench" ]; then
        echo "error: could not build or find the $1 bench executable" >&2
        exit 1
    fi
}
