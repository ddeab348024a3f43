//! Open-loop arrival schedules: the gap before each next request, constant, exponential
//! (Poisson process) or gamma-distributed (bursty), from a seed.
//!
//! The generator and the samplers are written here rather than taken from `rand` and
//! `rand_distr`: a plan's seed must give the same schedule in every runner version, and those
//! crates do not promise a fixed algorithm across releases.

use crate::plan::model::Arrival;

/// SplitMix64: small, fast, and fixed forever.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang; shapes below 1 use the boost
    /// Gamma(k) = Gamma(k + 1) * U^(1/k).
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.unit();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

/// Yields the gap, in seconds, before each next arrival.
#[derive(Debug, Clone)]
pub struct Arrivals {
    kind: Arrival,
    rate: f64,
    rng: SplitMix,
}

impl Arrivals {
    pub fn new(kind: Arrival, rate: f64) -> Arrivals {
        let seed = match kind {
            Arrival::Constant => 0,
            Arrival::Poisson { seed } | Arrival::Gamma { seed, .. } => seed,
        };
        Arrivals {
            kind,
            rate,
            rng: SplitMix(seed),
        }
    }

    pub fn next_gap_s(&mut self) -> f64 {
        match self.kind {
            Arrival::Constant => 1.0 / self.rate,
            Arrival::Poisson { .. } => -self.rng.unit().ln() / self.rate,
            Arrival::Gamma { burstiness, .. } => {
                let shape = 1.0 / burstiness;
                self.rng.gamma(shape) / (shape * self.rate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(kind: Arrival, rate: f64, n: usize) -> (f64, f64) {
        let mut a = Arrivals::new(kind, rate);
        let xs: Vec<f64> = (0..n).map(|_| a.next_gap_s()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn constant_gaps_are_exact() {
        let mut a = Arrivals::new(Arrival::Constant, 4.0);
        assert_eq!(a.next_gap_s(), 0.25);
    }

    #[test]
    fn poisson_gaps_have_mean_one_over_rate_and_unit_cv() {
        let (mean, cv) = moments(Arrival::Poisson { seed: 7 }, 10.0, 200_000);
        assert!((mean - 0.1).abs() < 0.002, "{mean}");
        assert!((cv - 1.0).abs() < 0.02, "{cv}");
    }

    #[test]
    fn gamma_burstiness_is_the_squared_cv() {
        for b in [0.25, 1.0, 4.0] {
            let (mean, cv) = moments(
                Arrival::Gamma {
                    seed: 1,
                    burstiness: b,
                },
                5.0,
                200_000,
            );
            assert!((mean - 0.2).abs() < 0.006, "burstiness {b}: mean {mean}");
            assert!(
                (cv * cv - b).abs() < 0.1 * b.max(1.0),
                "burstiness {b}: cv^2 {}",
                cv * cv
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let mut a = Arrivals::new(Arrival::Poisson { seed: 3 }, 1.0);
        let mut b = Arrivals::new(Arrival::Poisson { seed: 3 }, 1.0);
        for _ in 0..100 {
            assert_eq!(a.next_gap_s(), b.next_gap_s());
        }
    }
}
