//! The validated plan: defaults applied, files loaded, the grid expanded. Only these types flow
//! downstream of `plan::resolve::load`; they serialize into the bundle as `plan.resolved.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::matrix::MatrixValues;

/// A plan ready to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub schema: u32,
    pub name: String,
    pub description: String,
    /// Where the plan was read from.
    pub path: PathBuf,
    /// The sha256 of the plan file's bytes, hex.
    pub sha256: String,
    pub engines: Vec<EngineSpec>,
    pub workloads: Vec<WorkloadSpec>,
    pub gpu: GpuSpec,
    pub report: ReportSpec,
    /// `[client]`: the runner's own CPUs and priority.
    #[serde(
        default,
        skip_serializing_if = "crate::affinity::ClientSpec::is_default"
    )]
    pub client: crate::affinity::ClientSpec,
    /// `[cost] usd_per_hour`: what the machine costs, for dollars per million tokens.
    #[serde(default)]
    pub usd_per_hour: Option<f64>,
    /// `[cost] usd_per_kwh`: what the electricity costs, for dollars per million tokens from
    /// the GPUs' energy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_kwh: Option<f64>,
    /// Each cell is measured this many times (each run with its own warmup): summaries give the
    /// runs' mean and spread, and comparisons use it.
    #[serde(default = "one")]
    pub repeat: u32,
    /// `[run] parallel`: engines whose device sets do not overlap run at the same time.
    #[serde(default, skip_serializing_if = "is_false")]
    pub parallel: bool,
    pub cells: Vec<Cell>,
    /// `[[quality]]`: evaluation steps run against every engine after its cells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<super::quality::QualitySpec>,
    /// The files `[[engine]] include = "..."` read, in plan order (each once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<IncludedFile>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Plan {
    /// Whether the runner sets each launched engine's `CUDA_VISIBLE_DEVICES`: the plan asks
    /// for placement (`[gpu] devices`, an engine's `gpus`, `[run] parallel`, or `{gpus}` /
    /// `{gpu_count}` in a launch command or env value). A plan that says none of these leaves
    /// the engines' environment as it was before placement existed.
    pub fn places_gpus(&self) -> bool {
        let uses = |t: &str| t.contains("{gpus}") || t.contains("{gpu_count}");
        self.gpu.devices.is_some()
            || self.parallel
            || self.engines.iter().any(|e| {
                e.gpus.is_some()
                    || match &e.target {
                        EngineTarget::Launch(l) => {
                            l.argv.iter().any(|a| uses(a)) || l.env.values().any(|v| uses(v))
                        }
                        EngineTarget::Attach { .. } => false,
                    }
            })
    }
}

/// A file an `[[engine]]` was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncludedFile {
    /// As written in the plan.
    pub include: String,
    /// Where it was read, relative to the plan's directory as the plan's own path is.
    pub path: PathBuf,
    /// Lowercase hex sha256 of its bytes as resolved.
    pub sha256: String,
}

fn one() -> u32 {
    1
}

/// One engine to compare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineSpec {
    pub name: String,
    pub model: String,
    pub api: Api,
    pub target: EngineTarget,
    pub health: HealthSpec,
    /// A command whose output records the engine's version (argv, placeholders expanded
    /// except `{port}`).
    pub version_command: Option<Vec<String>>,
    /// The name of the environment variable holding the API key sent as a bearer token (the
    /// key itself never appears in the plan or the bundle).
    pub api_key_env: Option<String>,
    /// Which non-standard fields the workload's settings may add to this engine's requests.
    #[serde(default)]
    pub accepts: Accepts,
    /// `[engine.extra_body]`: fields merged into every request body sent to this engine.
    #[serde(default)]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// `metrics_path`: the engine's Prometheus page, scraped during cells when it answers
    /// (default `/metrics`; `""` turns it off).
    #[serde(default)]
    pub metrics_path: Option<String>,
    /// `metrics_interval`: how often `metrics_path` is scraped during a cell; `None` (`"off"`):
    /// only at the cell's start and end.
    #[serde(default = "metrics_interval", with = "humantime_option")]
    pub metrics_interval: Option<Duration>,
    /// The `[engine.matrix]` values this engine was expanded from (empty without a matrix).
    #[serde(default, skip_serializing_if = "MatrixValues::is_empty")]
    pub matrix: MatrixValues,
    /// `gpus`: how many of the plan's devices the engine is given; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// What the run does when the engine exits during a cell.
    #[serde(default, skip_serializing_if = "OnFailure::is_skip")]
    pub on_failure: OnFailure,
}

