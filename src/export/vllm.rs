//! `--format vllm`: one JSON file per cell in the layout `vllm bench serve --save-result`
//! writes (vllm/benchmarks/serve.py: the run's settings, then the result's totals, rates and
//! `mean_/median_/pNN_<metric>_ms` keys), named as it names its files, so tools that read
//! vLLM's results read runner's. Only valid, measured cells are exported: the rest are
//! listed as skipped, with why. Percentiles are numpy's linear interpolation, as vLLM's bench
//! computes them, over the cell's own records (exact, not the summary's HDR nearest rank);
//! where the records cannot be read, the summary's figures are written and said to be.

use serde_json::{json, Map, Value};

use super::files::{skip_reason, Export, ExportFile, Skipped};
use crate::bundle::format::CellSummary;
use crate::bundle::read::LoadedBundle;
use crate::metrics::stats::interpolated;
use crate::metrics::summary::Stats;
use crate::plan::model::{Api, Arrival, LoadLevel};

/// A float as Python's `str()` writes it in vLLM's file names: `10.0`, `2.5`.
fn py_float(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// `vllm bench serve --save-result` names a file
/// `{label}-{request_rate}qps[-concurrency{N}]-{model basename}-{%Y%m%d-%H%M%S}.json`.
fn file_name(label: &str, rate: &str, concurrency: Option<u32>, model: &str, date: &str) -> String {
    let base = model.rsplit('/').next().unwrap_or(model);
    let conc = concurrency
        .map(|c| format!("-concurrency{c}"))
        .unwrap_or_default();
    let clean = |s: &str| s.replace(['/', '\0'], "_");
    format!(
        "{}-{rate}qps{conc}-{}-{date}.json",
        clean(label),
        clean(base)
    )
}

fn put_stats(out: &mut Map<String, Value>, metric: &str, stats: &Option<Stats>) {
    let Some(s) = stats else { return };
    out.insert(format!("mean_{metric}_ms"), json!(s.mean));
    out.insert(format!("median_{metric}_ms"), json!(s.p50));
    for (p, v) in [("90", s.p90), ("95", s.p95), ("99", s.p99)] {
        out.insert(format!("p{p}_{metric}_ms"), json!(v));
    }
}

/// The cell's TTFT, TPOT, ITL and E2E distributions with numpy-interpolated percentiles, from
/// its successful records; `None` when its journal cannot be read.
fn from_records(bundle: &LoadedBundle, cell: &CellSummary) -> Option<[Option<Stats>; 4]> {
    let path = bundle.dir.join(cell.records.as_ref()?);
    let (mut ttft, mut tpot, mut itl, mut e2e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in crate::bundle::read::records(&path).ok()?.filter(|r| r.ok) {
        ttft.extend(r.ttft_us().map(|t| t as f64 / 1000.0));
        tpot.extend(r.tpot_us().map(|t| t / 1000.0));
        itl.extend(r.itl_us().map(|t| t as f64 / 1000.0));
        e2e.push(r.e2e_us() as f64 / 1000.0);
    }
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let q = |q| interpolated(&v, q);
        Some(Stats {
            count: v.len() as u64,
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
            p50: q(0.5)?,
            p90: q(0.9)?,
            p95: q(0.95)?,
            p99: q(0.99)?,
            max: *v.last()?,
        })
    };
    Some([stats(ttft), stats(tpot), stats(itl), stats(e2e)])
}

/// One cell's result file.
pub fn cell_result(bundle: &LoadedBundle, cell: &CellSummary) -> Option<ExportFile> {
    let m = cell.metrics.as_ref()?;
    let engine = bundle.plan.engines.iter().find(|e| e.name == cell.engine)?;
    let workload = bundle
        .plan
        .workloads
        .iter()
        .find(|w| w.name == cell.workload);
    let endpoint = match engine.api {
        Api::Chat => "openai-chat",
        Api::Completions => "openai",
    };
    let started = cell.started_at.unwrap_or(bundle.manifest.started_at);
    let date = started.format("%Y%m%d-%H%M%S").to_string();
    let (rate_name, rate, max_concurrency) = match cell.level {
        LoadLevel::Concurrency(c) => ("inf".to_string(), json!("inf"), Some(c)),
        LoadLevel::Rate(r) => (
            py_float(r),
            json!(r),
            workload.and_then(|w| w.load.max_in_flight),
        ),
    };
    // vLLM's burstiness is the gamma shape (1: Poisson, higher: more even); runner's is its
    // inverse (docs/plan.md). Constant spacing is the limit of an infinite shape.
    let burstiness = match (&cell.level, workload.map(|w| &w.load.arrival)) {
        (LoadLevel::Rate(_), Some(Arrival::Constant)) => json!("inf"),
        (LoadLevel::Rate(_), Some(Arrival::Gamma { burstiness, .. })) => json!(1.0 / burstiness),
        _ => json!(1.0),
    };
    let mut out = Map::new();
    out.insert("date".into(), json!(date));
    out.insert("endpoint_type".into(), json!(endpoint));
    out.insert("backend".into(), json!(endpoint));
    out.insert("label".into(), json!(cell.engine));
    out.insert("model_id".into(), json!(engine.model));
    out.insert("tokenizer_id".into(), json!(engine.model));
    out.insert("num_prompts".into(), json!(m.requests_total));
    // What `--metadata KEY=VALUE` would add: where the numbers came from.
    out.insert("runner_cell".into(), json!(cell.id));
    out.insert("runner_plan".into(), json!(bundle.manifest.plan.name));
    out.insert(
        "runner_version".into(),
        json!(bundle.manifest.runner_version),
    );
    out.insert("request_rate".into(), rate);
    out.insert("burstiness".into(), burstiness);
    out.insert("max_concurrency".into(), json!(max_concurrency));
    out.insert("duration".into(), json!(m.duration_s));
    out.insert("completed".into(), json!(m.requests_ok));
    out.insert("failed".into(), json!(m.requests_failed));
    out.insert("total_input_tokens".into(), json!(m.input_tokens));
    out.insert("total_output_tokens".into(), json!(m.output_tokens));
    out.insert("request_throughput".into(), json!(m.request_per_s));
    out.insert("request_goodput".into(), json!(m.goodput_req_per_s));
    out.insert("output_throughput".into(), json!(m.output_tok_per_s));
    out.insert("total_token_throughput".into(), json!(m.total_tok_per_s));
    let (estimator, [ttft, tpot, itl, e2e]) = match from_records(bundle, cell) {
        Some(s) => ("numpy linear interpolation over the cell's records", s),
        None => (
            "the summary's (records unreadable)",
            [
                m.ttft_ms.clone(),
                m.tpot_ms.clone(),
                m.itl_ms.clone(),
                m.e2e_ms.clone(),
            ],
        ),
    };
    out.insert("runner_percentiles".into(), json!(estimator));
    put_stats(&mut out, "ttft", &ttft);
    put_stats(&mut out, "tpot", &tpot);
    put_stats(&mut out, "itl", &itl);
    put_stats(&mut out, "e2el", &e2e);
    Some(ExportFile {
        name: file_name(
            &cell.engine,
            &rate_name,
            max_concurrency,
            &engine.model,
            &date,
        ),
        json: Value::Object(out),
    })
}

/// Every exportable cell of the bundle, in the manifest's order.
pub fn export(bundle: &LoadedBundle) -> Export {
    let mut e = Export::default();
    for cell in &bundle.cells {
        if let Some(reason) = skip_reason(cell) {
            e.skipped.push(Skipped {
                cell: cell.id.clone(),
                reason,
            });
            continue;
        }
        match cell_result(bundle, cell) {
            Some(f) => e.files.push(f),
            None => e.skipped.push(Skipped {
                cell: cell.id.clone(),
                reason: format!("engine {} is not in the resolved plan", cell.engine),
            }),
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_vllm() {
        assert_eq!(
            file_name("vllm", "inf", Some(8), "Qwen/Qwen3-0.6B", "20261201-120000"),
            "vllm-infqps-concurrency8-Qwen3-0.6B-20261201-120000.json"
        );
        assert_eq!(
            file_name("hf", &py_float(10.0), None, "tiny", "20261201-120000"),
            "hf-10.0qps-tiny-20261201-120000.json"
        );
        assert_eq!(py_float(2.5), "2.5");
    }
}
