//! The workload's own seeded random numbers: splitmix64, so the same seed gives the same prompts on
//! every machine and in every runner version.
//!
//! The `rand` crate is not used on purpose: its generators and its distribution algorithms may change
//! between versions, and a prompt set must not. Only integer arithmetic and IEEE basic operations
//! (which are exactly rounded everywhere) are used; no `ln`/`cos`, whose last bit varies by libm.

/// splitmix64 (Steele, Lea, Flood 2014; the seeder of xoshiro): 64-bit state, one add and a mix.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent stream for one purpose (`key`), so drawing more for one prompt never shifts
    /// what another prompt gets.
    pub fn derive(seed: u64, key: &[u64]) -> Rng {
        let mut s = mix(seed ^ GOLDEN);
        for k in key {
            s = mix(s ^ mix(k.wrapping_add(GOLDEN)));
        }
        Rng { state: s }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`), by the multiply-shift map (bias below 2^-64 * n: irrelevant).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[a, b]`, inclusive (`a <= b`).
    pub fn range_inclusive(&mut self, a: u64, b: u64) -> u64 {
        a + self.below(b - a + 1)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately standard normal: the Irwin-Hall sum of 12 uniforms less 6 (tails end at 6
    /// sigma), chosen because it needs only additions, so it is bit-identical on every machine.
    pub fn normal(&mut self) -> f64 {
        let mut s = 0.0;
        for _ in 0..12 {
            s += self.unit();
        }
        s - 6.0
    }

    /// Fisher-Yates, in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_pinned_so_prompts_never_change_between_versions() {
        // splitmix64's published first output for seed 0 is 0xE220A8397B1DCDAF.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut d = Rng::derive(42, &[1, 2]);
        let first: Vec<u64> = (0..3).map(|_| d.below(1000)).collect();
        let mut again = Rng::derive(42, &[1, 2]);
        assert_eq!(first, (0..3).map(|_| again.below(1000)).collect::<Vec<_>>());
        assert_ne!(
            Rng::derive(42, &[1, 2]).next_u64(),
            Rng::derive(42, &[2, 1]).next_u64()
        );
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let v = r.range_inclusive(3, 5);
            assert!((3..=5).contains(&v));
            let n = r.normal();
            assert!((-6.0..=6.0).contains(&n));
        }
        let mut v: Vec<u32> = (0..10).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