/// `on_failure`: what the run does with an engine that exits during a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Its remaining cells are not run (marked failed).
    #[default]
    Skip,
    /// It is relaunched, at most `max_restarts` times, and the run goes on with its next cell.
    Restart { max_restarts: u32 },
}

impl OnFailure {
    pub fn is_skip(&self) -> bool {
        *self == OnFailure::Skip
    }

    /// How many relaunches are allowed.
    pub fn max_restarts(&self) -> u32 {
        match self {
            OnFailure::Skip => 0,
            OnFailure::Restart { max_restarts } => *max_restarts,
        }
    }
}

/// `accepts = [...]`: the non-standard request fields an engine takes. Both by default, since
/// vLLM, SGLang and llama.cpp's server take them; an engine with a strict request schema (OpenAI,
/// `transformers serve`) answers 4xx to either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepts {
    pub ignore_eos: bool,
    pub min_tokens: bool,
}

impl Default for Accepts {
    fn default() -> Self {
        Accepts {
            ignore_eos: true,
            min_tokens: true,
        }
    }
}

/// The variable that gives a launched engine its GPUs (`gpus`).
pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// The request fields `accepts` may name.
pub const ACCEPTABLE_FIELDS: [&str; 2] = ["ignore_eos", "min_tokens"];

/// Request fields the runner sets from the workload; `extra_body` may not replace them.
pub const RESERVED_BODY_FIELDS: [&str; 7] = [
    "model",
    "messages",
    "prompt",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
];

/// How the runner reaches an engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineTarget {
    /// The runner launches the engine and owns its lifetime.
    Launch(LaunchSpec),
    /// The engine is already running at this base URL; nothing is launched or stopped.
    Attach { url: String },
}

/// How to launch an engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// argv with every placeholder but `{port}` already expanded.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub port: PortSpec,
    #[serde(with = "humantime_serde_compat")]
    pub stop_grace: Duration,
    /// `log_limit`: the most bytes of its output kept in its log (head and tail).
    #[serde(default = "default_log_limit")]
    pub log_limit: u64,
}

fn default_log_limit() -> u64 {
    super::defaults::LOG_LIMIT
}

/// The port an engine listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSpec {
    Fixed(u16),
    /// A free port is chosen just before launch.
    Auto,
}

/// The OpenAI-compatible API flavour requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Chat,
    Completions,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
        }
    }
}

/// How readiness is decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthSpec {
    pub path: String,
    pub status: u16,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Also require one real completion (1 token) to succeed: some servers answer /health
    /// or /v1/models before they can serve.
    #[serde(default)]
    pub completion: bool,
}

/// One workload: what is sent, and the load grid it is sent at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub name: String,
    /// Where the prompts came from, for the record.
    pub source: String,
    /// Left out of the bundle's `plan.resolved.json` (the prompts are in
    /// `workloads/<name>.prompts.jsonl`, once); bundles written before that hold them here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<Prompt>,
    /// Per prompt, in prompt order: what the workload's source set for each request (its own
    /// `max_tokens`, a pinned `min_tokens`, its client-side length, a trace's offset). Empty in
    /// bundles written before these existed: every request then takes the workload's settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<RequestShape>,
    /// What `shapes[i].prompt_len` counts: tokens when the workload names a tokenizer.
    #[serde(
        default,
        skip_serializing_if = "crate::workload::tokenizer::CountUnit::is_words"
    )]
    pub unit: crate::workload::tokenizer::CountUnit,
    /// `tokenizer = "..."`, resolved against the plan's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// `[workload.sessions]`: requests are turns, sent in order per session with its history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionsSpec>,
    /// The upper bound on every request's `max_tokens` (the workload's `max_tokens`, or the
    /// largest a request of its source carries).
    pub max_tokens: u32,
    /// Sent as `min_tokens` (vLLM, SGLang): with `ignore_eos`, fixes the output length.
    pub min_tokens: Option<u32>,
    pub temperature: f64,
    pub ignore_eos: bool,
    /// A response that generated nothing is a success, not an `empty_output` failure.
    #[serde(default)]
    pub allow_empty_output: bool,
    pub stream: bool,
    pub repeat: u32,
    pub load: LoadSpec,
    pub slo: Vec<SloRule>,
    /// Find each engine's capacity under the SLO instead of (or besides) the fixed levels.
    pub search: Option<SearchSpec>,
    /// The `[workload.matrix]` values this workload was expanded from (empty without one).
    #[serde(default, skip_serializing_if = "MatrixValues::is_empty")]
    pub matrix: MatrixValues,
}

