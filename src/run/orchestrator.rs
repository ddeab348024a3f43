//! The pipeline of `runner exec`, top to bottom: place the engines on GPUs (`placement`), open
//! the bundle (`ledger`), then for each engine: bring it up (`session`) -> [measure each cell
//! (`cell`), its summary written] -> its capacity searches -> its quality steps (`quality`) ->
//! tear it down; then judge the quality results against their baselines, finish the manifest and
//! render the report from the bundle alone. With `[run] parallel`, engines whose device sets do
//! not overlap go through that lifecycle at the same time, each in its own lane (`lanes`).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use super::error::RunError;
use super::ledger::{Ledger, LedgerGuard, Target};
use super::placement::Pool;
use super::progress::Progress;
use super::session::Up;
use crate::bundle::format::{CellStatus, PartInfo, RunStatus};
use crate::bundle::journal::Journal;
use crate::bundle::layout;
use crate::engine::terminate;
use crate::load::client::http_client;
use crate::metrics::gpu::{Gpu, GpuInventory};
use crate::metrics::sampler::Sampler;
use crate::metrics::telemetry;
use crate::plan::model::{Cell, EngineSpec, Plan};
use crate::report;
use crate::stop::{Cancel, Stopper};

pub(super) const INTERRUPTED: &str = "not run: the run was interrupted";

/// Options of `runner exec` beyond the plan.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Bundles go under `<results_root>/<plan name>/`.
    pub results_root: PathBuf,
    pub quiet: bool,
    /// Finish this bundle instead of starting a new one.
    pub resume: Option<PathBuf>,
    /// Write the bundle into exactly this new directory (a part of a split run), recording
    /// where it ran.
    pub part: Option<(PathBuf, PartInfo)>,
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
    /// Quality results that failed (a gate, or the step itself), one line each.
    pub quality_failed: Vec<String>,
}

/// A run in progress: what every stage of it shares. Engines running side by side share it
/// too, so what they change is behind locks that are never held across an await (the lanes'
/// futures are checked `Send`, which a held `MutexGuard` is not).
pub(super) struct Run<'a> {
    pub(super) plan: &'a Plan,
    ledger: Mutex<Ledger>,
    pub(super) sampler: Sampler,
    pub(super) client: reqwest::Client,
    /// Follows the signals; also stopped when one engine's lane fails, so the others wind down.
    pub(super) cancel: Cancel,
    pub(super) fail: Stopper,
    /// `telemetry.jsonl`: every scrape of an engine's `/metrics`.
    pub(super) telemetry: Option<telemetry::Sink>,
    pub(super) origin: Instant,
    /// Engine processes that survived their teardown, named.
    leftovers: Mutex<Vec<String>>,
    pub(super) pool: Pool,
}

