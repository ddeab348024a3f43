//! The result bundle's format: its version, the manifest, and per-cell summaries. Every
//! field name is snake_case with its unit. docs/bundle.md describes the layout.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::terminate::StopReport;
use crate::metrics::client_check::ClientUsage;
use crate::metrics::gpu::GpuInventory;
use crate::metrics::sampler::Resources;
use crate::metrics::slo::SloVerdict;
use crate::metrics::summary::CellMetrics;
use crate::plan::model::{LoadLevel, SearchOver};

/// The snake_case name a status serializes to (`complete`, `failed`, ...), for people.
pub fn label<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Bumped on any change a reader of older bundles would misread.
pub const FORMAT_VERSION: u32 = 1;

/// Where the run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Being written; a bundle left like this was cut off (the runner was killed).
    Running,
    /// Every cell was attempted; see each cell's status.
    Complete,
    /// The run stopped on an error of the runner itself.
    Failed,
    /// Stopped by a signal; the cells done so far are kept.
    Interrupted,
    /// Handed to a cluster scheduler (`runner submit`): its engines run as jobs, each into a
    /// part under `parts/`, and `runner merge` turns it into a finished bundle.
    Submitted,
}

/// `manifest.json`: what produced the numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub runner_version: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the run is failed or interrupted.
    pub message: Option<String>,
    pub plan: PlanInfo,
    pub host: HostInfo,
    pub gpu: GpuInventory,
    pub engines: Vec<EngineRecord>,
    /// Every cell, in the order run; capacity-search probes are added as they are chosen.
    pub cells: Vec<CellIndex>,
    /// Capacity searches (`[workload.search]`), one per engine and workload.
    #[serde(default)]
    pub searches: Vec<SearchRecord>,
    /// `until_failure` probes, one per engine and workload that has it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub until_failure: Vec<UntilFailureRecord>,
    /// Set in a part (`runner exec --part`): where and as which job this part ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartInfo>,
    /// Set by `runner submit --slurm`: the jobs that write and merge the parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmRecord>,
    /// Set by `runner merge`: the parts this bundle was combined from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedPart>,
    /// Each workload's materialized requests, as stored under `workloads/`.
    #[serde(default)]
    pub workloads: Vec<WorkloadFile>,
    /// `[[quality]]` results, one per step and engine (raw outputs under `quality/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<crate::quality::record::QualityRecord>,
}

/// Where one part of a split run ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The engines this part ran (`runner exec --engine`).
    pub engines: Vec<String>,
    pub host: String,
    /// `SLURM_ARRAY_JOB_ID`, `SLURM_ARRAY_TASK_ID`, `SLURMD_NODENAME` when run by Slurm.
    pub slurm_array_job_id: Option<String>,
    pub slurm_array_task_id: Option<String>,
    pub slurmd_nodename: Option<String>,
}

/// The Slurm jobs of a submitted bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmRecord {
    /// The job array: task `i` runs `engines[i]`.
    pub array_job_id: u64,
    pub merge_job_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub engines: Vec<String>,
}

/// One part a merged bundle was combined from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedPart {
    /// The part's directory as given to `runner merge`.
    pub dir: String,
    pub status: RunStatus,
    pub engines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartInfo>,
}

/// `workloads/<name>.prompts.jsonl` of one workload: what it sent, and the hash that shows
/// when anything behind it (plan, tokenizer, dataset, runner) changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFile {
    pub name: String,
    /// Relative to the bundle.
    pub path: String,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
    /// What the lengths in it count: `tokens` or `words`.
    pub unit: crate::workload::tokenizer::CountUnit,
    pub requests: usize,
}

/// The outcome of one capacity search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchRecord {
    pub engine: String,
    pub workload: String,
    pub over: SearchOver,
    /// The highest level that met the SLO; null when even the first level failed.
    pub capacity: Option<LoadLevel>,
    /// The capacity is the search's `max`: the engine never failed a probe, so it can sustain
    /// that or more (reports write `>= max`).
    #[serde(default)]
    pub capacity_at_max: bool,
    /// Every probed level, in order; each is also a cell of the bundle.
    pub probes: Vec<SearchProbe>,
    /// False when the search was cut short (interrupted, or the engine died).
    pub complete: bool,
}

