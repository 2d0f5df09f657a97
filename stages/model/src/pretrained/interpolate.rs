//! Bicubic resampling of a ViT's position grid, as PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False)` computes it: the resampling that M3AE's
//! `adapt_position_encoding`, timm and `transformers`' `interpolate_pos_encoding` all use to move
//! CLIP's 14×14 positions to 18×18 (224 → 288 px).

/// Keys's cubic convolution constant, PyTorch's `A = -0.75`.
const A: f64 = -0.75;

/// The four weights of source pixels `floor(x) - 1 ..= floor(x) + 2` for fractional offset `t`
/// (PyTorch's `get_cubic_upsample_coefficients`).
fn cubic_weights(t: f64) -> [f64; 4] {
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output index along one axis: the four (clamped) source indices and their weights.
fn axis_taps(input: usize, output: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            // align_corners=False; PyTorch does not clamp the source coordinate for cubic.
            let x = scale * (o as f64 + 0.5) - 0.5;
            let base = x.floor();
            let weights = cubic_weights(x - base);
            let index = |k: i64| (base as i64 - 1 + k).clamp(0, input as i64 - 1) as usize;
            ([index(0), index(1), index(2), index(3)], weights)
        })
        .collect()
}

/// Resamples a row-major `from`×`from` grid of `width`-vectors (`grid[(y·from + x)·width + c]`) to
/// `to`×`to`. Computed in f64 and rounded once to f32.
pub fn bicubic_resize_grid(grid: &[f32], from: usize, to: usize, width: usize) -> Vec<f32> {
    assert_eq!(
        grid.len(),
        from * from * width,
        "grid is not {from}×{from}×{width}"
    );
    let taps = axis_taps(from, to);
    // Along x first: [from rows][to columns][width].
    let mut rows = vec![0f64; from * to * width];
    for y in 0..from {
        for (ox, (xs, wx)) in taps.iter().enumerate() {
            let out = &mut rows[(y * to + ox) * width..][..width];
            for (&x, &w) in xs.iter().zip(wx) {
                let src = &grid[(y * from + x) * width..][..width];
                for (o, &s) in out.iter_mut().zip(src) {
                    *o += w * s as f64;
                }
            }
        }
    }
    let mut out = vec![0f32; to * to * width];
    for (oy, (ys, wy)) in taps.iter().enumerate() {
        for ox in 0..to {
            let dst = &mut out[(oy * to + ox) * width..][..width];
            for (c, d) in dst.iter_mut().enumerate() {
                let v: f64 = ys
                    .iter()
                    .zip(wy)
                    .map(|(&y, &w)| w * rows[(y * to + ox) * width + c])
                    .sum();
                *d = v as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_is_the_identity_and_weights_sum_to_one() {
        let grid: Vec<f32> = (0..3 * 3 * 2).map(|i| i as f32 * 0.5 - 3.0).collect();
        assert_eq!(bicubic_resize_grid(&grid, 3, 3, 2), grid);
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f64 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-12, "{t}: {s}");
        }
    }

    #[test]
    fn a_constant_grid_stays_constant_when_resized() {
        let grid = vec![1.5f32; 4 * 4];
        for to in [2, 5, 6, 9] {
            let out = bicubic_resize_grid(&grid, 4, to, 1);
            assert!(out.iter().all(|v| (v - 1.5).abs() < 1e-6), "{to}: {out:?}");
        }
    }
}
