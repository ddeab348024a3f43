//! `summary.csv`: one row per cell, the capacity grid of the guides, for spreadsheets.
//! Written by hand rather than with the `csv` crate: every field is a number or one of the
//! plan's names, which resolution restricts to `[A-Za-z0-9_-]`, so nothing needs quoting.

use crate::bundle::format::CellSummary;
use crate::metrics::summary::Stats;
use crate::plan::matrix::MatrixValues;
use crate::plan::model::Plan;

/// The CSV's matrix columns: one per `[engine.matrix]` key, then one per `[workload.matrix]`
/// key (named `workload_<key>` where an engine key has the same name), in the order first
/// written; empty where an engine or workload has no such key.
#[derive(Debug, Clone, Default)]
pub struct MatrixColumns {
    header: Vec<String>,
    /// (from the engine, key) for each header column.
    columns: Vec<(bool, String)>,
    engines: Vec<(String, MatrixValues)>,
    workloads: Vec<(String, MatrixValues)>,
    /// The plan's prices, for the cost columns (`report::energy`).
    prices: super::energy::Prices,
}

impl MatrixColumns {
    pub fn of(plan: &Plan) -> MatrixColumns {
        let mut c = MatrixColumns {
            engines: plan
                .engines
                .iter()
                .map(|e| (e.name.clone(), e.matrix.clone()))
                .collect(),
            workloads: plan
                .workloads
                .iter()
                .map(|w| (w.name.clone(), w.matrix.clone()))
                .collect(),
            prices: super::energy::Prices::of(plan),
            ..MatrixColumns::default()
        };
        for (from_engine, list) in [(true, &c.engines), (false, &c.workloads)] {
            for (_, values) in list {
                for k in values.keys() {
                    if c.columns.iter().any(|(e, ck)| *e == from_engine && ck == k) {
                        continue;
                    }
                    let taken = c.header.iter().any(|h| h == k)
                        || HEADER.contains(&k)
                        || super::energy::CSV_HEADER.contains(&k);
                    c.header.push(if taken {
                        format!("{}_{k}", if from_engine { "engine" } else { "workload" })
                    } else {
                        k.to_string()
                    });
                    c.columns.push((from_engine, k.to_string()));
                }
            }
        }
        c
    }

    fn fields(&self, engine: &str, workload: &str) -> Vec<String> {
        let find = |list: &[(String, MatrixValues)], name: &str, key: &str| {
            list.iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| v.get(key))
                .unwrap_or_default()
        };
        self.columns
            .iter()
            .map(|(from_engine, key)| {
                if *from_engine {
                    find(&self.engines, engine, key)
                } else {
                    find(&self.workloads, workload, key)
                }
            })
            .collect()
    }
}

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
    "percentiles",
    "ttft_count",
    "itl_count",
    "e2e_count",
    "ttft_text_p50_ms",
    "ttft_text_p95_ms",
    "itl_text_mean_ms",
    "requests_without_text",
    "burst_responses",
    "timer_late_p99_ms",
    "engine_scrapes",
    "client_prompt_tokens_mean",
    "server_prompt_tokens_mean",
    "prompt_tokens_diff_mean",
    "cached_tokens_mean",
    "prefix_cache_hit_rate",
];

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.3}"))
}