/// Where concurrency doubling past the grid (`until_failure = true`) found the engine's knee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UntilFailureRecord {
    pub engine: String,
    pub workload: String,
    /// The highest concurrency that passed (the grid's included); null when the lowest failed.
    pub last_passing: Option<u32>,
    /// The lowest concurrency that failed; null when every level up to `max_concurrency`
    /// passed.
    pub first_failing: Option<u32>,
    /// Why `first_failing` failed.
    pub reason: Option<String>,
    pub failure_class: Option<crate::engine::failure::FailureClass>,
    /// The levels probed past the grid, in order (each is also a cell of the bundle).
    pub probes: Vec<u32>,
    pub max_concurrency: u32,
    /// False when the doubling was cut short (interrupted, or the engine could not be
    /// brought back).
    pub complete: bool,
}

/// One probed level of a search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchProbe {
    pub level: LoadLevel,
    pub passed: bool,
    /// The level was already measured (by the grid, or an earlier probe): its cell was
    /// judged again, not measured again, so no result is overwritten.
    #[serde(default)]
    pub reused: bool,
}

/// The plan behind the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanInfo {
    pub name: String,
    pub path: String,
    pub sha256: String,
    /// The commit of the repository holding the plan, when it is in one.
    pub git_commit: Option<String>,
    /// The plan file differs from that commit.
    pub git_dirty: Option<bool>,
    /// The plan's directory, absolute: the `{plan_dir}` of the engines' `argv_relative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// The files `[[engine]] include` read, each stored in the bundle like the plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<IncludeRecord>,
}

/// A file an engine was included from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncludeRecord {
    /// As the plan writes it.
    pub include: String,
    /// Where it was read.
    pub path: String,
    /// Its copy in the bundle (secrets redacted), relative to the bundle.
    pub stored: String,
    /// Lowercase hex sha256 of the file's bytes as resolved.
    pub sha256: String,
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    pub memory_total_bytes: Option<u64>,
    /// What `[client]` applied: the runner's CPUs, the engines', its priority and any warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<crate::affinity::ClientSetup>,
}

/// What happened to one engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineRecord {
    pub name: String,
    pub status: EngineStatus,
    pub model: String,
    /// The `[engine.matrix]` values this engine was expanded from (absent without a matrix).
    #[serde(
        default,
        skip_serializing_if = "crate::plan::matrix::MatrixValues::is_empty"
    )]
    pub matrix: crate::plan::matrix::MatrixValues,
    /// The command line as launched (`{port}` filled in); empty for attached engines.
    pub argv: Vec<String>,
    /// `argv` with paths under the plan's directory written `{plan_dir}/...` and the runner
    /// binary itself as `{runner}`: what `runner compare` compares, so a checkout in another
    /// directory is no difference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv_relative: Vec<String>,
    pub url: Option<String>,
    /// The leader's pid, which is also its process group's id.
    pub pid: Option<i32>,
    /// The leader's start time in clock ticks after boot (/proc/<pid>/stat): with `pid`, it
    /// tells `runner recover` whether a live process is still this engine, whatever program
    /// (a shell script, a shim, a console script) it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// The leader's session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<i32>,
    /// The port it was launched on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub version: Option<String>,
    pub version_error: Option<String>,
    /// The environment variable an API key was read from; the key itself is never recorded.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub api_key_used: bool,
    pub ready_s: Option<f64>,
    /// Memory once ready, before any load.
    pub idle: Option<Resources>,
    pub failure: Option<String>,
    pub log_tail: Option<String>,
    /// The engine's stdout and stderr, relative to the bundle.
    pub log: Option<String>,
    /// Set when the engine wrote more than `log_limit`: the log keeps the head and the tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_truncated: Option<crate::engine::log::LogTruncation>,
    pub stop: Option<StopReport>,
    /// With NVML: GPU memory before launch and after teardown.
    #[serde(default)]
    pub gpu_release: Option<GpuRelease>,
    /// Request fields the engine refused (HTTP 4xx naming the field) in the check before its
    /// cells; those workloads' cells are `rejected`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_fields: Vec<RejectedField>,
    /// The Prometheus page scraped during its cells (`metrics_path`), when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// The GPUs (NVML indexes) the engine was placed on; absent without GPUs, and for an
    /// attached engine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
    /// The `CUDA_VISIBLE_DEVICES` the engine was started with (the runner's placement, the
    /// plan's `env`, or inherited), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_visible_devices: Option<String>,
    /// When it was launched (or attached to), became ready, and was torn down: with
    /// `[run] parallel`, how the engines' lifecycles overlapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    /// With `on_failure = "restart"`: each relaunch after the engine died, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<EngineRestart>,
}

