//! `runner compare A B [...]`: bundles side by side. Cells are matched by engine, workload and
//! load level; each metric of a matched cell gets the ratio of the other bundle to the first
//! and a verdict that takes noise into account: with repeats, the runs' spread; without, a
//! relative threshold. Differences in plan, hardware, driver and engine versions are listed
//! first, because they explain most differences.

use serde::Serialize;

use crate::bundle::format::CellSummary;
use crate::bundle::read::LoadedBundle;
use crate::metrics::record::RequestRecord;
use crate::metrics::stats::{self, Statistic};
use crate::metrics::summary::CellMetrics;

/// Whether bigger is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

struct MetricDef {
    key: &'static str,
    better: Better,
    pick: fn(&CellMetrics) -> Option<f64>,
    /// The same statistic over raw per-request values (for the bootstrap), if it is one.
    sample: Option<Sample>,
}

/// A per-request latency statistic that can be recomputed from a cell's records.
#[derive(Clone, Copy)]
struct Sample {
    value: fn(&RequestRecord) -> Option<f64>,
    /// 0.95 for a p95; `None` for a mean.
    quantile: Option<f64>,
}

const METRICS: &[MetricDef] = &[
    MetricDef {
        key: "output_tok_per_s",
        better: Better::Higher,
        pick: |m| Some(m.output_tok_per_s),
        sample: None,
    },
    MetricDef {
        key: "request_per_s",
        better: Better::Higher,
        pick: |m| Some(m.request_per_s),
        sample: None,
    },
    MetricDef {
        key: "ttft_p95_ms",
        better: Better::Lower,
        pick: |m| m.ttft_ms.as_ref().map(|s| s.p95),
        sample: Some(Sample {
            value: |r| r.ttft_us().map(|v| v as f64 / 1000.0),
            quantile: Some(0.95),
        }),
    },
    MetricDef {
        key: "tpot_mean_ms",
        better: Better::Lower,
        pick: |m| m.tpot_ms.as_ref().map(|s| s.mean),
        sample: Some(Sample {
            value: |r| r.tpot_us().map(|v| v / 1000.0),
            quantile: None,
        }),
    },
    MetricDef {
        key: "e2e_p95_ms",
        better: Better::Lower,
        pick: |m| m.e2e_ms.as_ref().map(|s| s.p95),
        sample: Some(Sample {
            value: |r| Some(r.e2e_us() as f64 / 1000.0),
            quantile: Some(0.95),
        }),
    },
];

/// The comparison of one bundle against the first.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub base: String,
    pub other: String,
    /// What differs between the two runs besides the numbers.
    pub differences: Vec<String>,
    pub rows: Vec<Row>,
    /// Cells in only one of the bundles.
    pub unmatched: Vec<String>,
}

/// One metric of one matched cell.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub engine: String,
    pub workload: String,
    pub level: String,
    pub metric: String,
    pub base: f64,
    pub other: f64,
    /// other / base.
    pub ratio: f64,
    /// "better", "worse" or "no significant difference".
    pub verdict: String,
}

fn valid(c: &CellSummary) -> Option<&CellMetrics> {
    c.metrics.as_ref().filter(|m| c.valid && m.requests_ok > 0)
}

fn run_values(c: &CellSummary, pick: fn(&CellMetrics) -> Option<f64>) -> Vec<f64> {
    c.repeats.iter().filter_map(pick).collect()
}

/// The standard error of a latency statistic of a cell, by bootstrap over the successful
/// requests in its journal; `None` without a journal.
fn bootstrap_se(dir: &std::path::Path, c: &CellSummary, s: Sample) -> Option<f64> {
    let values: Vec<f64> = crate::bundle::read::records(&dir.join(c.records.as_ref()?))
        .ok()?
        .filter(|r| r.ok)
        .filter_map(|r| (s.value)(&r))
        .collect();
    let stat = match s.quantile {
        Some(q) => Statistic::Quantile(q),
        None => Statistic::Mean,
    };
    stats::bootstrap_se(&values, stat)
}