/// The GPUs one engine runs on (NVML indexes; empty without GPUs, or for an attached engine).
pub(super) type Devices = [u32];

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
    let pool = Pool::of(
        plan,
        &inventory,
        std::env::var(crate::engine::spawn::CUDA_VISIBLE_DEVICES)
            .ok()
            .as_deref(),
    );
    pool.check(plan).map_err(RunError::Placement)?;
    let progress = Progress::new(opts.quiet);
    // The ledger holds the bundle's lock until the report is rendered.
    let target = match (&opts.resume, &opts.part) {
        (Some(dir), _) => Target::Resume(dir),
        (None, Some((dir, info))) => Target::Part { dir, info },
        (None, None) => Target::Under(&opts.results_root),
    };
    let ledger = Ledger::open(plan, plan_bytes, target, inventory, progress)?;
    // Appended to, so a resumed run keeps the samples and scrapes of the first. Telemetry is
    // best-effort: a journal that cannot be opened is said, and the run goes on without it.
    let journal = |rel: &str| {
        Journal::append(&ledger.bundle().path(rel))
            .map_err(|e| ledger.warn(&format!("{e}: the run goes on without it")))
            .ok()
    };
    let (samples, scrapes) = (journal(layout::SAMPLES), journal(layout::TELEMETRY));
    let sampler = Sampler::start(
        gpu,
        plan.gpu.interval,
        samples
            .as_ref()
            .map(|j| Box::new(j.writer()) as Box<dyn std::io::Write + Send>),
    );
    let telemetry = scrapes.as_ref().map(|j| {
        let w: Box<dyn std::io::Write + Send> = Box::new(j.writer());
        std::sync::Arc::new(std::sync::Mutex::new(w))
    });
    let client = http_client(std::time::Duration::from_secs(10))?;
    let (fail, run_cancel, forward) = cancel.child();
    let run = Run {
        plan,
        ledger: Mutex::new(ledger),
        sampler,
        client,
        cancel: run_cancel,
        fail,
        telemetry,
        origin: Instant::now(),
        leftovers: Mutex::new(Vec::new()),
        pool,
    };
    {
        let l = run.ledger();
        l.progress().plan(plan, l.dir(), &l.manifest().gpu);
        if let Err(e) = terminate::become_subreaper() {
            l.warn(&format!(
                "cannot make the runner a child subreaper ({e}): an engine process that leaves its group and whose parent exits will not be found at teardown"
            ));
        }
    }

    let ran = if plan.parallel {
        run.parallel().await
    } else {
        run.sequential().await
    };
    if let Err(e) = ran {
        // Every engine is already stopped (teardown never depends on the bundle).
        forward.abort();
        run.ledger().run_failed(&e);
        return Err(e);
    }
    forward.abort();

    // Interrupted: by a signal (the run's own stop fires only with a failure, handled above).
    run.ledger().quality_judge(plan)?;
    let totals = run.ledger().finish(cancel.is_stopping())?;
    let Run {
        ledger,
        sampler,
        telemetry,
        leftovers,
        ..
    } = run;
    let ledger = ledger.into_inner().unwrap_or_else(|e| e.into_inner());
    let leftovers = leftovers.into_inner().unwrap_or_else(|e| e.into_inner());
    // Their writers first, then the journals: every sample and scrape is on disk.
    drop((sampler, telemetry));
    for journal in [samples, scrapes].into_iter().flatten() {
        if let Err(e) = journal.finish() {
            ledger.warn(&format!("{e}: its last lines may be missing"));
        }
    }
    let bundle_dir = ledger.bundle_dir();
    drop(ledger);
    let (summary, report_error) = match report::render::rerender(&bundle_dir) {
        Ok(s) => (s, None),
        Err(e) => (String::new(), Some(e.to_string())),
    };
    Ok(ExecOutcome {
        bundle_dir,
        status: totals.status,
        cells_failed: totals.cells_failed,
        cells_invalid: totals.cells_invalid,
        requests_failed: totals.requests_failed,
        summary,
        report_error,
        leftovers,
        quality_failed: totals.quality_failed,
    })
}