/// One relaunch of an engine that died during a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineRestart {
    /// The cell it died in.
    pub after_cell: String,
    /// Why it died, as the cell records it.
    pub failure: String,
    pub failure_class: Option<crate::engine::failure::FailureClass>,
    /// The relaunched engine's log, relative to the bundle.
    pub log: Option<String>,
    /// Seconds from relaunch to ready; null when it never became ready again.
    pub ready_s: Option<f64>,
    /// Why the relaunch failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request field an engine refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedField {
    pub workload: String,
    pub field: String,
    /// The engine's answer: status and message.
    pub answer: String,
}

/// Whether an engine gave its GPU memory back after teardown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRelease {
    pub before_launch_bytes: u64,
    pub after_stop_bytes: u64,
    /// Back to within 256 MiB of the level before launch, within `[gpu] release_timeout`.
    pub released: bool,
    /// When not released: the processes holding GPU memory, as NVML lists them.
    pub holders: Vec<crate::metrics::gpu::GpuProcess>,
}

/// An engine's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineStatus {
    Pending,
    Starting,
    Ready,
    /// It could not be launched, never became ready, or died.
    Failed,
    Stopped,
    /// Not reached: the run was interrupted first.
    Skipped,
}

/// One cell's entry in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellIndex {
    pub id: String,
    pub status: CellStatus,
}

/// How a cell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    Pending,
    /// Measured to the end (individual requests may still have failed).
    Ok,
    /// Not measured, or not to the end: its engine failed, or every request failed.
    Failed,
    /// Stopped by a signal; whatever was measured is kept.
    Interrupted,
    /// Not run: the engine refused a request field the plan sends it (`reason` names it). A
    /// plan to fix, not an engine failure.
    Rejected,
    /// The engine exited during the cell: the requests measured before are kept, and
    /// `failure_class` and `log_tail` say why where the log tells.
    EngineDied,
}

/// `cells/<id>.summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellSummary {
    pub id: String,
    pub engine: String,
    pub workload: String,
    /// `{"concurrency": N}` (closed loop) or `{"rate": R}` (open loop, requests/s).
    pub level: LoadLevel,
    pub status: CellStatus,
    pub reason: Option<String>,
    /// False when the client, not the server, set the pace (see `invalid_reason`): such a
    /// cell's numbers are kept for diagnosis but never reported as a result.
    #[serde(default = "valid_by_default")]
    pub valid: bool,
    #[serde(default)]
    pub invalid_reason: Option<String>,
    #[serde(default)]
    pub client: Option<ClientUsage>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// All runs together: latency distributions pool every request; rates are the mean over
    /// runs when the plan repeats cells.
    pub metrics: Option<CellMetrics>,
    /// With `repeat = N`: each run's own metrics, for the spread.
    #[serde(default)]
    pub repeats: Vec<CellMetrics>,
    pub resources: Option<Resources>,
    /// The engine's own Prometheus metrics over the cell, when it serves `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_metrics: Option<crate::metrics::telemetry::EngineTelemetry>,
    /// The engine's prefix-cache hit rate over the cell, from its /metrics counters
    /// (`EngineTelemetry::prefix_cache_hit_rate`), where it exposes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hit_rate: Option<f64>,
    pub slo: Option<SloVerdict>,
    /// Raw per-request records, relative to the bundle.
    pub records: Option<String>,
    /// `engine_died`: the cause read from the engine's log tail and exit status, where it is
    /// recognized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_class: Option<crate::engine::failure::FailureClass>,
    /// `engine_died`: the last lines of the engine's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
    /// With `repeat = N`: each run judged on its own. A failed, invalid or missing run makes
    /// the cell invalid (`invalid_reason` names the run): its mean is not a result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<crate::metrics::verdict::RunVerdict>,
    /// `steady_state = true`: the figures over the window where the level was held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<crate::metrics::steady::SteadyState>,
}

fn valid_by_default() -> bool {
    true
}