/// Compares `other` against `base`. A difference within `threshold` (relative) is noise; with
/// repeats, so is one within the runs' spread.
pub fn compare(base: &LoadedBundle, other: &LoadedBundle, threshold: f64) -> Comparison {
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    for a in &base.cells {
        let Some(b) = other
            .cells
            .iter()
            .find(|b| b.engine == a.engine && b.workload == a.workload && b.level == a.level)
        else {
            unmatched.push(format!("{} (only in {})", a.id, base.dir.display()));
            continue;
        };
        let (Some(ma), Some(mb)) = (valid(a), valid(b)) else {
            continue;
        };
        for def in METRICS {
            let (Some(va), Some(vb)) = ((def.pick)(ma), (def.pick)(mb)) else {
                continue;
            };
            if va <= 0.0 {
                continue;
            }
            let ratio = vb / va;
            // A difference must be large enough to matter, and larger than the noise. Tail
            // latencies vary more between runs than within one (the quickstart's TTFT p95 at 32
            // concurrent requests moved by up to 17% between identical runs), so from single
            // runs their threshold is five times larger; repeats give sharper verdicts.
            let (ra, rb) = (run_values(a, def.pick), run_values(b, def.pick));
            let repeated = ra.len() >= 2 && rb.len() >= 2;
            let tail = def.sample.is_some_and(|s| s.quantile.is_some());
            let limit = if tail && !repeated {
                5.0 * threshold
            } else {
                threshold
            };
            // A single event's latency cannot be resolved below the timers' resolution
            // (1 ms on the engine's side, 1 ms on the client's).
            let resolvable = !tail || (vb - va).abs() > 2.0;
            let large = (ratio - 1.0).abs() > limit && resolvable;
            let differs = if repeated {
                large && stats::welch_differ(&ra, &rb)
            } else if let (Some(sample), true) = (def.sample, large) {
                // One run each: a latency statistic's own sampling noise, by bootstrap over
                // the cell's raw records, must not explain the difference.
                match (
                    bootstrap_se(&base.dir, a, sample),
                    bootstrap_se(&other.dir, b, sample),
                ) {
                    (Some(sa), Some(sb)) => (vb - va).abs() > 1.96 * (sa * sa + sb * sb).sqrt(),
                    _ => true,
                }
            } else {
                large
            };
            let improved = match def.better {
                Better::Higher => ratio > 1.0,
                Better::Lower => ratio < 1.0,
            };
            let verdict = match (differs, improved) {
                (false, _) => "no significant difference",
                (true, true) => "better",
                (true, false) => "worse",
            };
            rows.push(Row {
                engine: a.engine.clone(),
                workload: a.workload.clone(),
                level: a.level.label(),
                metric: def.key.to_string(),
                base: va,
                other: vb,
                ratio,
                verdict: verdict.to_string(),
            });
        }
        // Energy figures: one per cell, no runs' spread; lower is better, and a difference
        // within the threshold is noise.
        for def in super::energy::COMPARED {
            let (Some(va), Some(vb)) = ((def.pick)(a), (def.pick)(b)) else {
                continue;
            };
            if va <= 0.0 {
                continue;
            }
            let ratio = vb / va;
            let verdict = if (ratio - 1.0).abs() <= threshold {
                "no significant difference"
            } else if ratio < 1.0 {
                "better"
            } else {
                "worse"
            };
            rows.push(Row {
                engine: a.engine.clone(),
                workload: a.workload.clone(),
                level: a.level.label(),
                metric: def.key.to_string(),
                base: va,
                other: vb,
                ratio,
                verdict: verdict.to_string(),
            });
        }
    }
    for b in &other.cells {
        if !base
            .cells
            .iter()
            .any(|a| a.engine == b.engine && a.workload == b.workload && a.level == b.level)
        {
            unmatched.push(format!("{} (only in {})", b.id, other.dir.display()));
        }
    }
    rows.extend(super::quality::compare_rows(base, other, threshold));
    Comparison {
        base: base.dir.display().to_string(),
        other: other.dir.display().to_string(),
        differences: differences(base, other),
        rows,
        unmatched,
    }
}

/// An engine's command line with its (run-specific) port written as `{port}`; with
/// `relative`, its plan-relative form (`{plan_dir}/...`, `{runner}`), so two checkouts of one
/// plan in different directories launch the same command.
fn command(e: &crate::bundle::format::EngineRecord, relative: bool) -> String {
    let port = e
        .url
        .as_deref()
        .and_then(|u| u.rsplit(':').next())
        .unwrap_or("");
    let argv = if relative { &e.argv_relative } else { &e.argv };
    argv.iter()
        .map(|a| if a == port { "{port}" } else { a.as_str() })
        .collect::<Vec<_>>()
        .join(" ")
}

