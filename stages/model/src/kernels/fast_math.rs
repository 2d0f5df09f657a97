//! Branch-free `exp` and `erf` for f32, written so that the compiler vectorises the kernels'
//! element loops (the C library's `expf`/`erff` are scalar calls, and GELU spent most of its time
//! in them).
//!
//! - `exp`: Cephes' `expf` (range reduction by ln 2 in two parts, a degree-6 polynomial, the
//!   power of two built from its bits); within 2 ulp of the C library over the whole range.
//! - `erf`: Abramowitz & Stegun 7.1.26 (absolute error 1.5e-7 in exact arithmetic, below 5e-7 in
//!   f32, where `1 - r·t·e^(-x²)` cancels near 0), the approximation PyTorch's vectorised CPU GELU
//!   uses.
//!
//! Plain multiplies and adds only (no `mul_add`, which is a library call without FMA hardware
//! enabled), so every machine computes the same bits.

/// Below this `exp` underflows to zero.
const EXP_LOW: f32 = -87.336_55;
/// Above this `exp` overflows to infinity.
const EXP_HIGH: f32 = 88.722_83;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split into a part exact in f32 and the rest (Cephes).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5 · 2²³ rounds an f32 of magnitude below 2²² to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// eˣ for f32: 0 below [`EXP_LOW`], infinity above [`EXP_HIGH`], NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Clamping keeps n in [-126, 128]; the ends are patched below.
    let clamped = x.clamp(EXP_LOW, EXP_HIGH);
    let shifted = clamped * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // n as an integer, read from the low mantissa bits of `shifted` (1.5 · 2²³ + n, whose ulp is
    // 1): integer ops vectorise, where Rust's saturating float-to-int `as` is scalarised.
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    // 2ⁿ as a normal f32 needs n ≤ 127: the top value n = 128 takes its last factor 2 apart
    // (both products are exact).
    let low = k.min(127);
    let scale = f32::from_bits(((low + 127) as u32) << 23);
    let value = y * scale * (1.0 + (k - low) as f32);
    if x < EXP_LOW {
        0.0
    } else if x > EXP_HIGH {
        f32::INFINITY
    } else {
        value
    }
}

/// The error function for f32, absolute error below 5e-7.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let r = 1.061_405_4 * t - 1.453_152;
    let r = r * t + 1.421_413_8;
    let r = r * t - 0.284_496_74;
    let r = r * t + 0.254_829_6;
    let y = 1.0 - r * t * exp(-(a * a));
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200,001 evenly spaced points of [lo, hi].
    fn samples(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let step = (hi - lo) / 200_000.0;
        (0..=200_000).map(move |i| lo + step * i as f32)
    }

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_c_library() {
        let worst = samples(-87.3, 88.7)
            .map(|x| ulps(exp(x), x.exp()))
            .max()
            .unwrap();
        assert!(worst <= 2, "worst error {worst} ulp");
    }

    #[test]
    fn exp_handles_the_ends_and_nan() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(-10_000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // Just inside the range the result is finite and close to the C library's.
        assert!(ulps(exp(88.7), 88.7f32.exp()) <= 2);
        assert!(ulps(exp(-87.3), (-87.3f32).exp()) <= 2);
    }

    #[test]
    fn erf_is_within_the_approximation_error_of_the_c_library() {
        let worst = samples(-6.0, 6.0)
            .map(|x| (erf(x) as f64 - libm_erf(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "worst absolute error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert!(erf(f32::NAN).is_nan());
        // Odd: erf(-x) = -erf(x) bit for bit.
        for x in samples(0.0, 4.0) {
            assert_eq!(erf(-x), -erf(x));
        }
    }

    fn libm_erf(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }
}