fn int(v: Option<u64>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

/// The whole CSV for these cells.
pub fn render(cells: &[CellSummary], matrix: &MatrixColumns) -> String {
    // The matrix columns go right after `engine` and `workload`, the names they explain.
    let mut header: Vec<&str> = HEADER[..2].to_vec();
    header.extend(matrix.header.iter().map(String::as_str));
    header.extend(&HEADER[2..]);
    header.extend(super::energy::CSV_HEADER);
    let mut out = header.join(",");
    out.push('\n');
    for c in cells {
        // An invalid cell's numbers describe the client, not the server: never a result.
        let m = c.metrics.as_ref().filter(|_| c.valid);
        let st =
            |pick: fn(&crate::metrics::summary::CellMetrics) -> &Option<Stats>,
             q: fn(&Stats) -> f64| num(m.and_then(|m| pick(m).as_ref()).map(q));
        let r = c.resources.as_ref();
        let status = crate::bundle::format::label(&c.status);
        let mut fields = vec![c.engine.clone(), c.workload.clone()];
        fields.extend(matrix.fields(&c.engine, &c.workload));
        fields.extend([
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
            num(m.and_then(|m| m.goodput_req_per_s)),
            st(|m| &m.dispatch_lag_ms, |s| s.p99),
            num(c.client.as_ref().map(|u| u.cpu_pct)),
            c.slo
                .as_ref()
                .map_or(String::new(), |s| s.passed.to_string()),
            // Which estimator the percentile columns use: `nearest_rank` (HDR, the default;
            // p99 of 100 or fewer samples is the maximum) or `interpolated` (numpy's).
            c.metrics.as_ref().map_or(String::new(), |m| {
                match m.percentiles {
                    crate::plan::model::Percentiles::NearestRank => "nearest_rank",
                    crate::plan::model::Percentiles::Interpolated => "interpolated",
                }
                .to_string()
            }),
            int(m.and_then(|m| m.ttft_ms.as_ref()).map(|s| s.count)),
            int(m.and_then(|m| m.itl_ms.as_ref()).map(|s| s.count)),
            int(m.and_then(|m| m.e2e_ms.as_ref()).map(|s| s.count)),
            st(|m| &m.ttft_text_ms, |s| s.p50),
            st(|m| &m.ttft_text_ms, |s| s.p95),
            st(|m| &m.itl_text_ms, |s| s.mean),
            int(m.map(|m| m.requests_without_text)),
            int(c.metrics.as_ref().map(|m| m.burst_responses)),
            num(c
                .client
                .as_ref()
                .and_then(|u| u.timer_late_ms.as_ref())
                .map(|t| t.p99)),
            int(c.engine_metrics.as_ref().map(|t| t.scrapes)),
            num(m.and_then(|m| m.client_prompt_tokens_mean)),
            num(m.and_then(|m| m.server_prompt_tokens_mean)),
            num(m.and_then(|m| m.prompt_tokens_diff_mean)),
            num(m.and_then(|m| m.cached_tokens_mean)),
            num(c.prefix_cache_hit_rate),
        ]);
        fields.extend(super::energy::csv_fields(c, &matrix.prices));
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// The CSV with two columns per `[[quality]]` step at the end: `quality_<step>` (the engine's
/// figure: agreement, perplexity or the command's metric) and `quality_<step>_status`, the same
/// on every row of an engine; empty where the step did not run on it.
pub fn render_with_quality(
    cells: &[CellSummary],
    matrix: &MatrixColumns,
    quality: &[crate::quality::record::QualityRecord],
) -> String {
    let base = render(cells, matrix);
    let mut steps: Vec<&str> = Vec::new();
    for r in quality {
        if !steps.contains(&r.step.as_str()) {
            steps.push(&r.step);
        }
    }
    if steps.is_empty() {
        return base;
    }
    let mut lines = base.lines();
    let mut out = lines.next().unwrap_or_default().to_string();
    for s in &steps {
        out.push_str(&format!(",quality_{s},quality_{s}_status"));
    }
    out.push('\n');
    for (line, c) in lines.zip(cells) {
        out.push_str(line);
        for s in &steps {
            let r = quality
                .iter()
                .find(|r| r.step == *s && r.engine == c.engine);
            let figure = r
                .and_then(|r| r.headline())
                .map_or(String::new(), |x| format!("{x:.6}"));
            let status = r.map_or(String::new(), |r| crate::bundle::format::label(&r.status));
            out.push_str(&format!(",{figure},{status}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_row_has_a_field_per_column() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/quickstart_bundle");
        let b = crate::bundle::read::load(&dir).expect("the fixture bundle");
        let csv = super::render(&b.cells, &super::MatrixColumns::of(&b.plan));
        let mut lines = csv.lines();
        let n = lines.next().expect("header").split(',').count();
        for l in lines {
            assert_eq!(l.split(',').count(), n, "{l}");
        }
    }
}
