//! The pipeline of `runner exec`, top to bottom: create the bundle, then for each engine
//! spawn -> ready -> [warmup -> measure -> cell summary written] per cell -> shutdown, then
//! finish the manifest and render the report from the bundle alone.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::mpsc;

use super::host;
use super::progress::Progress;
use super::search::Search;
use crate::bundle::format::*;
use crate::bundle::lock::{self, BundleLock, LockError};
use crate::bundle::redact::{self, Redactor};
use crate::bundle::write::{Bundle, WriteError};
use crate::engine::health::{wait_ready, Miss, NotReady, Owner};
use crate::engine::spawn::{self, log_tail, Spawned};
use crate::engine::{terminate, version};
use crate::load::client::{http_client, RequestTarget, RetryPolicy, Timeouts};
use crate::load::driver::{run_level, Level};
use crate::load::workload;
use crate::metrics::gpu::{Gpu, GpuInventory};
use crate::metrics::record::{ErrorClass, RequestRecord};
use crate::metrics::sampler::Sampler;
use crate::metrics::summary::{Accumulator, GoodputBounds};
use crate::metrics::{client_check, slo, telemetry};
use crate::plan::{Cell, EngineSpec, EngineTarget, LoadLevel, Plan, ACCEPTABLE_FIELDS};
use crate::report;
use crate::stop::Cancel;

/// Lines of an engine's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;

/// How long an engine's log may take to reach its end once the engine is gone (a child that
/// escaped teardown may hold the pipe open).
const LOG_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// The tail of a launched engine's log once it exited: its last words are copied first (a
/// bounded wait, told to the runtime so that its other tasks go on meanwhile).
fn exited_log_tail(sp: &Spawned) -> String {
    let settle = || sp.log.settle(LOG_SETTLE);
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(settle),
        _ => settle(),
    }
    log_tail(&sp.log_path, LOG_TAIL_LINES)
}

/// Options of `runner exec` beyond the plan.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Bundles go under `<results_root>/<plan name>/`.
    pub results_root: PathBuf,
    pub quiet: bool,
    /// Finish this bundle instead of starting a new one.
    pub resume: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    pub bundle_dir: PathBuf,
    pub status: RunStatus,
    pub cells_failed: usize,
    /// Cells whose numbers are not results (client-bound, or untrustworthy token counts).
    pub cells_invalid: usize,
    /// Cells measured to the end in which some requests failed, one line each: the cell, how
    /// many failed, and the server's message.
    pub requests_failed: Vec<String>,
    /// The console summary table (empty if the report could not be rendered).
    pub summary: String,
    /// Why the report could not be rendered, if it could not.
    pub report_error: Option<String>,
    /// Engine processes still alive after teardown (`engine: pid, command, port`).
    pub leftovers: Vec<String>,
}

/// A run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot send requests to the engine: {0}")]
    Endpoint(String),
    #[error("cannot resume {dir}: {why}")]
    Resume { dir: PathBuf, why: String },
}

/// A bundle opened to finish: locked, its manifest, the cells already measured, their summaries.
type Resumed = (
    Bundle,
    BundleLock,
    Manifest,
    HashSet<String>,
    Vec<CellSummary>,
);

/// Opens a bundle to finish: same plan (by hash), format and runner; keeps its `ok` cells.
fn resume_bundle(
    dir: &std::path::Path,
    plan: &Plan,
    inventory: GpuInventory,
    redactor: Redactor,
) -> Result<Resumed, RunError> {
    let err = |why: String| RunError::Resume {
        dir: dir.to_path_buf(),
        why,
    };
    // Before anything is read: a bundle another runner is writing is not ours to finish.
    let lock = lock::acquire(dir).map_err(|e| err(e.to_string()))?;
    let loaded = crate::bundle::read::load(dir).map_err(|e| err(e.to_string()))?;
    let mut manifest = loaded.manifest;
    if manifest.plan.sha256 != plan.sha256 {
        return Err(err(format!(
            "the plan changed since this bundle was written (sha256 {} then, {} now); run it as a new bundle",
            &manifest.plan.sha256[..12.min(manifest.plan.sha256.len())],
            &plan.sha256[..12.min(plan.sha256.len())]
        )));
    }
    if manifest.status == RunStatus::Complete
        && manifest.cells.iter().all(|c| c.status == CellStatus::Ok)
    {
        return Err(err("every cell of this bundle is already complete".into()));
    }
    let done: HashSet<String> = loaded
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .map(|c| c.id.clone())
        .collect();
    // Search probes are found again; only the plan's fixed cells are kept in the index.
    manifest
        .cells
        .retain(|c| plan.cells.iter().any(|p| p.id == c.id) || done.contains(&c.id));
    manifest.searches.retain(|s| s.complete);
    manifest.status = RunStatus::Running;
    manifest.finished_at = None;
    manifest.message = Some(format!("resumed at {}", Utc::now().to_rfc3339()));
    manifest.gpu = inventory;
    let kept = loaded
        .cells
        .into_iter()
        .filter(|c| manifest.cells.iter().any(|i| i.id == c.id))
        .collect();
    Ok((
        Bundle::open(dir).with_redactor(redactor),
        lock,
        manifest,
        done,
        kept,
    ))
}

struct Run<'a> {
    plan: &'a Plan,
    bundle: Bundle,
    manifest: Manifest,
    sampler: Sampler,
    client: reqwest::Client,
    cancel: Cancel,
    progress: Progress,
    invalid: usize,
    /// Cells already measured in the bundle being resumed: not run again.
    done: HashSet<String>,
    /// Every cell summary written so far (the CSV is rendered from these).
    summaries: Vec<CellSummary>,
    /// `telemetry.jsonl`: every scrape of an engine's `/metrics`.
    telemetry: Option<telemetry::Journal>,
    origin: Instant,
    /// Engine processes that survived their teardown, named.
    leftovers: Vec<String>,
}