/// `[workload.search]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchSpec {
    pub over: SearchOver,
    pub min: f64,
    pub max: f64,
    /// Most levels probed per engine.
    pub max_steps: u32,
}

/// What a capacity search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchOver {
    Concurrency,
    Rate,
}

/// What one request of a workload carries besides its prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestShape {
    /// `None`: the workload's `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Pins the output length (synthetic `output_tokens`): sent as `min_tokens`, with
    /// `ignore_eos`, where the engine accepts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u32>,
    /// The client-side prompt length, in the workload's unit.
    pub prompt_len: u64,
    /// A trace's due time, from the start of the measured phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_offset_us: Option<u64>,
    /// Multi-turn workloads: the session (conversation) this request is a turn of, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The turn's index in its session, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
}

/// `[workload.sessions]`: the workload's requests are turns of sessions (docs/workloads.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SessionsSpec {
    /// Wait between a turn's answer and the session's next turn (a user reading and typing).
    #[serde(with = "humantime_serde_compat")]
    pub think_time: Duration,
}

/// One prompt: plain text, or a chat conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// The load grid of a workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    /// One cell per level: closed-loop concurrencies or open-loop rates.
    pub levels: Vec<LoadLevel>,
    /// How open-loop arrivals are spaced.
    pub arrival: Arrival,
    /// Open loop: most requests in flight at once; a due request waits for a free slot, and
    /// that wait counts in its latency.
    pub max_in_flight: Option<u32>,
    pub stop: StopRule,
    /// Requests sent before each cell's measurement, at the cell's load, not counted.
    pub warmup: u32,
    pub timeouts: TimeoutSpec,
    /// End a level early after this many failed requests.
    pub max_errors: Option<u64>,
    /// End a level early once this fraction of at least 20 finished requests failed.
    pub max_error_rate: Option<f64>,
    /// A cell whose p99 dispatch lag exceeds this is invalid: the client, not the server,
    /// set its pace.
    #[serde(with = "humantime_serde_compat")]
    pub max_dispatch_lag: Duration,
    /// Retries of a request answered 429 or 503 (0: recorded as failures).
    pub retries: u32,
    /// The longest wait before a retry, whatever Retry-After asks.
    #[serde(with = "humantime_serde_compat")]
    pub retry_max_wait: Duration,
    /// `until_failure = true`: past the grid, concurrency keeps doubling up to this bound
    /// until the engine fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_failure: Option<UntilFailureSpec>,
    /// `steady_state = true`: closed-loop cells also report over their steady-state window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub steady_state: bool,
}

/// `[load] until_failure = true` and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntilFailureSpec {
    /// The highest concurrency probed.
    pub max_concurrency: u32,
}

/// One load level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadLevel {
    /// Closed loop: this many requests in flight, each sent when the previous one ends.
    Concurrency(u32),
    /// Open loop: requests per second, sent on schedule whatever the server does.
    Rate(f64),
}

impl LoadLevel {
    /// The level's part of a cell id: `c8`, `r10`, `r2p5`.
    pub fn id_part(&self) -> String {
        match self {
            LoadLevel::Concurrency(c) => format!("c{c}"),
            LoadLevel::Rate(r) => format!("r{}", fmt_rate(*r).replace('.', "p")),
        }
    }

    /// The level a cell id's last part names (`c8`, `r10`, `r2p5`): the inverse of `id_part`.
    pub fn from_id_part(part: &str) -> Option<LoadLevel> {
        if let Some(c) = part.strip_prefix('c') {
            Some(LoadLevel::Concurrency(c.parse().ok()?))
        } else {
            Some(LoadLevel::Rate(
                part.strip_prefix('r')?.replace('p', ".").parse().ok()?,
            ))
        }
    }

    /// For people: `8` or `10 req/s`.
    pub fn label(&self) -> String {
        match self {
            LoadLevel::Concurrency(c) => c.to_string(),
            LoadLevel::Rate(r) => format!("{} req/s", fmt_rate(*r)),
        }
    }

    pub fn concurrency(&self) -> Option<u32> {
        match self {
            LoadLevel::Concurrency(c) => Some(*c),
            LoadLevel::Rate(_) => None,
        }
    }

    pub fn rate(&self) -> Option<f64> {
        match self {
            LoadLevel::Rate(r) => Some(*r),
            LoadLevel::Concurrency(_) => None,
        }
    }

