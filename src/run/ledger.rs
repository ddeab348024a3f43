//! The ledger: the one owner of what a run records (the manifest, each cell's summary, the CSV)
//! and of what the user is told about it (`Progress`). Every state change of an engine, a cell,
//! a search or the run goes through one of its methods, which updates the manifest, writes the
//! bundle and tells Progress, so the bundle and the console never disagree.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;

use super::error::RunError;
use super::host;
use super::progress::Progress;
use super::search::Search;
use crate::bundle::format::*;
use crate::bundle::layout;
use crate::bundle::lock::{self, BundleLock};
use crate::bundle::redact::{self, Redactor};
use crate::bundle::write::{Bundle, WriteError};
use crate::engine::log::EngineLog;
use crate::engine::ready::Refused;
use crate::engine::spawn::Spawned;
use crate::engine::terminate::StopReport;
use crate::metrics::gpu::GpuInventory;
use crate::metrics::sampler::Resources;
use crate::plan::model::{Cell, EngineSpec, EngineTarget, Plan};
use crate::quality::record::QualityRecord;
use crate::workload::materialize;

/// The bundle being written, its manifest and the summaries so far.
pub struct Ledger {
    bundle: Bundle,
    manifest: Manifest,
    progress: Progress,
    /// Cells already measured in the bundle being resumed: not run again.
    done: HashSet<String>,
    /// Every cell summary written so far (the CSV is rendered from these).
    summaries: Vec<CellSummary>,
    invalid: usize,
    /// The CSV's matrix columns, from the plan.
    matrix_columns: crate::report::csv::MatrixColumns,
    /// Held until the ledger is dropped: the bundle is this run's until then.
    _lock: BundleLock,
}

/// Each workload's `workloads/<name>.prompts.jsonl` entry and bytes (redacted as written).
fn materialized(bundle: &Bundle, plan: &Plan) -> Vec<(WorkloadFile, Vec<u8>)> {
    plan.workloads
        .iter()
        .map(|w| {
            let m = materialize::of_workload(w);
            let bytes = bundle.redactor().bytes(&m.jsonl()).into_owned();
            let file = WorkloadFile {
                name: w.name.clone(),
                path: layout::workload_prompts(&w.name),
                sha256: materialize::sha256_hex(&bytes),
                unit: m.unit,
                requests: m.requests.len(),
            };
            (file, bytes)
        })
        .collect()
}

/// What the end of a run found.
#[derive(Debug, Clone)]
pub struct Totals {
    pub status: RunStatus,
    pub cells_failed: usize,
    pub cells_invalid: usize,
    /// Cells measured to the end in which some requests failed, one line each.
    pub requests_failed: Vec<String>,
    /// Quality results that failed (a gate, or the step itself), one line each.
    pub quality_failed: Vec<String>,
}

