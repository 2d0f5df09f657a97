//! Training-step speed of MR-Pretrain on SynthRad `ci` data (32×32 grey images, 64 tokens,
//! patch 8), for the `tiny` and `small` presets, against the machine's sgemm ceiling measured
//! with candle in the same process.
//!
//! Run: `cargo bench -p umdflow-model` (env `UMD_BENCH_THREADS`, default 2; `UMD_BENCH_STEPS`,
//! default 12 measured steps after 2 warm-up steps; `UMD_BENCH_PRESETS`, default `tiny,small`,
//! empty for the ceiling alone; `UMD_BENCH_CEILING=0` skips the ceiling).
//!
//! Like the `umdflow` binary, the benchmark sets `CANDLE_NUM_THREADS=1` (candle's spinning
//! element-wise pool off) and `RAYON_NUM_THREADS` to the thread count (the pieces candle cuts a
//! matrix product into), each unless already set. `bench/train_step_vs_pytorch.sh` runs it side
//! by side with a PyTorch mirror.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use umdflow_model::config::ModelConfig;
use umdflow_model::model::layers::MIN_WIDTH_TO_SKIP_QKV;
use umdflow_model::objective::ObjectiveConfig;
use umdflow_model::optim::OptimConfig;
use umdflow_model::train::{StepRecord, TrainObserver, TrainSettings, model_config_for, pretrain};

/// Records the wall time at the end of every step.
struct Clock(Mutex<Vec<Instant>>);