impl Run<'_> {
    /// The ledger, locked for one statement's work (never across an await; see `ledger::lock`).
    pub(super) fn ledger(&self) -> LedgerGuard<'_> {
        super::ledger::lock(&self.ledger)
    }

    /// Names an engine process that survived its teardown.
    pub(super) fn leftover(&self, what: impl IntoIterator<Item = String>) {
        self.leftovers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(what);
    }

    /// One engine, on `devices`: up, its cells and searches, down. Whatever happened (a bundle
    /// write that failed included), a launched engine is stopped before an error goes up.
    pub(super) async fn engine(
        &self,
        ei: usize,
        spec: &EngineSpec,
        devices: &Devices,
    ) -> Result<(), RunError> {
        self.sampler.open_lane(ei, devices);
        let r = self.engine_on(ei, spec, devices).await;
        self.sampler.close_lane(ei);
        r
    }

    async fn engine_on(
        &self,
        ei: usize,
        spec: &EngineSpec,
        devices: &Devices,
    ) -> Result<(), RunError> {
        let cells: Vec<Cell> = self
            .plan
            .cells
            .iter()
            .filter(|c| c.engine == ei && !self.ledger().is_done(&c.id))
            .cloned()
            .collect();
        let searches_left = self
            .plan
            .workloads
            .iter()
            .any(|w| w.search.is_some() && self.ledger().search_left(&spec.name, &w.name));
        if cells.is_empty() && !searches_left {
            // Resuming, and this engine's cells are all measured already.
            return Ok(());
        }
        if self.cancel.is_stopping() {
            self.ledger().engine_skipped(ei);
            self.ledger()
                .unrun_cells(self.plan, &cells, CellStatus::Interrupted, INTERRUPTED)?;
            self.quality_skipped(spec, INTERRUPTED)?;
            return Ok(());
        }
        self.ledger().engine_placed(ei, devices);
        self.record_version(ei, spec).await;

        let gpu_before = self.sampler.gpu_used_now(devices);
        let mut up = match self.bring_up(ei, spec, devices).await {
            Ok(up) => up,
            Err(down) => {
                let stopped = down.stopped();
                self.ledger().engine_failed(
                    ei,
                    &spec.name,
                    &down.message,
                    down.log_tail.clone(),
                    stopped,
                );
                let (status, reason) = if stopped {
                    (CellStatus::Interrupted, INTERRUPTED.to_string())
                } else {
                    (
                        CellStatus::Failed,
                        format!("not run: engine `{}` {}", spec.name, down.message),
                    )
                };
                // Stop first: teardown must not depend on the bundle taking writes.
                let launched = down.spawned.is_some();
                let torn_down = match down.spawned {
                    Some(sp) => self.teardown(ei, spec, sp).await,
                    None => Ok(()),
                };
                self.sampler.set_target(ei, None, "");
                self.ledger()
                    .unrun_cells(self.plan, &cells, status, &reason)?;
                self.quality_skipped(spec, &reason)?;
                torn_down?;
                if launched {
                    self.check_gpu_release(ei, spec, gpu_before, devices)
                        .await?;
                }
                return Ok(());
            }
        };

        let served = self.serve(ei, spec, &mut up, &cells).await;
        let launched = up.spawned.is_some();
        let torn_down = match up.spawned.take() {
            Some(sp) => self.teardown(ei, spec, sp).await,
            None => {
                self.ledger().engine_released(ei);
                Ok(())
            }
        };
        self.sampler.set_target(ei, None, "");
        served?;
        torn_down?;
        if launched {
            self.check_gpu_release(ei, spec, gpu_before, devices)
                .await?;
        }
        self.ledger().save()?;
        Ok(())
    }

    /// A ready engine's work: the dialect probe, its cells, then its capacity searches.
    async fn serve(
        &self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
        cells: &[Cell],
    ) -> Result<(), RunError> {
        self.probe_engine(ei, spec, up).await?;
        let mut dead: Option<String> = None;
        for (i, cell) in cells.iter().enumerate() {
            // Once the run stops or the engine dies, the cells left are marked in one batch.
            if self.cancel.is_stopping() {
                let left = &cells[i..];
                self.ledger()
                    .unrun_cells(self.plan, left, CellStatus::Interrupted, INTERRUPTED)?;
                break;
            }
            // A dead engine is relaunched only when a cell is left for it.
            self.revive(ei, spec, up, &mut dead).await?;
            if let Some(why) = dead.clone() {
                let reason = format!("not run: {why}");
                self.ledger()
                    .unrun_cells(self.plan, &cells[i..], CellStatus::Failed, &reason)?;
                break;
            }
            self.run_one(ei, spec, up, cell, &mut dead).await?;
        }
        for (wi, w) in self.plan.workloads.iter().enumerate() {
            let Some(uf) = w.load.until_failure else {
                continue;
            };
            if up.rejected.contains_key(&wi)
                || !self.ledger().until_failure_left(&spec.name, &w.name)
            {
                continue;
            }
            self.until_failure(ei, spec, up, &mut dead, wi, uf).await?;
        }
        self.searches(ei, spec, up, &mut dead).await?;
        // The quality steps, while the engine is still up.
        self.quality(spec, up, dead.as_deref()).await?;
        Ok(())
    }
}
