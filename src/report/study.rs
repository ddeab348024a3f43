//! The case study's computed parts, from a bundle alone: a before/after table per workload
//! (single-request latency, throughput at each level, memory, capacity, cost per token),
//! findings stated from the data, and the cost analysis of `[cost] usd_per_hour`.

use serde::Serialize;

use crate::bundle::format::{CellStatus, CellSummary};
use crate::bundle::read::LoadedBundle;
use crate::plan::model::LoadLevel;

use super::fmt::{bytes, engine_memory};

/// A table with one column per engine.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub workload: String,
    pub engines: Vec<String>,
    pub rows: Vec<ComparisonRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComparisonRow {
    pub label: String,
    pub values: Vec<String>,
}

/// Dollars per million output tokens for one engine and workload.
#[derive(Debug, Clone, Serialize)]
pub struct CostRow {
    pub engine: String,
    pub workload: String,
    /// The level the cost is computed at: the highest meeting the SLO, else the fastest.
    pub level: String,
    pub output_tok_per_s: f64,
    pub usd_per_million_tokens: f64,
}

/// Everything the case-study sections show.
#[derive(Debug, Clone, Serialize)]
pub struct Study {
    pub comparisons: Vec<Comparison>,
    pub findings: Vec<String>,
    pub usd_per_hour: Option<f64>,
    pub costs: Vec<CostRow>,
}

/// Whether a cell is a result to compare: measured to the end (`ok`, not stopped early), valid,
/// and with every request successful. A failed, partial or invalid cell is never compared.
pub fn comparable(c: &CellSummary) -> bool {
    c.status == CellStatus::Ok
        && c.reason.is_none()
        && c.valid
        && c.metrics
            .as_ref()
            .is_some_and(|m| m.requests_ok > 0 && m.requests_failed == 0)
}

/// One line on a cell that some requests failed in, with the server's message.
pub fn failed_requests_line(c: &CellSummary) -> Option<String> {
    c.metrics.as_ref()?.failed_requests_line()
}

