//! The plan exactly as written in TOML: strict serde types that mirror the file, with spans
//! kept for every value that resolution may need to point at. Nothing here applies defaults or
//! checks meaning; `resolve.rs` does that.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole plan file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub schema: Spanned<i64>,
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub load: Option<RawLoad>,
    #[serde(default)]
    pub gpu: Option<RawGpu>,
    #[serde(default)]
    pub report: Option<RawReport>,
    #[serde(default)]
    pub cost: Option<Spanned<RawCost>>,
    #[serde(default)]
    pub client: Option<RawClient>,
    #[serde(default)]
    pub repeat: Option<Spanned<i64>>,
    #[serde(default)]
    pub run: Option<RawRun>,
    #[serde(default, rename = "engine")]
    pub engines: Vec<Spanned<RawEngine>>,
    #[serde(default, rename = "workload")]
    pub workloads: Vec<Spanned<RawWorkload>>,
    /// `[[quality]]`: evaluation steps run against every engine after its cells.
    #[serde(default, rename = "quality")]
    pub quality: Vec<Spanned<super::quality::RawQuality>>,
}

/// One `[[engine]]` table. `name` and `model` are required, but may come from an `include`d
/// file instead: resolution says when they are missing (`is_missing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEngine {
    #[serde(default = "missing")]
    pub name: Spanned<String>,
    /// Read the engine's table from this TOML file (relative to the plan).
    #[serde(default)]
    pub include: Option<Spanned<String>>,
    #[serde(default)]
    pub launch: Option<Spanned<RawCommand>>,
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<RawPort>>,
    #[serde(default = "missing")]
    pub model: Spanned<String>,
    #[serde(default)]
    pub api: Option<Spanned<String>>,
    #[serde(default)]
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub stop_grace: Option<Spanned<String>>,
    /// The most bytes of the engine's output kept in its log (`"64MiB"`).
    #[serde(default)]
    pub log_limit: Option<Spanned<String>>,
    #[serde(default)]
    pub version_command: Option<Spanned<RawCommand>>,
    #[serde(default)]
    pub shell: Option<bool>,
    #[serde(default)]
    pub api_key_env: Option<Spanned<String>>,
    /// Non-standard request fields this engine accepts (`ignore_eos`, `min_tokens`).
    #[serde(default)]
    pub accepts: Option<Spanned<Vec<Spanned<String>>>>,
    /// Merged into every request body sent to this engine.
    #[serde(default)]
    pub extra_body: Option<Spanned<BTreeMap<String, toml::Value>>>,
    /// The engine's Prometheus page (default `/metrics`, `""` for none).
    #[serde(default)]
    pub metrics_path: Option<Spanned<String>>,
    /// How often that page is scraped during a cell (default `1s`; `"off"`: once at the
    /// cell's start and once at its end).
    #[serde(default)]
    pub metrics_interval: Option<Spanned<String>>,
    /// `[engine.matrix]`: one engine per combination of these values.
    #[serde(default)]
    pub matrix: Option<Spanned<super::matrix::RawMatrix>>,
    /// What happens when the engine exits during a cell: `"skip"` or `"restart"`.
    #[serde(default)]
    pub on_failure: Option<Spanned<String>>,
    /// With `on_failure = "restart"`: the most relaunches.
    #[serde(default)]
    pub max_restarts: Option<Spanned<i64>>,
    /// How many of `[gpu] devices` the engine is given (`CUDA_VISIBLE_DEVICES`).
    #[serde(default)]
    pub gpus: Option<Spanned<i64>>,
}

/// `[run]`: how the engines are scheduled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    /// Engines whose device sets do not overlap run at the same time.
    #[serde(default)]
    pub parallel: Option<bool>,
}

/// A required string the table left out: an empty span no written value has (a key always
/// precedes a value).
fn missing() -> Spanned<String> {
    Spanned::new(0..0, String::new())
}

/// Whether a required string was left out of its table.
pub fn is_missing(s: &Spanned<String>) -> bool {
    s.span() == (0..0)
}

/// `[engine.health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub status: Option<Spanned<i64>>,
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub completion: Option<bool>,
}

/// One `[[workload]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    pub name: Spanned<String>,
    #[serde(default)]
    pub prompts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub prompts_file: Option<Spanned<String>>,
    #[serde(default)]
    pub documents: Option<Spanned<RawDocuments>>,
    #[serde(default)]
    pub synthetic: Option<Spanned<RawSynthetic>>,
    #[serde(default)]
    pub dataset: Option<Spanned<RawDataset>>,
    /// `[workload.sessions]`: multi-turn sessions (a ShareGPT dataset's whole conversations, or
    /// synthetic turns).
    #[serde(default)]
    pub sessions: Option<Spanned<RawSessions>>,
    /// A `tokenizer.json`, or a folder holding one: lengths are then counted in its tokens.
    #[serde(default)]
    pub tokenizer: Option<Spanned<String>>,
    #[serde(default)]
    pub max_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub min_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub temperature: Option<Spanned<f64>>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    #[serde(default)]
    pub allow_empty_output: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub repeat: Option<Spanned<i64>>,
    #[serde(default)]
    pub load: Option<RawLoad>,
    #[serde(default)]
    pub slo: Option<Spanned<RawSlo>>,
    #[serde(default)]
    pub search: Option<Spanned<RawSearch>>,
    /// `[workload.matrix]`: one workload per combination of these values.
    #[serde(default)]
    pub matrix: Option<Spanned<super::matrix::RawMatrix>>,
}

/// `[workload.search]`: a capacity search under the workload's SLO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSearch {
    pub over: Spanned<String>,
    #[serde(default)]
    pub min: Option<Spanned<f64>>,
    pub max: Spanned<f64>,
    #[serde(default)]
    pub max_steps: Option<Spanned<i64>>,
}

