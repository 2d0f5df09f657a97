"""PyTorch's side of bench/products_vs_pytorch.sh: the `products` bench's shapes and roles with
torch.mm (MKL on x86), operands laid out as PyTorch's own linear backward lays them out.

Prints one line per shape and role, `product <role> <rows>x<in>x<out> <GFLOP/s>` (the median of
--repeats timed batches of 4 products), like `cargo bench -p umdflow-model --bench products`.
"""

import argparse
import time

import torch

# (rows, in, out): keep in step with SHAPES in stages/model/benches/products.rs.
SHAPES = [
    (2048, 256, 256),
    (2048, 256, 1024),
    (2048, 1024, 256),
    (544, 256, 256),
    (544, 256, 1024),
    (544, 1024, 256),
]


def median_seconds(repeats, run):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            run()
        times.append((time.perf_counter() - start) / 4)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads: {args.threads}, repeats: {args.repeats}, torch {torch.__version__}")
    with torch.no_grad():
        # Half a second of products first, as the Rust side does (`warm_up`).
        x, w = torch.rand(2048, 256) - 0.5, torch.rand(256, 256) - 0.5
        start = time.perf_counter()
        while time.perf_counter() - start < 0.5:
            torch.mm(x, w.t())
        for rows, inp, out in SHAPES:
            x = torch.rand(rows, inp) - 0.5
            w = torch.rand(out, inp) - 0.5
            g = torch.rand(rows, out) - 0.5
            flops = 2.0 * rows * inp * out
            roles = [
                ("forward", lambda: torch.mm(x, w.t())),
                ("input-gradient", lambda: torch.mm(g, w)),
                ("weight-gradient", lambda: torch.mm(g.t(), x)),
            ]
            for role, run in roles:
                seconds = median_seconds(args.repeats, run)
                print(f"product {role} {rows}x{inp}x{out} {flops / seconds / 1e9:.1f}")


if __name__ == "__main__":
    main()
