//! SLO verdicts: each threshold against the cell's measured percentile. A cell passes when
//! every threshold is met and no request failed (a failed request is never "within SLO").

use std::collections::BTreeMap;

use crate::metrics::summary::{CellMetrics, Stats};
use crate::plan::model::{Percentile, SloMetric, SloRule};
use serde::{Deserialize, Serialize};

fn actual(rule: &SloRule, m: &CellMetrics) -> Option<f64> {
    let stats: &Option<Stats> = match rule.metric {
        SloMetric::Ttft => &m.ttft_ms,
        SloMetric::Tpot => &m.tpot_ms,
        SloMetric::Itl => &m.itl_ms,
        SloMetric::E2e => &m.e2e_ms,
    };
    stats.as_ref().map(|s| match rule.percentile {
        Percentile::P50 => s.p50,
        Percentile::P90 => s.p90,
        Percentile::P95 => s.p95,
        Percentile::P99 => s.p99,
    })
}

/// A cell's SLO verdict: every check passed and no request failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloVerdict {
    pub passed: bool,
    pub checks: BTreeMap<String, SloCheck>,
    pub requests_failed: u64,
}

/// One threshold against its measured value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloCheck {
    pub max_ms: f64,
    pub actual_ms: Option<f64>,
    pub passed: bool,
}

/// The verdict, or `None` when the workload has no SLO.
pub fn evaluate(rules: &[SloRule], m: &CellMetrics) -> Option<SloVerdict> {
    if rules.is_empty() {
        return None;
    }
    let mut checks = BTreeMap::new();
    for r in rules {
        let a = actual(r, m);
        checks.insert(
            r.key(),
            SloCheck {
                max_ms: r.max_ms,
                actual_ms: a,
                passed: a.is_some_and(|a| a <= r.max_ms),
            },
        );
    }
    let passed = m.requests_failed == 0 && m.requests_ok > 0 && checks.values().all(|c| c.passed);
    Some(SloVerdict {
        passed,
        checks,
        requests_failed: m.requests_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::record::tests::record;
    use crate::metrics::summary::Accumulator;

    fn rule(metric: SloMetric, max_ms: f64) -> SloRule {
        SloRule {
            metric,
            percentile: Percentile::P95,
            max_ms,
        }
    }

    #[test]
    fn passes_only_when_every_threshold_holds_and_nothing_failed() {
        let mut acc = Accumulator::default();
        acc.add(&record(0, &[20_000, 30_000], 31_000, 2));
        let m = acc.finish();
        let v = evaluate(
            &[rule(SloMetric::Ttft, 25.0), rule(SloMetric::E2e, 40.0)],
            &m,
        )
        .expect("verdict");
        assert!(v.passed, "{v:?}");
        let v = evaluate(&[rule(SloMetric::Ttft, 15.0)], &m).expect("verdict");
        assert!(!v.passed);
        let mut failed = m.clone();
        failed.requests_failed = 1;
        assert!(
            !evaluate(&[rule(SloMetric::Ttft, 25.0)], &failed)
                .expect("verdict")
                .passed
        );
        assert!(evaluate(&[], &m).is_none());
    }
}
