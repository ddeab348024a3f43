//! `runner recover BUNDLE`: makes an honest bundle out of one a killed runner left marked
//! `running`. Cells cut short get summaries rebuilt from their journals (flushed at least once a
//! second), unreached cells are marked as such, and the bundle is marked `interrupted` and its
//! report rendered. Engines left behind are killed first, before anything is written: a full
//! disk must not keep a GPU busy. An engine is known by what the runner recorded (its pid and
//! group, the leader's start time and session, its port), never by the program it runs, so
//! one launched through a shell script, a pyenv or conda shim or a console script is found.

use std::path::Path;

use chrono::Utc;

use crate::bundle::format::*;
use crate::bundle::layout;
use crate::bundle::read::{self, LoadedBundle};
use crate::bundle::write::Bundle;
use crate::engine::terminate;
use crate::metrics::summary::Accumulator;
use crate::plan::model::{LoadLevel, Plan};
use crate::procfs;
use crate::report;

/// What recovery did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Cells whose summary was rebuilt from a journal.
    pub recovered: usize,
    /// Engine process groups found alive and killed.
    pub killed: Vec<String>,
    /// Engine processes (or holders of an engine's port) still alive: not killed, and why.
    pub not_killed: Vec<String>,
    /// Recorded engines whose pid now belongs to another process: nothing to kill.
    pub declined: Vec<String>,
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
    #[error("{source}{}", killed_note(.killed))]
    Write {
        source: crate::bundle::write::WriteError,
        /// Engines killed before the write failed.
        killed: Vec<String>,
    },
    #[error(transparent)]
    Report(#[from] report::render::ReportError),
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
    // Kill first: nothing below may depend on the disk.
    let Leftovers {
        killed,
        not_killed,
        declined,
    } = kill_leftovers(&mut manifest.engines);
    let write_err = |e| RecoverError::Write {
        source: e,
        killed: killed.clone(),
    };
    let bundle = Bundle::open(dir);
    let mut recovered = 0;
    for index in manifest.cells.iter_mut() {
        if cells.iter().any(|c| c.id == index.id) {
            continue;
        }
        let Some((engine, workload, level)) = identify(&plan, &index.id) else {
            continue;
        };
        let journal = dir.join(layout::cell_records(&index.id));
        let metrics = if journal.is_file() {
            recovered += 1;
            Some(fold_journal(&journal, &plan, &workload, level))
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
            prefix_cache_hit_rate: None,
            slo: None,
            records: journal.is_file().then(|| layout::cell_records(&index.id)),
            failure_class: None,
            log_tail: None,
            runs: Vec::new(),
            steady_state: None,
        };
        bundle
            .write_json(&layout::cell_summary(&index.id), &summary)
            .map_err(write_err)?;
        index.status = CellStatus::Interrupted;
    }
    manifest.status = RunStatus::Interrupted;
    manifest.finished_at = Some(Utc::now());
    manifest.message = Some(
        "recovered by `runner recover`: the runner stopped without finishing (killed?); cells cut short were rebuilt from their journals"
            .into(),
    );
    bundle
        .write_json(layout::MANIFEST, &manifest)
        .map_err(write_err)?;
    let summary = report::render::rerender(dir)?;
    Ok(Recovered {
        recovered,
        killed,
        not_killed,
        declined,
        summary,
    })
}

fn killed_note(killed: &[String]) -> String {
    if killed.is_empty() {
        String::new()
    } else {
        format!(
            " (engines left behind were killed before the write failed: {})",
            killed.join("; ")
        )
    }
}

/// What `kill_leftovers` did, engine by engine.
#[derive(Debug, Default)]
struct Leftovers {
    killed: Vec<String>,
    not_killed: Vec<String>,
    declined: Vec<String>,
}

/// Kills what is left of every engine the manifest shows as running; marks them failed.
fn kill_leftovers(engines: &mut [EngineRecord]) -> Leftovers {
    let mut out = Leftovers::default();
    let (killed, not_killed) = (&mut out.killed, &mut out.not_killed);
    for e in engines.iter_mut() {
        if !matches!(e.status, EngineStatus::Starting | EngineStatus::Ready) {
            continue;
        }
        e.status = EngineStatus::Failed;
        e.failure = Some("the runner stopped while this engine was running".into());
        let Some(pgid) = e.pid else { continue };
        let recorded = Recorded {
            pgid,
            start_ticks: e.start_ticks,
            sid: e.sid,
            program: e.argv.first().cloned(),
        };
        let found = find_leftover(&recorded, &procfs::all_processes());
        let port = e.port.or_else(|| url_port(e.url.as_deref()));
        match found {
            Leftover::Gone => {}
            Leftover::Reused(why) => out.declined.push(format!("{}: {why}", e.name)),
            Leftover::Found(procs) => {
                let what = procs
                    .iter()
                    .map(procfs::describe)
                    .collect::<Vec<_>>()
                    .join(", ");
                let survivors = terminate::kill_recorded(pgid, &procs);
                killed.push(format!("{} ({what})", e.name));
                for s in survivors {
                    not_killed.push(format!("{}: {s} survived SIGKILL", e.name));
                }
            }
        }
        if let Some(port) = port {
            if let Some(h) = procfs::port_holder_pid(port) {
                not_killed.push(format!(
                    "{}: port {port} is still held by {}, which is not the engine's recorded process group (escaped with setsid, or another program): not killed; stop it by hand if it is the engine's",
                    e.name,
                    procfs::describe(&h)
                ));
            }
        }
    }
    out
}

