//! The steady-state window of a closed-loop cell (`[load] steady_state = true`): the span where
//! the level was actually held, ramp-up and drain left out, and the cell's figures over it.
//! A pure function of the cell's records, so it is pinned by unit tests on fixed instants.

use serde::{Deserialize, Serialize};

use super::record::RequestRecord;
use super::summary::{Accumulator, CellMetrics};

/// The share of the level that counts as holding it (as `vllm bench` and SGLang use).
pub const HELD_FRACTION: f64 = 0.95;

/// A cell's figures over its steady-state window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteadyState {
    /// Requests in flight that count as holding the level: ceil(0.95 x concurrency).
    pub min_in_flight: u32,
    /// The window of each run, in seconds from the cell's start: from the first instant
    /// `min_in_flight` requests were in flight to the last.
    pub windows_s: Vec<(f64, f64)>,
    /// The windows' total length.
    pub duration_s: f64,
    /// The figures of the requests sent and finished inside the windows.
    pub metrics: CellMetrics,
}

/// The span `[start, end]` (microseconds) from the first instant at least `need` of `records`
/// are in flight (sent, not yet ended) to the last such instant; `None` when that many never
/// are, or the span is empty.
pub fn window(records: &[&RequestRecord], need: u32) -> Option<(u64, u64)> {
    let mut events: Vec<(u64, i32)> = Vec::with_capacity(records.len() * 2);
    for r in records {
        events.push((r.sent_us, 1));
        events.push((r.end_us.max(r.sent_us), -1));
    }
    // At one instant, ends before starts: a request ending as the next is sent is not two.
    events.sort_unstable();
    let mut in_flight: i64 = 0;
    let mut start = None;
    let mut end = None;
    for (t, d) in events {
        let before = in_flight;
        in_flight += i64::from(d);
        if in_flight >= i64::from(need) && before < i64::from(need) && start.is_none() {
            start = Some(t);
        }
        if before >= i64::from(need) && in_flight < i64::from(need) {
            end = Some(t);
        }
    }
    match (start, end) {
        (Some(s), Some(e)) if e > s => Some((s, e)),
        _ => None,
    }
}

/// The threshold of a closed loop at `concurrency`.
pub fn min_in_flight(concurrency: u32) -> u32 {
    ((f64::from(concurrency) * HELD_FRACTION).ceil() as u32).max(1)
}

/// The steady state of a closed-loop cell at `concurrency`, run by run (each run has its own
/// ramp-up and drain), folded with `template` (the cell's own accumulator, so the figures
/// are derived as the cell's are). `None` when no run held the level.
pub fn steady_state(
    records: &[RequestRecord],
    concurrency: u32,
    template: &Accumulator,
) -> Option<SteadyState> {
    let need = min_in_flight(concurrency);
    let mut runs: Vec<u32> = records.iter().map(|r| r.run).collect();
    runs.sort_unstable();
    runs.dedup();
    let mut acc = template.clone();
    let mut windows_us = Vec::new();
    for run in runs {
        let of_run: Vec<&RequestRecord> = records.iter().filter(|r| r.run == run).collect();
        let Some((start, end)) = window(&of_run, need) else {
            continue;
        };
        windows_us.push((start, end));
        for r in of_run
            .iter()
            .filter(|r| r.sent_us >= start && r.end_us <= end)
        {
            acc.add(r);
        }
    }
    if windows_us.is_empty() {
        return None;
    }
    let mut metrics = acc.finish();
    let duration_us: u64 = windows_us.iter().map(|(s, e)| e - s).sum();
    let duration_s = duration_us as f64 / 1e6;
    // Rates over the windows themselves: requests straddling an edge are left out of both
    // the count and (mostly) the time.
    if duration_s > 0.0 {
        metrics.duration_s = duration_s;
        metrics.request_per_s = metrics.requests_ok as f64 / duration_s;
        metrics.output_tok_per_s = metrics.output_tokens as f64 / duration_s;
        metrics.total_tok_per_s =
            (metrics.output_tokens + metrics.input_tokens) as f64 / duration_s;
    }
    Some(SteadyState {
        min_in_flight: need,
        windows_s: windows_us
            .iter()
            .map(|&(s, e)| (s as f64 / 1e6, e as f64 / 1e6))
            .collect(),
        duration_s,
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(run: u32, sent_us: u64, end_us: u64) -> RequestRecord {
        let mut r: RequestRecord = serde_json::from_value(serde_json::json!({
            "index": 0, "worker": 0, "run": run, "scheduled_us": sent_us, "sent_us": sent_us,
            "end_us": end_us, "ok": true, "output_tokens": 10, "output_tokens_source": "usage",
            "chunks": 10, "content_us": [],
        }))
        .unwrap_or_else(|e| panic!("record: {e}"));
        r.first_byte_us = Some(sent_us + 1);
        r
    }

    #[test]
    fn the_threshold_is_95_percent_of_the_level_rounded_up() {
        assert_eq!(min_in_flight(1), 1);
        assert_eq!(min_in_flight(4), 4);
        assert_eq!(min_in_flight(20), 19);
        assert_eq!(min_in_flight(64), 61);
    }

    #[test]
    fn the_window_leaves_out_ramp_up_and_drain() {
        // Concurrency 2: the second worker starts late and the first stops early.
        let recs = [
            rec(0, 0, 100),
            rec(0, 100, 200),
            rec(0, 200, 300),
            rec(0, 50, 150),
            rec(0, 150, 250),
            rec(0, 250, 400),
        ];
        let refs: Vec<&RequestRecord> = recs.iter().collect();
        assert_eq!(window(&refs, 2), Some((50, 300)));
        assert_eq!(window(&refs, 3), None);
    }

    #[test]
    fn steady_figures_count_only_requests_inside_the_window() {
        let recs = vec![
            rec(0, 0, 100),
            rec(0, 100, 200),
            rec(0, 200, 300),
            rec(0, 50, 150),
            rec(0, 150, 250),
            rec(0, 250, 400),
        ];
        let s = steady_state(&recs, 2, &Accumulator::default()).expect("held");
        assert_eq!(s.min_in_flight, 2);
        assert_eq!(s.windows_s, [(50e-6, 300e-6)]);
        // Inside [50, 300]: 100-200, 200-300, 50-150, 150-250.
        assert_eq!(s.metrics.requests_ok, 4);
        assert!((s.metrics.output_tok_per_s - 40.0 / 250e-6).abs() < 1e-6);
    }

    #[test]
    fn each_run_has_its_own_window_and_a_level_never_held_has_none() {
        let recs = vec![
            rec(0, 0, 100),
            rec(0, 10, 120),
            rec(1, 1000, 1100),
            rec(1, 1020, 1200),
        ];
        let s = steady_state(&recs, 2, &Accumulator::default()).expect("held");
        assert_eq!(s.windows_s, [(10e-6, 100e-6), (1020e-6, 1100e-6)]);
        assert_eq!(s.metrics.requests_ok, 0);
        assert!(steady_state(&recs, 3, &Accumulator::default()).is_none());
    }
}