/// Runs a plan and writes its bundle. `plan_bytes` is the plan file as read.
pub async fn exec(
    plan: &Plan,
    plan_bytes: &[u8],
    opts: &ExecOptions,
    cancel: Cancel,
) -> Result<ExecOutcome, RunError> {
    let (gpu, inventory) = if plan.gpu.enabled {
        Gpu::open()
    } else {
        (
            None,
            GpuInventory {
                unavailable_reason: Some("disabled by the plan (`[gpu] enabled = false`)".into()),
                ..GpuInventory::default()
            },
        )
    };
    let redactor = Redactor::for_plan(plan, plan_bytes, std::env::vars());
    // The lock is held until the report is rendered: the bundle is this run's until then.
    let (bundle, _lock, manifest, done, summaries) = match &opts.resume {
        Some(dir) => resume_bundle(dir, plan, inventory, redactor)?,
        None => {
            let bundle = Bundle::create(&opts.results_root, &plan.name)?.with_redactor(redactor);
            let lock = lock::acquire(&bundle.dir)?;
            // The copy is the plan file but its secrets; the manifest keeps the original's hash.
            let copy = bundle.redactor().plan_source(plan_bytes);
            bundle.write("plan.toml", &copy)?;
            bundle.write_json("plan.resolved.json", &redacted(plan))?;
            if let Some(t) = &plan.report.template {
                let text = std::fs::read(t).map_err(|e| WriteError {
                    path: t.clone(),
                    source: e,
                })?;
                bundle.write(crate::bundle::layout::TEMPLATE, &text)?;
            }
            let manifest = Manifest {
                format_version: FORMAT_VERSION,
                runner_version: env!("CARGO_PKG_VERSION").to_string(),
                status: RunStatus::Running,
                started_at: Utc::now(),
                finished_at: None,
                message: None,
                plan: host::plan_info(plan),
                host: host::host_info(),
                gpu: inventory,
                engines: plan.engines.iter().map(pending_engine).collect(),
                searches: Vec::new(),
                cells: plan
                    .cells
                    .iter()
                    .map(|c| CellIndex {
                        id: c.id.clone(),
                        status: CellStatus::Pending,
                    })
                    .collect(),
            };
            (bundle, lock, manifest, HashSet::new(), Vec::new())
        }
    };
    let sampler = Sampler::start(gpu, plan.gpu.interval, &bundle.path("samples.jsonl"));
    let bundle_path_telemetry = bundle.path("telemetry.jsonl");
    let mut run = Run {
        plan,
        bundle,
        manifest,
        sampler,
        client: http_client(std::time::Duration::from_secs(10))?,
        cancel,
        progress: Progress::new(opts.quiet),
        invalid: 0,
        done,
        summaries,
        telemetry: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(bundle_path_telemetry)
            .ok()
            .map(|f| Arc::new(std::sync::Mutex::new(std::io::BufWriter::new(f)))),
        origin: Instant::now(),
        leftovers: Vec::new(),
    };
    run.save_manifest()?;
    run.progress.plan(plan, &run.bundle.dir, &run.manifest.gpu);
    if let Err(e) = terminate::become_subreaper() {
        run.progress.warn(&format!(
            "cannot make the runner a child subreaper ({e}): an engine process that leaves its group and whose parent exits will not be found at teardown"
        ));
    }

    for (ei, engine) in plan.engines.iter().enumerate() {
        if let Err(e) = run.engine(ei, engine).await {
            // The engine is already stopped (teardown never depends on the bundle); say so in
            // the manifest if the disk still takes it.
            run.manifest.status = RunStatus::Failed;
            run.manifest.finished_at = Some(Utc::now());
            run.manifest.message = Some(format!("the run stopped: {e}"));
            if let Err(again) = run.save_manifest() {
                // Said even with --quiet: the bundle stays marked `running`.
                eprintln!(
                    "warning: the manifest could not be marked failed either ({again}); once the disk takes writes again, run `runner recover {}`",
                    run.bundle.dir.display()
                );
            }
            return Err(e);
        }
    }

    let interrupted = run.cancel.is_stopping();
    let cells_failed = run
        .manifest
        .cells
        .iter()
        .filter(|c| matches!(c.status, CellStatus::Failed | CellStatus::Rejected))
        .count();
    let requests_failed: Vec<String> = run
        .manifest
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok)
        .filter_map(|c| run.summaries.iter().find(|s| s.id == c.id))
        .filter_map(|s| {
            let line = s.metrics.as_ref()?.failed_requests_line()?;
            Some(format!("{}: {line}", s.id))
        })
        .collect();
    run.manifest.status = if interrupted {
        RunStatus::Interrupted
    } else {
        RunStatus::Complete
    };
    run.manifest.message = if interrupted {
        Some("stopped by a signal; cells not reached are marked interrupted".into())
    } else {
        completion_message(
            run.manifest.cells.len(),
            cells_failed,
            requests_failed.len(),
        )
    };
    run.manifest.finished_at = Some(Utc::now());
    run.save_manifest()?;
    let cells_invalid = run.invalid;
    let bundle_dir = run.bundle.dir.clone();
    let status = run.manifest.status;
    let leftovers = std::mem::take(&mut run.leftovers);
    drop(run);
    let (summary, report_error) = match report::render::rerender(&bundle_dir) {
        Ok(s) => (s, None),
        Err(e) => (String::new(), Some(e.to_string())),
    };
    Ok(ExecOutcome {
        bundle_dir,
        status,
        cells_failed,
        cells_invalid,
        requests_failed,
        summary,
        report_error,
        leftovers,
    })
}