/// The port of a `http://host:port` URL.
fn url_port(url: Option<&str>) -> Option<u16> {
    url::Url::parse(url?).ok()?.port()
}

/// What the runner recorded about an engine's leader.
#[derive(Debug, Clone)]
struct Recorded {
    pgid: i32,
    start_ticks: Option<u64>,
    sid: Option<i32>,
    /// argv[0] as launched: only for bundles written before start times were recorded.
    program: Option<String>,
}

/// What is left of a recorded engine.
#[derive(Debug, Clone, PartialEq)]
enum Leftover {
    /// Nothing.
    Gone,
    /// Its pid now belongs to another process (why).
    Reused(String),
    /// These live processes are the engine's.
    Found(Vec<procfs::ProcInfo>),
}

/// Finds the engine's processes in a process table (pure, for tests). The leader is the
/// engine if its start time is the recorded one (then its group and every descendant are
/// the engine's, whatever program runs); a leader that is gone leaves workers in its group,
/// which no other process can take over (a group id is not reused while the group lives).
fn find_leftover(rec: &Recorded, table: &[procfs::ProcInfo]) -> Leftover {
    let group: Vec<procfs::ProcInfo> = table
        .iter()
        .filter(|p| p.pgid == rec.pgid && p.is_live())
        .filter(|p| rec.sid.map_or(true, |sid| p.sid == sid))
        .cloned()
        .collect();
    let leader = table.iter().find(|p| p.pid == rec.pgid && p.is_live());
    let Some(leader) = leader else {
        return if group.is_empty() {
            Leftover::Gone
        } else {
            Leftover::Found(group)
        };
    };
    let same = match rec.start_ticks {
        Some(t) => leader.start_ticks == t,
        // An older bundle: the recorded program must appear in the leader's command line
        // (`sh engine.sh`, `python3 /usr/bin/vllm`), by path or by file name.
        None => rec.program.as_deref().is_some_and(|prog| {
            let cmd = procfs::cmdline(leader.pid);
            let name = std::path::Path::new(prog)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            cmd.split(' ').any(|a| {
                a == prog || (!name.is_empty() && a.rsplit('/').next() == Some(name.as_str()))
            })
        }),
    };
    if !same {
        return Leftover::Reused(format!(
            "pid {} now belongs to another process (`{}`, started at tick {}, not the engine's {}): nothing of the engine is left to kill",
            leader.pid,
            leader.comm,
            leader.start_ticks,
            rec.start_ticks.map_or("(not recorded)".to_string(), |t| t.to_string())
        ));
    }
    let mut procs = group;
    for d in procfs::descendants_in(table, leader.pid) {
        if !procs.iter().any(|p| p.pid == d.pid) {
            procs.push(d);
        }
    }
    if !procs.iter().any(|p| p.pid == leader.pid) {
        procs.push(leader.clone());
    }
    Leftover::Found(procs)
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
    let level = LoadLevel::from_id_part(level)?;
    Some((engine.to_string(), workload.to_string(), level))
}

