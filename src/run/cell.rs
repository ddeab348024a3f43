//! One cell: its request target, its repeated runs (each raced against the engine's exit), the
//! records folded and journaled as they come, then the verdict (`metrics::verdict`) and the
//! summary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::mpsc;

use super::error::RunError;
use super::orchestrator::{Run, INTERRUPTED};
use super::session::{exited_log_tail, Up, LOG_TAIL_LINES};
use crate::bundle::format::{CellStatus, CellSummary};
use crate::bundle::journal::{Journal, JournalWriter};
use crate::bundle::layout;
use crate::engine::failure;
use crate::engine::ready::api_key;
use crate::load::body;
use crate::load::client::{RequestTarget, RetryPolicy, Timeouts};
use crate::load::driver::{run_level, Level, LevelOutcome};
use crate::load::session::SessionPlan;
use crate::metrics::record::{ErrorClass, RequestRecord};
use crate::metrics::summary::Accumulator;
use crate::metrics::telemetry;
use crate::metrics::verdict::{self, Ending, Measured};
use crate::plan::model::{Cell, EngineSpec};

impl Run<'_> {
    /// Measures one cell on a ready engine (`child`: its process, when launched) and judges it.
    pub(super) async fn cell(
        &self,
        ei: usize,
        cell: &Cell,
        spec: &EngineSpec,
        base_url: &str,
        metrics_url: Option<&str>,
        child: Option<&mut tokio::process::Child>,
    ) -> Result<CellSummary, RunError> {
        let w = &self.plan.workloads[cell.workload];
        let records_rel = layout::cell_records(&cell.id);
        let journal = Journal::create(&self.ledger().bundle().path(&records_rel))?;
        let acc = Accumulator::for_cell(w, cell.level).percentiles(self.plan.report.percentiles);
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
            journal,
            acc,
            self.plan.repeat > 1,
            death,
            level_stop.clone(),
        ));

        let timeouts = w.load.timeouts;
        let bodies = body::bodies(spec, w);
        let sessions = w.sessions;
        // Sessions: `X-Session-ID` is `<bundle>-<cell>-<run>-<phase>-<n>`, unique to the run.
        let bundle_name = self
            .ledger()
            .bundle()
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done = Arc::new(AtomicU64::new(0));
        // Side by side, several cells would rewrite the one live line: none then.
        let ticker = if self.plan.parallel {
            None
        } else {
            self.ledger()
                .progress()
                .cell_ticker(cell, w.load.stop, done.clone())
        };
        let started_at = Utc::now();
        self.sampler.begin_window(ei, &cell.id);
        let scraper = metrics_url.map(|url| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(telemetry::scrape_cell(
                self.client.clone(),
                url.to_string(),
                spec.metrics_interval,
                cell.id.clone(),
                self.telemetry.clone(),
                self.origin,
                stopped,
            ));
            (stop, task)
        });
        let watch = crate::load::watch::Watch::start();
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
                // A session's next turn carries the engine's answer: keep the streamed text.
                keep_text: sessions.is_some(),
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
                prompt_lens: w.shapes.iter().map(|s| s.prompt_len).collect(),
                offsets_us: w
                    .shapes
                    .iter()
                    .filter_map(|s| s.scheduled_offset_us)
                    .collect(),
                load: cell.level,
                arrival: w.load.arrival,
                max_in_flight: w.load.max_in_flight,
                stop: w.load.stop,
                warmup: w.load.warmup,
                max_errors: w.load.max_errors,
                max_error_rate: w.load.max_error_rate,
                run,
                sessions: SessionPlan::of(spec, w),
                session_prefix: format!("{bundle_name}-{}-{run}", cell.id),
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
        let outcome = outcome.unwrap_or(LevelOutcome {
            interrupted: false,
            stopped_early: None,
        });
        forward.abort();
        let wall = t0.elapsed().as_secs_f64();
        let cpu_s = client_cpu_s() - cpu0;
        let watched = watch.finish();
        let resources = self.sampler.end_window(ei);
        let engine_metrics = match scraper {
            Some((stop, task)) => {
                // The scraper may have ended on its own; then there is no one to tell.
                stop.send(()).ok();
                task.await.ok().flatten()
            }
            None => None,
        };
        if let Some(t) = ticker {
            t.abort();
        }
        let (acc, runs, written) = match collector.await {
            Ok(c) => c,
            Err(e) => {
                return Err(RunError::Write(crate::bundle::write::WriteError {
                    path: self.ledger().bundle().path(&records_rel),
                    source: std::io::Error::other(format!("record writer failed: {e}")),
                }))
            }
        };
        written?;
        // Read back from the journal just written: the records are not kept in memory.
        let steady_state = match (w.load.steady_state, cell.level) {
            (true, crate::plan::model::LoadLevel::Concurrency(c)) => {
                let path = self.ledger().bundle().path(&records_rel);
                match crate::bundle::read::records(&path) {
                    Ok(records) => {
                        let records: Vec<RequestRecord> = records.collect();
                        crate::metrics::steady::steady_state(
                            &records,
                            c,
                            &Accumulator::for_cell(w, cell.level),
                        )
                    }
                    Err(e) => {
                        self.ledger().warn(&format!(
                            "{e}: cell {} has no steady-state figures",
                            cell.id
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        let mut metrics = acc.finish();
        let per_run: Vec<_> = runs.iter().map(Accumulator::finish).collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let usage = verdict::client_usage(cpu_s, wall, cores);
        // Each run judged on its own, so a bad run is named, never averaged in silently.
        let (run_verdicts, bad_runs) = if self.plan.repeat > 1 {
            verdict::judge_runs(
                &per_run,
                self.plan.repeat,
                &usage,
                w.load.max_dispatch_lag,
                self.cancel.is_stopping(),
            )
        } else {
            (Vec::new(), None)
        };
        let repeats: Vec<_> = if per_run.len() > 1 {
            per_run
        } else {
            Vec::new()
        };
        verdict::repeat_means(&mut metrics, &repeats);
        let mut resources = resources;
        if let Some(e) = &mut resources.energy {
            e.derive(metrics.output_tok_per_s, metrics.request_per_s);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut usage = verdict::client_usage(cpu_s, wall, cores);
        usage.timer_late_ms = watched.timer_late_ms;
        usage.run_queue_wait_s = watched.run_queue_wait_s;
        usage.run_queue_wait_pct = watched
            .run_queue_wait_s
            .filter(|_| wall > 0.0)
            .map(|w| 100.0 * w / wall);
        let mut v = verdict::judge(&Measured {
            metrics: &metrics,
            usage: &usage,
            max_dispatch_lag: w.load.max_dispatch_lag,
            slo: &w.slo,
            stopped_early: outcome.stopped_early.as_deref(),
            interrupted: self.cancel.is_stopping(),
        });
        if let Some(why) = bad_runs {
            v.invalid_reason = Some(match v.invalid_reason.take() {
                Some(r) => format!("{r}; {why}"),
                None => why,
            });
            v.slo = None;
        }
        Ok(CellSummary {
            id: cell.id.clone(),
            engine: spec.name.clone(),
            workload: w.name.clone(),
            level: cell.level,
            status: match v.ending {
                Ending::Ok => CellStatus::Ok,
                Ending::Failed => CellStatus::Failed,
                Ending::Interrupted => CellStatus::Interrupted,
            },
            valid: v.valid(),
            reason: v.reason,
            invalid_reason: v.invalid_reason,
            client: Some(usage),
            started_at: Some(started_at),
            finished_at: Some(Utc::now()),
            metrics: Some(metrics),
            repeats,
            resources: Some(resources),
            prefix_cache_hit_rate: engine_metrics
                .as_ref()
                .and_then(|t| t.prefix_cache_hit_rate()),
            engine_metrics,
            slo: v.slo,
            records: Some(records_rel),
            failure_class: None,
            log_tail: None,
            runs: run_verdicts,
            steady_state,
        })
    }
}

/// Whether some request of the cell found no server listening (`connect`).
fn refused(s: &CellSummary) -> bool {
    s.metrics
        .as_ref()
        .is_some_and(|m| m.failures.contains_key(ErrorClass::Connect.as_str()))
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
/// appends each to the cell's journal (its own writer thread: a write that blocks must not
/// stall the load, which shares this runtime). A journal that stops taking writes stops the
/// level at once; its error is returned with the folded records.
async fn collect(
    mut rx: mpsc::Receiver<RequestRecord>,
    journal: Journal,
    mut acc: Accumulator,
    per_run: bool,
    death: EngineDeath,
    on_write_error: crate::stop::Stopper,
) -> (
    Accumulator,
    Vec<Accumulator>,
    Result<(), crate::bundle::write::WriteError>,
) {
    let template = acc.clone();
    let mut runs: Vec<Accumulator> = Vec::new();
    let path = journal.path().to_path_buf();
    let mut lines: JournalWriter = journal.writer();
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
        if !lines.push(&r) && !on_write_error.is_killed() {
            on_write_error.kill();
        }
    }
    drop(lines);
    let written = tokio::task::spawn_blocking(move || journal.finish())
        .await
        .unwrap_or_else(|e| {
            Err(crate::bundle::write::WriteError {
                path,
                source: std::io::Error::other(format!("the record writer panicked: {e}")),
            })
        });
    (acc, runs, written)
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

impl Run<'_> {
    /// Runs one cell on a ready engine, unless the run is stopping or the engine died; writes
    /// its summary either way. Returns the summary of a cell that was measured.
    pub(super) async fn run_one(
        &self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
        cell: &Cell,
        dead: &mut Option<String>,
    ) -> Result<Option<CellSummary>, RunError> {
        let not_run = if self.cancel.is_stopping() {
            Some((CellStatus::Interrupted, INTERRUPTED.to_string()))
        } else if let Some(why) = dead.as_ref() {
            Some((CellStatus::Failed, format!("not run: {why}")))
        } else {
            up.rejected
                .get(&cell.workload)
                .map(|why| (CellStatus::Rejected, format!("not run: {why}")))
        };
        if let Some((status, reason)) = not_run {
            self.ledger().unrun_cell(self.plan, cell, status, &reason)?;
            return Ok(None);
        }
        let child = up.spawned.as_mut().map(|s| &mut s.child);
        let mut summary = self
            .cell(
                ei,
                cell,
                spec,
                &up.base_url,
                up.metrics_url.as_deref(),
                child,
            )
            .await?;
        if let Some(sp) = &mut up.spawned {
            let gone = match sp.child.try_wait() {
                Ok(Some(status)) => {
                    let why = format!(
                        "engine `{}` exited with {status} during cell {}",
                        spec.name, cell.id
                    );
                    let tail = exited_log_tail(sp);
                    let class = failure::classify(&tail, Some(&status.to_string()));
                    Some((why, tail, class))
                }
                // Alive, but refusing connections: a server that closed its port (vllm-awq on
                // CPU, once in CI, its processes alive) serves no cell again. Only a refusal is
                // read as that, and only where the engine's group no longer holds the port: a
                // full backlog or a stranger's answer is not it.
                _ if refused(&summary) && !crate::procfs::group_listens_on(sp.pgid, sp.port) => {
                    let why = format!(
                        "engine `{}` stopped listening on its port {} during cell {} (its process is alive; connections were refused)",
                        spec.name, sp.port, cell.id
                    );
                    let tail = crate::engine::spawn::log_tail(&sp.log_path, LOG_TAIL_LINES);
                    let class = failure::classify(&tail, None);
                    Some((why, tail, class))
                }
                _ => None,
            };
            if let Some((why, tail, class)) = gone {
                let why = match class {
                    Some(k) => format!("{why} ({})", k.label()),
                    None => why,
                };
                self.ledger()
                    .engine_failed(ei, &spec.name, &why, Some(tail.clone()), false);
                summary.status = CellStatus::EngineDied;
                summary.reason = Some(format!("{why}; the requests measured before are kept"));
                summary.slo = None;
                summary.failure_class = class;
                summary.log_tail = Some(tail);
                up.died_in = Some((cell.id.clone(), class));
                *dead = Some(why);
            }
        }
        self.ledger().save_cell(&summary)?;
        Ok(Some(summary))
    }
}
