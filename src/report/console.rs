//! The table printed at the end of a run (and by `runner report`): per workload, one line per
//! cell, aligned for a terminal.

use super::data::ReportData;
use super::fmt::table;

/// The end-of-run summary.
pub fn summary(d: &ReportData) -> String {
    let mut out = String::new();
    for w in &d.workloads {
        out.push_str(&format!(
            "\nworkload {} (speedup: output tok/s over {})\n",
            w.name, d.baseline
        ));
        let rows: Vec<Vec<String>> = w
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.engine.clone(),
                    r.level.clone(),
                    r.status.clone(),
                    r.requests_ok.clone(),
                    r.failures.clone(),
                    r.request_per_s.clone(),
                    r.output_tok_per_s.clone(),
                    r.ttft_p95_ms.clone(),
                    r.e2e_p95_ms.clone(),
                    r.memory_peak.clone(),
                    r.speedup.clone(),
                    r.slo.clone(),
                ]
            })
            .collect();
        let mem = format!("{} peak", d.memory_label);
        out.push_str(&table(
            &[
                "engine",
                "load",
                "status",
                "ok",
                "failed",
                "req/s",
                "tok/s",
                "ttft p95 ms",
                "e2e p95 ms",
                &mem,
                "speedup",
                "slo",
            ],
            &rows,
        ));
        for c in &w.capacity {
            out.push_str(&format!(
                "  highest load meeting the SLO, {}: {}\n",
                c.engine, c.text
            ));
        }
        for r in &w.rows {
            match (&r.reason, &r.failed_requests) {
                (Some(why), _) if r.status == "INVALID" => {
                    out.push_str(&format!("  INVALID {} at {}: {why}\n", r.engine, r.level));
                }
                (_, Some(failed)) => {
                    out.push_str(&format!(
                        "  FAILED REQUESTS {} at {}: {failed}\n",
                        r.engine, r.level
                    ));
                }
                _ => {}
            }
        }
    }
    for q in &d.quality.steps {
        out.push_str(&format!(
            "\nquality {} ({}, baseline {})\n",
            q.name, q.kind, q.baseline
        ));
        let rows: Vec<Vec<String>> = q
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.engine.clone(),
                    r.status.clone(),
                    r.figure.clone(),
                    r.gates.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["engine", "status", q.kind.as_str(), "gates"],
            &rows,
        ));
        for r in q.rows.iter().filter(|r| !r.reason.is_empty()) {
            out.push_str(&format!("  {}: {}\n", r.engine, r.reason));
        }
    }
    out
}