/// Folds every whole record of a journal (a line cut off by the kill is skipped) with the
/// accumulator the cell itself measured with, so a recovered cell derives the same metrics (an
/// open-loop level keeps its offered and sent rates).
fn fold_journal(
    path: &Path,
    plan: &Plan,
    workload: &str,
    level: LoadLevel,
) -> crate::metrics::summary::CellMetrics {
    let mut acc = match plan.workloads.iter().find(|w| w.name == workload) {
        Some(w) => Accumulator::for_cell(w, level),
        None => Accumulator::default(),
    }
    .percentiles(plan.report.percentiles);
    if let Ok(records) = read::records(path) {
        for r in records {
            acc.add(&r);
        }
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::ProcInfo;

    fn plan_with(load: &str) -> Plan {
        let src = format!(
            "schema = 1\nname = \"t\"\n[[engine]]\nname = \"e\"\nurl = \"http://127.0.0.1:9\"\nmodel = \"m\"\n[[workload]]\nname = \"w\"\nprompts = [\"hi\"]\nmax_tokens = 1\n[workload.load]\n{load}\n"
        );
        let ctx = crate::plan::resolve::ResolveContext {
            runner_exe: "runner".into(),
        };
        match crate::plan::resolve::resolve_source(Path::new("t.toml"), &src, "0".into(), &ctx) {
            Ok((plan, _)) => plan,
            Err(d) => panic!("the test plan is invalid:\n{d}"),
        }
    }

    /// A journal of `n` records scheduled 100 ms apart (10 req/s), its last line cut off.
    fn journal(dir: &Path, n: u64) -> std::path::PathBuf {
        let path = dir.join(layout::cell_records("e.w.r10").replace('/', "_"));
        let mut text = String::new();
        for i in 0..n {
            let t = i * 100_000;
            let r = crate::metrics::record::tests::record(t, &[t + 500], t + 900, 1);
            text.push_str(&serde_json::to_string(&r).expect("a record"));
            text.push('\n');
        }
        text.push_str("{\"index\": 4");
        std::fs::write(&path, text).expect("write the journal");
        path
    }

    #[test]
    fn a_recovered_open_loop_cell_keeps_its_offered_and_sent_rates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = journal(dir.path(), 11);
        let plan = plan_with("rate = [10]\nrequests = 1000");
        let (_, workload, level) = identify(&plan, "e.w.r10").expect("a cell of the plan");
        assert_eq!(level, LoadLevel::Rate(10.0));
        let m = fold_journal(&path, &plan, &workload, level);
        assert_eq!(m.requests_total, 11, "the cut-off line is skipped");
        let offered = m
            .offered_req_per_s
            .expect("an open-loop cell keeps its offered rate");
        assert!((offered - 10.0).abs() < 1e-9, "{offered}");
        assert!(m.sent_req_per_s.is_some());
        // A closed-loop cell has none.
        let plan = plan_with("concurrency = [1]\nrequests = 1000");
        let m = fold_journal(&path, &plan, "w", LoadLevel::Concurrency(1));
        assert_eq!(m.offered_req_per_s, None);
    }

    #[test]
    fn a_search_probe_is_identified_by_its_id() {
        let plan = plan_with("concurrency = [1]\nrequests = 10");
        assert_eq!(
            identify(&plan, "e.w.r2p5"),
            Some(("e".into(), "w".into(), LoadLevel::Rate(2.5)))
        );
        assert_eq!(
            identify(&plan, "e.w.c16"),
            Some(("e".into(), "w".into(), LoadLevel::Concurrency(16)))
        );
        assert_eq!(identify(&plan, "e.w.x1"), None);
    }

    fn p(pid: i32, ppid: i32, pgid: i32, start_ticks: u64) -> ProcInfo {
        ProcInfo {
            pid,
            ppid,
            pgid,
            sid: 7,
            state: 'S',
            comm: "sh".into(),
            start_ticks,
        }
    }

    fn rec(start_ticks: Option<u64>) -> Recorded {
        Recorded {
            pgid: 100,
            start_ticks,
            sid: Some(7),
            program: Some("./engine.sh".into()),
        }
    }

    #[test]
    fn a_leader_with_the_recorded_start_time_is_the_engine_whatever_it_runs() {
        // The leader runs `sh ./engine.sh`, its child the server, a grandchild left the group.
        let table = [
            p(100, 1, 100, 5000),
            p(101, 100, 100, 5001),
            p(102, 101, 102, 5002),
        ];
        let Leftover::Found(procs) = find_leftover(&rec(Some(5000)), &table) else {
            panic!("not found");
        };
        let mut pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, vec![100, 101, 102]);
    }

    #[test]
    fn a_reused_pid_is_never_killed() {
        let table = [p(100, 1, 100, 9999)];
        assert!(matches!(
            find_leftover(&rec(Some(5000)), &table),
            Leftover::Reused(why) if why.contains("pid 100 now belongs to another process")
        ));
    }

    #[test]
    fn workers_of_a_dead_leader_are_found_by_their_group_and_session() {
        let mut other_session = p(201, 1, 100, 6000);
        other_session.sid = 8;
        let table = [p(101, 1, 100, 5001), other_session];
        assert_eq!(
            find_leftover(&rec(Some(5000)), &table),
            Leftover::Found(vec![p(101, 1, 100, 5001)])
        );
        assert_eq!(find_leftover(&rec(Some(5000)), &[]), Leftover::Gone);
    }
}
