//! What the bundle records about where and from what a run came: host facts and the plan's
//! git state.

use std::path::Path;
use std::process::Command;

use crate::bundle::format::{HostInfo, PlanInfo};
use crate::plan::model::Plan;

/// This machine.
pub fn host_info() -> HostInfo {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let memory_total_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    HostInfo {
        hostname,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        // Pinned (`[client] cpus`), this thread sees only the client's CPUs: the machine's are
        // the ones the runner had before.
        cpus: match crate::affinity::setup().filter(|s| !s.engine_cpus.is_empty()) {
            Some(s) => s.engine_cpus.len(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        memory_total_bytes,
        client: crate::affinity::setup().cloned(),
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The plan's identity: path, hash, and the git commit it was run from.
pub fn plan_info(plan: &Plan) -> PlanInfo {
    let dir = plan
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = plan
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned());
    // Only a plan file the repository tracks was run "from" its commit: an untracked plan in
    // some checkout says nothing about that checkout's HEAD.
    let tracked = file
        .as_deref()
        .is_some_and(|f| git(dir, &["ls-files", "--error-unmatch", "--", f]).is_some());
    let git_commit = tracked.then(|| git(dir, &["rev-parse", "HEAD"])).flatten();
    let git_dirty = match (&git_commit, file) {
        (Some(_), Some(f)) => git(dir, &["status", "--porcelain", "--", &f]).map(|s| !s.is_empty()),
        _ => None,
    };
    PlanInfo {
        name: plan.name.clone(),
        path: plan.path.display().to_string(),
        sha256: plan.sha256.clone(),
        git_commit,
        git_dirty,
        dir: plan_dir(plan).map(|d| d.display().to_string()),
        includes: plan
            .includes
            .iter()
            .enumerate()
            .map(|(i, f)| crate::bundle::format::IncludeRecord {
                include: f.include.clone(),
                path: f.path.display().to_string(),
                stored: crate::bundle::layout::include_copy(i, &f.path),
                sha256: f.sha256.clone(),
            })
            .collect(),
    }
}

/// The plan's directory, absolute and with `.`/`..` resolved by name.
pub fn plan_dir(plan: &Plan) -> Option<std::path::PathBuf> {
    let abs = std::path::absolute(&plan.path).ok()?;
    Some(crate::cluster::travel::lexical(abs.parent()?))
}

/// An engine's launched command in its travelling form: paths under the plan's directory as
/// `{plan_dir}/...`, and argv[0] that is this runner binary as `{runner}`.
pub fn relative_argv(argv: &[String], plan_dir: Option<&Path>) -> Vec<String> {
    let mut out = match plan_dir {
        Some(dir) => crate::cluster::travel::relative_argv(argv, dir),
        None => argv.to_vec(),
    };
    let runner = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    if let (Some(first), Some(runner)) = (argv.first(), runner) {
        if std::path::Path::new(first).canonicalize().ok().as_ref() == Some(&runner) {
            out[0] = "{runner}".to_string();
        }
    }
    out
}
