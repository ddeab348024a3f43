//! What a person watching the run sees on stderr: the plan, each engine's lifecycle, a live
//! request count while a cell runs (on a terminal), and one line per finished cell.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::bundle::format::{CellStatus, CellSummary};
use crate::engine::terminate::StopReport;
use crate::metrics::gpu::GpuInventory;
use crate::plan::model::{Cell, Plan, StopRule};
use crate::run::search::Search;

/// Progress output; silent with `--quiet`.
#[derive(Debug, Clone)]
pub struct Progress {
    quiet: bool,
    tty: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn say(&self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    pub fn plan(&self, plan: &Plan, dir: &Path, gpu: &GpuInventory) {
        self.say(&format!(
            "runner: plan `{}`: {} engines x {} workloads, {} cells -> {}",
            plan.name,
            plan.engines.len(),
            plan.workloads.len(),
            plan.cells.len(),
            dir.display()
        ));
        if plan.parallel {
            self.say(
                "runner: [run] parallel: engines whose GPUs do not overlap run at the same time",
            );
        }
        if let Some(why) = &gpu.unavailable_reason {
            self.say(&format!("runner: GPU telemetry unavailable: {why}"));
        }
    }

    pub fn engine_launching(&self, name: &str, argv: &[String], cuda_visible: Option<&str>) {
        let on = cuda_visible
            .map(|d| format!(" (CUDA_VISIBLE_DEVICES={d})"))
            .unwrap_or_default();
        self.say(&format!("[{name}] launching{on}: {}", argv.join(" ")));
    }

    /// `[run] parallel`: the engine's GPUs are in use; it starts once an engine gives them back.
    pub fn engine_waiting(&self, name: &str, gpus: usize) {
        let s = if gpus == 1 { "" } else { "s" };
        self.say(&format!(
            "[{name}] waiting for {gpus} free GPU{s} (the others are in use by engines still running)"
        ));
    }

    pub fn engine_attaching(&self, name: &str, url: &str) {
        self.say(&format!("[{name}] attaching to {url}"));
    }

    /// An attached engine's health check did not count yet: why, and how long it is retried.
    pub fn engine_not_answering(
        &self,
        name: &str,
        url: &str,
        miss: &crate::engine::ready::Miss,
        left: Duration,
    ) {
        self.say(&format!(
            "[{name}] {url}: {miss}; retrying, {} s left (`health.timeout`)",
            left.as_secs_f64().ceil()
        ));
    }

    /// Something the user must know about, always printed.
    /// Cells marked without being run, as one batch: a line each for a few, one line for many
    /// (a console of 10,000 lines helps nobody).
    pub fn cells_not_run(&self, cells: &[Cell], status: CellStatus, reason: &str) {
        let label = match status {
            CellStatus::Interrupted => "interrupted",
            CellStatus::Rejected => "REJECTED FIELD",
            _ => "FAILED",
        };
        if cells.len() <= 5 {
            for c in cells {
                self.say(&format!("  {:<32} {label}: {reason}", c.id));
            }
        } else {
            self.say(&format!(
                "  {} cells ({} .. {}) {label}: {reason}",
                cells.len(),
                cells[0].id,
                cells[cells.len() - 1].id
            ));
        }
    }

    /// A quality step ended on an engine (its comparison with the baseline comes at the end).
    pub fn quality_done(&self, r: &crate::quality::record::QualityRecord) {
        if self.quiet {
            return;
        }
        let status = crate::bundle::format::label(&r.status);
        match (&r.reason, r.headline()) {
            (Some(why), _) => eprintln!("quality {} on {}: {status}: {why}", r.step, r.engine),
            (None, Some(x)) => eprintln!("quality {} on {}: {status} ({x:.4})", r.step, r.engine),
            (None, None) => eprintln!("quality {} on {}: {status}", r.step, r.engine),
        }
    }

    pub fn warn(&self, message: &str) {
        self.say(&format!("warning: {message}"));
    }

    pub fn engine_ready(&self, name: &str, secs: f64) {
        self.say(&format!("[{name}] ready in {secs:.2} s"));
    }

    pub fn engine_failed(&self, name: &str, why: &str, tail: Option<&str>) {
        self.say(&format!("[{name}] FAILED: {why}"));
        if let Some(t) = tail.filter(|t| !t.is_empty()) {
            for l in t.lines() {
                self.say(&format!("[{name}] | {l}"));
            }
        }
    }

    pub fn engine_stopped(&self, name: &str, r: &StopReport) {
        let how = if r.killed {
            "killed (SIGKILL)"
        } else {
            "stopped"
        };
        self.say(&format!("[{name}] {how} in {:.2} s", r.took_s));
        if !r.survivors.is_empty() {
            self.say(&format!(
                "[{name}] WARNING: survived teardown (SIGKILL included): {}",
                r.survivors.join(", ")
            ));
        }
        if r.port_open_after {
            self.say(&format!(
                "[{name}] WARNING: its port still accepts connections after teardown"
            ));
        }
    }

    /// On a terminal, a task that rewrites one line with the cell's request count.
    pub fn cell_ticker(
        &self,
        cell: &Cell,
        stop: StopRule,
        done: Arc<AtomicU64>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if self.quiet || !self.tty {
            return None;
        }
        let id = cell.id.clone();
        let total = match stop {
            StopRule::Requests(n) => n.to_string(),
            StopRule::Duration(d) => humantime::format_duration(d).to_string(),
        };
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                eprint!(
                    "\r  {id}: {}/{total} requests   ",
                    done.load(Ordering::Relaxed)
                );
            }
        }))
    }

    pub fn gpu_not_released(
        &self,
        name: &str,
        before: u64,
        after: u64,
        holders: &[crate::metrics::gpu::GpuProcess],
    ) {
        self.say(&format!(
            "[{name}] WARNING: GPU memory not back to its level before launch after `[gpu] release_timeout` ({} MiB then, {} MiB now); held by: {}",
            before >> 20,
            after >> 20,
            holders
                .iter()
                .map(|h| format!("pid {} on GPU {} ({} MiB)", h.pid, h.gpu, h.used_bytes.unwrap_or(0) >> 20))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    pub fn search_done(&self, engine: &str, workload: &str, s: &Search) {
        let probes: Vec<String> = s
            .probes
            .iter()
            .map(|(l, ok)| format!("{}{}", l.label(), if *ok { " ok" } else { " x" }))
            .collect();
        self.say(&format!(
            "[{engine}] capacity for {workload}: {} (probed {})",
            s.capacity_text()
                .unwrap_or_else(|| "none (the first level failed its SLO)".into()),
            probes.join(", ")
        ));
    }

    pub fn until_failure_done(&self, r: &crate::bundle::format::UntilFailureRecord) {
        self.say(&format!(
            "[{}] until failure on {}: {}",
            r.engine,
            r.workload,
            crate::report::fmt::knee_text(r)
        ));
    }

    pub fn cell_done(&self, s: &CellSummary) {
        if self.tty && !self.quiet {
            eprint!("\r\x1b[2K");
        }
        let line = match (&s.metrics, s.status) {
            (Some(m), CellStatus::Ok | CellStatus::Interrupted) => format!(
                "  {:<32} {:>5} ok {:>4} failed {:>9.2} req/s {:>10.1} tok/s  ttft p95 {:>8.1} ms  e2e p95 {:>8.1} ms{}",
                s.id,
                m.requests_ok,
                m.requests_failed,
                m.request_per_s,
                m.output_tok_per_s,
                m.ttft_ms.as_ref().map_or(0.0, |t| t.p95),
                m.e2e_ms.as_ref().map_or(0.0, |t| t.p95),
                if s.status == CellStatus::Interrupted { "  (interrupted)" } else { "" }
            ),
            _ => format!(
                "  {:<32} {}: {}",
                s.id,
                match s.status {
                    CellStatus::Interrupted => "interrupted",
                    CellStatus::Rejected => "REJECTED FIELD",
                    CellStatus::EngineDied => "ENGINE DIED",
                    _ => "FAILED",
                },
                s.reason.as_deref().unwrap_or("")
            ),
        };
        self.say(&line);
    }
}
