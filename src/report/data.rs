//! The view every report is rendered from, derived from a bundle alone: per-workload tables,
//! speedups over the baseline (the plan's first engine), SLO verdicts and capacity.
//! Numbers are formatted here, once, so every output shows them the same way.

use serde::Serialize;

use crate::bundle::format::{CellStatus, CellSummary, HostInfo};
use crate::bundle::read::LoadedBundle;
use crate::metrics::gpu::GpuInventory;
use crate::metrics::sampler::Resources;
use crate::plan::model::{EngineTarget, LoadLevel, StopRule};

use super::fmt::{bytes, engine_memory};

/// Everything a template can use. docs/reports.md lists the fields.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub plan_name: String,
    pub description: String,
    pub plan_path: String,
    pub plan_sha256: String,
    pub git_commit: String,
    pub git_dirty: bool,
    pub runner_version: String,
    pub status: String,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub host: HostInfo,
    pub gpu: GpuInventory,
    /// "GPU memory" when NVML was available, "engine RSS" otherwise.
    pub memory_label: String,
    /// Which percentile estimator the figures use, and how tails are flagged.
    pub percentile_note: String,
    pub baseline: String,
    /// `[run] parallel`: engines ran side by side, each on its own GPUs.
    pub parallel: bool,
    /// With `parallel`: the run's wall time against the sum of the engines' own times.
    pub parallel_times: Option<String>,
    pub engine_names: Vec<String>,
    pub engines: Vec<EngineView>,
    pub workloads: Vec<WorkloadView>,
    pub cells_total: usize,
    pub cells_ok: usize,
    pub cells_failed: usize,
    /// `[cost] usd_per_kwh`: the electricity price, for dollars per million tokens from energy.
    pub usd_per_kwh: Option<f64>,
    /// Per engine that died under load: where it first failed and why (the "OOM surface").
    pub failures: Vec<FailureRow>,
    /// `until_failure`: per engine and workload, the last passing and first failing levels.
    pub knees: Vec<KneeRow>,
    /// The case-study tables, findings and cost.
    pub study: super::study::Study,
    /// `[[quality]]` results per step (empty without one).
    pub quality: super::quality::QualityView,
    /// Filled in by the renderer once the charts are drawn.
    pub charts: Vec<super::charts::Chart>,
    /// Charts that could not be drawn, with why.
    pub chart_errors: Vec<String>,
}

/// Where an engine first died under load, and why.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRow {
    pub engine: String,
    pub workload: String,
    /// The load of the first cell it died in, e.g. "concurrency 8".
    pub level: String,
    pub cell: String,
    /// `cuda_out_of_memory`, ..., or "unrecognized".
    pub class: String,
    pub reason: String,
    /// Cells it died in, all told.
    pub deaths: usize,
    /// Its relaunches and their readiness times, e.g. "2 (ready in 0.4 s, 0.5 s)"; "none".
    pub restarts: String,
}

/// One `until_failure` outcome.
#[derive(Debug, Clone, Serialize)]
pub struct KneeRow {
    pub engine: String,
    pub workload: String,
    pub last_passing: String,
    pub first_failing: String,
    pub class: String,
    pub text: String,
}

fn level_words(l: LoadLevel) -> String {
    match l {
        LoadLevel::Concurrency(c) => format!("concurrency {c}"),
        LoadLevel::Rate(_) => l.label(),
    }
}

/// The OOM surface: per engine, the first cell (in run order) it died in.
fn failures(b: &LoadedBundle) -> Vec<FailureRow> {
    b.manifest
        .engines
        .iter()
        .filter_map(|e| {
            let died: Vec<&CellSummary> = b
                .cells
                .iter()
                .filter(|c| c.engine == e.name && c.status == CellStatus::EngineDied)
                .collect();
            let first = died.first()?;
            let restarts = if e.restarts.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "{} (ready in {})",
                    e.restarts.len(),
                    e.restarts
                        .iter()
                        .map(|r| r
                            .ready_s
                            .map_or_else(|| "never".to_string(), |s| format!("{s:.1} s")))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            Some(FailureRow {
                engine: e.name.clone(),
                workload: first.workload.clone(),
                level: level_words(first.level),
                cell: first.id.clone(),
                class: first
                    .failure_class
                    .map_or("unrecognized", |k| k.label())
                    .to_string(),
                reason: first.reason.clone().unwrap_or_default(),
                deaths: died.len(),
                restarts,
            })
        })
        .collect()
}

