"""Splits the CPU samples of a training-step recording between matrix-product code and the rest.

    perf script -i REC.data -F time,ip,sym | python3 bench/perf_products_share.py STEPS

REC.data: a `perf record -F 499 -g` of one bench process (ours: the `train_step` bench; PyTorch:
bench/train_step_vs_pytorch.py), STEPS: how many steps it ran, warm-up included. A sample counts
as a product's if its leaf symbol is gemm's (`gemm`) or MKL's (`mkl_blas`). The window runs from
the first product sample to the last, which leaves out the set-up before the steps; the per-step
figures are the window's samples over STEPS at 499 samples a second.
"""

import sys

HZ = 499


def samples(lines):
    """(time, leaf symbol) of each sample in `perf script -F time,ip,sym` output."""
    time, leaf = None, None
    for line in lines:
        if not line.strip():
            continue
        if not line.startswith("\t") and line.rstrip().endswith(":"):
            if time is not None:
                yield time, leaf or ""
            time, leaf = float(line.split(":")[0]), None
        elif leaf is None:
            parts = line.strip().split(None, 1)
            leaf = parts[1] if len(parts) > 1 else ""
    if time is not None:
        yield time, leaf or ""


def is_product(symbol):
    return "gemm" in symbol or "mkl_blas" in symbol


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    steps = int(sys.argv[1])
    all_samples = list(samples(sys.stdin))
    product_times = [t for t, s in all_samples if is_product(s)]
    if not product_times:
        sys.exit("no gemm or MKL samples in the recording")
    first, last = product_times[0], product_times[-1]
    window = [s for t, s in all_samples if first <= t <= last]
    products = sum(1 for s in window if is_product(s))
    ms = 1000 / HZ / steps
    print(f"window {last - first:.1f} s, {len(window)} samples: products {products} "
          f"({products * ms:.0f} ms/step), the rest {len(window) - products} "
          f"({(len(window) - products) * ms:.0f} ms/step)")


if __name__ == "__main__":
    main()
