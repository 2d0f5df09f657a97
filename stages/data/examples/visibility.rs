//! Which SynthRad findings the pixels carry at a given image size (docs/data.md §3.6).
//!
//! For each finding kind and size it prints:
//! - the paired measurement the label rule uses ([`visibility::measure`]): pixels that one finding
//!   changes by more than the noise sigma, and the largest change in sigmas;
//! - raw-pixel detectability against anatomical variation: images WITH one finding of the kind
//!   and images WITHOUT it come from different probe studies (different bodies, noise, rib
//!   phase), split 70/30; the test accuracy of a nearest-centroid rule and of an L2-regularised
//!   logistic regression on standardised pixels (chance = 0.5, the classes are balanced).
//!
//! Run: `cargo run -p umdflow-data --example visibility -- [sizes...] [--pairs N]`
//! (default sizes 32 64, N = 400 images per class).

use umdflow_data::synthrad::render::render;
use umdflow_data::synthrad::study::FindingKind;
use umdflow_data::synthrad::visibility::{self, PROBES, probe_config, probe_pair};
use umdflow_data::synthrad::{Domain, SynthConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes = Vec::new();
    let mut pairs = 400;
    let mut k = 0;
    while k < args.len() {
        if args[k] == "--pairs" {
            pairs = args
                .get(k + 1)
                .and_then(|v| v.parse().ok())
                .expect("--pairs N");
            k += 2;
        } else {
            sizes.push(args[k].parse::<usize>().expect("a size in pixels"));
            k += 1;
        }
    }
    if sizes.is_empty() {
        sizes = vec![32, 64];
    }
    println!(
        "| size | finding | changed px (> 1 sigma) | peak change (sigma) | nearest centroid | logistic regression |"
    );
    println!("|---|---|---|---|---|---|");
    for size in sizes {
        let config = SynthConfig::new(0, Domain::Source, size);
        let paired = visibility::measure(&config, PROBES);
        for measured in paired {
            let (centroid, logistic) = detectability(&config, measured.kind, pairs);
            println!(
                "| {size} | {} | {:.1} | {:.1} | {centroid:.3} | {logistic:.3} |",
                measured.kind.name(),
                measured.visible_pixels,
                measured.peak_sigmas
            );
        }
    }
}

/// Test accuracies (nearest centroid, logistic regression) of telling images with one finding of
/// `kind` from images without, each class drawn from its own probe studies.
fn detectability(config: &SynthConfig, kind: FindingKind, pairs: usize) -> (f32, f32) {
    let probe = probe_config(config);
    let pixels = probe.image_size * probe.image_size;
    let mut images = Vec::with_capacity(2 * pairs);
    let mut labels = Vec::with_capacity(2 * pairs);
    let mut image = vec![0.0; pixels];
    for i in 0..pairs as u64 {
        // Offset past the probes the label rule uses, and disjoint bodies for the two classes.
        let (_, with) = probe_pair(&probe, kind, 1_000 + 2 * i);
        render(&with, &probe, &mut image);
        images.push(image.clone());
        labels.push(1.0f32);
        let (without, _) = probe_pair(&probe, kind, 1_001 + 2 * i);
        render(&without, &probe, &mut image);
        images.push(image.clone());
        labels.push(0.0);
    }
    let train = images.len() * 7 / 10;
    let (train_x, test_x) = images.split_at(train);
    let (train_y, test_y) = labels.split_at(train);
    (
        nearest_centroid(train_x, train_y, test_x, test_y),
        logistic_regression(train_x, train_y, test_x, test_y),
    )
}

fn accuracy(scores: impl Iterator<Item = f32>, truth: &[f32]) -> f32 {
    let hits = scores
        .zip(truth)
        .filter(|&(s, &y)| (s > 0.0) == (y > 0.5))
        .count();
    hits as f32 / truth.len() as f32
}

fn nearest_centroid(
    train_x: &[Vec<f32>],
    train_y: &[f32],
    test_x: &[Vec<f32>],
    test_y: &[f32],
) -> f32 {
    let dims = train_x[0].len();
    let mut centroids = [vec![0.0f32; dims], vec![0.0f32; dims]];
    let mut counts = [0.0f32; 2];
    for (x, &y) in train_x.iter().zip(train_y) {
        let c = usize::from(y > 0.5);
        counts[c] += 1.0;
        for (m, v) in centroids[c].iter_mut().zip(x) {
            *m += v;
        }
    }
    for (centroid, count) in centroids.iter_mut().zip(counts) {
        centroid.iter_mut().for_each(|m| *m /= count.max(1.0));
    }
    let distance =
        |x: &[f32], c: &[f32]| -> f32 { x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum() };
    accuracy(
        test_x
            .iter()
            .map(|x| distance(x, &centroids[0]) - distance(x, &centroids[1])),
        test_y,
    )
}

/// Full-batch gradient descent on standardised pixels, zero init, L2 1e-2, 150 steps.
fn logistic_regression(
    train_x: &[Vec<f32>],
    train_y: &[f32],
    test_x: &[Vec<f32>],
    test_y: &[f32],
) -> f32 {
    let (n, dims) = (train_x.len(), train_x[0].len());
    let mut mean = vec![0.0f32; dims];
    let mut scale = vec![0.0f32; dims];
    for x in train_x {
        for (m, v) in mean.iter_mut().zip(x) {
            *m += v / n as f32;
        }
    }
    for x in train_x {
        for ((s, m), v) in scale.iter_mut().zip(&mean).zip(x) {
            *s += (v - m) * (v - m) / n as f32;
        }
    }
    scale.iter_mut().for_each(|s| *s = 1.0 / (s.sqrt() + 1e-3));
    let standard = |x: &[f32]| -> Vec<f32> {
        x.iter()
            .zip(&mean)
            .zip(&scale)
            .map(|((v, m), s)| (v - m) * s)
            .collect()
    };
    let train: Vec<Vec<f32>> = train_x.iter().map(|x| standard(x)).collect();
    let (mut w, mut b) = (vec![0.0f32; dims], 0.0f32);
    let (lr, l2) = (0.1f32, 1e-2f32);
    for _ in 0..150 {
        let mut grad = vec![0.0f32; dims];
        let mut grad_b = 0.0;
        for (x, &y) in train.iter().zip(train_y) {
            let z: f32 = x.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + b;
            let error = 1.0 / (1.0 + (-z).exp()) - y;
            for (g, v) in grad.iter_mut().zip(x) {
                *g += error * v;
            }
            grad_b += error;
        }
        for (wi, g) in w.iter_mut().zip(&grad) {
            *wi -= lr * (g / n as f32 + l2 * *wi);
        }
        b -= lr * grad_b / n as f32;
    }
    accuracy(
        test_x
            .iter()
            .map(|x| standard(x).iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + b),
        test_y,
    )
}
