//! Stopping an engine: SIGTERM to its whole process group and to every process that left it
//! (setsid'd descendants, and orphans reparented to the runner, its child subreaper), a grace
//! period, SIGKILL to all of them, then a check that nothing survived and that its port is
//! closed. All process killing of a run lives here.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::Child;

use crate::procfs::{self, ProcInfo};
use crate::stop::Cancel;

/// What teardown saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopReport {
    /// The leader's exit status, as text.
    pub exit_status: Option<String>,
    /// SIGKILL was needed: the group outlived the grace period (or a kill was requested).
    pub killed: bool,
    pub took_s: f64,
    /// Processes of the engine still alive after SIGKILL, and whoever still listens on its
    /// port: pid, command line, listening ports.
    pub survivors: Vec<String>,
    /// Something still accepts connections on the engine's port.
    pub port_open_after: bool,
    /// Processes outside the engine's process group (a new session, or reparented to the
    /// runner) that were found and stopped with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escaped: Vec<String>,
}

/// How often the engine's processes are re-read while waiting for them to end.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for the processes to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Makes this process the child subreaper of everything it launches: a descendant whose
/// parent exits (a daemonizing double fork, a setsid'd grandchild) is reparented to the
/// runner instead of init, so teardown still finds it.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

fn subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// The process groups of the engines launched and not yet stopped: with `[run] parallel`
/// several run at once, and one engine's teardown must leave the others' processes alone.
static RUNNING: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<i32>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// An engine just launched, leading group `pgid`.
pub fn track(pgid: i32) {
    running().push(pgid);
}

/// Whether `p` belongs to an engine other than the one of group `pgid` that is still running:
/// its leader, or a member of its group.
fn another_engines(p: &ProcInfo, pgid: i32) -> bool {
    running()
        .iter()
        .any(|&g| g != pgid && (p.pid == g || p.pgid == g))
}

/// Every live process of the engine led by `leader` (group `pgid`): its group, its
/// descendants whatever their group or session, and, when the runner is a subreaper, the
/// orphans reparented to the runner, except those of another running engine. (Side by side,
/// an orphan that also left its group cannot be told apart: the first engine stopped takes it.)
pub fn engine_processes(leader: i32, pgid: i32) -> Vec<ProcInfo> {
    let table = procfs::all_processes();
    let mut out: Vec<ProcInfo> = table
        .iter()
        .filter(|p| p.pgid == pgid && p.is_live())
        .cloned()
        .collect();
    let mut add = |ps: Vec<ProcInfo>| {
        for p in ps {
            if !out.iter().any(|o| o.pid == p.pid) {
                out.push(p);
            }
        }
    };
    add(procfs::descendants_in(&table, leader));
    if subreaper() {
        let me = std::process::id() as i32;
        for orphan in table
            .iter()
            .filter(|p| p.ppid == me && p.pid != leader && p.is_live() && !another_engines(p, pgid))
        {
            add(vec![orphan.clone()]);
            add(procfs::descendants_in(&table, orphan.pid));
        }
    }
    out
}