/// `[workload.documents]`: a text file split on a marker, each part put into a template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocuments {
    pub file: Spanned<String>,
    #[serde(default)]
    pub marker: Option<String>,
    #[serde(default)]
    pub template: Option<Spanned<String>>,
}

/// `[workload.synthetic]`: generated prompts of a given length.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSynthetic {
    #[serde(default)]
    pub input_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub input_tokens_stddev: Option<Spanned<f64>>,
    #[serde(default)]
    pub input_tokens_range: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    pub output_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub output_tokens_stddev: Option<Spanned<f64>>,
    #[serde(default)]
    pub output_tokens_range: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    pub prefix_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub prefix_groups: Option<Spanned<i64>>,
    #[serde(default)]
    pub count: Option<Spanned<i64>>,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl RawSynthetic {
    /// Only the keys that existed before exact token lengths: such a plan keeps today's word
    /// prompts, byte for byte.
    pub fn is_legacy(&self) -> bool {
        self.input_tokens.is_some()
            && self.input_tokens_stddev.is_none()
            && self.input_tokens_range.is_none()
            && self.output_tokens.is_none()
            && self.output_tokens_stddev.is_none()
            && self.output_tokens_range.is_none()
            && self.prefix_tokens.is_none()
            && self.prefix_groups.is_none()
    }
}

/// `[workload.sessions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    /// Synthetic only: user turns per session.
    #[serde(default)]
    pub turns: Option<Spanned<i64>>,
    /// Between a turn's answer and the next turn (`"2s"`); none by default.
    #[serde(default)]
    pub think_time: Option<Spanned<String>>,
}

/// `[workload.dataset]`: requests read from a ShareGPT, JSONL or Mooncake file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataset {
    pub format: Spanned<String>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub sample: Option<Spanned<i64>>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub shuffle: Option<Spanned<bool>>,
    /// ShareGPT: `"reference"` sends the reference answer's length as `max_tokens`.
    #[serde(default)]
    pub output: Option<Spanned<String>>,
    #[serde(default)]
    pub min_input_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_input_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub min_output_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_output_tokens: Option<Spanned<i64>>,
    /// Mooncake: tokens per hash block (512).
    #[serde(default)]
    pub block_size: Option<Spanned<i64>>,
    /// Mooncake: multiplies the recorded offsets (0.5 replays twice as fast).
    #[serde(default)]
    pub time_scale: Option<Spanned<f64>>,
}

/// `[load]` (plan-wide default) or `[workload.load]` (override, key by key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoad {
    #[serde(default)]
    pub concurrency: Option<Spanned<Vec<i64>>>,
    #[serde(default)]
    pub rate: Option<Spanned<Vec<f64>>>,
    #[serde(default)]
    pub arrival: Option<Spanned<String>>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub burstiness: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_in_flight: Option<Spanned<i64>>,
    #[serde(default)]
    pub connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub first_token_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub max_errors: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_error_rate: Option<Spanned<f64>>,
    #[serde(default)]
    pub max_dispatch_lag: Option<Spanned<String>>,
    #[serde(default)]
    pub retries: Option<Spanned<i64>>,
    #[serde(default)]
    pub retry_max_wait: Option<Spanned<String>>,
    #[serde(default)]
    pub requests: Option<Spanned<i64>>,
    #[serde(default)]
    pub duration: Option<Spanned<String>>,
    #[serde(default)]
    pub warmup: Option<Spanned<i64>>,
    #[serde(default)]
    pub request_timeout: Option<Spanned<String>>,
    /// Closed loop: keep doubling concurrency past the grid until the engine fails.
    #[serde(default)]
    pub until_failure: Option<Spanned<bool>>,
    /// The bound of `until_failure`.
    #[serde(default)]
    pub max_concurrency: Option<Spanned<i64>>,
    /// Closed loop: also report over the steady-state window.
    #[serde(default)]
    pub steady_state: Option<Spanned<bool>>,
}

/// `[workload.slo]`: thresholds in milliseconds on latency statistics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p90_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub tpot_p50_ms: Option<f64>,
    pub tpot_p90_ms: Option<f64>,
    pub tpot_p95_ms: Option<f64>,
    pub tpot_p99_ms: Option<f64>,
    pub itl_p50_ms: Option<f64>,
    pub itl_p90_ms: Option<f64>,
    pub itl_p95_ms: Option<f64>,
    pub itl_p99_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p90_ms: Option<f64>,
    pub e2e_p95_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
}

/// `[gpu]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpu {
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub release_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The GPUs engines are placed on (NVML indexes); default: every GPU NVML sees.
    #[serde(default)]
    pub devices: Option<Spanned<Vec<Spanned<i64>>>>,
}

/// `[cost]`: the price of the machine and of its electricity, for cost per token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    #[serde(default)]
    pub usd_per_hour: Option<Spanned<f64>>,
    #[serde(default)]
    pub usd_per_kwh: Option<Spanned<f64>>,
}

/// `[report]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// `"nearest_rank"` (default, the HDR histograms') or `"interpolated"` (numpy's linear).
    #[serde(default)]
    pub percentiles: Option<Spanned<String>>,
}

/// `[client]`: where the runner's own threads run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    #[serde(default)]
    pub cpus: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(default)]
    pub priority: Option<Spanned<String>>,
}

/// A command line: either one string (split like a POSIX shell would, but never run by one)
/// or an explicit argv list.
#[derive(Debug, Clone, PartialEq)]
pub enum RawCommand {
    Line(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command line string or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Line(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(RawCommand::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// A port: a number, or the string `"auto"` for a free port chosen at launch.
#[derive(Debug, Clone, PartialEq)]
pub enum RawPort {
    Number(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Word(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
