//! `--format llm-d`: one llm-d Benchmark Report (schema version 0.2, the interchange format of
//! llm-d-benchmark and inference-perf) per valid, measured cell. The schema is
//! llmdbenchmark/analysis/benchmark_report/schema_v0_2.py in llm-d/llm-d-benchmark: every
//! object there forbids unknown fields, so only its fields are written, with its unit names.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::files::{skip_reason, Export, ExportFile, Skipped};
use crate::bundle::format::CellSummary;
use crate::bundle::read::LoadedBundle;
use crate::metrics::summary::Stats;
use crate::plan::model::LoadLevel;

/// The schema version written.
pub const VERSION: &str = "0.2";
/// The version of each component's schema (`metadata.schema_version`).
const COMPONENT_SCHEMA: &str = "0.0.1";

/// The report's units (the schema's `Units` enum, the ones runner's numbers use).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Units {
    #[serde(rename = "count")]
    Count,
    #[serde(rename = "percent")]
    Percent,
    #[serde(rename = "ms")]
    Ms,
    #[serde(rename = "ms/token")]
    MsPerToken,
    #[serde(rename = "tokens/s")]
    TokensPerS,
    #[serde(rename = "queries/s")]
    QueriesPerS,
    #[serde(rename = "GiB")]
    GiB,
}