/// Sends `sig` to the group and to every process of the engine outside it, once each: an
/// engine shutting down gracefully is not hit by a stream of SIGTERMs. SIGKILL is repeated, so
/// a process forked meanwhile is caught too.
fn signal_all(pgid: i32, procs: &[ProcInfo], sig: Signal, sent: &mut HashSet<i32>) {
    let repeat = sig == Signal::SIGKILL;
    if sent.insert(pgid) || repeat {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
    for p in procs.iter().filter(|p| p.pgid != pgid) {
        if sent.insert(p.pid) || repeat {
            let _ = kill(Pid::from_raw(p.pid), sig);
        }
    }
}

/// Waits until the leader has exited and no process of the engine remains, or `limit`.
/// Processes that appear meanwhile (forked during the wait) are sent `sig` too. Every process
/// seen outside the group is added to `escaped`.
async fn wait_gone(
    child: &mut Child,
    pgid: i32,
    sig: Signal,
    limit: Duration,
    cancel: Option<&Cancel>,
    escaped: &mut Vec<(i32, String)>,
) -> bool {
    let leader = pgid;
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(POLL);
    let mut sent = HashSet::new();
    loop {
        let leader_done = matches!(child.try_wait(), Ok(Some(_)));
        let procs = engine_processes(leader, pgid);
        note_escaped(escaped, &procs, pgid);
        if leader_done && procs.is_empty() {
            return true;
        }
        signal_all(pgid, &procs, sig, &mut sent);
        let killed = async {
            match cancel {
                Some(c) => c.killed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {},
            () = tokio::time::sleep_until(deadline) => return false,
            () = killed => return false,
        }
    }
}

/// Names, while they still live, the processes found outside the group.
fn note_escaped(escaped: &mut Vec<(i32, String)>, procs: &[ProcInfo], pgid: i32) {
    for p in procs.iter().filter(|p| p.pgid != pgid) {
        if !escaped.iter().any(|(pid, _)| *pid == p.pid) {
            escaped.push((p.pid, procfs::describe(p)));
        }
    }
}

/// Reaps the zombies of processes reparented to the runner (never an engine's leader, which
/// its `Child` reaps: this one's, or another's still running).
fn reap_orphans(leader: i32) {
    let me = std::process::id() as i32;
    let leaders = running().clone();
    for z in procfs::all_processes()
        .iter()
        .filter(|p| p.ppid == me && p.pid != leader && !p.is_live() && !leaders.contains(&p.pid))
    {
        let _ = waitpid(Pid::from_raw(z.pid), Some(WaitPidFlag::WNOHANG));
    }
}

/// Stops the engine led by `child`. A kill request on `cancel` skips the grace period. With
/// `port`, whoever still listens on it afterwards is a survivor (`None`: the port was found
/// held by another server, not the engine's to check).
pub async fn stop(
    child: &mut Child,
    pgid: i32,
    port: Option<u16>,
    grace: Duration,
    cancel: &Cancel,
) -> StopReport {
    let t0 = Instant::now();
    let mut escaped = Vec::new();
    let mut killed = false;
    if !wait_gone(
        child,
        pgid,
        Signal::SIGTERM,
        grace,
        Some(cancel),
        &mut escaped,
    )
    .await
    {
        killed = true;
        wait_gone(child, pgid, Signal::SIGKILL, KILL_WAIT, None, &mut escaped).await;
    }
    // A second signal's kill (sent by the signal handler itself) counts as a kill.
    killed |= cancel.state() == crate::stop::StopState::Kill;
    let exit_status = match child.try_wait() {
        Ok(Some(s)) => Some(s.to_string()),
        _ => None,
    };
    let left = engine_processes(pgid, pgid);
    let mut survivors: Vec<String> = left.iter().map(procfs::describe).collect();
    let port_open_after = port.is_some_and(|port| {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_ok()
    });
    if let Some(port) = port.filter(|_| port_open_after) {
        match procfs::port_holder_pid(port) {
            Some(h) if left.iter().any(|p| p.pid == h.pid) => {}
            Some(h) => survivors.push(format!(
                "{} holds the engine's port {port} (outside the engine's process tree: not killed)",
                procfs::describe(&h)
            )),
            None => survivors.push(format!(
                "an unknown process accepts connections on the engine's port {port} (/proc does not show who)"
            )),
        }
    }
    reap_orphans(pgid);
    running().retain(|&g| g != pgid);
    StopReport {
        exit_status,
        killed,
        took_s: t0.elapsed().as_secs_f64(),
        survivors,
        port_open_after,
        escaped: escaped.into_iter().map(|(_, d)| d).collect(),
    }
}

/// The second signal: SIGKILL to every process the runner launched (every descendant, and so
/// every engine group and whatever escaped it), at once and repeatedly until none is left or
/// a second has passed. Returns how many processes were signalled.
pub fn kill_everything_now() -> usize {
    let me = std::process::id() as i32;
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut signalled = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = procfs::descendants(me);
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        let ours: HashSet<i32> = left.iter().map(|p| p.pid).collect();
        for p in &left {
            // An engine's whole group at once: only a group whose leader the runner launched
            // (never the runner's own group, nor one a process joined in the runner's session).
            if p.pgid != own_group && ours.contains(&p.pgid) {
                let _ = killpg(Pid::from_raw(p.pgid), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            signalled.insert(p.pid);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    signalled.len()
}

/// `runner recover`'s kill, from outside the run that launched them: SIGTERM to the group
/// `pgid` and to each of `procs` (known by pid and start time, so a reused pid is never
/// signalled), 5 s, then SIGKILL; returns who survived, described.
pub fn kill_recorded(pgid: i32, procs: &[ProcInfo]) -> Vec<String> {
    let send = |sig: Signal| {
        // Each may be gone already: what is left is checked below.
        killpg(Pid::from_raw(pgid), sig).ok();
        for p in procs {
            kill(Pid::from_raw(p.pid), sig).ok();
        }
    };
    let alive = || -> Vec<ProcInfo> {
        procs
            .iter()
            .filter_map(|p| procfs::process(p.pid))
            .filter(|now| {
                now.is_live()
                    && procs
                        .iter()
                        .any(|p| p.pid == now.pid && p.start_ticks == now.start_ticks)
            })
            .collect()
    };
    send(Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !alive().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    send(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !alive().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    alive().iter().map(procfs::describe).collect()
}
