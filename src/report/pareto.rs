//! The Pareto front of a set of points with two objectives (GPU memory vs output tokens/s,
//! accuracy vs output tokens/s): the points no other point beats on both. Pure, for every
//! chart that draws one.

/// Which way an axis is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Higher,
    Lower,
}

impl Goal {
    /// Whether `a` is at least as good as `b`, and whether strictly better.
    fn cmp(self, a: f64, b: f64) -> (bool, bool) {
        match self {
            Goal::Higher => (a >= b, a > b),
            Goal::Lower => (a <= b, a < b),
        }
    }
}

/// Whether `p` dominates `q`: at least as good on both axes and better on one.
pub fn dominates(p: (f64, f64), q: (f64, f64), x: Goal, y: Goal) -> bool {
    let (xa, xs) = x.cmp(p.0, q.0);
    let (ya, ys) = y.cmp(p.1, q.1);
    xa && ya && (xs || ys)
}

/// The indices of the points on the Pareto front (dominated by no other point), in increasing
/// `x`. Points with a non-finite coordinate are never on it; identical points are all on it.
pub fn front(points: &[(f64, f64)], x: Goal, y: Goal) -> Vec<usize> {
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let mut on: Vec<usize> = (0..points.len())
        .filter(|&i| finite(&points[i]))
        .filter(|&i| {
            !points
                .iter()
                .filter(|q| finite(q))
                .any(|&q| dominates(q, points[i], x, y))
        })
        .collect();
    on.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
    });
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_against_throughput_keeps_the_cheap_and_the_fast() {
        // (output tok/s, GiB): more throughput and less memory are better.
        let pts = [
            (100.0, 10.0),
            (200.0, 20.0),
            (150.0, 25.0),
            (50.0, 5.0),
            (200.0, 30.0),
        ];
        assert_eq!(front(&pts, Goal::Higher, Goal::Lower), vec![3, 0, 1]);
    }

    #[test]
    fn accuracy_against_throughput_keeps_the_accurate_and_the_fast() {
        // (output tok/s, accuracy): both higher is better.
        let pts = [(100.0, 0.70), (300.0, 0.60), (200.0, 0.55), (90.0, 0.72)];
        assert_eq!(front(&pts, Goal::Higher, Goal::Higher), vec![3, 0, 1]);
    }

    #[test]
    fn ties_nans_and_empty_input() {
        assert!(front(&[], Goal::Higher, Goal::Lower).is_empty());
        // Identical points dominate neither each other: both are on the front.
        let pts = [(1.0, 1.0), (1.0, 1.0), (f64::NAN, 0.0), (0.5, 2.0)];
        assert_eq!(front(&pts, Goal::Higher, Goal::Lower), vec![0, 1]);
        // Same x, one better y: only the better.
        assert_eq!(
            front(&[(1.0, 3.0), (1.0, 2.0)], Goal::Higher, Goal::Lower),
            vec![1]
        );
        assert!(dominates((2.0, 1.0), (1.0, 1.0), Goal::Higher, Goal::Lower));
        assert!(!dominates(
            (1.0, 1.0),
            (1.0, 1.0),
            Goal::Higher,
            Goal::Lower
        ));
    }
}