fn differences(a: &LoadedBundle, b: &LoadedBundle) -> Vec<String> {
    let (ma, mb) = (&a.manifest, &b.manifest);
    let mut out = Vec::new();
    let mut diff = |what: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{what}: {x} -> {y}"));
        }
    };
    diff(
        "plan sha256",
        ma.plan.sha256.clone(),
        mb.plan.sha256.clone(),
    );
    diff("host", ma.host.hostname.clone(), mb.host.hostname.clone());
    diff("CPUs", ma.host.cpus.to_string(), mb.host.cpus.to_string());
    let gpus = |m: &crate::bundle::format::Manifest| {
        if m.gpu.available {
            m.gpu
                .devices
                .iter()
                .map(|d| d.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "none".into()
        }
    };
    diff("GPUs", gpus(ma), gpus(mb));
    diff(
        "driver",
        ma.gpu.driver_version.clone().unwrap_or_else(|| "-".into()),
        mb.gpu.driver_version.clone().unwrap_or_else(|| "-".into()),
    );
    diff(
        "runner",
        ma.runner_version.clone(),
        mb.runner_version.clone(),
    );
    for e in &ma.engines {
        if let Some(f) = mb.engines.iter().find(|f| f.name == e.name) {
            diff(
                &format!("engine {} version", e.name),
                e.version.clone().unwrap_or_else(|| "-".into()),
                f.version.clone().unwrap_or_else(|| "-".into()),
            );
            // Bundles written before the relative form was recorded compare as launched.
            let relative = !e.argv_relative.is_empty() && !f.argv_relative.is_empty();
            diff(
                &format!("engine {} command", e.name),
                command(e, relative),
                command(f, relative),
            );
        }
    }
    out
}

/// A terminal table.
pub fn render_table(c: &Comparison) -> String {
    let mut out = format!("base:  {}\nother: {}\n", c.base, c.other);
    if c.differences.is_empty() {
        out.push_str("same plan, host, GPUs, driver and engine versions\n");
    } else {
        for d in &c.differences {
            out.push_str(&format!("differs: {d}\n"));
        }
    }
    let rows: Vec<Vec<String>> = c
        .rows
        .iter()
        .map(|r| {
            vec![
                r.engine.clone(),
                r.workload.clone(),
                r.level.clone(),
                r.metric.clone(),
                format!("{:.2}", r.base),
                format!("{:.2}", r.other),
                format!("{:.3}x", r.ratio),
                r.verdict.clone(),
            ]
        })
        .collect();
    out.push_str(&super::fmt::table(
        &[
            "engine", "workload", "load", "metric", "base", "other", "ratio", "verdict",
        ],
        &rows,
    ));
    for u in &c.unmatched {
        out.push_str(&format!("unmatched: {u}\n"));
    }
    out
}

/// Markdown.
pub fn render_markdown(c: &Comparison) -> String {
    let mut out = format!(
        "# Comparison\n\n- base: `{}`\n- other: `{}`\n",
        c.base, c.other
    );
    for d in &c.differences {
        out.push_str(&format!("- differs: {d}\n"));
    }
    out.push_str("\n| engine | workload | load | metric | base | other | ratio | verdict |\n|---|---|---|---|---|---|---|---|\n");
    for r in &c.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.3}x | {} |\n",
            r.engine, r.workload, r.level, r.metric, r.base, r.other, r.ratio, r.verdict
        ));
    }
    for u in &c.unmatched {
        out.push_str(&format!("\nunmatched: {u}\n"));
    }
    out
}

/// A self-contained HTML page.
pub fn render_html(c: &Comparison) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::from("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>runner compare</title><style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}td:first-child{text-align:left}.better{color:#087f23}.worse{color:#b00020}</style></head><body><h1>Comparison</h1>");
    out.push_str(&format!(
        "<p>base: <code>{}</code><br>other: <code>{}</code></p><ul>",
        esc(&c.base),
        esc(&c.other)
    ));
    for d in &c.differences {
        out.push_str(&format!("<li>differs: {}</li>", esc(d)));
    }
    out.push_str("</ul><table><tr><th>engine</th><th>workload</th><th>load</th><th>metric</th><th>base</th><th>other</th><th>ratio</th><th>verdict</th></tr>");
    for r in &c.rows {
        let class = match r.verdict.as_str() {
            "better" => "better",
            "worse" => "worse",
            _ => "",
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.3}x</td><td class=\"{class}\">{}</td></tr>",
            esc(&r.engine), esc(&r.workload), esc(&r.level), r.metric, r.base, r.other, r.ratio, r.verdict
        ));
    }
    out.push_str("</table></body></html>\n");
    out
}
