//! The runner checks itself: a cell where the client could not keep up with the load it was
//! asked to generate (send side), or could not observe the responses as they came (receive
//! side: a client starved of CPU reads whole streams at once), is invalid, with the reason.
//! Its numbers describe the client, not the server, so reports never show them as a result.

use std::time::Duration;

use crate::metrics::summary::{CellMetrics, Stats};
use serde::{Deserialize, Serialize};

/// An open-loop cell is invalid when fewer than this fraction of the scheduled requests per
/// second were actually sent.
pub const MIN_DELIVERED: f64 = 0.95;
/// A cell is invalid when the runner used more than this share of every core.
pub const MAX_CPU_SHARE: f64 = 0.9;

/// A cell is invalid when its timer thread woke later on average than this share of
/// `max_dispatch_lag` (1 ms by default): the client observed every instant that late.
pub const TIMER_LATE_SHARE: f64 = 0.1;
/// A streamed response is checked for a burst when it had at least this many token events.
pub const BURST_MIN_EVENTS: usize = 8;
/// ... and it is a burst when all of them, from the first token event to the end of the
/// response, arrived within this span. No server decodes 8 tokens of one sequence in 1 ms, so
/// such a response was sent whole or read whole after the fact.
pub const BURST_SPAN_US: u64 = 1_000;
/// A cell is invalid when more than this share of its checked responses were bursts.
pub const MAX_BURST_SHARE: f64 = 0.25;
/// A starved cell's reason also names the run-queue wait of the runner's threads (runnable, no
/// CPU free) when they together waited longer than the cell lasted.
pub const MAX_RUN_QUEUE_WAIT: f64 = 1.0;

/// What the runner itself used while measuring a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientUsage {
    /// User + system CPU time of the runner process during the cell.
    pub cpu_s: f64,
    /// `cpu_s` over the cell's wall time, in percent of one core.
    pub cpu_pct: f64,
    pub cores: usize,
    /// How late the client's timer thread woke, in ms past its 2 ms period (`load::watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_late_ms: Option<Stats>,
    /// Seconds the runner's threads waited on a run queue during the cell (summed over
    /// threads), and that in percent of the cell's wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_queue_wait_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_queue_wait_pct: Option<f64>,
}

/// What to try when the client was starved, in every such reason.
pub const STARVED_HINT: &str = "give the client a core of its own (`[client] cpus = [..]` in the plan, or `taskset`), raise its priority (`[client] priority = \"realtime\"`, or `chrt`), or run the runner on another machine";

/// `None` when the client could observe the responses as they came, else why not: a timer
/// that woke late, threads that waited for a CPU, or responses read whole.
pub fn starved(m: &CellMetrics, usage: &ClientUsage, max_lag: Duration) -> Option<String> {
    let mut why = Vec::new();
    let limit_ms = max_lag.as_secs_f64() * 1000.0;
    // The mean, not a tail: one stall of a busy machine in a short cell is a p99, not a
    // client that observes every instant late.
    let bound_ms = limit_ms * TIMER_LATE_SHARE;
    if let Some(t) = &usage.timer_late_ms {
        if t.mean > bound_ms {
            why.push(format!(
                "its timer thread woke {:.1} ms late on average (p99 {:.1} ms, {} wake-ups; above {bound_ms:.1} ms, a tenth of `max_dispatch_lag`)",
                t.mean, t.p99, t.count
            ));
        }
    }
    if m.burst_checked > 0 && m.burst_responses as f64 > MAX_BURST_SHARE * m.burst_checked as f64 {
        why.push(format!(
            "{} of {} streamed responses arrived in one burst (every token event within {} ms of the end)",
            m.burst_responses,
            m.burst_checked,
            BURST_SPAN_US as f64 / 1000.0
        ));
    }
    if why.is_empty() {
        return None;
    }
    // The run-queue wait alone is too noisy on a busy machine to decide (short cells, threads
    // that start and stop), but it says how much CPU the client lacked.
    if let (Some(s), Some(pct)) = (usage.run_queue_wait_s, usage.run_queue_wait_pct) {
        if pct > MAX_RUN_QUEUE_WAIT * 100.0 {
            why.push(format!(
                "its threads waited for a CPU {s:.1} s ({pct:.0}% of the cell, summed over threads)"
            ));
        }
    }
    Some(format!(
        "client starved, the stream was not observed as it came: {}; {STARVED_HINT}",
        why.join("; ")
    ))
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
    let bottleneck = (!why.is_empty()).then(|| {
        format!(
            "client bottleneck: {}; lower the load, or run the runner on another machine",
            why.join("; ")
        )
    });
    match (bottleneck, starved(m, usage, max_lag)) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
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
            timer_late_ms: None,
            run_queue_wait_s: None,
            run_queue_wait_pct: None,
        }
    }

    fn late(mean: f64) -> Stats {
        Stats {
            count: 500,
            mean,
            p50: 0.1,
            p90: 0.2,
            p95: 0.3,
            p99: 4.0 * mean,
            max: 4.0 * mean,
        }
    }

    #[test]
    fn a_starved_client_makes_a_cell_invalid_with_what_to_try() {
        let m = Accumulator::default().finish();
        let mut u = usage(10.0);
        u.timer_late_ms = Some(late(2.5));
        let v = verdict(&m, &u, Duration::from_millis(10)).expect("invalid");
        assert!(
            v.contains("client starved") && v.contains("timer thread woke 2.5 ms late on average"),
            "{v}"
        );
        assert!(
            v.contains("[client] cpus") && v.contains("chrt") && v.contains("taskset"),
            "{v}"
        );
        assert!(verdict(&m, &u, Duration::from_millis(30)).is_none());
        // The run-queue wait is named beside another sign, never decides alone.
        u.run_queue_wait_s = Some(3.0);
        u.run_queue_wait_pct = Some(160.0);
        let v = verdict(&m, &u, Duration::from_millis(10)).expect("invalid");
        assert!(
            v.contains("waited for a CPU 3.0 s (160% of the cell"),
            "{v}"
        );
        u.timer_late_ms = Some(late(0.5));
        assert!(verdict(&m, &u, Duration::from_millis(10)).is_none());
    }

    #[test]
    fn responses_read_in_one_burst_make_a_cell_invalid() {
        // 8 token events 5 ms apart: observed as they came.
        let streamed = |i: u64| {
            let s = i * 100_000;
            let t: Vec<u64> = (0..8).map(|k| s + 10_000 + k * 5_000).collect();
            record(s, &t, s + 46_000, 8)
        };
        // 8 token events within 300 us, the end right after: read whole.
        let burst = |i: u64| {
            let s = i * 100_000;
            let t: Vec<u64> = (0..8).map(|k| s + 50_000 + k * 40).collect();
            record(s, &t, s + 50_300, 8)
        };
        let cell = |bursts: u64| {
            let mut acc = Accumulator::default();
            for i in 0..8 {
                acc.add(&if i < bursts { burst(i) } else { streamed(i) });
            }
            // Too short to judge: never a burst.
            acc.add(&record(0, &[10, 20], 30, 2));
            acc.finish()
        };
        let m = cell(3);
        assert_eq!((m.burst_checked, m.burst_responses), (8, 3));
        let v = verdict(&m, &usage(10.0), Duration::from_secs(1)).expect("invalid");
        assert!(
            v.contains("3 of 8 streamed responses arrived in one burst"),
            "{v}"
        );
        assert!(verdict(&cell(2), &usage(10.0), Duration::from_secs(1)).is_none());
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
