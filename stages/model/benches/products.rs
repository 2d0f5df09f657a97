//! Speed of the matrix products of a `small` MR-Pretrain step, one at a time, through the same
//! call the linear kernel makes (`kernels::matrix::product`, the `gemm` crate): for each linear
//! shape of the step, the forward product `x · Wᵀ`, the input gradient `g · W` and the weight
//! gradient `gᵀ · x`, with the operands laid out as the step lays them out (`gᵀ` a view, no
//! copy). `bench/products_vs_pytorch.sh` runs it alternately with PyTorch's `torch.mm` on the
//! same shapes and layouts, to say which products a gap between the two steps comes from.
//!
//! Run: `cargo bench -p umdflow-model --bench products` (env `UMD_BENCH_THREADS`, default 1;
//! `UMD_BENCH_REPEATS`, default 15 timed batches of 4 products per shape and role). Prints one
//! line per shape and role: `product <role> <rows>x<in>x<out> <GFLOP/s>` (the median batch).

use std::time::Instant;

use umdflow_model::kernels::matrix::{Matrix, product};

/// (rows, in, out) of the step's large linear layers on the `small` preset with the `ci` data
/// (the `train_step` bench's): 2048 text rows (32 captions of 64 tokens), 544 image rows (32
/// images of 16 patches and a class token), width 256, MLP 1024.
const SHAPES: [(usize, usize, usize); 6] = [
    (2048, 256, 256),
    (2048, 256, 1024),
    (2048, 1024, 256),
    (544, 256, 256),
    (544, 256, 1024),
    (544, 1024, 256),
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic fill in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A row-major `rows × cols` view of `data`.
fn row_major(data: &[f32], rows: usize, cols: usize) -> Matrix<'_, f32> {
    Matrix::block(data, 0, (rows, cols), cols)
}

/// The median seconds of one product over `repeats` timed batches of 4.
fn time(repeats: usize, mut run: impl FnMut() -> Vec<f32>) -> f64 {
    std::hint::black_box(run());
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..4 {
                std::hint::black_box(run());
            }
            start.elapsed().as_secs_f64() / 4.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Half a second of products before the first timing, so that neither side's first shape pays
/// for page faults, lazy initialisation or a clock ramping up.
fn warm_up() {
    let (x, w) = (values(2048 * 256, 4), values(256 * 256, 5));
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 0.5 {
        std::hint::black_box(product(
            row_major(&x, 2048, 256),
            row_major(&w, 256, 256).t(),
            None,
        ));
    }
}

fn main() {
    let threads = env("UMD_BENCH_THREADS", 1).max(1);
    let repeats = env("UMD_BENCH_REPEATS", 15).max(1);
    // The pool a training stage runs in (`train::pretrain`).
    let pool = umdflow_model::worker_pool::stage_pool(threads).expect("a rayon pool");
    println!("threads: {threads}, repeats: {repeats}");
    pool.install(|| {
        warm_up();
        for (rows, input, output) in SHAPES {
            let x = values(rows * input, 1);
            let w = values(output * input, 2);
            let g = values(rows * output, 3);
            let (xm, wm, gm) = (
                row_major(&x, rows, input),
                row_major(&w, output, input),
                row_major(&g, rows, output),
            );
            let flops = 2.0 * (rows * input * output) as f64;
            let roles: [(&str, Matrix<f32>, Matrix<f32>); 3] = [
                ("forward", xm, wm.t()),
                ("input-gradient", gm, wm),
                ("weight-gradient", gm.t(), xm),
            ];
            for (role, lhs, rhs) in roles {
                let seconds = time(repeats, || product(lhs, rhs, None));
                println!(
                    "product {role} {rows}x{input}x{output} {:.1}",
                    flops / seconds / 1e9
                );
            }
        }
    });
}