impl TrainObserver for Clock {
    fn on_start(&self, _total: u64) {
        self.0.lock().unwrap().push(Instant::now());
    }
    fn on_step(&self, _record: &StepRecord) {
        self.0.lock().unwrap().push(Instant::now());
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Multiply-add FLOPs (2 per MAC) of the matrix products of one forward pass over a
/// [rows, input] → [rows, output] linear layer.
fn linear(rows: usize, input: usize, output: usize) -> f64 {
    2.0 * rows as f64 * input as f64 * output as f64
}

/// The rows of `b` sequences of `s` tokens that an attention of width `w` projects: the real
/// ones (share `real`) from `layers::MIN_WIDTH_TO_SKIP_QKV` on, else all. (The output projection
/// always runs on the real rows.)
fn qkv_rows(b: usize, s: usize, w: usize, real: f64) -> usize {
    if w >= MIN_WIDTH_TO_SKIP_QKV {
        real_rows(b, s, real)
    } else {
        b * s
    }
}

fn real_rows(b: usize, s: usize, real: f64) -> usize {
    ((b * s) as f64 * real).round() as usize
}

/// One transformer block (self-attention + MLP) on `b` sequences of `s` tokens, of which the
/// share `real` are not padding: the row-wise work skips the others (`layers::RealRows`).
fn block(b: usize, s: usize, w: usize, mlp: usize, real: f64) -> f64 {
    let real_rows = real_rows(b, s, real);
    3.0 * linear(qkv_rows(b, s, w, real), w, w)
        + linear(real_rows, w, w)
        + 2.0 * 2.0 * (b * s * s * w) as f64
        + linear(real_rows, w, mlp)
        + linear(real_rows, mlp, w)
}

/// One co-attention layer: own stream of `s` tokens (share `real` not padding) attending to `o`
/// other tokens (share `other_real`).
fn co_layer(b: usize, s: usize, o: usize, w: usize, mlp: usize, real: f64, other_real: f64) -> f64 {
    block(b, s, w, mlp, real)
        + linear(qkv_rows(b, s, w, real), w, w)
        + linear(real_rows(b, s, real), w, w)
        + 2.0 * linear(qkv_rows(b, o, w, other_real), w, w)
        + 4.0 * (b * s * o * w) as f64
}

/// Forward matrix-product FLOPs of one MR-Pretrain step with every term on (EMA targets),
/// counted pass by pass as `objective::mr_losses` runs them; training ≈ 3× forward for the
/// online passes (backward computes two products per forward product), 1× for the EMA pass.
/// `real`: the share of text positions that are not padding.
fn step_flops(c: &ModelConfig, b: usize, keep: usize, masked_tokens: usize, real: f64) -> f64 {
    let (l, t) = (c.num_patches() + 1, c.max_len);
    let vision = |s: usize| {
        linear(b * (s - 1), c.patch_dim(), c.vision_width)
            + c.vision_layers as f64 * block(b, s, c.vision_width, c.vision_mlp, 1.0)
    };
    let text = c.text_layers as f64 * block(b, t, c.text_width, c.text_mlp, real);
    let fusion = |layers: usize, s_img: usize| {
        linear(b * t, c.text_width, c.fusion_width)
            + linear(b * s_img, c.vision_width, c.fusion_width)
            + layers as f64
                * (co_layer(b, t, s_img, c.fusion_width, c.fusion_mlp, real, 1.0)
                    + co_layer(b, s_img, t, c.fusion_width, c.fusion_mlp, 1.0, real))
    };
    let decoder = linear(b * (keep + 1), c.fusion_width, c.decoder_width)
        + c.decoder_layers as f64 * block(b, l, c.decoder_width, c.decoder_mlp, 1.0)
        + linear(b * (l - 1), c.decoder_width, c.patch_dim() + c.fusion_width);
    let mlm = linear(masked_tokens, c.fusion_width, c.fusion_width)
        + linear(masked_tokens, c.fusion_width, c.vocab_size);
    let feamlm = linear(b * t, c.fusion_width, c.fusion_width) * 2.0;
    let online = vision(l)
        + text
        + vision(keep + 1)
        + fusion(c.mim_layer, keep + 1)
        + decoder
        + text
        + fusion(c.fusion_layers, l)
        + mlm
        + feamlm
        + fusion(c.fusion_layers, l)
        + linear(b, 2 * c.fusion_width, 2);
    let ema = vision(l)
        + text
        + linear(b * l, c.vision_width, c.fusion_width)
        + linear(b * t, c.text_width, c.fusion_width);
    3.0 * online + ema
}

/// Best-of-5 GFLOP/s of an n×n×n f32 matrix product in candle on the current thread pool.
fn sgemm_ceiling(n: usize) -> f64 {
    let a = Tensor::ones((n, n), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::ones((n, n), DType::F32, &Device::Cpu).unwrap();
    let _ = a.matmul(&b).unwrap();
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let c = a.matmul(&b).unwrap();
            let seconds = start.elapsed().as_secs_f64();
            drop(c);
            2.0 * (n * n * n) as f64 / seconds / 1e9
        })
        .fold(0.0, f64::max)
}

fn main() {
    let threads = env("UMD_BENCH_THREADS", 2);
    for (name, value) in [("CANDLE_NUM_THREADS", 1), ("RAYON_NUM_THREADS", threads)] {
        if std::env::var_os(name).is_none() {
            // SAFETY: before any candle call or any other thread of this process.
            unsafe { std::env::set_var(name, value.to_string()) };
        }
    }
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    println!(
        "threads: {threads} (rayon pool), CANDLE_NUM_THREADS={}, RAYON_NUM_THREADS={}",
        var("CANDLE_NUM_THREADS"),
        var("RAYON_NUM_THREADS")
    );
    if let Ok(t) = std::env::var("UMD_GEMM_THRESHOLD") {
        gemm::set_threading_threshold(t.parse().unwrap());
    }
    println!(
        "gemm threading threshold: {}",
        gemm::get_threading_threshold()
    );
    let steps = env("UMD_BENCH_STEPS", 12);
    let dataset = common::ci_dataset();
    let plan = common::plan_for(&dataset, 1, 0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let ceiling = if env("UMD_BENCH_CEILING", 1) == 0 {
        f64::NAN
    } else {
        pool.install(|| sgemm_ceiling(2048))
    };
    println!("machine: sgemm 2048³ in candle, {threads} threads: {ceiling:.1} GFLOP/s");
    // The share of text positions that are real tokens, over the whole dataset.
    let mask = &dataset.attention_mask;
    let real = mask.iter().filter(|&&m| m != 0).count() as f64 / mask.len() as f64;
    println!(
        "text: {:.1} % of the positions are real tokens",
        100.0 * real
    );
    println!(
        "| preset | batch | ms/step (median) | samples/s | GFLOP/step | GFLOP/s | % of sgemm |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let presets = std::env::var("UMD_BENCH_PRESETS").unwrap_or_else(|_| "tiny,small".into());
    for preset in presets.split(',').filter(|p| !p.is_empty()) {
        let batch = 32usize;
        let settings = TrainSettings {
            preset: preset.into(),
            batch_size: batch,
            seed: 0,
            objective: ObjectiveConfig::default(),
            optim: OptimConfig::default(),
            max_steps: Some(steps as u64 + 2),
            vision_positions: Default::default(),
            weight_init: Default::default(),
        };
        let clock = Clock(Mutex::new(Vec::new()));
        pretrain(&dataset, &plan, &settings, &Device::Cpu, threads, &clock).unwrap();
        let times = clock.0.lock().unwrap();
        let mut per_step: Vec<f64> = times
            .windows(2)
            .skip(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        per_step.sort_by(f64::total_cmp);
        let median = per_step[per_step.len() / 2];
        let config = model_config_for(&dataset, &plan, preset).unwrap();
        let masked = (0.15 * real * (batch * config.max_len) as f64) as usize;
        let gflop = step_flops(&config, batch, plan.meta.keep_patches, masked, real) / 1e9;
        println!(
            "| {preset} | {batch} | {:.1} | {:.1} | {gflop:.3} | {:.1} | {:.1} % |",
            median * 1e3,
            batch as f64 / median,
            gflop / median,
            100.0 * gflop / median / ceiling
        );
    }
}
