//! `summary.csv`: one row per cell, the capacity grid of the guides, for spreadsheets.
//! Written by hand rather than with the `csv` crate: every field is a number or one of the
//! plan's names, which resolution restricts to `[A-Za-z0-9_-]`, so nothing needs quoting.

use crate::bundle::format::CellSummary;
use crate::metrics::summary::Stats;

const HEADER: &[&str] = &[
    "engine",
    "workload",
    "concurrency",
    "rate_per_s",
    "status",
    "valid",
    "requests_ok",
    "requests_failed",
    "duration_s",
    "request_per_s",
    "output_tok_per_s",
    "total_tok_per_s",
    "ttft_mean_ms",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "tpot_mean_ms",
    "tpot_p50_ms",
    "tpot_p95_ms",
    "itl_mean_ms",
    "itl_p50_ms",
    "itl_p95_ms",
    "e2e_mean_ms",
    "e2e_p50_ms",
    "e2e_p90_ms",
    "e2e_p95_ms",
    "e2e_p99_ms",
    "gpu_mem_used_peak_bytes",
    "gpu_util_mean_pct",
    "rss_peak_bytes",
    "engine_gpu_mem_peak_bytes",
    "gpu_mem_reserved_bytes",
    "engine_running_peak",
    "engine_waiting_peak",
    "goodput_req_per_s",
    "dispatch_lag_p99_ms",
    "client_cpu_pct",
    "slo_passed",
];

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.3}"))
}

fn int(v: Option<u64>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// The whole CSV for these cells.
pub fn render(cells: &[CellSummary]) -> String {
    let mut out = HEADER.join(",");
    out.push('\n');
    for c in cells {
        // An invalid cell's numbers describe the client, not the server: never a result.
        let m = c.metrics.as_ref().filter(|_| c.valid);
        let st =
            |pick: fn(&crate::metrics::summary::CellMetrics) -> &Option<Stats>,
             q: fn(&Stats) -> f64| num(m.and_then(|m| pick(m).as_ref()).map(q));
        let r = c.resources.as_ref();
        let status = crate::bundle::format::label(&c.status);
        let fields = [
            c.engine.clone(),
            c.workload.clone(),
            int(c.level.concurrency().map(u64::from)),
            num(c.level.rate()),
            status,
            c.valid.to_string(),
            int(m.map(|m| m.requests_ok)),
            int(m.map(|m| m.requests_failed)),
            num(m.map(|m| m.duration_s)),
            num(m.map(|m| m.request_per_s)),
            num(m.map(|m| m.output_tok_per_s)),
            num(m.map(|m| m.total_tok_per_s)),
            st(|m| &m.ttft_ms, |s| s.mean),
            st(|m| &m.ttft_ms, |s| s.p50),
            st(|m| &m.ttft_ms, |s| s.p90),
            st(|m| &m.ttft_ms, |s| s.p95),
            st(|m| &m.ttft_ms, |s| s.p99),
            st(|m| &m.tpot_ms, |s| s.mean),
            st(|m| &m.tpot_ms, |s| s.p50),
            st(|m| &m.tpot_ms, |s| s.p95),
            st(|m| &m.itl_ms, |s| s.mean),
            st(|m| &m.itl_ms, |s| s.p50),
            st(|m| &m.itl_ms, |s| s.p95),
            st(|m| &m.e2e_ms, |s| s.mean),
            st(|m| &m.e2e_ms, |s| s.p50),
            st(|m| &m.e2e_ms, |s| s.p90),
            st(|m| &m.e2e_ms, |s| s.p95),
            st(|m| &m.e2e_ms, |s| s.p99),
            int(r.and_then(|r| r.gpu_mem_used_peak_bytes)),
            num(r.and_then(|r| r.gpu_util_mean_pct)),
            int(r.and_then(|r| r.rss_peak_bytes)),
            int(r.and_then(|r| r.engine_gpu_mem_peak_bytes)),
            int(r.and_then(|r| r.gpu_mem_reserved_bytes)),
            num(c.engine_metrics.as_ref().and_then(|t| {
                t.gauge(&["num_requests_running", "num_running_reqs"])
                    .map(|g| g.peak)
            })),
            num(c.engine_metrics.as_ref().and_then(|t| {
                t.gauge(&["num_requests_waiting", "num_queue_reqs"])
                    .map(|g| g.peak)
            })),
            c.slo
                .as_ref()
                .map_or(String::new(), |s| s.passed.to_string()),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}
