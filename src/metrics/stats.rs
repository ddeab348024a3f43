//! The statistics behind every noise-aware judgement: mean and standard error, Student's t
//! critical values, Welch's t-test, and a seeded bootstrap of a statistic's standard error.
//! Pure functions of their inputs, so every verdict built on them is pinned by unit tests.

/// Mean and standard error of the mean (sample standard deviation over sqrt(n); 0 for one
/// value).
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, (var / n).sqrt())
}

/// Two-sided 95% critical value of Student's t for `df` degrees of freedom (tabled for
/// 1..=30, rounded down; 1.96 above 30).
pub fn t95(df: f64) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let i = df.floor().clamp(1.0, 30.0) as usize;
    if df > 30.0 {
        1.96
    } else {
        T[i - 1]
    }
}

/// Whether two sets of repeated runs differ: Welch's t-test at 95%. Two sets without any
/// spread differ exactly when their means do.
pub fn welch_differ(a: &[f64], b: &[f64]) -> bool {
    let ((ma, sa), (mb, sb)) = (mean_se(a), mean_se(b));
    let se = (sa * sa + sb * sb).sqrt();
    if se == 0.0 {
        return ma != mb;
    }
    let df = (sa * sa + sb * sb).powi(2)
        / (sa.powi(4) / (a.len() as f64 - 1.0).max(1.0)
            + sb.powi(4) / (b.len() as f64 - 1.0).max(1.0));
    ((ma - mb) / se).abs() > t95(df)
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `q` of the
/// values at or below it (what the HDR histograms report; p99 of 100 values is the 99th, p99
/// of fewer than 100 is the maximum).
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((n as f64 * q).ceil() as usize).clamp(1, n) - 1])
}

/// numpy's default percentile (`method="linear"`), which vLLM's bench reports: the value at
/// rank `q x (n - 1)` of the sorted values, interpolated linearly between its neighbours.
pub fn interpolated(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Which statistic a bootstrap recomputes on each resample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    Mean,
    /// Nearest-rank quantile, e.g. 0.95 for p95 (the HDR histograms' estimator).
    Quantile(f64),
}

impl Statistic {
    fn of(self, v: &mut [f64]) -> f64 {
        match self {
            Statistic::Quantile(q) => {
                v.sort_by(f64::total_cmp);
                nearest_rank(v, q).unwrap_or(f64::NAN)
            }
            Statistic::Mean => v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// The standard error of `stat` over `values`, by bootstrap: 500 resamples with a fixed seed,
/// so the same values always give the same answer. `None` below two values.
pub fn bootstrap_se(values: &[f64], stat: Statistic) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = values.len();
    let mut resample = vec![0.0; n];
    let stats: Vec<f64> = (0..500)
        .map(|_| {
            for slot in resample.iter_mut() {
                *slot = values[(next() % n as u64) as usize];
            }
            stat.of(&mut resample)
        })
        .collect();
    Some(mean_se(&stats).1 * (stats.len() as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_percentile_estimators_follow_their_definitions() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        // Nearest rank: ceil(0.9 x 10) = 9th value; numpy: rank 0.9 x 9 = 8.1 -> 9.1.
        assert_eq!(nearest_rank(&v, 0.9), Some(9.0));
        assert!((interpolated(&v, 0.9).expect("p90") - 9.1).abs() < 1e-12);
        // The median of an even count: numpy averages the middle two.
        assert_eq!(nearest_rank(&v, 0.5), Some(5.0));
        assert_eq!(interpolated(&v, 0.5), Some(5.5));
        // p99 of 10 values: nearest rank is the maximum, numpy stays below it.
        assert_eq!(nearest_rank(&v, 0.99), Some(10.0));
        assert!((interpolated(&v, 0.99).expect("p99") - 9.91).abs() < 1e-12);
        assert_eq!(interpolated(&[3.0], 0.99), Some(3.0));
        assert_eq!(interpolated(&[], 0.5), None);
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn mean_and_standard_error() {
        let (m, se) = mean_se(&[2.0, 4.0, 6.0]);
        assert_eq!(m, 4.0);
        // Sample sd 2, over sqrt(3).
        assert!((se - 2.0 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_se(&[5.0]), (5.0, 0.0));
    }

    #[test]
    fn t_table_edges() {
        assert_eq!(t95(1.0), 12.706);
        assert_eq!(t95(0.3), 12.706, "below one degree of freedom: the widest");
        assert_eq!(t95(2.9), 4.303, "fractional df round down (conservative)");
        assert_eq!(t95(30.0), 2.042);
        assert_eq!(t95(31.0), 1.96);
    }

    #[test]
    fn welch_sees_a_shift_larger_than_the_spread_only() {
        assert!(welch_differ(&[100.0, 102.0, 98.0], &[200.0, 204.0, 196.0]));
        assert!(!welch_differ(&[100.0, 60.0, 140.0], &[120.0, 80.0, 160.0]));
        assert!(!welch_differ(&[1.0, 1.0], &[1.0, 1.0]));
        assert!(
            welch_differ(&[1.0, 1.0], &[2.0, 2.0]),
            "no spread: means decide"
        );
    }

    #[test]
    fn bootstrap_is_seeded_and_scales_with_the_data() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        let a = bootstrap_se(&v, Statistic::Mean).expect("se");
        assert_eq!(
            Some(a),
            bootstrap_se(&v, Statistic::Mean),
            "same seed, same answer"
        );
        // The standard error of a mean of 50 values of sd 14.6 is about 2.06.
        assert!((1.6..2.5).contains(&a), "{a}");
        let doubled: Vec<f64> = v.iter().map(|x| x * 2.0).collect();
        let b = bootstrap_se(&doubled, Statistic::Mean).expect("se");
        assert!((b - 2.0 * a).abs() < 1e-9, "resamples are the same indices");
        let p95 = bootstrap_se(&v, Statistic::Quantile(0.95)).expect("se");
        assert!(p95 > 0.0);
        assert_eq!(bootstrap_se(&[1.0], Statistic::Mean), None);
        assert_eq!(
            bootstrap_se(&[3.0; 10], Statistic::Quantile(0.5)),
            Some(0.0)
        );
    }
}
