//! `runner recover BUNDLE`: makes an honest bundle out of one a killed runner left marked
//! `running`. Cells cut short get summaries rebuilt from their journals (flushed at least once a
//! second), unreached cells are marked as such, engine process groups left behind are killed,
//! and the bundle is marked `interrupted` and its report rendered.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::bundle::format::*;
use crate::bundle::read::{self, LoadedBundle};
use crate::bundle::write::Bundle;
use crate::engine::procfs;
use crate::metrics::record::RequestRecord;
use crate::metrics::summary::{Accumulator, GoodputBounds};
use crate::plan::{LoadLevel, Plan};
use crate::report;

/// What recovery did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Cells whose summary was rebuilt from a journal.
    pub recovered: usize,
    /// Engine process groups found alive and killed.
    pub killed: Vec<String>,
    /// The console summary of the rendered report.
    pub summary: String,
}

/// Why recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Locked(#[from] crate::bundle::lock::LockError),
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error("the bundle is marked `{0}`, not `running`: there is nothing to recover")]
    NotRunning(String),
    #[error(transparent)]
    Write(#[from] crate::bundle::write::WriteError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
}

/// Recovers the bundle in `dir`.
pub fn recover(dir: &Path) -> Result<Recovered, RecoverError> {
    // A bundle whose runner is alive is not left behind: its engines are that runner's.
    let _lock = crate::bundle::lock::acquire(dir)?;
    let LoadedBundle {
        mut manifest,
        plan,
        cells,
        ..
    } = read::load(dir)?;
    if manifest.status != RunStatus::Running {
        let s = crate::bundle::format::label(&manifest.status);
        return Err(RecoverError::NotRunning(s));
    }
    let bundle = Bundle::open(dir);
    let mut recovered = 0;
    for index in manifest.cells.iter_mut() {
        if cells.iter().any(|c| c.id == index.id) {
            continue;
        }
        let Some((engine, workload, level)) = identify(&plan, &index.id) else {
            continue;
        };
        let journal = dir.join(format!("cells/{}.records.jsonl", index.id));
        let metrics = if journal.is_file() {
            recovered += 1;
            Some(fold_journal(&journal, &plan, &workload))
        } else {
            None
        };
        let reason = if metrics.is_some() {
            "recovered from the journal: the runner stopped before this cell finished"
        } else {
            "not run: the runner stopped first"
        };
        let summary = CellSummary {
            id: index.id.clone(),
            engine,
            workload,
            level,
            status: CellStatus::Interrupted,
            reason: Some(reason.into()),
            valid: true,
            invalid_reason: None,
            client: None,
            started_at: None,
            finished_at: None,
            metrics,
            repeats: Vec::new(),
            resources: None,
            engine_metrics: None,
            slo: None,
            records: journal
                .is_file()
                .then(|| format!("cells/{}.records.jsonl", index.id)),
        };
        bundle.write_json(&format!("cells/{}.summary.json", index.id), &summary)?;
        index.status = CellStatus::Interrupted;
    }
    let mut killed = Vec::new();
    for e in manifest.engines.iter_mut() {
        if matches!(e.status, EngineStatus::Starting | EngineStatus::Ready) {
            e.status = EngineStatus::Failed;
            e.failure = Some("the runner stopped while this engine was running".into());
            if let Some(pgid) = e.pid {
                if let Some(what) = kill_leftover(pgid, e.argv.first().map(String::as_str)) {
                    killed.push(format!("{} ({what})", e.name));
                }
            }
        }
    }
    manifest.status = RunStatus::Interrupted;
    manifest.finished_at = Some(Utc::now());
    manifest.message = Some(
        "recovered by `runner recover`: the runner stopped without finishing (killed?); cells cut short were rebuilt from their journals"
            .into(),
    );
    bundle.write_json("manifest.json", &manifest)?;
    let summary = report::rerender(dir)?;
    Ok(Recovered {
        recovered,
        killed,
        summary,
    })
}

/// Engine, workload and level of a cell id `<engine>.<workload>.<level>`.
fn identify(plan: &Plan, id: &str) -> Option<(String, String, LoadLevel)> {
    if let Some(c) = plan.cells.iter().find(|c| c.id == id) {
        return Some((
            plan.engines[c.engine].name.clone(),
            plan.workloads[c.workload].name.clone(),
            c.level,
        ));
    }
    // A capacity-search probe: names hold no dots, so the id splits cleanly.
    let mut parts = id.splitn(3, '.');
    let (engine, workload, level) = (parts.next()?, parts.next()?, parts.next()?);
    let level = if let Some(c) = level.strip_prefix('c') {
        LoadLevel::Concurrency(c.parse().ok()?)
    } else {
        LoadLevel::Rate(level.strip_prefix('r')?.replace('p', ".").parse().ok()?)
    };
    Some((engine.to_string(), workload.to_string(), level))
}

/// Folds every whole record of a journal; a line cut off by the kill is skipped.
fn fold_journal(path: &Path, plan: &Plan, workload: &str) -> crate::metrics::summary::CellMetrics {
    let w = plan.workloads.iter().find(|w| w.name == workload);
    let mut acc = Accumulator::new(
        w.map(|w| u64::from(w.max_tokens)),
        w.and_then(|w| GoodputBounds::from_slo(&w.slo)),
    );
    if let Ok(f) = std::fs::File::open(path) {
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(r) = serde_json::from_str::<RequestRecord>(&line) {
                acc.add(&r);
            }
        }
    }
    acc.finish()
}

/// Kills the process group `pgid` if its leader still runs `program`, so a reused PID is
/// never signalled. Returns what was killed.
fn kill_leftover(pgid: i32, program: Option<&str>) -> Option<String> {
    let members = procfs::group_members(pgid);
    let leader_cmd = std::fs::read(format!("/proc/{pgid}/cmdline")).ok();
    let argv0 = leader_cmd
        .as_ref()
        .and_then(|c| c.split(|b| *b == 0).next())
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let same = match (program, &argv0) {
        (Some(p), Some(a)) => a == p,
        // The leader is gone: its group may still hold workers, identified by the group id
        // the runner gave it.
        (_, None) => !members.is_empty(),
        _ => false,
    };
    if members.is_empty() || !same {
        return None;
    }
    let what = members
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procfs::group_members(pgid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    Some(what)
}