/// `Statistics`: units and mean required, the rest when known.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statistics {
    pub units: Units,
    pub mean: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Statistics {
    fn mean(units: Units, mean: f64) -> Statistics {
        Statistics {
            units,
            mean,
            p50: None,
            p90: None,
            p95: None,
            p99: None,
            max: None,
        }
    }

    fn from_stats(units: Units, s: &Stats) -> Statistics {
        Statistics {
            units,
            mean: s.mean,
            p50: Some(s.p50),
            p90: Some(s.p90),
            p95: Some(s.p95),
            p99: Some(s.p99),
            max: Some(s.max),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub run: Run,
    pub scenario: Scenario,
    pub results: Results,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Unique to this report: a hash of the plan, the run's start and the cell.
    pub uid: String,
    /// Common to every report of one bundle: a hash of the plan and the run's start.
    pub eid: String,
    pub time: RunTime,
    pub description: String,
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunTime {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    /// ISO-8601, the cell's measured duration.
    pub duration: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub stack: Vec<Component>,
    pub load: Load,
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub metadata: ComponentMetadata,
    pub standardized: GenericComponent,
    pub native: Native,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentMetadata {
    pub schema_version: &'static str,
    pub label: String,
    pub cfg_id: String,
}

/// `kind: generic`: the schema's `inference_engine` needs the accelerator model, count and
/// parallelism of each engine, which a bundle does not record per engine. `generic` takes
/// extra fields, so the model rides along.
#[derive(Debug, Clone, Serialize)]
pub struct GenericComponent {
    pub kind: &'static str,
    pub tool: String,
    pub tool_version: String,
    pub model: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Native {
    pub config: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub metadata: LoadMetadata,
    pub standardized: LoadStandardized,
    pub native: Native,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadMetadata {
    pub schema_version: &'static str,
    pub cfg_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadStandardized {
    pub tool: &'static str,
    pub tool_version: String,
    /// The plan's prompts are given, not generated: `sampled`.
    pub source: &'static str,
    /// The cell's place among its engine and workload's levels.
    pub stage: usize,
    pub input_seq_len: SequenceLength,
    pub output_seq_len: SequenceLength,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_qps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SequenceLength {
    /// `fixed` or `other` (the schema's `Distribution`).
    pub distribution: &'static str,
    pub value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub request_performance: RequestPerformance,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observability: Option<Observability>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestPerformance {
    pub aggregate: Aggregate,
}

#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    pub requests: Requests,
    pub latency: Latency,
    pub throughput: Throughput,
}

#[derive(Debug, Clone, Serialize)]
pub struct Requests {
    pub total: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_token: Option<Statistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_per_output_token: Option<Statistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inter_token_latency: Option<Statistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_latency: Option<Statistics>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub input_token_rate: Statistics,
    pub output_token_rate: Statistics,
    pub total_token_rate: Statistics,
    pub request_rate: Statistics,
}

#[derive(Debug, Clone, Serialize)]
pub struct Observability {
    pub components: Vec<ComponentObservability>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentObservability {
    pub component_label: String,
    pub aggregate: ResourceMetrics,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_memory_usage: Option<Statistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<Statistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_memory_usage: Option<Statistics>,
}

fn hash32(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn gib(mean: Option<u64>, peak: Option<u64>) -> Option<Statistics> {
    mean.map(|m| Statistics {
        max: peak.map(|p| p as f64 / GIB),
        ..Statistics::mean(Units::GiB, m as f64 / GIB)
    })
}

fn observability(cell: &CellSummary) -> Option<Observability> {
    let r = cell.resources.as_ref()?;
    let aggregate = ResourceMetrics {
        gpu_memory_usage: gib(r.gpu_mem_used_mean_bytes, r.gpu_mem_used_peak_bytes),
        gpu_utilization: r.gpu_util_mean_pct.map(|m| Statistics {
            max: r.gpu_util_peak_pct,
            ..Statistics::mean(Units::Percent, m)
        }),
        cpu_memory_usage: gib(r.rss_mean_bytes, r.rss_peak_bytes),
    };
    if aggregate.gpu_memory_usage.is_none()
        && aggregate.gpu_utilization.is_none()
        && aggregate.cpu_memory_usage.is_none()
    {
        return None;
    }
    Some(Observability {
        components: vec![ComponentObservability {
            component_label: cell.engine.clone(),
            aggregate,
        }],
    })
}

/// One cell's report; none when the cell has no metrics or its engine is not in the plan.
pub fn cell_report(bundle: &LoadedBundle, cell: &CellSummary) -> Option<Report> {
    let m = cell.metrics.as_ref()?;
    let spec = bundle.plan.engines.iter().find(|e| e.name == cell.engine)?;
    let record = bundle
        .manifest
        .engines
        .iter()
        .find(|e| e.name == cell.engine);
    let workload = bundle
        .plan
        .workloads
        .iter()
        .find(|w| w.name == cell.workload);
    let plan = &bundle.manifest.plan;
    let started = bundle.manifest.started_at.to_rfc3339();
    let argv: Vec<String> = record.map(|r| r.argv.clone()).unwrap_or_default();
    let tool = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_else(|| "attached".to_string());
    let stage = bundle
        .cells
        .iter()
        .filter(|c| c.engine == cell.engine && c.workload == cell.workload)
        .position(|c| c.id == cell.id)
        .unwrap_or(0);
    let workload_json = workload
        .and_then(|w| serde_json::to_value(w).ok())
        .unwrap_or(Value::Null);
    let mean_input = if m.requests_ok > 0 {
        m.input_tokens as f64 / m.requests_ok as f64
    } else {
        0.0
    };
    let fixed_output = workload
        .map(|w| w.ignore_eos && w.min_tokens == Some(w.max_tokens))
        .unwrap_or(false);
    let max_tokens = workload.map(|w| w.max_tokens).unwrap_or(0);
    let (rate_qps, concurrency) = match cell.level {
        LoadLevel::Concurrency(c) => (None, Some(c)),
        LoadLevel::Rate(r) => (Some(r), None),
    };
    let input_rate = (m.total_tok_per_s - m.output_tok_per_s).max(0.0);
    Some(Report {
        version: VERSION,
        run: Run {
            uid: hash32(&[&plan.sha256, &started, &cell.id]),
            eid: hash32(&[&plan.sha256, &started]),
            time: RunTime {
                start: cell.started_at,
                end: cell.finished_at,
                duration: format!("PT{}S", m.duration_s),
            },
            description: bundle.plan.description.clone(),
            keywords: vec![
                plan.name.clone(),
                cell.engine.clone(),
                cell.workload.clone(),
            ],
        },
        scenario: Scenario {
            stack: vec![Component {
                metadata: ComponentMetadata {
                    schema_version: COMPONENT_SCHEMA,
                    label: cell.engine.clone(),
                    cfg_id: hash32(&argv.iter().map(String::as_str).collect::<Vec<_>>()),
                },
                standardized: GenericComponent {
                    kind: "generic",
                    tool,
                    tool_version: record
                        .and_then(|r| r.version.clone())
                        .unwrap_or_else(|| "unknown".to_string()),
                    model: spec.model.clone(),
                },
                native: Native {
                    config: serde_json::json!({
                        "argv": argv,
                        "url": record.and_then(|r| r.url.clone()),
                    }),
                },
            }],
            load: Load {
                metadata: LoadMetadata {
                    schema_version: COMPONENT_SCHEMA,
                    cfg_id: hash32(&[&workload_json.to_string()]),
                },
                standardized: LoadStandardized {
                    tool: "runner",
                    tool_version: bundle.manifest.runner_version.clone(),
                    source: "sampled",
                    stage,
                    input_seq_len: SequenceLength {
                        distribution: "other",
                        value: mean_input,
                    },
                    output_seq_len: SequenceLength {
                        distribution: if fixed_output { "fixed" } else { "other" },
                        value: f64::from(max_tokens),
                    },
                    rate_qps,
                    concurrency,
                },
                native: Native {
                    config: workload_json,
                },
            },
        },
        results: Results {
            request_performance: RequestPerformance {
                aggregate: Aggregate {
                    requests: Requests {
                        total: m.requests_total,
                        failures: m.requests_failed,
                    },
                    latency: Latency {
                        time_to_first_token: m
                            .ttft_ms
                            .as_ref()
                            .map(|s| Statistics::from_stats(Units::Ms, s)),
                        time_per_output_token: m
                            .tpot_ms
                            .as_ref()
                            .map(|s| Statistics::from_stats(Units::MsPerToken, s)),
                        inter_token_latency: m
                            .itl_ms
                            .as_ref()
                            .map(|s| Statistics::from_stats(Units::MsPerToken, s)),
                        request_latency: m
                            .e2e_ms
                            .as_ref()
                            .map(|s| Statistics::from_stats(Units::Ms, s)),
                    },
                    throughput: Throughput {
                        input_token_rate: Statistics::mean(Units::TokensPerS, input_rate),
                        output_token_rate: Statistics::mean(Units::TokensPerS, m.output_tok_per_s),
                        total_token_rate: Statistics::mean(Units::TokensPerS, m.total_tok_per_s),
                        request_rate: Statistics::mean(Units::QueriesPerS, m.request_per_s),
                    },
                },
            },
            observability: observability(cell),
        },
    })
}

/// Every exportable cell's report, named `<cell id>.benchmark_report.json` (JSON is YAML to
/// llm-d's loader, which reads either).
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
        let json = cell_report(bundle, cell).and_then(|r| serde_json::to_value(r).ok());
        match json {
            Some(json) => e.files.push(ExportFile {
                name: format!("{}.benchmark_report.json", cell.id),
                json,
            }),
            None => e.skipped.push(Skipped {
                cell: cell.id.clone(),
                reason: format!("engine {} is not in the resolved plan", cell.engine),
            }),
        }
    }
    e
}
