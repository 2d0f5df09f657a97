#!/usr/bin/env python3
"""Helpers of scripts/gpu-check.sh (Python 3 standard library only).

  gpu_check.py compare CPU.csv GPU.csv [--exact]   compare two pre-training loss curves
  gpu_check.py peak "NVIDIA H200"                   assumed peak f32 TFLOP/s of a GPU name
  gpu_check.py bench-gflop BENCH_OUTPUT            GFLOP/step of the `tiny` row of the train_step bench
  gpu_check.py steptime LOG                        "STEPS SECONDS" from a pretrain log

Each prints one line; on failure it prints the reason on stderr and exits 1.
"""
import csv
import re
import sys

# Loss columns of `loss_curve.csv` that are compared (step, epoch and lr must match exactly).
LOSS_COLUMNS = ["total", "mim", "mlm", "itm", "feamim", "feamlm"]
# A CPU and a GPU run of the same seeds reduce in a different order (blocked gemm vs cuBLAS,
# tree reductions in the softmax and norms), so f32 sums differ in the last bits (~1e-7 relative)
# and AdamW amplifies that over the steps. Over the check's 28 steps a correct GPU path stays
# well inside 1 % of each loss term; a wrong kernel (a bad mask, transposed weights) moves
# the losses by tens of percent within a few steps.
RTOL = 1e-2
ATOL = 1e-3

# Peak dense f32 throughput without tensor cores (FP32 CUDA cores), TFLOP/s, from NVIDIA's
# data sheets. First match of the name wins, so more specific names come first.
PEAK_F32_TFLOPS = [
    ("H200", 67.0),  # SXM
    ("H100 PCIe", 51.0),
    ("H100", 67.0),  # SXM
    ("GH200", 67.0),
    ("A100", 19.5),
    ("L40S", 91.6),
    ("A10G", 31.2),
    ("RTX 4090", 82.6),
    ("V100", 15.7),
]


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def read_curve(path):
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        fail(f"{path}: cannot read the loss curve ({e.strerror})")
    if not rows:
        fail(f"{path}: no steps in the loss curve")
    missing = [c for c in ["step", "epoch", "lr"] + LOSS_COLUMNS if c not in rows[0]]
    if missing:
        fail(f"{path}: missing column(s) {', '.join(missing)} (expected pretrain's loss_curve.csv)")
    return rows


def compare(cpu_path, gpu_path, exact):
    """Returns the line to print when the curves agree; fails with the first difference."""
    cpu, gpu = read_curve(cpu_path), read_curve(gpu_path)
    if len(cpu) != len(gpu):
        fail(f"loss curves differ: {len(cpu)} steps in {cpu_path}, {len(gpu)} in {gpu_path}")
    worst = 0.0
    for line, (a, b) in enumerate(zip(cpu, gpu), start=2):
        for column in ["step", "epoch", "lr"]:
            if a[column] != b[column]:
                fail(f"loss curves differ at line {line}, column {column}: {a[column]} vs {b[column]}")
        for column in LOSS_COLUMNS:
            if exact:
                if a[column] != b[column]:
                    fail(f"loss curves differ at line {line} (step {a['step']}), column {column}: "
                         f"{a[column]} vs {b[column]} (expected bit-identical)")
                continue
            if (a[column] == "") != (b[column] == ""):
                fail(f"loss curves differ at line {line}, column {column}: one run has no value")
            if a[column] == "":
                continue
            x, y = float(a[column]), float(b[column])
            if not (abs(x - y) <= ATOL + RTOL * abs(x)):
                fail(f"loss curves differ at line {line} (step {a['step']}), column {column}: "
                     f"{x} vs {y}, beyond |d| <= {ATOL} + {RTOL} * |cpu|")
            worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
    if exact:
        return f"loss curves bit-identical over {len(cpu)} steps"
    return (f"loss curves agree over {len(cpu)} steps: largest relative difference {worst:.2e} "
            f"(tolerance {ATOL} + {RTOL} * |cpu|)")


def peak(name):
    for pattern, tflops in PEAK_F32_TFLOPS:
        if pattern in name:
            return f"{tflops}"
    fail(f"no known peak f32 throughput for GPU `{name}` (known: "
         f"{', '.join(p for p, _ in PEAK_F32_TFLOPS)}); set GPU_PEAK_TFLOPS")


def bench_gflop(path):
    # The bench's table row: | tiny | 32 | ms/step | samples/s | GFLOP/step | GFLOP/s | % |
    with open(path) as f:
        for row in f:
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if len(cells) == 7 and cells[0] == "tiny":
                return cells[4]
    fail(f"{path}: no `tiny` row in the train_step bench output")


def steptime(path):
    with open(path) as f:
        match = re.search(r"trained (\d+) steps in ([0-9.]+) s", f.read())
    if not match:
        fail(f"{path}: no `trained N steps in S s` line in the pretrain log")
    return f"{match.group(1)} {match.group(2)}"


def main(argv):
    if len(argv) >= 3 and argv[0] == "compare":
        print(compare(argv[1], argv[2], exact="--exact" in argv[3:]))
    elif len(argv) == 2 and argv[0] == "peak":
        print(peak(argv[1]))
    elif len(argv) == 2 and argv[0] == "bench-gflop":
        print(bench_gflop(argv[1]))
    elif len(argv) == 2 and argv[0] == "steptime":
        print(steptime(argv[1]))
    else:
        fail(__doc__.strip())


if __name__ == "__main__":
    main(sys.argv[1:])
