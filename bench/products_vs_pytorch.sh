#!/usr/bin/env bash
# The large matrix products of a `small` training step, one at a time: umdflow's (the `products`
# bench of umdflow-model, through the linear kernel's call into the gemm crate) against
# PyTorch's `torch.mm` (bench/products_vs_pytorch.py), alternated in one run so that machine
# noise hits both; run from anywhere in the repository:
#
#   bench/products_vs_pytorch.sh [--rounds 4] [--threads 1] [--repeats 15]
#
# Each round runs both once, the one that goes first alternating by round. Each run prints, per
# shape and role (forward `x·Wᵀ`, input gradient `g·W`, weight gradient `gᵀ·x`), the GFLOP/s of
# the median of --repeats timed batches. Prints, per row, the median over rounds of each and the
# time ratio ours / PyTorch (above 1: ours slower); raw rows go to bench/out/products_vs_pytorch.tsv.
# PyTorch comes from $TORCH_PYTHON (default /work/venv-torch/bin/python), as in
# bench/train_step_vs_pytorch.sh; the benchmark only, never the tests or CI.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=4 threads=1 repeats=15
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --repeats) repeats="$2"; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--threads N] [--repeats N]" >&2; exit 2 ;;
    esac
done
. bench/model_bench_lib.sh
find_torch_python
build_model_bench products

mkdir -p bench/out
tsv=bench/out/products_vs_pytorch.tsv
printf 'round\tframework\trole\tshape\tgflops\n' >"$tsv"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "torch $("$python" -c 'import torch; print(torch.__version__)'), bench $bench, threads $threads"

run() { # framework round
    if [ "$1" = ours ]; then
        UMD_BENCH_THREADS=$threads UMD_BENCH_REPEATS=$repeats "$bench"
    else
        "$python" bench/products_vs_pytorch.py --threads "$threads" --repeats "$repeats"
    fi | awk -v r="$2" -v f="$1" '$1 == "product" { printf "%s\t%s\t%s\t%s\t%s\n", r, f, $2, $3, $4 }' >>"$tsv"
}
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order="ours pytorch"; else order="pytorch ours"; fi
    for f in $order; do
        run "$f" "$r"
        echo "round $r: $f done" >&2
    done
done

python3 - "$tsv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
keys = []
for row in rows:
    key = (row["role"], row["shape"])
    if key not in keys:
        keys.append(key)
# The two sides list their shapes separately (products.rs, products_vs_pytorch.py).
for f in ("ours", "pytorch"):
    missing = [k for k in keys if not any(
        (r["role"], r["shape"]) == k and r["framework"] == f for r in rows)]
    if missing:
        sys.exit(f"error: {f} did not time {missing}; keep SHAPES the same on both sides")
print("| role | rows×in×out | ours GFLOP/s | PyTorch GFLOP/s | time ours / PyTorch |")
print("|---|---|---:|---:|---:|")
seconds = {"ours": 0.0, "pytorch": 0.0}
for role, shape in keys:
    med = {
        f: statistics.median(float(r["gflops"]) for r in rows
                             if r["role"] == role and r["shape"] == shape and r["framework"] == f)
        for f in ("ours", "pytorch")
    }
    rows_, inp, out = (int(v) for v in shape.split("x"))
    for f in seconds:
        seconds[f] += 2 * rows_ * inp * out / (med[f] * 1e9)
    print(f"| {role} | {shape} | {med['ours']:.1f} | {med['pytorch']:.1f} | "
          f"{med['pytorch'] / med['ours']:.2f} |")
print(f"| all (one of each, at the medians) | | | | {seconds['ours'] / seconds['pytorch']:.2f} |")
PY
