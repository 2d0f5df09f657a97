//! A small counter-based random source: every study gets its own stream derived from
//! `(seed, stream, index)`, so study `i` never depends on how many studies came before it or on
//! which thread made it.

/// SplitMix64's finaliser: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Rng {
    /// The stream for item `index` of stream `stream` under `seed`.
    pub fn for_item(seed: u64, stream: u64, index: u64) -> Rng {
        let key = mix64(
            seed ^ mix64(stream.wrapping_add(GOLDEN))
                ^ mix64(index.wrapping_mul(GOLDEN).wrapping_add(1)),
        );
        Rng { state: key }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.uniform() < p
    }

    /// Uniform integer in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// An index drawn with the given (not necessarily normalised) weights.
    pub fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f32 = weights.iter().sum();
        let mut target = self.uniform() * total;
        for (k, &w) in weights.iter().enumerate() {
            if target < w {
                return k;
            }
            target -= w;
        }
        weights.len() - 1
    }
}

/// Approximately standard normal noise from one hash: the sum of four 16-bit uniforms
/// (Irwin-Hall, rescaled), cheap enough to draw per pixel.
pub fn gaussian_from_hash(h: u64) -> f32 {
    let sum = (h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48);
    (sum as f32 / 65536.0 - 2.0) * 1.732_050_8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_only_on_their_key() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_item(1, 2, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::for_item(1, 2, 3).next_u64(),
            Rng::for_item(1, 2, 4).next_u64()
        );
        assert_ne!(
            Rng::for_item(1, 2, 3).next_u64(),
            Rng::for_item(2, 2, 3).next_u64()
        );
    }

    #[test]
    fn uniform_and_gaussian_have_the_right_moments() {
        let mut rng = Rng::for_item(9, 0, 0);
        let n = 20_000;
        let u: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let mean = u.iter().sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let g: Vec<f32> = (0..n).map(|_| gaussian_from_hash(rng.next_u64())).collect();
        let mean = g.iter().sum::<f32>() / n as f32;
        let var = g.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let counts = (0..3000).fold([0usize; 3], |mut c, _| {
            c[rng.weighted(&[1.0, 2.0, 1.0])] += 1;
            c
        });
        assert!(
            counts[1] > counts[0] + 400 && counts[1] > counts[2] + 400,
            "{counts:?}"
        );
    }
}
