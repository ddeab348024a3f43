//! The runner checks itself: a cell where the client could not keep up with the load it was
//! asked to generate is invalid, with the reason. Its numbers describe the client, not the
//! server, so reports never show them as a result.

use std::time::Duration;

use crate::metrics::summary::CellMetrics;
use serde::{Deserialize, Serialize};

/// An open-loop cell is invalid when fewer than this fraction of the scheduled requests per
/// second were actually sent.
pub const MIN_DELIVERED: f64 = 0.95;
/// A cell is invalid when the runner used more than this share of every core.
pub const MAX_CPU_SHARE: f64 = 0.9;

/// What the runner itself used while measuring a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientUsage {
    /// User + system CPU time of the runner process during the cell.
    pub cpu_s: f64,
    /// `cpu_s` over the cell's wall time, in percent of one core.
    pub cpu_pct: f64,
    pub cores: usize,
}

/// `None` for a valid cell, else why the client was the bottleneck.
pub fn verdict(m: &CellMetrics, usage: &ClientUsage, max_lag: Duration) -> Option<String> {
    let mut why = Vec::new();
    let limit_ms = max_lag.as_secs_f64() * 1000.0;
    if let Some(lag) = &m.dispatch_lag_ms {
        if lag.p99 > limit_ms {
            why.push(format!(
                "requests left the client late: dispatch lag p99 {:.1} ms is above `max_dispatch_lag` ({limit_ms:.1} ms)",
                lag.p99
            ));
        }
    }
    if let (Some(offered), Some(sent)) = (m.offered_req_per_s, m.sent_req_per_s) {
        if sent < MIN_DELIVERED * offered {
            why.push(format!(
                "the client sent {sent:.1} req/s of the {offered:.1} req/s scheduled"
            ));
        }
    }
    let cap = MAX_CPU_SHARE * 100.0 * usage.cores as f64;
    if usage.cpu_pct > cap {
        why.push(format!(
            "the runner used {:.0}% CPU ({} cores): the machine, not the server, was the limit",
            usage.cpu_pct, usage.cores
        ));
    }
    (!why.is_empty()).then(|| {
        format!(
            "client bottleneck: {}; lower the load, or run the runner on another machine",
            why.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::record::tests::record;
    use crate::metrics::summary::Accumulator;

    fn usage(cpu_pct: f64) -> ClientUsage {
        ClientUsage {
            cpu_s: 1.0,
            cpu_pct,
            cores: 2,
        }
    }

    #[test]
    fn late_dispatch_makes_a_cell_invalid() {
        let mut acc = Accumulator::default();
        for i in 0..100 {
            let mut r = record(i * 1000, &[i * 1000 + 500], i * 1000 + 900, 1);
            r.sent_us = r.scheduled_us + if i < 90 { 100 } else { 50_000 };
            acc.add(&r);
        }
        let m = acc.finish();
        let v = verdict(&m, &usage(10.0), Duration::from_millis(10)).expect("invalid");
        assert!(v.contains("dispatch lag p99"), "{v}");
        assert!(verdict(&m, &usage(10.0), Duration::from_millis(100)).is_none());
    }

    #[test]
    fn undelivered_open_loop_rate_and_saturated_cpu_make_a_cell_invalid() {
        let mut acc = Accumulator::default().open_loop();
        // Scheduled 1 ms apart, sent 2 ms apart: half the offered rate.
        for i in 0..50u64 {
            let mut r = record(i * 1000, &[i * 2000 + 500], i * 2000 + 900, 1);
            r.sent_us = i * 2000;
            acc.add(&r);
        }
        let m = acc.finish();
        let v = verdict(&m, &usage(10.0), Duration::from_secs(1)).expect("invalid");
        assert!(v.contains("req/s of the"), "{v}");
        let m = Accumulator::default().finish();
        assert!(verdict(&m, &usage(195.0), Duration::from_secs(1)).is_some());
        assert!(verdict(&m, &usage(150.0), Duration::from_secs(1)).is_none());
    }
}