/// Where a run's bundle goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A new bundle `<root>/<plan name>/<timestamp>-<id>/`.
    Under(&'a Path),
    /// Exactly this new directory: one part of a split run, recording where it ran.
    Part { dir: &'a Path, info: &'a PartInfo },
    /// An interrupted or failed bundle of this plan, finished.
    Resume(&'a Path),
}

impl Ledger {
    /// A new bundle under `results_root` (the plan copied in, redacted), or `resume` reopened.
    pub fn open(
        plan: &Plan,
        plan_bytes: &[u8],
        target: Target<'_>,
        inventory: GpuInventory,
        progress: Progress,
    ) -> Result<Ledger, RunError> {
        let redactor = Redactor::for_plan(plan, plan_bytes, std::env::vars());
        let ledger = match target {
            Target::Resume(dir) => Self::resume(dir, plan, inventory, redactor, progress)?,
            Target::Under(root) => {
                let bundle = Bundle::create(root, &plan.name)?;
                Self::create(
                    plan, plan_bytes, bundle, None, inventory, redactor, progress,
                )?
            }
            Target::Part { dir, info } => {
                let bundle = Bundle::create_at(dir)?;
                Self::create(
                    plan,
                    plan_bytes,
                    bundle,
                    Some(info.clone()),
                    inventory,
                    redactor,
                    progress,
                )?
            }
        };
        ledger.save()?;
        Ok(ledger)
    }

    fn create(
        plan: &Plan,
        plan_bytes: &[u8],
        bundle: Bundle,
        part: Option<PartInfo>,
        inventory: GpuInventory,
        redactor: Redactor,
        progress: Progress,
    ) -> Result<Ledger, RunError> {
        let bundle = bundle.with_redactor(redactor);
        let lock = lock::acquire(&bundle.dir)?;
        // The copy is the plan file but its secrets; the manifest keeps the original's hash.
        let copy = bundle.redactor().plan_source(plan_bytes);
        bundle.write(layout::PLAN, &copy)?;
        bundle.write_json(layout::PLAN_RESOLVED, &redacted(plan))?;
        // Each included engine file, like the plan: its copy, its hash in the manifest.
        if !plan.includes.is_empty() {
            let dir = bundle.path(layout::INCLUDES);
            std::fs::create_dir_all(&dir).map_err(|e| WriteError {
                path: dir.clone(),
                source: e,
            })?;
        }
        for (i, f) in plan.includes.iter().enumerate() {
            let bytes = std::fs::read(&f.path).map_err(|e| WriteError {
                path: f.path.clone(),
                source: e,
            })?;
            let copy = bundle.redactor().plan_source(&bytes);
            bundle.write(&layout::include_copy(i, &f.path), &copy)?;
        }
        let mut workloads = Vec::with_capacity(plan.workloads.len());
        for (w, bytes) in materialized(&bundle, plan) {
            bundle.write(&w.path, &bytes)?;
            workloads.push(w);
        }
        if let Some(t) = &plan.report.template {
            let text = std::fs::read(t).map_err(|e| WriteError {
                path: t.clone(),
                source: e,
            })?;
            bundle.write(layout::TEMPLATE, &text)?;
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
            until_failure: Vec::new(),
            part,
            slurm: None,
            merged_from: Vec::new(),
            workloads,
            quality: Vec::new(),
            cells: plan
                .cells
                .iter()
                .map(|c| CellIndex {
                    id: c.id.clone(),
                    status: CellStatus::Pending,
                })
                .collect(),
        };
        Ok(Ledger {
            bundle,
            manifest,
            progress,
            done: HashSet::new(),
            summaries: Vec::new(),
            invalid: 0,
            matrix_columns: crate::report::csv::MatrixColumns::of(plan),
            _lock: lock,
        })
    }

    /// A new bundle under `results_root` for `runner submit`: the plan copied in and every
    /// engine and cell pending, marked `submitted`; its jobs write the parts. Its directory.
    pub fn create_submitted(
        plan: &Plan,
        plan_bytes: &[u8],
        results_root: &Path,
        inventory: GpuInventory,
    ) -> Result<PathBuf, RunError> {
        let redactor = Redactor::for_plan(plan, plan_bytes, std::env::vars());
        let bundle = Bundle::create(results_root, &plan.name)?;
        let mut ledger = Self::create(
            plan,
            plan_bytes,
            bundle,
            None,
            inventory,
            redactor,
            Progress::new(true),
        )?;
        ledger.manifest.status = RunStatus::Submitted;
        ledger.save()?;
        Ok(ledger.bundle_dir())
    }

    /// Records the jobs a submitted bundle was handed to.
    pub fn record_slurm(dir: &Path, record: SlurmRecord) -> Result<(), RunError> {
        let path = dir.join(layout::MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| WriteError {
            path: path.clone(),
            source: e,
        })?;
        let mut manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| WriteError {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        manifest.slurm = Some(record);
        Bundle::open(dir).write_json(layout::MANIFEST, &manifest)?;
        Ok(())
    }

    /// Opens a bundle to finish: same plan (by hash), format and runner; keeps its `ok` cells.
    fn resume(
        dir: &Path,
        plan: &Plan,
        inventory: GpuInventory,
        redactor: Redactor,
        progress: Progress,
    ) -> Result<Ledger, RunError> {
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
        // The plan file is the same, but what it sends may not be: a tokenizer or a dataset it
        // names changed, or this runner generates other prompts.
        let bundle = Bundle::open(dir).with_redactor(redactor);
        for (now, _) in materialized(&bundle, plan) {
            if let Some(then) = manifest.workloads.iter().find(|w| w.name == now.name) {
                if then.sha256 != now.sha256 {
                    return Err(err(format!(
                        "workload `{}` would send other requests than this bundle's {} (sha256 {} then, {} now: its tokenizer, dataset or the runner changed); run it as a new bundle",
                        now.name,
                        then.path,
                        &then.sha256[..12.min(then.sha256.len())],
                        &now.sha256[..12]
                    )));
                }
            }
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
        Ok(Ledger {
            bundle,
            manifest,
            progress,
            done,
            summaries: kept,
            invalid: 0,
            matrix_columns: crate::report::csv::MatrixColumns::of(plan),
            _lock: lock,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn dir(&self) -> &Path {
        &self.bundle.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Measured in the bundle being resumed: not run again.
    pub fn is_done(&self, id: &str) -> bool {
        self.done.contains(id)
    }

    /// The summary of a cell measured to the end (by the grid, or the run resumed).
    pub fn measured(&self, id: &str) -> Option<CellSummary> {
        self.summaries
            .iter()
            .find(|s| s.id == id && s.status == CellStatus::Ok)
            .cloned()
    }

    /// Whether the search of `workload` on `engine` is still to do.
    pub fn search_left(&self, engine: &str, workload: &str) -> bool {
        !self
            .manifest
            .searches
            .iter()
            .any(|s| s.engine == engine && s.workload == workload)
    }

    /// Writes the manifest.
    pub fn save(&self) -> Result<(), WriteError> {
        self.bundle.write_json(layout::MANIFEST, &self.manifest)
    }

    /// Writes the manifest where a failed write must not stop what is under way (an engine
    /// starting): the failure is said, and the next write tries again.
    fn save_or_warn(&self) {
        if let Err(e) = self.save() {
            self.progress.warn(&format!(
                "{e}; the run goes on and writes the manifest again at its next change"
            ));
        }
    }

    pub fn warn(&self, message: &str) {
        self.progress.warn(message);
    }

    // Engines.

    /// The GPUs the engine goes on (recorded before it starts).
    pub fn engine_placed(&mut self, ei: usize, devices: &[u32]) {
        self.manifest.engines[ei].gpus = devices.to_vec();
    }

    pub fn engine_skipped(&mut self, ei: usize) {
        self.manifest.engines[ei].status = EngineStatus::Skipped;
    }

    pub fn engine_version(&mut self, ei: usize, version: Result<String, String>) {
        let rec = &mut self.manifest.engines[ei];
        match version {
            Ok(v) => rec.version = Some(v),
            Err(e) => rec.version_error = Some(e),
        }
    }

    pub fn api_key_used(&mut self, ei: usize) {
        self.manifest.engines[ei].api_key_used = true;
    }

    pub fn engine_attaching(&mut self, ei: usize, name: &str, url: &str) {
        let rec = &mut self.manifest.engines[ei];
        rec.url = Some(url.to_string());
        rec.status = EngineStatus::Starting;
        rec.launched_at = Some(Utc::now());
        self.progress.engine_attaching(name, url);
    }

    /// A launched engine: what `runner recover` identifies it by, whatever it execs.
    pub fn engine_launched(
        &mut self,
        ei: usize,
        name: &str,
        sp: &Spawned,
        base_url: &str,
        log: String,
    ) {
        let relative =
            host::relative_argv(&sp.argv, self.manifest.plan.dir.as_deref().map(Path::new));
        let rec = &mut self.manifest.engines[ei];
        rec.argv = sp.argv.clone();
        rec.argv_relative = relative;
        rec.pid = Some(sp.pgid);
        rec.port = Some(sp.port);
        if let Some(p) = crate::procfs::process(sp.pgid) {
            rec.start_ticks = Some(p.start_ticks);
            rec.sid = Some(p.sid);
        }
        rec.url = Some(base_url.to_string());
        match rec.restarts.last_mut() {
            Some(r) if r.log.is_none() => r.log = Some(log),
            _ => rec.log = Some(log),
        }
        rec.status = EngineStatus::Starting;
        rec.cuda_visible_devices = sp.cuda_visible_devices.clone();
        rec.launched_at = Some(Utc::now());
        self.save_or_warn();
        self.progress
            .engine_launching(name, &sp.argv, sp.cuda_visible_devices.as_deref());
    }

    pub fn engine_ready(&mut self, ei: usize, name: &str, secs: f64, idle: Resources) {
        let rec = &mut self.manifest.engines[ei];
        rec.status = EngineStatus::Ready;
        // A relaunch keeps the first readiness and idle memory; its own time is its record's.
        match rec.restarts.last_mut() {
            Some(r) if r.ready_s.is_none() && r.error.is_none() => {
                r.ready_s = Some(secs);
                // Up again: its death is in the restart record and the cell.
                rec.failure = None;
                rec.log_tail = None;
            }
            _ => {
                rec.ready_s = Some(secs);
                rec.idle = Some(idle);
            }
        }
        rec.ready_at = Some(Utc::now());
        self.save_or_warn();
        self.progress.engine_ready(name, secs);
    }

    /// The engine failed (to come up, or under a cell); `stopped`: the run is stopping, so it
    /// is `skipped`, not `failed`.
    pub fn engine_failed(
        &mut self,
        ei: usize,
        name: &str,
        why: &str,
        log_tail: Option<String>,
        stopped: bool,
    ) {
        let rec = &mut self.manifest.engines[ei];
        rec.status = if stopped {
            EngineStatus::Skipped
        } else {
            EngineStatus::Failed
        };
        rec.failure = Some(why.to_string());
        rec.log_tail = log_tail;
        self.progress
            .engine_failed(name, why, self.manifest.engines[ei].log_tail.as_deref());
    }

    /// An engine that died in `after_cell` is being relaunched.
    pub fn engine_restarting(&mut self, ei: usize, restart: EngineRestart, max: u32) {
        self.progress.warn(&format!(
            "engine `{}` died in cell {}; relaunching it (restart {} of at most {})",
            self.manifest.engines[ei].name,
            restart.after_cell,
            self.manifest.engines[ei].restarts.len() + 1,
            max,
        ));
        self.manifest.engines[ei].restarts.push(restart);
    }

    /// The relaunch did not come up: why, on its record.
    pub fn restart_failed(&mut self, ei: usize, why: &str) {
        if let Some(r) = self.manifest.engines[ei].restarts.last_mut() {
            r.error = Some(why.to_string());
        }
    }

    /// The engine is being relaunched: its last restart record has no log yet.
    pub fn relaunching(&self, ei: usize) -> bool {
        self.manifest.engines[ei]
            .restarts
            .last()
            .is_some_and(|r| r.log.is_none())
    }

    /// Any cell's summary written so far (or found in the bundle being resumed).
    pub fn summary(&self, id: &str) -> Option<&CellSummary> {
        self.summaries.iter().find(|s| s.id == id)
    }

    /// How many times the engine has been relaunched.
    pub fn restarts(&self, ei: usize) -> u32 {
        self.manifest.engines[ei].restarts.len() as u32
    }

    pub fn metrics_url(&mut self, ei: usize, url: &str) {
        self.manifest.engines[ei].metrics_url = Some(url.to_string());
    }

    pub fn rejected_field(&mut self, ei: usize, workload: &str, r: &Refused) {
        self.progress.warn(&r.why);
        self.manifest.engines[ei]
            .rejected_fields
            .push(RejectedField {
                workload: workload.to_string(),
                field: r.field.clone(),
                answer: r.answer.clone(),
            });
    }

    /// An attached engine the run is done with.
    pub fn engine_released(&mut self, ei: usize) {
        if self.manifest.engines[ei].status == EngineStatus::Ready {
            self.manifest.engines[ei].status = EngineStatus::Stopped;
        }
        self.manifest.engines[ei].stopped_at = Some(Utc::now());
    }

    /// A launched engine torn down, with what its log kept.
    pub fn engine_stopped(
        &mut self,
        ei: usize,
        name: &str,
        report: StopReport,
        log: &EngineLog,
    ) -> Result<(), WriteError> {
        self.progress.engine_stopped(name, &report);
        if let Some(t) = log.truncation() {
            self.progress.warn(&format!(
                "engine `{name}` wrote {} bytes of output; its log {} keeps the first and last {} bytes ({} dropped; raise `log_limit` to keep more)",
                t.written_bytes,
                log.path.display(),
                t.limit_bytes / 2,
                t.dropped_bytes
            ));
        }
        if let Some(e) = log.error() {
            self.progress.warn(&e);
        }
        let rec = &mut self.manifest.engines[ei];
        rec.log_truncated = log.truncation();
        if rec.status != EngineStatus::Failed && rec.status != EngineStatus::Skipped {
            rec.status = EngineStatus::Stopped;
        }
        rec.stop = Some(report);
        rec.stopped_at = Some(Utc::now());
        self.save()
    }

    pub fn gpu_release(
        &mut self,
        ei: usize,
        name: &str,
        release: GpuRelease,
    ) -> Result<(), WriteError> {
        if !release.released {
            self.progress.gpu_not_released(
                name,
                release.before_launch_bytes,
                release.after_stop_bytes,
                &release.holders,
            );
        }
        self.manifest.engines[ei].gpu_release = Some(release);
        self.save()
    }

    // Cells.

    /// Writes a cell summary, the CSV of every summary so far, and the manifest.
    pub fn save_cell(&mut self, s: &CellSummary) -> Result<(), WriteError> {
        if !s.valid {
            self.invalid += 1;
        }
        self.bundle.write_json(&layout::cell_summary(&s.id), s)?;
        if let Some(c) = self.manifest.cells.iter_mut().find(|c| c.id == s.id) {
            c.status = s.status;
        }
        self.save()?;
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
        self.bundle.write(
            layout::SUMMARY_CSV,
            crate::report::csv::render(&ordered, &self.matrix_columns).as_bytes(),
        )
    }

    pub fn unrun_cell(
        &mut self,
        plan: &Plan,
        cell: &Cell,
        status: CellStatus,
        reason: &str,
    ) -> Result<(), WriteError> {
        let s = unrun_summary(plan, cell, status, reason);
        self.save_cell(&s)
    }

    /// Marks many cells not run at once: their summaries in one batch, then the CSV and the
    /// manifest once. An interrupt on a grid of 10,000 levels costs three writes and one
    /// flush, not 10,000 rewrites of a growing manifest.
    pub fn unrun_cells(
        &mut self,
        plan: &Plan,
        cells: &[Cell],
        status: CellStatus,
        reason: &str,
    ) -> Result<(), WriteError> {
        if cells.is_empty() {
            return Ok(());
        }
        let summaries: Vec<CellSummary> = cells
            .iter()
            .map(|c| unrun_summary(plan, c, status, reason))
            .collect();
        let mut files = Vec::with_capacity(summaries.len());
        for s in &summaries {
            let rel = layout::cell_summary(&s.id);
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
        self.save()?;
        self.progress.cells_not_run(cells, status, reason);
        Ok(())
    }

    // Searches.

    /// A probe of a search: listed in the manifest's cells (once).
    pub fn search_cell(&mut self, id: &str) {
        if !self.manifest.cells.iter().any(|c| c.id == id) {
            self.manifest.cells.push(CellIndex {
                id: id.to_string(),
                status: CellStatus::Pending,
            });
        }
    }

    /// Whether `until_failure` of `workload` on `engine` is still to do.
    pub fn until_failure_left(&self, engine: &str, workload: &str) -> bool {
        !self
            .manifest
            .until_failure
            .iter()
            .any(|s| s.engine == engine && s.workload == workload)
    }

    pub fn until_failure_done(&mut self, record: UntilFailureRecord) -> Result<(), WriteError> {
        self.progress.until_failure_done(&record);
        self.manifest.until_failure.push(record);
        self.save()
    }

    pub fn search_done(&mut self, search: &Search, record: SearchRecord) -> Result<(), WriteError> {
        self.progress
            .search_done(&record.engine, &record.workload, search);
        self.manifest.searches.push(record);
        self.save()
    }

    // Quality steps.

    /// A quality step's record for an engine (replacing one of an earlier, resumed run).
    pub fn quality_done(&mut self, rec: QualityRecord) -> Result<(), WriteError> {
        self.progress.quality_done(&rec);
        self.manifest
            .quality
            .retain(|r| !(r.step == rec.step && r.engine == rec.engine));
        self.manifest.quality.push(rec);
        self.save()
    }

    /// Every quality record compared with its baseline and gated, once every engine ran.
    pub fn quality_judge(&mut self, plan: &Plan) -> Result<(), WriteError> {
        if self.manifest.quality.is_empty() {
            return Ok(());
        }
        crate::quality::judge::judge(&self.bundle.dir, &plan.quality, &mut self.manifest.quality);
        self.save()
    }

    // The run.

    /// The run stopped on `e` (its engine already stopped): say so in the manifest if the disk
    /// still takes it.
    pub fn run_failed(&mut self, e: &RunError) {
        self.manifest.status = RunStatus::Failed;
        self.manifest.finished_at = Some(Utc::now());
        self.manifest.message = Some(format!("the run stopped: {e}"));
        if let Err(again) = self.save() {
            // Said even with --quiet: the bundle stays marked `running`.
            eprintln!(
                "warning: the manifest could not be marked failed either ({again}); once the disk takes writes again, run `runner recover {}`",
                self.bundle.dir.display()
            );
        }
    }

    /// The run went to its end (or was interrupted): the manifest says how.
    pub fn finish(&mut self, interrupted: bool) -> Result<Totals, WriteError> {
        let cells_failed = self
            .manifest
            .cells
            .iter()
            .filter(|c| {
                matches!(
                    c.status,
                    CellStatus::Failed | CellStatus::Rejected | CellStatus::EngineDied
                )
            })
            .count();
        let requests_failed: Vec<String> = self
            .manifest
            .cells
            .iter()
            .filter(|c| c.status == CellStatus::Ok)
            .filter_map(|c| self.summaries.iter().find(|s| s.id == c.id))
            .filter_map(|s| {
                let line = s.metrics.as_ref()?.failed_requests_line()?;
                Some(format!("{}: {line}", s.id))
            })
            .collect();
        self.manifest.status = if interrupted {
            RunStatus::Interrupted
        } else {
            RunStatus::Complete
        };
        self.manifest.message = if interrupted {
            Some("stopped by a signal; cells not reached are marked interrupted".into())
        } else {
            completion_message(
                self.manifest.cells.len(),
                cells_failed,
                requests_failed.len(),
            )
        };
        self.manifest.finished_at = Some(Utc::now());
        self.save()?;
        let quality_failed = self
            .manifest
            .quality
            .iter()
            .filter(|r| r.is_failure())
            .map(|r| {
                format!(
                    "quality `{}` on `{}`: {}",
                    r.step,
                    r.engine,
                    r.reason.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        Ok(Totals {
            status: self.manifest.status,
            cells_failed,
            cells_invalid: self.invalid,
            requests_failed,
            quality_failed,
        })
    }

    pub fn bundle_dir(&self) -> PathBuf {
        self.bundle.dir.clone()
    }
}

thread_local! {
    /// Whether this thread holds the run's ledger (see `Run::ledger`).
    static HOLDS_LEDGER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The locked ledger; unlocking clears this thread's mark.
pub(super) struct LedgerGuard<'a>(MutexGuard<'a, Ledger>);

impl std::ops::Deref for LedgerGuard<'_> {
    type Target = Ledger;
    fn deref(&self) -> &Ledger {
        &self.0
    }
}

impl std::ops::DerefMut for LedgerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Ledger {
        &mut self.0
    }
}

impl Drop for LedgerGuard<'_> {
    fn drop(&mut self) {
        HOLDS_LEDGER.with(|h| h.set(false));
    }
}

/// Locks the run's ledger for one statement's work (never across an await). Locking it again
/// on a thread that holds it (a guard kept alive by a `match` or `if let` scrutinee while its
/// arm calls `ledger()` again) panics with that explanation instead of deadlocking.
pub(super) fn lock(ledger: &Mutex<Ledger>) -> LedgerGuard<'_> {
    HOLDS_LEDGER.with(|h| {
        assert!(
            !h.get(),
            "the ledger is locked twice on one thread (a guard lives on in a match or \
             if-let scrutinee): take the value into a `let` first"
        );
        h.set(true);
    });
    LedgerGuard(ledger.lock().unwrap_or_else(|e| e.into_inner()))
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

/// The summary of a cell that was not measured.
fn unrun_summary(plan: &Plan, cell: &Cell, status: CellStatus, reason: &str) -> CellSummary {
    CellSummary {
        id: cell.id.clone(),
        engine: plan.engines[cell.engine].name.clone(),
        workload: plan.workloads[cell.workload].name.clone(),
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
        prefix_cache_hit_rate: None,
        slo: None,
        records: None,
        failure_class: None,
        log_tail: None,
        runs: Vec::new(),
        steady_state: None,
    }
}

pub(super) fn pending_engine(e: &EngineSpec) -> EngineRecord {
    EngineRecord {
        name: e.name.clone(),
        status: EngineStatus::Pending,
        model: e.model.clone(),
        matrix: e.matrix.clone(),
        argv: Vec::new(),
        argv_relative: Vec::new(),
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
        gpus: Vec::new(),
        cuda_visible_devices: None,
        launched_at: None,
        ready_at: None,
        stopped_at: None,
        restarts: Vec::new(),
    }
}

/// The resolved plan as stored in the bundle: values of secret-looking environment
/// variables are replaced, so a token given in `env` never lands in a bundle, and the prompts
/// are left out: they are stored once, in `workloads/<name>.prompts.jsonl`.
fn redacted(plan: &Plan) -> Plan {
    let mut p = plan.clone();
    for w in &mut p.workloads {
        w.prompts = Vec::new();
    }
    for e in &mut p.engines {
        if let EngineTarget::Launch(l) = &mut e.target {
            for (k, v) in l.env.iter_mut() {
                if redact::secret_name(k) {
                    *v = redact::REDACTED.into();
                }
            }
        }
    }
    for q in &mut p.quality {
        if let crate::plan::quality::QualityKind::Command(c) = &mut q.kind {
            for (k, v) in c.env.iter_mut() {
                if redact::secret_name(k) {
                    *v = redact::REDACTED.into();
                }
            }
        }
    }
    p
}
