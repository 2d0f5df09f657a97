//! Every fused kernel against its composite: forward values, gradients by finite differences,
//! gradients against the composite's autograd, and bit-for-bit determinism across thread counts.

use candle_core::{DType, Device, Tensor, Var};

use super::activation::{Kind, activation};
use super::attention::attention;
use super::layer_norm::layer_norm;
use super::linear::linear;
use super::softmax::scaled_softmax;
use crate::ops::composite;
use crate::rng::SplitMix64;

fn random(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// The largest absolute difference between two tensors of one shape (also used by `model::layers`).
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// The fused ops as functions of (x, p1, p2) so one harness checks them all; the parameters are
/// gamma/beta for the layer norm, the bias for the softmax, unused for the activations.
type Op = fn(&Tensor, &Tensor, &Tensor, bool) -> Tensor;

fn ln(x: &Tensor, g: &Tensor, b: &Tensor, fused: bool) -> Tensor {
    if fused {
        layer_norm(x, g, b, 1e-5).unwrap()
    } else {
        composite::layer_norm(x, Some(g), Some(b), 1e-5).unwrap()
    }
}

/// Attention-shaped: x [B, H, S, S], bias [B, 1, 1, S].
fn attn_softmax(x: &Tensor, bias: &Tensor, _: &Tensor, fused: bool) -> Tensor {
    if fused {
        scaled_softmax(x, 0.35, Some(bias)).unwrap()
    } else {
        composite::scaled_softmax(x, 0.35, Some(bias)).unwrap()
    }
}

fn gelu(x: &Tensor, _: &Tensor, _: &Tensor, fused: bool) -> Tensor {
    if fused {
        activation(x, Kind::Gelu).unwrap()
    } else {
        composite::gelu(x).unwrap()
    }
}

fn quick_gelu(x: &Tensor, _: &Tensor, _: &Tensor, fused: bool) -> Tensor {
    if fused {
        activation(x, Kind::QuickGelu).unwrap()
    } else {
        composite::quick_gelu(x).unwrap()
    }
}

/// x [rows, width] · W [width, width]ᵀ + b (square, so the output has x's shape).
fn linear_bias(x: &Tensor, w: &Tensor, b: &Tensor, fused: bool) -> Tensor {
    if fused {
        linear(x, w, Some(b)).unwrap()
    } else {
        x.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap()
    }
}

/// The same without a bias, with W read through a transposed view (any strides are read in place).
fn linear_strided(x: &Tensor, w: &Tensor, _: &Tensor, fused: bool) -> Tensor {
    let wt = w.t().unwrap();
    if fused {
        linear(x, &wt, None).unwrap()
    } else {
        x.matmul(&wt.t().unwrap()).unwrap()
    }
}

/// The padding bias [B, 1, 1, Sk] of a key mask where batch element b has its last b % 3 keys
/// padded (so one element has none), in `like`'s dtype.
fn padding_bias(batch: usize, keys: usize, like: &Tensor) -> Tensor {
    let values: Vec<f64> = (0..batch)
        .flat_map(|b| (0..keys).map(move |j| if j + b % 3 >= keys { -1e4 } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (batch, 1, 1, keys), &Device::Cpu)
        .unwrap()
        .to_dtype(like.dtype())
        .unwrap()
}

/// Two-head attention: queries x [B, Sq, W], keys p1 and values p2 [B, Sk, W], with padding.
fn mha(q: &Tensor, k: &Tensor, v: &Tensor, fused: bool) -> Tensor {
    let bias = padding_bias(k.dims()[0], k.dims()[1], q);
    if fused {
        attention(q, k, v, 2, Some(&bias)).unwrap()
    } else {
        composite::multi_head_attention(q, k, v, 2, Some(&bias)).unwrap()
    }
}

type Case = (&'static str, Op, Vec<usize>, Vec<usize>, Vec<usize>);

/// (name, op, x shape, p1 shape, p2 shape). Widths that are not multiples of 8 exercise the
/// kernels' tails.
fn cases(big: bool) -> Vec<Case> {
    // `big`: more than one 16K-element block, so the parallel path and the cross-block
    // reduction of the layer norm's parameter gradients run.
    let (rows, width, b, h, s) = if big {
        (70, 300, 3, 4, 45)
    } else {
        (5, 11, 2, 2, 5)
    };
    vec![
        (
            "layer_norm",
            ln,
            vec![rows, width],
            vec![width],
            vec![width],
        ),
        (
            "softmax",
            attn_softmax,
            vec![b, h, s, s],
            vec![b, 1, 1, s],
            vec![1],
        ),
        ("gelu", gelu, vec![rows, width], vec![1], vec![1]),
        (
            "quick_gelu",
            quick_gelu,
            vec![rows, width],
            vec![1],
            vec![1],
        ),
        (
            "linear",
            linear_bias,
            vec![rows, width],
            vec![width, width],
            vec![width],
        ),
        (
            "attention",
            mha,
            vec![b, s, 2 * (width / 8 + 2)],
            vec![b, s + 3, 2 * (width / 8 + 2)],
            vec![b, s + 3, 2 * (width / 8 + 2)],
        ),
        (
            "linear_strided",
            linear_strided,
            vec![rows, width],
            vec![width, width],
            vec![1],
        ),
    ]
}

#[test]
fn forward_matches_the_composite() {
    for big in [false, true] {
        for (name, op, xs, p1, p2) in cases(big) {
            let x = (random(&xs, 1, DType::F32) * 2.0).unwrap();
            let a = random(&p1, 2, DType::F32);
            let b = random(&p2, 3, DType::F32);
            let diff = max_abs_diff(&op(&x, &a, &b, true), &op(&x, &a, &b, false));
            assert!(diff < 1e-5, "{name} (big: {big}): max difference {diff}");
        }
    }
}

/// Gradients of `Σ op(x, p1, p2) · w` with respect to x, p1 and p2 (those the op uses).
fn gradients(
    op: Op,
    x: &Tensor,
    p1: &Tensor,
    p2: &Tensor,
    w: &Tensor,
    fused: bool,
) -> Vec<Vec<f64>> {
    let vars: Vec<Var> = [x, p1, p2]
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let y = op(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
        fused,
    );
    let grads = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
    vars.iter()
        .map(|v| grads.get(v.as_tensor()).map(values).unwrap_or_default())
        .collect()
}

#[test]
fn gradients_match_finite_differences() {
    for (name, op, xs, p1, p2) in cases(false) {
        let x = random(&xs, 4, DType::F64);
        let params = [random(&p1, 5, DType::F64), random(&p2, 6, DType::F64)];
        let w = random(&xs, 7, DType::F64);
        let analytic = gradients(op, &x, &params[0], &params[1], &w, true);
        let inputs = [x.clone(), params[0].clone(), params[1].clone()];
        let loss = |inputs: &[Tensor]| -> f64 {
            (op(&inputs[0], &inputs[1], &inputs[2], true) * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        for (which, grad) in analytic.iter().enumerate() {
            if grad.is_empty() {
                continue; // the op does not read this input
            }
            let base = values(&inputs[which]);
            let h = 1e-6;
            for i in 0..base.len() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[i] += delta;
                    let mut moved = inputs.clone();
                    moved[which] =
                        Tensor::from_vec(v, inputs[which].shape(), &Device::Cpu).unwrap();
                    loss(&moved)
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                assert!(
                    (numeric - grad[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
                    "{name}, input {which}, element {i}: finite difference {numeric}, fused backward {}",
                    grad[i]
                );
            }
        }
    }
}

#[test]
fn gradients_match_the_composite_in_f32() {
    for big in [false, true] {
        for (name, op, xs, p1, p2) in cases(big) {
            let x = random(&xs, 8, DType::F32);
            let a = random(&p1, 9, DType::F32);
            let b = random(&p2, 10, DType::F32);
            let w = random(&xs, 11, DType::F32);
            let fused = gradients(op, &x, &a, &b, &w, true);
            let reference = gradients(op, &x, &a, &b, &w, false);
            for (which, (f, r)) in fused.iter().zip(&reference).enumerate() {
                assert_eq!(f.len(), r.len(), "{name}, input {which}");
                let scale = r.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                let diff = f
                    .iter()
                    .zip(r)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    diff < 1e-5 * scale,
                    "{name} (big: {big}), input {which}: max difference {diff} (scale {scale})"
                );
            }
        }
    }
}

#[test]
fn results_are_bit_identical_across_runs_and_thread_counts() {
    let run = |threads: usize| -> Vec<Vec<u8>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut bytes = Vec::new();
            for (_, op, xs, p1, p2) in cases(true) {
                let x = random(&xs, 12, DType::F32);
                let (a, b) = (random(&p1, 13, DType::F32), random(&p2, 14, DType::F32));
                let w = random(&xs, 15, DType::F32);
                let y = op(&x, &a, &b, true);
                bytes.push(values(&y).iter().flat_map(|v| v.to_le_bytes()).collect());
                for g in gradients(op, &x, &a, &b, &w, true) {
                    bytes.push(g.iter().flat_map(|v| v.to_le_bytes()).collect());
                }
            }
            bytes
        })
    };
    let one = run(1);
    assert_eq!(one, run(1), "two runs on one thread differ");
    assert_eq!(one, run(2), "one thread and two threads differ");
}

#[test]
fn non_contiguous_inputs_and_bad_shapes() {
    // A transposed input is made contiguous first.
    let x = random(&[6, 4], 16, DType::F32).t().unwrap();
    let g = Tensor::ones(6, DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros(6, DType::F32, &Device::Cpu).unwrap();
    let diff = max_abs_diff(&ln(&x, &g, &b, true), &ln(&x, &g, &b, false));
    assert!(diff < 1e-5, "{diff}");
    // A gamma of the wrong width is an error naming the kernel, not a panic.
    let err = layer_norm(
        &x,
        &Tensor::ones(5, DType::F32, &Device::Cpu).unwrap(),
        &b,
        1e-5,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("umd-layer-norm"), "{err}");
    // A bias that does not split the rows evenly likewise.
    let scores = random(&[3, 2, 4, 4], 17, DType::F32);
    let err = scaled_softmax(&scores, 1.0, Some(&random(&[5, 1, 1, 4], 18, DType::F32)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("umd-scaled-softmax"), "{err}");
    // Heads that do not divide the width, keys of another batch size or a key bias of the wrong
    // length, likewise.
    let (q, k) = (
        random(&[2, 3, 6], 23, DType::F32),
        random(&[2, 4, 6], 24, DType::F32),
    );
    for (keys, heads, bias) in [
        (&k, 4, None),
        (&random(&[3, 4, 6], 25, DType::F32), 2, None),
        (&k, 2, Some(random(&[2, 1, 1, 5], 26, DType::F32))),
    ] {
        let err = attention(&q, keys, keys, heads, bias.as_ref())
            .unwrap_err()
            .to_string();
        assert!(err.contains("umd-attention"), "{err}");
    }
    // A weight whose input width differs from x's, or a bias of the wrong length, likewise.
    let x = random(&[6, 4], 19, DType::F32);
    let err = linear(&x, &random(&[5, 3], 20, DType::F32), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("umd-linear"), "{err}");
    let err = linear(
        &x,
        &random(&[5, 4], 21, DType::F32),
        Some(&random(&[4], 22, DType::F32)),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("umd-linear-bias"), "{err}");
}

#[test]
fn attention_without_a_bias_or_with_one_shared_bias_row_matches_the_composite() {
    let q = random(&[3, 7, 8], 27, DType::F32);
    let k = random(&[3, 5, 8], 28, DType::F32);
    let v = random(&[3, 5, 8], 29, DType::F32);
    let shared = padding_bias(3, 5, &q).narrow(0, 2, 1).unwrap();
    for bias in [None, Some(&shared)] {
        let fused = attention(&q, &k, &v, 4, bias).unwrap();
        let reference = composite::multi_head_attention(&q, &k, &v, 4, bias).unwrap();
        let diff = max_abs_diff(&fused, &reference);
        assert!(
            diff < 1e-5,
            "bias {:?}: max difference {diff}",
            bias.map(|b| b.dims())
        );
    }
}