    /// A number to sort and compare levels of one kind by.
    pub fn magnitude(&self) -> f64 {
        match self {
            LoadLevel::Concurrency(c) => f64::from(*c),
            LoadLevel::Rate(r) => *r,
        }
    }
}

fn fmt_rate(r: f64) -> String {
    let s = format!("{r:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Open-loop inter-arrival times.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Exactly 1/rate apart.
    Constant,
    /// Exponential gaps (a Poisson process), seeded.
    Poisson { seed: u64 },
    /// Gamma-distributed gaps with mean 1/rate; burstiness > 1 clusters arrivals, < 1 evens
    /// them out (1 is Poisson).
    Gamma { seed: u64, burstiness: f64 },
}

/// Per-phase request limits (see docs/plan.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeoutSpec {
    #[serde(with = "humantime_serde_compat")]
    pub connect: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub first_token: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub idle: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub total: Duration,
}

/// When a load level ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// After this many measured requests.
    Requests(u64),
    /// No new request starts after this long; in-flight ones finish.
    #[serde(with = "humantime_serde_compat")]
    Duration(Duration),
}

/// A latency statistic an SLO can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloMetric {
    Ttft,
    Tpot,
    Itl,
    E2e,
}

/// A percentile an SLO can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Percentile {
    P50,
    P90,
    P95,
    P99,
}

/// One SLO threshold: `metric` at `percentile` must be at most `max_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloRule {
    pub metric: SloMetric,
    pub percentile: Percentile,
    pub max_ms: f64,
}

impl SloRule {
    /// The key used in plans and summaries, e.g. `ttft_p95_ms`.
    pub fn key(&self) -> String {
        let m = match self.metric {
            SloMetric::Ttft => "ttft",
            SloMetric::Tpot => "tpot",
            SloMetric::Itl => "itl",
            SloMetric::E2e => "e2e",
        };
        let p = match self.percentile {
            Percentile::P50 => "p50",
            Percentile::P90 => "p90",
            Percentile::P95 => "p95",
            Percentile::P99 => "p99",
        };
        format!("{m}_{p}_ms")
    }
}

/// `[gpu]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuSpec {
    pub enabled: bool,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
    /// How long teardown waits for GPU memory to return to its level before launch.
    #[serde(with = "humantime_serde_compat", default = "gpu_release_timeout")]
    pub release_timeout: Duration,
    /// `devices`: the GPUs engines are placed on (NVML indexes); `None`: every GPU NVML sees
    /// when the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<u32>>,
}

/// Bundles written before `release_timeout` existed read with the default.
fn gpu_release_timeout() -> Duration {
    super::defaults::GPU_RELEASE_TIMEOUT
}

/// Bundles written before `metrics_interval` existed read with the default.
fn metrics_interval() -> Option<Duration> {
    Some(super::defaults::METRICS_INTERVAL)
}

/// `[report]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportSpec {
    /// A tera template to render instead of the built-in one.
    pub template: Option<PathBuf>,
    /// Which percentile estimator reports and exports show.
    #[serde(default, skip_serializing_if = "Percentiles::is_default")]
    pub percentiles: Percentiles,
}

/// `[report] percentiles`: how a percentile is read from a cell's samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Percentiles {
    /// The HDR histograms' nearest rank: the smallest sample with at least q of the samples at
    /// or below it (p99 of 100 samples is the maximum).
    #[default]
    NearestRank,
    /// numpy's default (`linear`): interpolated between the two samples around rank
    /// q x (n - 1), as vLLM's bench computes its percentiles.
    Interpolated,
}

impl Percentiles {
    pub fn is_default(&self) -> bool {
        *self == Percentiles::NearestRank
    }
}

/// One point of the grid: an engine, a workload, a load level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Stable, file-name-safe id: `<engine>.<workload>.<level>`, e.g. `vllm.chat.c8`.
    pub id: String,
    pub engine: usize,
    pub workload: usize,
    pub level: LoadLevel,
}

impl Cell {
    pub fn new(
        plan_engines: &[EngineSpec],
        plan_workloads: &[WorkloadSpec],
        engine: usize,
        workload: usize,
        level: LoadLevel,
    ) -> Cell {
        Cell {
            id: format!(
                "{}.{}.{}",
                plan_engines[engine].name,
                plan_workloads[workload].name,
                level.id_part()
            ),
            engine,
            workload,
            level,
        }
    }
}

/// Durations serialize as humantime strings ("250ms") so the resolved plan reads like the plan.
pub mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// An optional duration as text, `"off"` for none.
pub mod humantime_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(None);
        }
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}