/// Builds the study of a bundle.
pub fn build(b: &LoadedBundle) -> Study {
    let engines: Vec<String> = b.plan.engines.iter().map(|e| e.name.clone()).collect();
    let gpu = b.manifest.gpu.available;
    let mut comparisons = Vec::new();
    let mut findings = Vec::new();
    let mut costs = Vec::new();
    for w in &b.plan.workloads {
        let cells: Vec<&CellSummary> = b
            .cells
            .iter()
            .filter(|c| c.workload == w.name && comparable(c))
            .collect();
        if cells.is_empty() {
            continue;
        }
        let mut levels: Vec<LoadLevel> = Vec::new();
        for c in &cells {
            if !levels.contains(&c.level) {
                levels.push(c.level);
            }
        }
        levels.sort_by(|a, b| a.magnitude().total_cmp(&b.magnitude()));
        let cell = |e: &str, l: LoadLevel| {
            cells
                .iter()
                .find(|c| c.engine == e && c.level == l)
                .copied()
        };
        let row = |label: String, f: &dyn Fn(&str) -> Option<String>| ComparisonRow {
            label,
            values: engines
                .iter()
                .map(|e| f(e).unwrap_or_else(|| "-".into()))
                .collect(),
        };
        let mut rows = Vec::new();
        let lowest = levels[0];
        rows.push(row(
            format!("latency at {} (e2e p50 / TTFT p50, ms)", lowest.label()),
            &|e| {
                let m = cell(e, lowest)?.metrics.as_ref()?;
                Some(format!(
                    "{:.0} / {:.0}",
                    m.e2e_ms.as_ref()?.p50,
                    m.ttft_ms.as_ref().map_or(f64::NAN, |s| s.p50)
                ))
            },
        ));
        for &l in &levels {
            rows.push(row(format!("output tok/s at {}", l.label()), &|e| {
                let m = cell(e, l)?.metrics.as_ref()?;
                Some(format!(
                    "{:.1} ({:.2} req/s)",
                    m.output_tok_per_s, m.request_per_s
                ))
            }));
        }
        let mem_label = if gpu { "GPU memory" } else { "engine RSS" };
        rows.push(row(format!("{mem_label}: idle / peak"), &|e| {
            let rec = b.manifest.engines.iter().find(|r| r.name == e)?;
            let pick = |r: &crate::metrics::sampler::Resources| engine_memory(r, gpu);
            let idle = rec.idle.as_ref().and_then(pick);
            let peak = b
                .cells
                .iter()
                .filter(|c| c.engine == e)
                .filter_map(|c| c.resources.as_ref().and_then(pick))
                .max();
            Some(format!(
                "{} / {}",
                idle.map_or("-".into(), bytes),
                peak.map_or("-".into(), bytes)
            ))
        }));
        let capacity = |e: &str| {
            levels.iter().rev().copied().find(|&l| {
                cell(e, l)
                    .and_then(|c| c.slo.as_ref())
                    .is_some_and(|v| v.passed)
            })
        };
        // A search that never failed a probe found a floor: its capacity is `>= max`.
        let at_max = |e: &str, l: LoadLevel| {
            b.manifest.searches.iter().any(|s| {
                s.engine == e && s.workload == w.name && s.capacity_at_max && s.capacity == Some(l)
            })
        };
        if !w.slo.is_empty() {
            rows.push(row("highest load meeting the SLO".into(), &|e| {
                Some(capacity(e).map_or("none".into(), |l| {
                    if at_max(e, l) {
                        format!(">= {}", l.label())
                    } else {
                        l.label()
                    }
                }))
            }));
        }
        // Cost per token at the level that matters: the highest meeting the SLO, else the
        // fastest level measured.
        let at = |e: &str| {
            if w.slo.is_empty() {
                levels
                    .iter()
                    .copied()
                    .filter_map(|l| cell(e, l))
                    .max_by(|a, b| tps(a).total_cmp(&tps(b)))
            } else {
                capacity(e).and_then(|l| cell(e, l))
            }
        };
        let mut cost_cells = Vec::new();
        for e in &engines {
            if let (Some(c), Some(price)) = (at(e), b.plan.usd_per_hour) {
                let t = tps(c);
                if t > 0.0 {
                    cost_cells.push(CostRow {
                        engine: e.clone(),
                        workload: w.name.clone(),
                        level: c.level.label(),
                        output_tok_per_s: t,
                        usd_per_million_tokens: price / (t * 3600.0) * 1e6,
                    });
                }
            }
        }
        if !cost_cells.is_empty() {
            rows.push(row("$ per million output tokens".into(), &|e| {
                cost_cells
                    .iter()
                    .find(|c| c.engine == e)
                    .map(|c| format!("{:.2} (at {})", c.usd_per_million_tokens, c.level))
            }));
        }
        costs.extend(cost_cells);
        // Energy per token at the same level, where the GPUs' power was read.
        let energy = |e: &str| {
            at(e)
                .and_then(|c| {
                    c.resources
                        .as_ref()?
                        .energy
                        .as_ref()?
                        .energy_j_per_output_token
                })
                .map(|j| (j, at(e).map(|c| c.level.label()).unwrap_or_default()))
        };
        if engines.iter().any(|e| energy(e).is_some()) {
            rows.push(row("energy per output token (J)".into(), &|e| {
                energy(e).map(|(j, l)| format!("{j:.4} (at {l})"))
            }));
            if let Some(kwh) = b.plan.usd_per_kwh {
                rows.push(row(
                    "$ per million output tokens, electricity".into(),
                    &|e| {
                        energy(e).map(|(j, l)| {
                            format!(
                                "{:.4} (at {l})",
                                crate::metrics::energy::usd_per_million_tokens_from_energy(j, kwh)
                            )
                        })
                    },
                ));
            }
        }

        // Findings, stated from the numbers.
        let base = &engines[0];
        for e in engines.iter().skip(1) {
            let shared: Vec<LoadLevel> = levels
                .iter()
                .copied()
                .filter(|&l| cell(base, l).is_some() && cell(e, l).is_some())
                .collect();
            if let Some(&top) = shared.last() {
                let (a, bb) = (
                    tps(cell(e, top).expect("shared")),
                    tps(cell(base, top).expect("shared")),
                );
                if bb > 0.0 {
                    findings.push(format!(
                        "`{}`: {e} sustains {:.1}x the output throughput of {base} at {} ({:.0} vs {:.0} tokens/s).",
                        w.name,
                        a / bb,
                        level_phrase(top),
                        a,
                        bb
                    ));
                }
            }
            if shared.len() >= 2 {
                let ratio = |l: LoadLevel| {
                    let bb = tps(cell(base, l).expect("shared"));
                    (bb > 0.0).then(|| tps(cell(e, l).expect("shared")) / bb)
                };
                if let (Some(lo), Some(hi)) = (ratio(shared[0]), ratio(*shared.last().expect("2")))
                {
                    let trend = if hi > lo * 1.1 {
                        "grows with load"
                    } else if hi < lo / 1.1 {
                        "shrinks with load"
                    } else {
                        "stays about the same across load"
                    };
                    findings.push(format!(
                        "`{}`: the advantage of {e} over {base} {trend} ({lo:.1}x at {} to {hi:.1}x at {}).",
                        w.name,
                        shared[0].label(),
                        shared.last().expect("2").label()
                    ));
                }
            }
        }
        if !w.slo.is_empty() {
            for e in &engines {
                findings.push(match capacity(e) {
                    Some(l) if at_max(e, l) => format!(
                        "`{}`: {e} meets the SLO at every level probed, up to the search's max of {}: its capacity is at least that.",
                        w.name,
                        level_phrase(l)
                    ),
                    Some(l) => {
                        format!("`{}`: {e} meets the SLO up to {}.", w.name, level_phrase(l))
                    }
                    None => format!("`{}`: {e} meets the SLO at no measured level.", w.name),
                });
            }
        }
        comparisons.push(Comparison {
            workload: w.name.clone(),
            engines: engines.clone(),
            rows,
        });
    }
    for e in &b.manifest.engines {
        if let Some(f) = &e.failure {
            findings.push(format!("{} failed: {f}", e.name));
        }
    }
    for c in &b.cells {
        if let Some(line) = failed_requests_line(c) {
            findings.push(format!(
                "`{}`: {} at {}: {line}; not compared.",
                c.workload,
                c.engine,
                c.level.label()
            ));
        }
    }
    for c in b.cells.iter().filter(|c| !c.valid) {
        findings.push(format!(
            "`{}`: {} at {} is invalid, not a result: {}.",
            c.workload,
            c.engine,
            c.level.label(),
            c.invalid_reason.as_deref().unwrap_or("no reason recorded")
        ));
    }
    Study {
        comparisons,
        findings,
        usd_per_hour: b.plan.usd_per_hour,
        costs,
    }
}

fn tps(c: &CellSummary) -> f64 {
    c.metrics.as_ref().map_or(0.0, |m| m.output_tok_per_s)
}

fn level_phrase(l: LoadLevel) -> String {
    match l {
        LoadLevel::Concurrency(1) => "1 request at a time".into(),
        LoadLevel::Concurrency(c) => format!("{c} concurrent requests"),
        LoadLevel::Rate(_) => l.label(),
    }
}
