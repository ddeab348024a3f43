//! Where the runner itself runs: `[client] cpus` pins every thread of the runner to the given
//! CPUs (sched_setaffinity, through `nix`'s safe wrapper), `[client] priority = "realtime"`
//! asks for SCHED_FIFO (best effort, through `chrt`, with reset-on-fork), and engines launched
//! afterwards get the CPUs the runner had before it was pinned: they start through
//! `runner engine unpinned`, which sets its own affinity back and `exec`s the engine, so no
//! engine thread ever inherits the client's CPUs.
//!
//! Why these tools: `nix` is already a dependency and wraps sched_setaffinity safely (the crate
//! forbids `unsafe`); it has no sched_setscheduler, and the `thread-priority` crate would add a
//! dependency for one call that util-linux's `chrt` makes as well, with `--reset-on-fork` so
//! that no child (an engine, a helper) inherits a real-time policy.

use std::sync::OnceLock;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// `[client] priority`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The scheduler's default for the user that runs it.
    #[default]
    Normal,
    /// SCHED_FIFO, priority 1, best effort.
    Realtime,
}

/// `[client]`: where the runner's own threads run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSpec {
    /// The CPUs the runner's threads are pinned to; empty: not pinned.
    #[serde(default)]
    pub cpus: Vec<usize>,
    #[serde(default)]
    pub priority: Priority,
}

impl ClientSpec {
    pub fn is_default(&self) -> bool {
        *self == ClientSpec::default()
    }
}

/// What was applied, for the manifest (`host.client`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientSetup {
    /// The CPUs the runner was pinned to (empty: not pinned).
    #[serde(default)]
    pub cpus: Vec<usize>,
    /// The CPUs engines run on: the runner's own before it was pinned.
    #[serde(default)]
    pub engine_cpus: Vec<usize>,
    /// Whether SCHED_FIFO was asked for, and whether it was granted.
    #[serde(default)]
    pub realtime_requested: bool,
    #[serde(default)]
    pub realtime: bool,
    /// What could not be done (never fatal for the priority).
    #[serde(default)]
    pub warnings: Vec<String>,
}

static SETUP: OnceLock<ClientSetup> = OnceLock::new();

/// What [`apply`] did in this process, if it ran.
pub fn setup() -> Option<&'static ClientSetup> {
    SETUP.get()
}

/// The CPUs this thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn cpu_set(cpus: &[usize]) -> Result<CpuSet, String> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)
            .map_err(|e| format!("CPU {c} cannot be named ({e})"))?;
    }
    Ok(set)
}

/// Pins every thread of this process (threads started later inherit it from their creator).
fn pin_all_threads(cpus: &[usize]) -> Result<(), String> {
    let set = cpu_set(cpus)?;
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("cannot list /proc/self/task: {e}"))?;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // A thread that has just exited is no error.
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(format!("sched_setaffinity of thread {tid}: {e}")),
        }
    }
    Ok(())
}

/// Applies `[client]` to this process once, before any engine is launched. Pinning failures
/// are errors (a plan that asks for a CPU it cannot have is not run as if it had it); a
/// priority that is not permitted is a warning.
pub fn apply(spec: &ClientSpec) -> Result<&'static ClientSetup, String> {
    if let Some(s) = SETUP.get() {
        return Ok(s);
    }
    let mut setup = ClientSetup::default();
    if !spec.cpus.is_empty() {
        let allowed = allowed_cpus();
        let missing: Vec<String> = spec
            .cpus
            .iter()
            .filter(|c| !allowed.contains(c))
            .map(usize::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "`[client] cpus` names CPU {} but the runner may only use {}",
                missing.join(", "),
                list(&allowed)
            ));
        }
        pin_all_threads(&spec.cpus)?;
        setup.cpus = spec.cpus.clone();
        setup.engine_cpus = allowed;
    }
    if spec.priority == Priority::Realtime {
        setup.realtime_requested = true;
        match realtime(std::process::id()) {
            Ok(()) => setup.realtime = true,
            Err(why) => setup.warnings.push(format!(
                "`[client] priority = \"realtime\"` was not applied ({why}); the client runs at normal priority: run the runner as root or with CAP_SYS_NICE, or start it under `chrt -f 1`"
            )),
        }
    }
    Ok(SETUP.get_or_init(|| setup))
}

/// Gives the calling thread the client's real-time priority when `[client] priority =
/// "realtime"` was granted: threads started after it (reset on fork) begin at the normal
/// policy, and a thread that measures the client (`load::watch`) must run as the client does.
pub fn join_realtime() {
    if setup().is_some_and(|s| s.realtime) {
        let tid = nix::unistd::gettid().as_raw();
        let _ = chrt(&["--reset-on-fork", "--fifo", "--pid", "1", &tid.to_string()]);
    }
}

/// SCHED_FIFO priority 1 for every thread of `pid`, children reset to the default policy.
fn realtime(pid: u32) -> Result<(), String> {
    chrt(&[
        "--all-tasks",
        "--reset-on-fork",
        "--fifo",
        "--pid",
        "1",
        &pid.to_string(),
    ])
}

fn chrt(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("chrt")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `chrt`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`chrt` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// "0,2,3".
pub fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The argv to launch an engine with: through `runner engine unpinned` when the runner is
/// pinned, so the engine runs on the CPUs the runner had before.
pub fn engine_argv(argv: &[String]) -> Vec<String> {
    let Some(s) = SETUP.get().filter(|s| !s.cpus.is_empty()) else {
        return argv.to_vec();
    };
    let Ok(exe) = std::env::current_exe() else {
        return argv.to_vec();
    };
    let mut out = vec![
        exe.to_string_lossy().into_owned(),
        "engine".into(),
        "unpinned".into(),
        "--cpus".into(),
        list(&s.engine_cpus),
        "--".into(),
    ];
    out.extend_from_slice(argv);
    out
}

/// `runner engine unpinned`: sets this process's CPUs, then becomes `argv` (same pid, same
/// process group). Returns only on failure.
pub fn exec_unpinned(cpus: &[usize], argv: &[String]) -> String {
    use std::os::unix::process::CommandExt;
    if let Err(e) = cpu_set(cpus).and_then(|set| {
        sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("sched_setaffinity: {e}"))
    }) {
        return e;
    }
    let Some((program, args)) = argv.split_first() else {
        return "no command to run".into();
    };
    let e = std::process::Command::new(program).args(args).exec();
    format!("cannot start `{program}`: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_argv_is_unchanged_when_the_client_is_not_pinned() {
        let argv = vec!["vllm".to_string(), "serve".to_string()];
        // No `apply` ran in this test process with CPUs.
        if SETUP.get().is_none() {
            assert_eq!(engine_argv(&argv), argv);
        }
        assert_eq!(list(&[0, 2, 3]), "0,2,3");
        assert!(!allowed_cpus().is_empty());
    }
}