fn knees(b: &LoadedBundle) -> Vec<KneeRow> {
    b.manifest
        .until_failure
        .iter()
        .map(|r| KneeRow {
            engine: r.engine.clone(),
            workload: r.workload.clone(),
            last_passing: r.last_passing.map_or(DASH.into(), |c| c.to_string()),
            first_failing: r.first_failing.map_or(DASH.into(), |c| c.to_string()),
            class: r.failure_class.map_or(DASH, |k| k.label()).to_string(),
            text: super::fmt::knee_text(r),
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineView {
    pub name: String,
    pub status: String,
    pub model: String,
    pub command: String,
    pub version: String,
    pub ready_s: String,
    pub idle_memory: String,
    pub failure: Option<String>,
    pub log_tail: Option<String>,
    pub log: Option<String>,
    pub stop: String,
    /// "GPUs 0,1 (CUDA_VISIBLE_DEVICES=0,1)": where it ran, when it was placed on GPUs or
    /// started with a CUDA_VISIBLE_DEVICES.
    pub gpus: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadView {
    pub name: String,
    pub source: String,
    pub max_tokens: u32,
    pub stream: bool,
    pub per_level: String,
    /// The grid, e.g. "concurrency 1, 4, 16" or "Poisson arrivals at 5, 10 req/s".
    pub load: String,
    pub slo: Vec<String>,
    pub rows: Vec<Row>,
    /// One row per concurrency level, one column per engine.
    pub by_level: Vec<LevelRow>,
    pub capacity: Vec<Capacity>,
    /// What the engines' own `/metrics` said during each cell (empty when none serves it).
    pub telemetry: Vec<TelemetryRow>,
    /// The engines expanded from a matrix, grouped by the keys they vary (none without one).
    pub sweep: Option<SweepTable>,
    /// Power, energy and cost per cell (`report::energy`; empty without GPU telemetry).
    pub energy: Vec<super::energy::EnergyRow>,
    /// `steady_state = true`: each closed-loop cell over its steady-state window, beside its
    /// whole-cell figures.
    pub steady: Vec<SteadyRow>,
    /// Prompt lengths, client vs server, and prefix caching, per cell: shown when the
    /// workload counts tokens or an engine reported cached tokens (docs/metrics.md).
    pub prompt_tokens: Vec<PromptRow>,
    /// Multi-turn workloads: TTFT and e2e by turn index, per cell (empty otherwise).
    pub by_turn: Vec<TurnRow>,
}

/// One cell over its steady-state window, next to the whole cell.
#[derive(Debug, Clone, Serialize)]
pub struct SteadyRow {
    pub engine: String,
    pub level: String,
    pub min_in_flight: u32,
    /// The window's length, "12.3 s", and its share of the cell.
    pub window: String,
    pub requests_ok: u64,
    pub output_tok_per_s: String,
    pub whole_output_tok_per_s: String,
    pub ttft_p95_ms: String,
    pub whole_ttft_p95_ms: String,
}

fn steady_row(c: &CellSummary) -> Option<SteadyRow> {
    let s = c.steady_state.as_ref()?;
    let whole = c.metrics.as_ref()?;
    let p95 = |m: &crate::metrics::summary::CellMetrics| {
        m.ttft_ms.as_ref().map_or(DASH.into(), |t| f(t.p95, 1))
    };
    Some(SteadyRow {
        engine: c.engine.clone(),
        level: c.level.label(),
        min_in_flight: s.min_in_flight,
        window: if whole.duration_s > 0.0 {
            format!(
                "{:.1} s ({:.0}% of the cell)",
                s.duration_s,
                100.0 * s.duration_s / whole.duration_s
            )
        } else {
            format!("{:.1} s", s.duration_s)
        },
        requests_ok: s.metrics.requests_ok,
        output_tok_per_s: f(s.metrics.output_tok_per_s, 1),
        whole_output_tok_per_s: f(whole.output_tok_per_s, 1),
        ttft_p95_ms: p95(&s.metrics),
        whole_ttft_p95_ms: p95(whole),
    })
}

/// One cell's prompt-token figures (docs/metrics.md "Prompt token counts").
#[derive(Debug, Clone, Serialize)]
pub struct PromptRow {
    pub engine: String,
    pub level: String,
    /// The client's mean count, in the workload's unit.
    pub client_mean: String,
    /// The server's mean `usage.prompt_tokens`.
    pub server_mean: String,
    /// Mean server minus client (the chat template's cost, where counted by the same tokenizer).
    pub diff_mean: String,
    /// Mean `cached_tokens` of the requests that report them.
    pub cached_mean: String,
    /// The engine's prefix-cache hit rate over the cell, from its `/metrics`.
    pub prefix_cache_hit_rate: String,
}

/// One turn index of a multi-turn cell.
#[derive(Debug, Clone, Serialize)]
pub struct TurnRow {
    pub engine: String,
    pub level: String,
    pub turn: u32,
    pub requests_ok: u64,
    pub client_prompt_mean: String,
    pub server_prompt_mean: String,
    pub ttft_p50_ms: String,
    pub ttft_p95_ms: String,
    pub e2e_p50_ms: String,
    pub e2e_p95_ms: String,
}

fn prompt_row(c: &CellSummary) -> Option<PromptRow> {
    let m = c.metrics.as_ref()?;
    let v = |x: Option<f64>| x.map_or(DASH.into(), |v| f(v, 1));
    Some(PromptRow {
        engine: c.engine.clone(),
        level: c.level.label(),
        client_mean: v(m.client_prompt_tokens_mean),
        server_mean: v(m.server_prompt_tokens_mean),
        diff_mean: v(m.prompt_tokens_diff_mean),
        cached_mean: v(m.cached_tokens_mean),
        prefix_cache_hit_rate: c
            .prefix_cache_hit_rate
            .map_or(DASH.into(), |r| format!("{:.1}%", r * 100.0)),
    })
}

fn turn_rows(c: &CellSummary) -> Vec<TurnRow> {
    let Some(m) = c.metrics.as_ref() else {
        return Vec::new();
    };
    let v = |x: Option<f64>| x.map_or(DASH.into(), |v| f(v, 1));
    m.by_turn
        .iter()
        .map(|t| TurnRow {
            engine: c.engine.clone(),
            level: c.level.label(),
            turn: t.turn,
            requests_ok: t.requests_ok,
            client_prompt_mean: v(t.client_prompt_tokens_mean),
            server_prompt_mean: v(t.server_prompt_tokens_mean),
            ttft_p50_ms: v(t.ttft_ms.as_ref().map(|s| s.p50)),
            ttft_p95_ms: v(t.ttft_ms.as_ref().map(|s| s.p95)),
            e2e_p50_ms: v(t.e2e_ms.as_ref().map(|s| s.p50)),
            e2e_p95_ms: v(t.e2e_ms.as_ref().map(|s| s.p95)),
        })
        .collect()
}

/// The engines of an `[engine.matrix]` side by side for one workload: a column per matrix key,
/// then the output tokens/s at each load level.
#[derive(Debug, Clone, Serialize)]
pub struct SweepTable {
    pub keys: Vec<String>,
    pub levels: Vec<String>,
    pub rows: Vec<SweepRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub engine: String,
    /// One per key; a dash where this engine's matrix has no such key.
    pub values: Vec<String>,
    pub output_tok_per_s: Vec<String>,
}

/// One cell's engine telemetry, in words.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryRow {
    pub engine: String,
    pub level: String,
    pub scrapes: u64,
    /// Requests the engine was running: mean / peak.
    pub running: String,
    /// Requests queued inside the engine: mean / peak.
    pub waiting: String,
    /// KV-cache use, peak, in percent.
    pub kv_cache: String,
    pub preemptions: String,
    /// Tokens the engine says it generated during the cell.
    pub generated: String,
}

/// The telemetry row of a cell, naming vLLM's, SGLang's, TGI's, the HF server's and the
/// built-in engine's series alike.
fn telemetry_row(c: &CellSummary) -> Option<TelemetryRow> {
    let t = c.engine_metrics.as_ref()?;
    let mean_peak = |suffixes: &[&str]| {
        t.gauge(suffixes)
            .map_or(DASH.into(), |g| format!("{:.1} / {:.0}", g.mean, g.peak))
    };
    let kv = t
        .gauge(&["kv_cache_usage_perc", "gpu_cache_usage_perc", "token_usage"])
        .map_or(DASH.into(), |g| {
            // vLLM reports a fraction despite the `_perc` name.
            let pct = if g.peak <= 1.0 {
                g.peak * 100.0
            } else {
                g.peak
            };
            format!("{pct:.1}%")
        });
    let count = |suffixes: &[&str]| t.counter(suffixes).map_or(DASH.into(), |v| f(v, 0));
    Some(TelemetryRow {
        engine: c.engine.clone(),
        level: c.level.label(),
        scrapes: t.scrapes,
        running: mean_peak(&[
            "num_requests_running",
            "num_running_reqs",
            "queue_size_running",
        ]),
        waiting: mean_peak(&["num_requests_waiting", "num_queue_reqs", "queue_size"]),
        kv_cache: kv,
        preemptions: count(&["num_preemptions_total", "num_preemptions"]),
        generated: count(&["generation_tokens_total", "generation_tokens"]),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub engine: String,
    /// The load level: a concurrency, or a rate with "req/s".
    pub level: String,
    pub status: String,
    /// Why the cell is invalid, failed or partial, and how many of its requests failed.
    pub reason: Option<String>,
    /// "3 of 6 requests failed (mostly ...)" when any did, with the server's message.
    pub failed_requests: Option<String>,
    pub requests_ok: String,
    pub failures: String,
    pub request_per_s: String,
    pub output_tok_per_s: String,
    pub ttft_p50_ms: String,
    pub ttft_p95_ms: String,
    pub tpot_mean_ms: String,
    pub itl_p95_ms: String,
    pub e2e_p50_ms: String,
    pub e2e_p95_ms: String,
    pub memory_peak: String,
    pub speedup: String,
    pub slo: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelRow {
    pub level: String,
    /// Output tokens/s per engine, in `engine_names` order.
    pub output_tok_per_s: Vec<String>,
    /// Speedup over the baseline per engine, in `engine_names` order.
    pub speedup: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    pub engine: String,
    /// The highest level that met the SLO, as a label.
    pub max_level: Option<String>,
    pub text: String,
}

const DASH: &str = "-";

fn f(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// "the run took 14.2 s; its engines, launch to teardown, 41.0 s together (2.89x)": what running
/// side by side saved. `None` until the run has finished.
fn parallel_times(m: &crate::bundle::format::Manifest) -> Option<String> {
    let wall = (m.finished_at? - m.started_at).num_milliseconds() as f64 / 1000.0;
    let own: f64 = m
        .engines
        .iter()
        .filter_map(|e| Some((e.stopped_at? - e.launched_at?).num_milliseconds() as f64 / 1000.0))
        .sum();
    (wall > 0.0).then(|| {
        format!(
            "the run took {wall:.1} s; its engines, launch to teardown, {own:.1} s together ({:.2}x)",
            own / wall
        )
    })
}

/// Where an engine ran: its device set and the CUDA_VISIBLE_DEVICES it was started with.
fn placement_label(r: &crate::bundle::format::EngineRecord) -> Option<String> {
    let cvd = r
        .cuda_visible_devices
        .as_ref()
        .map(|c| format!("CUDA_VISIBLE_DEVICES={c}"));
    match (r.gpus.is_empty(), cvd) {
        (true, None) => None,
        (true, Some(c)) => Some(c),
        (false, c) => {
            let set = crate::engine::spawn::device_list(&r.gpus);
            let s = if r.gpus.len() == 1 { "" } else { "s" };
            Some(match c {
                Some(c) => format!("GPU{s} {set} ({c})"),
                None => format!("GPU{s} {set}"),
            })
        }
    }
}

fn memory_peak(r: Option<&Resources>, gpu: bool) -> String {
    r.and_then(|r| engine_memory(r, gpu))
        .map_or(DASH.into(), bytes)
}

fn status_text(s: CellStatus) -> &'static str {
    match s {
        CellStatus::Pending => "pending",
        CellStatus::Ok => "ok",
        CellStatus::Failed => "failed",
        CellStatus::Interrupted => "interrupted",
        CellStatus::Rejected => "rejected",
        CellStatus::EngineDied => "engine_died",
    }
}

/// `mean ± half-width of the 95% confidence interval` over a cell's repeated runs.
pub fn spread(
    c: &CellSummary,
    pick: fn(&crate::metrics::summary::CellMetrics) -> f64,
) -> Option<String> {
    if c.repeats.len() < 2 {
        return None;
    }
    let v: Vec<f64> = c.repeats.iter().map(pick).collect();
    let (mean, se) = crate::metrics::stats::mean_se(&v);
    let half = crate::metrics::stats::t95(v.len() as f64 - 1.0) * se;
    Some(format!("{mean:.1} ± {half:.1}"))
}

/// A cell's throughput, when it is a result to compare (measured to the end, valid, no failed
/// request: `study::comparable`).
fn tok_per_s(c: &CellSummary) -> Option<f64> {
    c.metrics
        .as_ref()
        .filter(|_| super::study::comparable(c))
        .map(|m| m.output_tok_per_s)
}

/// The distinct levels of a workload's cells, in increasing order.
fn levels_of(cells: &[&CellSummary]) -> Vec<LoadLevel> {
    let mut levels: Vec<LoadLevel> = Vec::new();
    for c in cells {
        if !levels.contains(&c.level) {
            levels.push(c.level);
        }
    }
    levels.sort_by(|a, b| a.magnitude().total_cmp(&b.magnitude()));
    levels
}

fn load_text(w: &crate::plan::model::WorkloadSpec) -> String {
    let levels: Vec<String> = w
        .load
        .levels
        .iter()
        .map(|l| l.label().replace(" req/s", ""))
        .collect();
    let mut t = match w.load.levels.first() {
        Some(LoadLevel::Rate(_)) => {
            let how = match w.load.arrival {
                crate::plan::model::Arrival::Constant => "constant-rate".to_string(),
                crate::plan::model::Arrival::Poisson { seed } => format!("Poisson (seed {seed})"),
                crate::plan::model::Arrival::Gamma { seed, burstiness } => {
                    format!("gamma, burstiness {burstiness} (seed {seed})")
                }
            };
            format!("{how} arrivals at {} req/s", levels.join(", "))
        }
        Some(_) => format!("closed loop at concurrency {}", levels.join(", ")),
        None => String::new(),
    };
    if let Some(s) = &w.search {
        if !t.is_empty() {
            t.push_str("; ");
        }
        t.push_str(&format!(
            "capacity search over {} from {} to {} ({} probes at most)",
            match s.over {
                crate::plan::model::SearchOver::Concurrency => "concurrency",
                crate::plan::model::SearchOver::Rate => "rate",
            },
            s.min,
            s.max,
            s.max_steps
        ));
    }
    t
}

/// Builds the report view of a bundle.
pub fn build(b: &LoadedBundle) -> ReportData {
    let m = &b.manifest;
    let gpu = m.gpu.available;
    let baseline = b
        .plan
        .engines
        .first()
        .map(|e| e.name.clone())
        .unwrap_or_default();
    let engine_names: Vec<String> = b.plan.engines.iter().map(|e| e.name.clone()).collect();
    let find = |engine: &str, workload: &str, l: LoadLevel| {
        b.cells
            .iter()
            .find(|s| s.engine == engine && s.workload == workload && s.level == l)
    };

    let engines = b
        .plan
        .engines
        .iter()
        .map(|spec| {
            let rec = m.engines.iter().find(|e| e.name == spec.name);
            let command = match (&spec.target, rec) {
                (_, Some(r)) if !r.argv.is_empty() => r.argv.join(" "),
                (EngineTarget::Launch(l), _) => l.argv.join(" "),
                (EngineTarget::Attach { url }, _) => format!("attached to {url}"),
            };
            EngineView {
                name: spec.name.clone(),
                status: rec.map_or("pending".into(), |r| {
                    crate::bundle::format::label(&r.status)
                }),
                model: spec.model.clone(),
                command,
                version: rec
                    .and_then(|r| r.version.clone().or(r.version_error.clone()))
                    .unwrap_or_else(|| DASH.into()),
                ready_s: rec.and_then(|r| r.ready_s).map_or(DASH.into(), |s| f(s, 2)),
                idle_memory: memory_peak(rec.and_then(|r| r.idle.as_ref()), gpu),
                failure: rec.and_then(|r| r.failure.clone()),
                log_tail: rec.and_then(|r| r.log_tail.clone()),
                log: rec.and_then(|r| r.log.clone()),
                gpus: rec.and_then(placement_label),
                stop: rec.and_then(|r| r.stop.as_ref()).map_or(DASH.into(), |s| {
                    let mut t = format!(
                        "{} in {:.2} s",
                        if s.killed { "killed" } else { "stopped" },
                        s.took_s
                    );
                    if !s.survivors.is_empty() {
                        t.push_str(&format!("; survivors: {}", s.survivors.join(", ")));
                    }
                    t
                }),
            }
        })
        .collect();

    let workloads = b
        .plan
        .workloads
        .iter()
        .map(|w| {
            let cells: Vec<&CellSummary> =
                b.cells.iter().filter(|c| c.workload == w.name).collect();
            let levels = levels_of(&cells);
            let mut rows = Vec::new();
            for e in &b.plan.engines {
                for &l in &levels {
                    let Some(cell) = find(&e.name, &w.name, l) else {
                        continue;
                    };
                    let met = cell.metrics.as_ref().filter(|_| cell.valid);
                    let stat = |pick: fn(&crate::metrics::summary::CellMetrics) -> Option<f64>| {
                        met.and_then(pick).map_or(DASH.into(), |v| f(v, 1))
                    };
                    let base = find(&baseline, &w.name, l).and_then(tok_per_s);
                    let speedup = match (tok_per_s(cell), base) {
                        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
                        _ => DASH.into(),
                    };
                    rows.push(Row {
                        engine: e.name.clone(),
                        level: l.label(),
                        status: if cell.valid {
                            status_text(cell.status).into()
                        } else {
                            "INVALID".into()
                        },
                        reason: {
                            let why = cell.invalid_reason.clone().or(cell.reason.clone());
                            let notes: Vec<String> = [
                                why,
                                super::study::failed_requests_line(cell),
                                cell.metrics.as_ref().and_then(without_text_line),
                            ]
                            .into_iter()
                            .flatten()
                            .collect();
                            (!notes.is_empty()).then(|| notes.join("; "))
                        },
                        failed_requests: super::study::failed_requests_line(cell),
                        requests_ok: met.map_or(DASH.into(), |m| m.requests_ok.to_string()),
                        failures: met.map_or(DASH.into(), |m| m.requests_failed.to_string()),
                        request_per_s: met.map_or(DASH.into(), |m| f(m.request_per_s, 2)),
                        output_tok_per_s: met.map_or(DASH.into(), |m| {
                            spread(cell, |r| r.output_tok_per_s)
                                .unwrap_or_else(|| f(m.output_tok_per_s, 1))
                        }),
                        ttft_p50_ms: stat(|m| m.ttft_ms.as_ref().map(|s| s.p50)),
                        ttft_p95_ms: tail(met, |m| m.ttft_ms.as_ref()),
                        tpot_mean_ms: stat(|m| m.tpot_ms.as_ref().map(|s| s.mean)),
                        itl_p95_ms: tail(met, |m| m.itl_ms.as_ref()),
                        e2e_p50_ms: stat(|m| m.e2e_ms.as_ref().map(|s| s.p50)),
                        e2e_p95_ms: tail(met, |m| m.e2e_ms.as_ref()),
                        memory_peak: memory_peak(cell.resources.as_ref(), gpu),
                        speedup,
                        slo: match &cell.slo {
                            None => DASH.into(),
                            Some(v) if v.passed => "pass".into(),
                            Some(_) => "FAIL".into(),
                        },
                    });
                }
            }
            let by_level = levels
                .iter()
                .map(|&l| {
                    let base = find(&baseline, &w.name, l).and_then(tok_per_s);
                    let vals: Vec<Option<f64>> = engine_names
                        .iter()
                        .map(|e| find(e, &w.name, l).and_then(tok_per_s))
                        .collect();
                    LevelRow {
                        level: l.label(),
                        output_tok_per_s: vals
                            .iter()
                            .map(|v| v.map_or(DASH.into(), |v| f(v, 1)))
                            .collect(),
                        speedup: vals
                            .iter()
                            .map(|v| match (v, base) {
                                (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
                                _ => DASH.into(),
                            })
                            .collect(),
                    }
                })
                .collect();
            let capacity = if w.slo.is_empty() && w.search.is_none() {
                Vec::new()
            } else {
                engine_names
                    .iter()
                    .map(|e| {
                        let best = levels.iter().rev().copied().find(|&l| {
                            find(e, &w.name, l).is_some_and(|s| {
                                s.valid && s.slo.as_ref().is_some_and(|v| v.passed)
                            })
                        });
                        let search = m
                            .searches
                            .iter()
                            .find(|s| &s.engine == e && s.workload == w.name);
                        let mut text = best.map_or("no level met the SLO".into(), |l| match l {
                            LoadLevel::Concurrency(c) => format!("{c} concurrent requests"),
                            LoadLevel::Rate(_) => l.label(),
                        });
                        // A search that never failed a probe found a floor, not a capacity.
                        if search.is_some_and(|s| s.capacity_at_max && s.capacity == best) {
                            text = format!(">= {text} (the search's max: no probe failed)");
                        }
                        if let Some(s) = search {
                            text.push_str(&format!(
                                " (capacity search over {} probes: {}{})",
                                s.probes.len(),
                                s.probes
                                    .iter()
                                    .map(|p| format!(
                                        "{} {}",
                                        p.level.label(),
                                        if p.passed { "pass" } else { "fail" }
                                    ))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if s.complete { "" } else { "; cut short" }
                            ));
                        }
                        Capacity {
                            engine: e.clone(),
                            max_level: best.map(|l| l.label()),
                            text,
                        }
                    })
                    .collect()
            };
            let swept: Vec<&crate::plan::model::EngineSpec> = b
                .plan
                .engines
                .iter()
                .filter(|e| !e.matrix.is_empty())
                .collect();
            let sweep = (!swept.is_empty()).then(|| {
                let mut keys: Vec<String> = Vec::new();
                for e in &swept {
                    for k in e.matrix.keys() {
                        if !keys.iter().any(|x| x == k) {
                            keys.push(k.to_string());
                        }
                    }
                }
                SweepTable {
                    levels: levels
                        .iter()
                        .map(|l| match l {
                            LoadLevel::Concurrency(c) => format!("concurrency {c}"),
                            LoadLevel::Rate(_) => l.label(),
                        })
                        .collect(),
                    rows: swept
                        .iter()
                        .map(|e| SweepRow {
                            engine: e.name.clone(),
                            values: keys
                                .iter()
                                .map(|k| e.matrix.get(k).unwrap_or_else(|| DASH.into()))
                                .collect(),
                            output_tok_per_s: levels
                                .iter()
                                .map(|&l| {
                                    find(&e.name, &w.name, l)
                                        .and_then(tok_per_s)
                                        .map_or(DASH.into(), |v| f(v, 1))
                                })
                                .collect(),
                        })
                        .collect(),
                    keys,
                }
            });
            WorkloadView {
                energy: super::energy::rows(&cells, &super::energy::Prices::of(&b.plan)),
                sweep,
                name: w.name.clone(),
                source: w.source.clone(),
                max_tokens: w.max_tokens,
                stream: w.stream,
                per_level: match w.load.stop {
                    StopRule::Requests(n) => format!("{n} requests"),
                    StopRule::Duration(d) => humantime::format_duration(d).to_string(),
                },
                load: load_text(w),
                slo: w
                    .slo
                    .iter()
                    .map(|r| format!("{} <= {}", r.key(), r.max_ms))
                    .collect(),
                rows,
                by_level,
                capacity,
                telemetry: b
                    .cells
                    .iter()
                    .filter(|c| c.workload == w.name)
                    .filter_map(telemetry_row)
                    .collect(),
                steady: b
                    .cells
                    .iter()
                    .filter(|c| c.workload == w.name)
                    .filter_map(steady_row)
                    .collect(),
                prompt_tokens: {
                    let mine = || b.cells.iter().filter(|c| c.workload == w.name);
                    let shown = w.unit == crate::workload::tokenizer::CountUnit::Tokens
                        || mine().any(|c| {
                            c.prefix_cache_hit_rate.is_some()
                                || c.metrics
                                    .as_ref()
                                    .is_some_and(|m| m.cached_tokens.is_some())
                        });
                    if shown {
                        mine().filter_map(prompt_row).collect()
                    } else {
                        Vec::new()
                    }
                },
                by_turn: b
                    .cells
                    .iter()
                    .filter(|c| c.workload == w.name)
                    .flat_map(turn_rows)
                    .collect(),
            }
        })
        .collect();

    let ok = b
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .count();
    let failed = b
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Failed | CellStatus::EngineDied))
        .count();
    ReportData {
        plan_name: b.plan.name.clone(),
        description: b.plan.description.clone(),
        plan_path: m.plan.path.clone(),
        plan_sha256: m.plan.sha256.clone(),
        git_commit: m
            .plan
            .git_commit
            .clone()
            .unwrap_or_else(|| "not in git".into()),
        git_dirty: m.plan.git_dirty.unwrap_or(false),
        runner_version: m.runner_version.clone(),
        status: crate::bundle::format::label(&m.status),
        message: m.message.clone(),
        started_at: m.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        finished_at: m.finished_at.map_or(DASH.into(), |t| {
            t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
        }),
        host: m.host.clone(),
        gpu: m.gpu.clone(),
        memory_label: if gpu {
            "GPU memory".into()
        } else {
            "engine RSS".into()
        },
        percentile_note: percentile_note(b.plan.report.percentiles),
        baseline,
        parallel: b.plan.parallel,
        parallel_times: b.plan.parallel.then(|| parallel_times(m)).flatten(),
        engine_names,
        engines,
        workloads,
        cells_total: b.manifest.cells.len(),
        cells_ok: ok,
        cells_failed: failed,
        usd_per_kwh: b.plan.usd_per_kwh,
        failures: failures(b),
        knees: knees(b),
        study: super::study::build(b),
        quality: super::quality::build(b),
        charts: Vec::new(),
        chart_errors: Vec::new(),
    }
}

/// "2 of 40 successful requests had no visible text (...)" when any had none: they are in the
/// TTFT figures (timed to their first token event), not in `ttft_text`.
fn without_text_line(m: &crate::metrics::summary::CellMetrics) -> Option<String> {
    (m.requests_without_text > 0).then(|| {
        format!(
            "{} of {} successful requests had no visible text (every delta empty): timed to their first token event, absent from ttft_text",
            m.requests_without_text, m.requests_ok
        )
    })
}

/// Below this many samples a tail percentile is flagged: p95 of fewer than 100 samples rests on
/// a handful of them, and by nearest rank p99 of 100 or fewer is the maximum.
pub const MIN_TAIL_SAMPLES: u64 = 100;

/// A p95 with its sample count, "12.3 (n=40*)", the star flagging fewer than
/// [`MIN_TAIL_SAMPLES`].
fn tail(
    met: Option<&crate::metrics::summary::CellMetrics>,
    pick: fn(&crate::metrics::summary::CellMetrics) -> Option<&crate::metrics::summary::Stats>,
) -> String {
    match met.and_then(pick) {
        None => DASH.into(),
        Some(s) => {
            let flag = if s.count < MIN_TAIL_SAMPLES { "*" } else { "" };
            format!("{} (n={}{flag})", f(s.p95, 1), s.count)
        }
    }
}

/// The line under the cells table that says how percentiles were read.
fn percentile_note(p: crate::plan::model::Percentiles) -> String {
    let how = match p {
        crate::plan::model::Percentiles::NearestRank => "HDR nearest rank (the smallest sample with at least that share of the samples at or below it; p99 of 100 or fewer samples is the maximum)",
        crate::plan::model::Percentiles::Interpolated => "numpy's linear interpolation between the samples around rank q x (n - 1), as vLLM's bench reads them (`[report] percentiles = \"interpolated\"`)",
    };
    format!("Percentiles: {how}. Each p95 shows its sample count; * marks a tail from fewer than {MIN_TAIL_SAMPLES} samples. TTFT and ITL count every token event, empty-text ones included (docs/metrics.md).")
}