/// How a run that went to its end qualifies `complete`: every cell failed, some did, or some
/// finished with failed requests. `None` when every cell measured without a failure.
pub fn completion_message(
    cells: usize,
    cells_failed: usize,
    cells_with_failed_requests: usize,
) -> Option<String> {
    if cells > 0 && cells_failed == cells {
        return Some(format!(
            "every cell failed or was rejected ({cells_failed} of {cells}): nothing was measured"
        ));
    }
    let mut parts = Vec::new();
    if cells_failed > 0 {
        parts.push(format!(
            "{cells_failed} of {cells} cells failed or were rejected"
        ));
    }
    if cells_with_failed_requests > 0 {
        parts.push(format!(
            "{cells_with_failed_requests} cells finished with failed requests"
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn pending_engine(e: &EngineSpec) -> EngineRecord {
    EngineRecord {
        name: e.name.clone(),
        status: EngineStatus::Pending,
        model: e.model.clone(),
        argv: Vec::new(),
        url: None,
        pid: None,
        start_ticks: None,
        sid: None,
        port: None,
        version: None,
        version_error: None,
        api_key_env: e.api_key_env.clone(),
        api_key_used: false,
        ready_s: None,
        idle: None,
        failure: None,
        log_tail: None,
        log: None,
        log_truncated: None,
        stop: None,
        gpu_release: None,
        rejected_fields: Vec::new(),
        metrics_url: None,
    }
}

/// The resolved plan as stored in the bundle: values of secret-looking environment
/// variables are replaced, so a token given in `env` never lands in a bundle.
fn redacted(plan: &Plan) -> Plan {
    let mut p = plan.clone();
    for e in &mut p.engines {
        if let EngineTarget::Launch(l) = &mut e.target {
            for (k, v) in l.env.iter_mut() {
                if redact::secret_name(k) {
                    *v = redact::REDACTED.into();
                }
            }
        }
    }
    p
}

/// An engine that came up: how to reach it, and its process if the runner launched it.
struct Up {
    base_url: String,
    spawned: Option<Spawned>,
    /// Workloads (by index) whose requests this engine refuses, with the reason.
    rejected: BTreeMap<usize, String>,
    /// The engine's Prometheus page, when it has one.
    metrics_url: Option<String>,
}

impl Run<'_> {
    fn save_manifest(&self) -> Result<(), WriteError> {
        self.bundle.write_json("manifest.json", &self.manifest)
    }

    fn set_cell(&mut self, id: &str, status: CellStatus) {
        if let Some(c) = self.manifest.cells.iter_mut().find(|c| c.id == id) {
            c.status = status;
        }
    }

    /// Writes a cell summary, the CSV of every summary so far, and the manifest.
    fn save_cell(&mut self, s: &CellSummary) -> Result<(), WriteError> {
        if !s.valid {
            self.invalid += 1;
        }
        self.bundle
            .write_json(&format!("cells/{}.summary.json", s.id), s)?;
        self.set_cell(&s.id, s.status);
        self.save_manifest()?;
        match self.summaries.iter_mut().find(|k| k.id == s.id) {
            Some(k) => *k = s.clone(),
            None => self.summaries.push(s.clone()),
        }
        self.save_csv()?;
        self.progress.cell_done(s);
        Ok(())
    }

    /// `summary.csv`: every summary so far, in the manifest's cell order.
    fn save_csv(&self) -> Result<(), WriteError> {
        let by_id: std::collections::HashMap<&str, &CellSummary> =
            self.summaries.iter().map(|k| (k.id.as_str(), k)).collect();
        let ordered: Vec<CellSummary> = self
            .manifest
            .cells
            .iter()
            .filter_map(|c| by_id.get(c.id.as_str()).map(|k| (*k).clone()))
            .collect();
        self.bundle
            .write("summary.csv", report::csv::render(&ordered).as_bytes())
    }

    fn unrun_summary(&self, cell: &Cell, status: CellStatus, reason: &str) -> CellSummary {
        let e = &self.plan.engines[cell.engine];
        let w = &self.plan.workloads[cell.workload];
        CellSummary {
            id: cell.id.clone(),
            engine: e.name.clone(),
            workload: w.name.clone(),
            level: cell.level,
            status,
            reason: Some(reason.to_string()),
            valid: true,
            invalid_reason: None,
            client: None,
            started_at: None,
            finished_at: None,
            metrics: None,
            repeats: Vec::new(),
            resources: None,
            engine_metrics: None,
            slo: None,
            records: None,
        }
    }

    fn unrun_cell(
        &mut self,
        cell: &Cell,
        status: CellStatus,
        reason: &str,
    ) -> Result<(), WriteError> {
        let s = self.unrun_summary(cell, status, reason);
        self.save_cell(&s)
    }

    /// Marks many cells not run at once: their summaries in one batch, then the CSV and the
    /// manifest once. An interrupt on a grid of 10,000 levels costs three writes and one
    /// flush, not 10,000 rewrites of a growing manifest.
    fn unrun_cells(
        &mut self,
        cells: &[Cell],
        status: CellStatus,
        reason: &str,
    ) -> Result<(), WriteError> {
        if cells.is_empty() {
            return Ok(());
        }
        let summaries: Vec<CellSummary> = cells
            .iter()
            .map(|c| self.unrun_summary(c, status, reason))
            .collect();
        let mut files = Vec::with_capacity(summaries.len());
        for s in &summaries {
            let rel = format!("cells/{}.summary.json", s.id);
            let mut bytes = serde_json::to_vec_pretty(s).map_err(|e| WriteError {
                path: self.bundle.path(&rel),
                source: std::io::Error::other(e),
            })?;
            bytes.push(b'\n');
            files.push((rel, bytes));
        }
        self.bundle.write_batch(&files)?;
        let ids: HashSet<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
        for c in self.manifest.cells.iter_mut() {
            if ids.contains(c.id.as_str()) {
                c.status = status;
            }
        }
        self.summaries.retain(|k| !ids.contains(k.id.as_str()));
        self.summaries.extend(summaries.iter().cloned());
        self.save_csv()?;
        self.save_manifest()?;
        self.progress.cells_not_run(cells, status, reason);
        Ok(())
    }

    async fn engine(&mut self, ei: usize, spec: &EngineSpec) -> Result<(), RunError> {
        let cells: Vec<Cell> = self
            .plan
            .cells
            .iter()
            .filter(|c| c.engine == ei && !self.done.contains(&c.id))
            .cloned()
            .collect();
        let searches_left = self.plan.workloads.iter().any(|w| {
            w.search.is_some()
                && !self
                    .manifest
                    .searches
                    .iter()
                    .any(|s| s.engine == spec.name && s.workload == w.name)
        });
        if cells.is_empty() && !searches_left {
            // Resuming, and this engine's cells are all measured already.
            return Ok(());
        }
        if self.cancel.is_stopping() {
            self.manifest.engines[ei].status = EngineStatus::Skipped;
            self.unrun_cells(
                &cells,
                CellStatus::Interrupted,
                "not run: the run was interrupted",
            )?;
            return Ok(());
        }

        if let Some(argv) = &spec.version_command {
            let cwd = match &spec.target {
                EngineTarget::Launch(l) => l.cwd.clone(),
                EngineTarget::Attach { .. } => PathBuf::from("."),
            };
            match version::capture(argv, &cwd).await {
                Ok(v) => self.manifest.engines[ei].version = Some(v),
                Err(e) => self.manifest.engines[ei].version_error = Some(e),
            }
        }

        let gpu_before = self.sampler.gpu_used_now();
        let mut up = match self.bring_up(ei, spec).await {
            Ok(up) => up,
            Err(failure) => {
                let rec = &mut self.manifest.engines[ei];
                rec.status = EngineStatus::Failed;
                rec.failure = Some(failure.message.clone());
                rec.log_tail = failure.log_tail.clone();
                self.progress.engine_failed(
                    &spec.name,
                    &failure.message,
                    failure.log_tail.as_deref(),
                );
                let (status, reason) = if failure.stopped {
                    self.manifest.engines[ei].status = EngineStatus::Skipped;
                    (
                        CellStatus::Interrupted,
                        "not run: the run was interrupted".to_string(),
                    )
                } else {
                    (
                        CellStatus::Failed,
                        format!("not run: engine `{}` {}", spec.name, failure.message),
                    )
                };
                // Stop first: teardown must not depend on the bundle taking writes.
                let launched = failure.spawned.is_some();
                let stopped = match failure.spawned {
                    Some(sp) => self.teardown(ei, spec, sp).await,
                    None => Ok(()),
                };
                self.sampler.set_target(None, "");
                self.unrun_cells(&cells, status, &reason)?;
                stopped?;
                if launched {
                    self.check_gpu_release(ei, spec, gpu_before).await?;
                }
                return Ok(());
            }
        };

        let served = self.serve(ei, spec, &mut up, &cells).await;
        // Whatever happened (a bundle write that failed included), the engine is stopped
        // before the error goes up.
        let launched = up.spawned.is_some();
        let stopped = if let Some(sp) = up.spawned.take() {
            self.teardown(ei, spec, sp).await
        } else {
            if self.manifest.engines[ei].status == EngineStatus::Ready {
                self.manifest.engines[ei].status = EngineStatus::Stopped;
            }
            Ok(())
        };
        self.sampler.set_target(None, "");
        served?;
        stopped?;
        if launched {
            self.check_gpu_release(ei, spec, gpu_before).await?;
        }
        self.save_manifest()?;
        Ok(())
    }

    /// A ready engine's work: the dialect check, its cells, then its capacity searches.
    async fn serve(
        &mut self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
        cells: &[Cell],
    ) -> Result<(), RunError> {
        self.check_dialects(ei, spec, up).await?;
        if let Some(path) = &spec.metrics_path {
            let url = format!("{}{path}", up.base_url);
            if telemetry::scrape_once(&self.client, &url).await.is_some() {
                self.manifest.engines[ei].metrics_url = Some(url.clone());
                up.metrics_url = Some(url);
            }
        }
        let mut dead: Option<String> = None;
        for (i, cell) in cells.iter().enumerate() {
            // Once the run stops or the engine dies, the cells left are marked in one batch.
            if self.cancel.is_stopping() {
                self.unrun_cells(
                    &cells[i..],
                    CellStatus::Interrupted,
                    "not run: the run was interrupted",
                )?;
                break;
            }
            if let Some(why) = dead.clone() {
                self.unrun_cells(&cells[i..], CellStatus::Failed, &format!("not run: {why}"))?;
                break;
            }
            self.run_one(ei, spec, up, cell, &mut dead).await?;
        }
        for (wi, w) in self.plan.workloads.iter().enumerate() {
            let Some(search_spec) = w.search else {
                continue;
            };
            if up.rejected.contains_key(&wi) {
                continue;
            }
            let mut search = Search::new(search_spec);
            let mut reused_levels: Vec<usize> = Vec::new();
            while let Some(level) = search.next() {
                if self.cancel.is_stopping() || dead.is_some() {
                    break;
                }
                let cell = Cell::new(&self.plan.engines, &self.plan.workloads, ei, wi, level);
                if !self.manifest.cells.iter().any(|c| c.id == cell.id) {
                    self.manifest.cells.push(CellIndex {
                        id: cell.id.clone(),
                        status: CellStatus::Pending,
                    });
                }
                // A level the grid (or a resumed run) already measured is judged from its
                // summary, never measured again over it.
                let measured = self
                    .summaries
                    .iter()
                    .find(|s| s.id == cell.id && s.status == CellStatus::Ok)
                    .cloned();
                let reused = measured.is_some();
                let summary = match measured {
                    Some(s) => Some(s),
                    None => self.run_one(ei, spec, up, &cell, &mut dead).await?,
                };
                let passed =
                    summary.is_some_and(|s| s.valid && s.slo.as_ref().is_some_and(|v| v.passed));
                search.record(passed);
                if reused {
                    reused_levels.push(search.probes.len() - 1);
                }
            }
            self.progress.search_done(&spec.name, &w.name, &search);
            self.manifest.searches.push(SearchRecord {
                engine: spec.name.clone(),
                workload: w.name.clone(),
                over: search_spec.over,
                capacity: search.capacity(),
                capacity_at_max: search.capacity_at_max(),
                probes: search
                    .probes
                    .iter()
                    .enumerate()
                    .map(|(i, (level, passed))| SearchProbe {
                        level: *level,
                        passed: *passed,
                        reused: reused_levels.contains(&i),
                    })
                    .collect(),
                complete: search.next().is_none()
                    || search.probes.len() as u32 >= search_spec.max_steps,
            });
            self.save_manifest()?;
        }
        Ok(())
    }

    /// Runs one cell on a ready engine, unless the run is stopping or the engine died; writes
    /// its summary either way. Returns the summary of a cell that was measured.
    async fn run_one(
        &mut self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
        cell: &Cell,
        dead: &mut Option<String>,
    ) -> Result<Option<CellSummary>, RunError> {
        if self.cancel.is_stopping() {
            self.unrun_cell(
                cell,
                CellStatus::Interrupted,
                "not run: the run was interrupted",
            )?;
            return Ok(None);
        }
        if let Some(why) = dead.as_ref() {
            let reason = format!("not run: {why}");
            self.unrun_cell(cell, CellStatus::Failed, &reason)?;
            return Ok(None);
        }
        if let Some(why) = up.rejected.get(&cell.workload) {
            let reason = format!("not run: {why}");
            self.unrun_cell(cell, CellStatus::Rejected, &reason)?;
            return Ok(None);
        }
        let child = up.spawned.as_mut().map(|s| &mut s.child);
        let mut summary = self
            .cell(cell, spec, &up.base_url, up.metrics_url.as_deref(), child)
            .await?;
        if let Some(sp) = &mut up.spawned {
            if let Ok(Some(status)) = sp.child.try_wait() {
                let why = format!(
                    "engine `{}` exited with {status} during cell {}",
                    spec.name, cell.id
                );
                let rec = &mut self.manifest.engines[ei];
                rec.status = EngineStatus::Failed;
                rec.failure = Some(why.clone());
                rec.log_tail = Some(exited_log_tail(sp));
                self.progress
                    .engine_failed(&spec.name, &why, rec.log_tail.as_deref());
                summary.status = CellStatus::Failed;
                summary.reason = Some(format!("{why}; the requests measured before are kept"));
                summary.slo = None;
                *dead = Some(why);
            }
        }
        self.save_cell(&summary)?;
        Ok(Some(summary))
    }

    async fn bring_up(&mut self, ei: usize, spec: &EngineSpec) -> Result<Up, Failure> {
        if let Some(var) = &spec.api_key_env {
            if std::env::var_os(var).is_none() {
                return Err(Failure::plain(format!(
                    "could not start: `api_key_env` names `{var}`, which is not set in the environment"
                )));
            }
            self.manifest.engines[ei].api_key_used = true;
        }
        let up = self.launch_and_wait(ei, spec).await?;
        let api_key = api_key(spec);
        // Launched or attached, the engine must serve the plan's model.
        if let Err(why) =
            check_model(&self.client, &up.base_url, &spec.model, api_key.as_deref()).await
        {
            return Err(Failure {
                message: why,
                log_tail: up
                    .spawned
                    .as_ref()
                    .map(|s| log_tail(&s.log_path, LOG_TAIL_LINES)),
                spawned: up.spawned,
                stopped: false,
            });
        }
        if spec.health.completion {
            let deadline = tokio::time::Instant::now() + spec.health.timeout;
            if let Err(why) = self
                .first_completion(spec, &up.base_url, api_key, deadline)
                .await
            {
                return Err(Failure {
                    message: why,
                    log_tail: up
                        .spawned
                        .as_ref()
                        .map(|s| log_tail(&s.log_path, LOG_TAIL_LINES)),
                    spawned: up.spawned,
                    stopped: false,
                });
            }
        }
        Ok(up)
    }

    /// Before an engine's cells: for each workload whose requests carry fields outside the OpenAI
    /// API (`ignore_eos`, `min_tokens`, `[engine.extra_body]`), one request shaped like the
    /// workload's (first prompt, 1 token). An HTTP 4xx whose message names one of those fields
    /// means the engine refuses it: the workload's cells are marked `rejected` with the fix,
    /// instead of being measured as a wall of failed requests.
    async fn check_dialects(
        &mut self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
    ) -> Result<(), RunError> {
        let api_key = api_key(spec);
        for (wi, w) in self.plan.workloads.iter().enumerate() {
            let fields = workload::nonstandard_fields(spec, w);
            if fields.is_empty() || self.cancel.is_stopping() {
                continue;
            }
            let Some(prompt) = w.prompts.first() else {
                continue;
            };
            let mut body = workload::BodySpec::new(spec, w);
            body.max_tokens = 1;
            body.min_tokens = body.min_tokens.map(|_| 1);
            let rec = self
                .send_one(spec, &up.base_url, body.render(prompt), api_key.clone())
                .await;
            let status = rec.status.unwrap_or(0);
            if rec.ok || !(400..500).contains(&status) || status == 429 {
                continue;
            }
            let message = rec.error_message.unwrap_or_default();
            let Some(field) = fields.iter().find(|f| message.contains(f.as_str())) else {
                continue;
            };
            let fix = if ACCEPTABLE_FIELDS.contains(&field.as_str()) {
                format!(
                    "leave `{field}` out of engine `{}`'s `accepts` list in {} (its outputs may then end early), or use an engine that takes it",
                    spec.name,
                    self.plan.path.display()
                )
            } else {
                format!(
                    "remove `{field}` from engine `{}`'s [engine.extra_body] in {}",
                    spec.name,
                    self.plan.path.display()
                )
            };
            let why = format!(
                "engine `{}` refuses request field `{field}` ({message}); fix: {fix}",
                spec.name
            );
            self.progress.warn(&why);
            self.manifest.engines[ei]
                .rejected_fields
                .push(RejectedField {
                    workload: w.name.clone(),
                    field: field.clone(),
                    answer: message,
                });
            up.rejected.insert(wi, why);
        }
        self.save_manifest()?;
        Ok(())
    }

    /// One request outside any cell (readiness, dialect check), with default timeouts and no
    /// retry; the body's `stream` decides how the answer is read.
    async fn send_one(
        &self,
        spec: &EngineSpec,
        base_url: &str,
        body: serde_json::Value,
        api_key: Option<String>,
    ) -> crate::metrics::record::RequestRecord {
        let target = RequestTarget {
            url: format!("{base_url}{}", spec.api.path()),
            stream: body["stream"].as_bool().unwrap_or(false),
            timeouts: Timeouts::default(),
            keep_text: false,
            retry: RetryPolicy::default(),
            api_key,
            expect_tokens: 0,
            // These check that the engine answers; a 1-token answer may well be empty.
            allow_empty_output: true,
        };
        crate::load::client::send_alone(&target, body.to_string().into(), self.cancel.stopping())
            .await
            .record
    }

    /// `[engine.health] completion = true`: one real 1-token completion must succeed, retried
    /// at the health interval until the startup deadline.
    async fn first_completion(
        &self,
        spec: &EngineSpec,
        base_url: &str,
        api_key: Option<String>,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        let body = workload::BodySpec {
            api: spec.api,
            model: &spec.model,
            max_tokens: 1,
            min_tokens: None,
            temperature: 0.0,
            stream: false,
            ignore_eos: false,
            extra: Some(&spec.extra_body),
        }
        .render(&crate::plan::Prompt::Text("Hello".into()));
        let mut last = String::new();
        loop {
            let rec = self
                .send_one(spec, base_url, body.clone(), api_key.clone())
                .await;
            if rec.ok {
                return Ok(());
            }
            last = rec.error_message.unwrap_or(last);
            if self.cancel.is_stopping()
                || tokio::time::Instant::now() + spec.health.interval > deadline
            {
                return Err(format!(
                    "answered its health check but no completion succeeded before the deadline (last: {last})"
                ));
            }
            tokio::time::sleep(spec.health.interval).await;
        }
    }

    async fn launch_and_wait(&mut self, ei: usize, spec: &EngineSpec) -> Result<Up, Failure> {
        let started = Instant::now();
        match &spec.target {
            EngineTarget::Attach { url } => {
                self.manifest.engines[ei].url = Some(url.clone());
                self.manifest.engines[ei].status = EngineStatus::Starting;
                self.progress.engine_attaching(&spec.name, url);
                let progress = self.progress.clone();
                let on_miss = |miss: &Miss, left: std::time::Duration| {
                    progress.engine_not_answering(&spec.name, url, miss, left);
                };
                match wait_ready(
                    None,
                    &self.client,
                    url,
                    &spec.health,
                    started,
                    &self.cancel,
                    None,
                    Some(&on_miss),
                )
                .await
                {
                    Ok(d) => {
                        self.ready(ei, spec, d.as_secs_f64(), None);
                        Ok(Up {
                            base_url: url.clone(),
                            spawned: None,
                            rejected: BTreeMap::new(),
                            metrics_url: None,
                        })
                    }
                    Err(e) => Err(Failure::not_ready(e, spec, url, None)),
                }
            }
            EngineTarget::Launch(l) => {
                let port = spawn::pick_port(l.port)
                    .map_err(|e| Failure::plain(format!("could not start: {e}")))?;
                let log_rel = format!("logs/{}.log", spec.name);
                let mut sp = spawn::spawn(
                    l,
                    port,
                    &self.bundle.path(&log_rel),
                    self.bundle.redactor().clone(),
                )
                .map_err(|e| Failure::plain(format!("could not start: {e}")))?;
                let base_url = format!("http://127.0.0.1:{port}");
                {
                    let rec = &mut self.manifest.engines[ei];
                    rec.argv = sp.argv.clone();
                    rec.pid = Some(sp.pgid);
                    rec.port = Some(port);
                    // What `runner recover` identifies the engine by, whatever it execs.
                    if let Some(p) = crate::procfs::process(sp.pgid) {
                        rec.start_ticks = Some(p.start_ticks);
                        rec.sid = Some(p.sid);
                    }
                    rec.url = Some(base_url.clone());
                    rec.log = Some(log_rel);
                    rec.status = EngineStatus::Starting;
                }
                let _ = self.save_manifest();
                self.progress.engine_launching(&spec.name, &sp.argv);
                self.sampler.set_target(Some(sp.pgid), &spec.name);
                let ready = wait_ready(
                    Some(&mut sp.child),
                    &self.client,
                    &base_url,
                    &spec.health,
                    sp.started,
                    &self.cancel,
                    Some(Owner {
                        pgid: sp.pgid,
                        port,
                    }),
                    None,
                )
                .await;
                match ready {
                    Ok(d) => {
                        self.ready(ei, spec, d.as_secs_f64(), Some(sp.pgid));
                        Ok(Up {
                            base_url,
                            spawned: Some(sp),
                            rejected: BTreeMap::new(),
                            metrics_url: None,
                        })
                    }
                    Err(e) => Err(Failure::not_ready(e, spec, &base_url, Some(sp))),
                }
            }
        }
    }

    fn ready(&mut self, ei: usize, spec: &EngineSpec, secs: f64, _pgid: Option<i32>) {
        let idle = self.sampler.snapshot(&format!("{}.idle", spec.name));
        let rec = &mut self.manifest.engines[ei];
        rec.status = EngineStatus::Ready;
        rec.ready_s = Some(secs);
        rec.idle = Some(idle);
        let _ = self.save_manifest();
        self.progress.engine_ready(&spec.name, secs);
    }

    /// With NVML: waits (bounded) for GPU memory to return to its level before launch, and
    /// records who holds it when it does not.
    async fn check_gpu_release(
        &mut self,
        ei: usize,
        spec: &EngineSpec,
        before: Option<u64>,
    ) -> Result<(), RunError> {
        const SLACK: u64 = 256 << 20;
        let Some(before) = before else { return Ok(()) };
        let deadline = tokio::time::Instant::now() + self.plan.gpu.release_timeout;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        let after = loop {
            tick.tick().await;
            let now = self.sampler.gpu_used_now().unwrap_or(0);
            if now <= before + SLACK
                || tokio::time::Instant::now() >= deadline
                || self.cancel.state() == crate::stop::StopState::Kill
            {
                break now;
            }
        };
        let released = after <= before + SLACK;
        let holders = if released {
            Vec::new()
        } else {
            self.sampler.gpu_processes()
        };
        if !released {
            self.progress
                .gpu_not_released(&spec.name, before, after, &holders);
        }
        self.manifest.engines[ei].gpu_release = Some(GpuRelease {
            before_launch_bytes: before,
            after_stop_bytes: after,
            released,
            holders,
        });
        self.save_manifest()?;
        Ok(())
    }

    async fn teardown(
        &mut self,
        ei: usize,
        spec: &EngineSpec,
        mut sp: Spawned,
    ) -> Result<(), RunError> {
        let grace = match &spec.target {
            EngineTarget::Launch(l) => l.stop_grace,
            EngineTarget::Attach { .. } => return Ok(()),
        };
        let report = terminate::stop(&mut sp.child, sp.pgid, sp.port, grace, &self.cancel).await;
        self.progress.engine_stopped(&spec.name, &report);
        // The log is complete once every process of the engine closed its end of the pipe.
        let log = sp.log.clone();
        tokio::task::spawn_blocking(move || log.settle(LOG_SETTLE))
            .await
            .ok();
        if let Some(t) = sp.log.truncation() {
            self.progress.warn(&format!(
                "engine `{}` wrote {} bytes of output; its log {} keeps the first and last {} bytes ({} dropped; raise `log_limit` to keep more)",
                spec.name,
                t.written_bytes,
                sp.log.path.display(),
                t.limit_bytes / 2,
                t.dropped_bytes
            ));
        }
        if let Some(e) = sp.log.error() {
            self.progress.warn(&e);
        }
        self.leftovers.extend(
            report
                .survivors
                .iter()
                .map(|s| format!("engine `{}`: {s}", spec.name)),
        );
        let rec = &mut self.manifest.engines[ei];
        rec.log_truncated = sp.log.truncation();
        if rec.status != EngineStatus::Failed && rec.status != EngineStatus::Skipped {
            rec.status = EngineStatus::Stopped;
        }
        rec.stop = Some(report);
        self.save_manifest()?;
        Ok(())
    }

    async fn cell(
        &mut self,
        cell: &Cell,
        spec: &EngineSpec,
        base_url: &str,
        metrics_url: Option<&str>,
        child: Option<&mut tokio::process::Child>,
    ) -> Result<CellSummary, RunError> {
        let w = &self.plan.workloads[cell.workload];
        let records_rel = format!("cells/{}.records.jsonl", cell.id);
        let records_path = self.bundle.path(&records_rel);
        let file = std::fs::File::create(&records_path).map_err(|e| WriteError {
            path: records_path.clone(),
            source: e,
        })?;
        let mut acc = Accumulator::new(
            Some(u64::from(w.max_tokens)),
            GoodputBounds::from_slo(&w.slo),
        );
        if matches!(cell.level, LoadLevel::Rate(_)) {
            acc = acc.open_loop();
        }
        let (tx, rx) = mpsc::channel::<RequestRecord>(1024);
        // Set when the engine process exits under the level: requests then cut off are
        // `engine_died`, not `cancelled` (nobody interrupted the run).
        let died_flag = Arc::new(AtomicBool::new(false));
        let death = EngineDeath {
            died: died_flag.clone(),
            engine: spec.name.clone(),
        };
        // The level stops at once if the engine process exits under it, or if its journal
        // cannot be written (a full disk must not cost the rest of a long cell).
        let (level_stop, level_cancel, forward) = self.cancel.child();
        let collector = tokio::spawn(collect(
            rx,
            file,
            acc,
            self.plan.repeat > 1,
            death,
            level_stop.clone(),
        ));

        let timeouts = w.load.timeouts;
        let bodies = workload::bodies(spec, w);
        let done = Arc::new(AtomicU64::new(0));
        let ticker = self.progress.cell_ticker(cell, w.load.stop, done.clone());
        let started_at = Utc::now();
        self.sampler.begin_window(&cell.id);
        let scraper = metrics_url.map(|url| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(telemetry::scrape_cell(
                self.client.clone(),
                url.to_string(),
                self.plan.gpu.interval,
                cell.id.clone(),
                self.telemetry.clone(),
                self.origin,
                stopped,
            ));
            (stop, task)
        });
        let cpu0 = client_cpu_s();
        let t0 = Instant::now();
        let mut child = child;
        let mut outcome = None;
        for run in 0..self.plan.repeat {
            let target = RequestTarget {
                url: format!("{base_url}{}", spec.api.path()),
                stream: w.stream,
                timeouts: Timeouts {
                    connect: timeouts.connect,
                    first_token: timeouts.first_token,
                    idle: timeouts.idle,
                    total: timeouts.total,
                },
                keep_text: false,
                retry: RetryPolicy {
                    max: w.load.retries,
                    max_wait: w.load.retry_max_wait,
                },
                api_key: api_key(spec),
                expect_tokens: w.max_tokens,
                allow_empty_output: w.allow_empty_output,
            };
            // Each run opens its own connections.
            let endpoint = crate::load::client::endpoint(&target).map_err(RunError::Endpoint)?;
            let level = Arc::new(Level {
                endpoint,
                target,
                bodies: bodies.clone(),
                load: cell.level,
                arrival: w.load.arrival,
                max_in_flight: w.load.max_in_flight,
                stop: w.load.stop,
                warmup: w.load.warmup,
                max_errors: w.load.max_errors,
                max_error_rate: w.load.max_error_rate,
                run,
            });
            let level_run = run_level(level, level_cancel.clone(), done.clone(), tx.clone());
            let mut died = false;
            let o = match child.as_deref_mut() {
                None => level_run.await,
                Some(c) => {
                    tokio::pin!(level_run);
                    tokio::select! {
                        o = &mut level_run => o,
                        _ = c.wait() => {
                            died = true;
                            // Before the stop below, so every request it cuts off sees it.
                            died_flag.store(true, Ordering::SeqCst);
                            level_stop.kill();
                            level_run.await
                        }
                    }
                }
            };
            let stop = died || o.stopped_early.is_some() || self.cancel.is_stopping();
            outcome = Some(o);
            if stop {
                break;
            }
        }
        drop(tx);
        let outcome = outcome.unwrap_or(crate::load::driver::LevelOutcome {
            interrupted: false,
            stopped_early: None,
        });
        forward.abort();
        let wall = t0.elapsed().as_secs_f64();
        let cpu_s = client_cpu_s() - cpu0;
        let resources = self.sampler.end_window();
        let engine_metrics = match scraper {
            Some((stop, task)) => {
                let _ = stop.send(());
                task.await.ok().flatten()
            }
            None => None,
        };
        if let Some(t) = ticker {
            t.abort();
        }
        let (acc, runs, write_err) = collector.await.unwrap_or_else(|e| {
            (
                Accumulator::default(),
                Vec::new(),
                Some(std::io::Error::other(format!("record writer failed: {e}"))),
            )
        });
        if let Some(e) = write_err {
            return Err(RunError::Write(WriteError {
                path: records_path,
                source: e,
            }));
        }
        let mut metrics = acc.finish();
        let repeats: Vec<_> = if runs.len() > 1 {
            runs.iter().map(Accumulator::finish).collect()
        } else {
            Vec::new()
        };
        if !repeats.is_empty() {
            // Records of different runs have different clock origins: rates are per run.
            let n = repeats.len() as f64;
            let mean = |f: fn(&crate::metrics::summary::CellMetrics) -> f64| {
                repeats.iter().map(f).sum::<f64>() / n
            };
            metrics.request_per_s = mean(|m| m.request_per_s);
            metrics.output_tok_per_s = mean(|m| m.output_tok_per_s);
            metrics.total_tok_per_s = mean(|m| m.total_tok_per_s);
            metrics.duration_s = repeats.iter().map(|m| m.duration_s).sum();
            metrics.goodput_req_per_s = metrics
                .goodput_req_per_s
                .map(|_| mean(|m| m.goodput_req_per_s.unwrap_or(0.0)));
            metrics.offered_req_per_s = metrics
                .offered_req_per_s
                .map(|_| mean(|m| m.offered_req_per_s.unwrap_or(0.0)));
            metrics.sent_req_per_s = metrics
                .sent_req_per_s
                .map(|_| mean(|m| m.sent_req_per_s.unwrap_or(0.0)));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let usage = ClientUsage {
            cpu_s,
            cpu_pct: if wall > 0.0 {
                100.0 * cpu_s / wall
            } else {
                0.0
            },
            cores,
        };
        let reasons: Vec<String> = [
            client_check::verdict(&metrics, &usage, w.load.max_dispatch_lag),
            metrics.counts_verdict(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let invalid_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
        let (status, reason) = if self.cancel.is_stopping() {
            (
                CellStatus::Interrupted,
                Some("interrupted by a signal; the requests measured before are kept".to_string()),
            )
        } else if metrics.requests_ok == 0 {
            let why = metrics
                .failure_examples
                .iter()
                .next()
                .map(|(k, m)| format!("{k}: {m}"))
                .unwrap_or_else(|| "no request was sent".into());
            (
                CellStatus::Failed,
                Some(format!("every request failed ({why})")),
            )
        } else {
            (CellStatus::Ok, outcome.stopped_early.clone())
        };
        // Only a valid cell measured to the end can pass or fail an SLO.
        let slo = if status == CellStatus::Ok
            && invalid_reason.is_none()
            && outcome.stopped_early.is_none()
        {
            slo::evaluate(&w.slo, &metrics)
        } else if outcome.stopped_early.is_some() && !w.slo.is_empty() {
            // Ended early on errors: the level failed its SLO by definition.
            slo::evaluate(&w.slo, &metrics).map(|mut v| {
                v.passed = false;
                v
            })
        } else {
            None
        };
        Ok(CellSummary {
            id: cell.id.clone(),
            engine: spec.name.clone(),
            workload: w.name.clone(),
            level: cell.level,
            status,
            reason,
            valid: invalid_reason.is_none(),
            invalid_reason,
            client: Some(usage),
            started_at: Some(started_at),
            finished_at: Some(Utc::now()),
            metrics: Some(metrics),
            repeats,
            resources: Some(resources),
            engine_metrics,
            slo,
            records: Some(records_rel),
        })
    }
}

/// The engine's API key, read from the environment variable `api_key_env` names.
fn api_key(spec: &EngineSpec) -> Option<String> {
    spec.api_key_env
        .as_deref()
        .and_then(|k| std::env::var(k).ok())
}

/// User + system CPU seconds used by this process so far.
fn client_cpu_s() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// Folds records into the cell's accumulator (and, with `per_run`, one per run of the cell) and
/// appends each to the journal, flushed at least once a second so a killed runner loses at
/// most a second of records. Lines are gathered here and written by a thread of their own: a
/// write that blocks (the page cache throttling a slow disk) must not stall the load, which
/// shares this runtime.
async fn collect(
    mut rx: mpsc::Receiver<RequestRecord>,
    file: std::fs::File,
    mut acc: Accumulator,
    per_run: bool,
    death: EngineDeath,
    on_write_error: crate::stop::Stopper,
) -> (Accumulator, Vec<Accumulator>, Option<std::io::Error>) {
    const BATCH: usize = 64 * 1024;
    let template = acc.clone();
    let mut runs: Vec<Accumulator> = Vec::new();
    let (to_writer, batches) = std::sync::mpsc::channel::<Vec<u8>>();
    let writer = std::thread::Builder::new()
        .name("runner-records".into())
        .spawn(move || {
            let mut file = file;
            for batch in batches {
                file.write_all(&batch)?;
            }
            file.flush()
        });
    let writer = match writer {
        Ok(w) => w,
        Err(e) => return (acc, runs, Some(e)),
    };
    let mut last_sent = Instant::now();
    let mut lines = Vec::with_capacity(BATCH + 4096);
    while let Some(mut r) = rx.recv().await {
        death.reclassify(&mut r);
        acc.add(&r);
        if per_run {
            let run = r.run as usize;
            while runs.len() <= run {
                runs.push(template.clone());
            }
            runs[run].add(&r);
        }
        if serde_json::to_writer(&mut lines, &r).is_ok() {
            lines.push(b'\n');
        }
        if lines.len() >= BATCH || last_sent.elapsed().as_secs() >= 1 {
            last_sent = Instant::now();
            // A send fails only when the writer stopped on an error, which the join reports:
            // the level is stopped now rather than at its end.
            let sent = to_writer.send(std::mem::replace(
                &mut lines,
                Vec::with_capacity(BATCH + 4096),
            ));
            if sent.is_err() && !on_write_error.is_killed() {
                on_write_error.kill();
            }
        }
    }
    if !lines.is_empty() {
        let _ = to_writer.send(lines);
    }
    drop(to_writer);
    let err = match tokio::task::spawn_blocking(move || writer.join()).await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(e),
        _ => Some(std::io::Error::other("the record writer thread panicked")),
    };
    (acc, runs, err)
}

/// Whether the engine process exited under a cell, and its name.
struct EngineDeath {
    died: Arc<AtomicBool>,
    engine: String,
}

impl EngineDeath {
    /// A request cancelled because the engine exited is `engine_died`: it was in flight when
    /// the engine died, and no one interrupted the run.
    fn reclassify(&self, r: &mut RequestRecord) {
        if r.error_class == Some(ErrorClass::Cancelled) && self.died.load(Ordering::SeqCst) {
            r.error_class = Some(ErrorClass::EngineDied);
            r.error_message = Some(format!(
                "engine `{}` exited while this request was in flight",
                self.engine
            ));
        }
    }
}

/// An engine must serve the plan's model, so the run never benchmarks the wrong server (or a
/// launch line that loaded another model): its `/v1/models` must list it.
async fn check_model(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    api_key: Option<&str>,
) -> Result<(), String> {
    let mut req = client
        .get(format!("{url}/v1/models"))
        .timeout(std::time::Duration::from_secs(10));
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let listed: serde_json::Value = req
        .send()
        .await
        .map_err(|e| format!("GET {url}/v1/models failed: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}/v1/models did not answer a model list: {e}"))?;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    if ids.contains(&model) {
        Ok(())
    } else {
        Err(format!(
            "serves {ids:?}, not the plan's model `{model}`: refusing to benchmark what may be the wrong server"
        ))
    }
}

/// Why an engine did not come up.
struct Failure {
    message: String,
    log_tail: Option<String>,
    spawned: Option<Spawned>,
    /// The wait ended because the run is stopping, not because the engine failed.
    stopped: bool,
}

impl Failure {
    fn plain(message: String) -> Failure {
        Failure {
            message,
            log_tail: None,
            spawned: None,
            stopped: false,
        }
    }

    fn not_ready(
        e: NotReady,
        spec: &EngineSpec,
        base_url: &str,
        spawned: Option<Spawned>,
    ) -> Failure {
        let tail = spawned.as_ref().map(|s| match &e {
            NotReady::Exited(_) => exited_log_tail(s),
            _ => log_tail(&s.log_path, LOG_TAIL_LINES),
        });
        let probe = format!(
            "GET {base_url}{} never answered {}",
            spec.health.path, spec.health.status
        );
        let (message, stopped) = match e {
            NotReady::Exited(status) => (format!("exited with {status} while starting"), false),
            NotReady::Foreign(who) => (
                format!(
                    "could not be reached: GET {base_url}{} was answered by {who}, which is not in this engine's process group: another server holds the port (stop it, or use `port = \"auto\"`)",
                    spec.health.path
                ),
                false,
            ),
            NotReady::Timeout { after, last } => (
                format!(
                    "was not ready after {} ({probe}{}); raise `health.timeout` if it loads slowly",
                    humantime::format_duration(after),
                    last.map(|m| format!("; last: {m}")).unwrap_or_default()
                ),
                false,
            ),
            NotReady::Stopped => ("was stopped while starting".to_string(), true),
        };
        Failure {
            message,
            log_tail: tail,
            spawned,
            stopped,
        }
    }
}
