//! `command`: an evaluation program (lm-eval, a script) run against a ready engine, in its own
//! process group, with a timeout; its stdout and stderr go to files in the bundle, and its
//! metric is read from a JSON file it wrote, with a JSON pointer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::plan::placeholder;
use crate::plan::quality::CommandSpec;
use crate::stop::Cancel;

/// How long a command has between SIGTERM and SIGKILL, on timeout or a stop.
const GRACE: Duration = Duration::from_secs(5);

/// Fills in `{url}`, `{model}`, `{api}`, `{out}` and `{name}` (doubled braces become one).
pub fn expand(argv: &[String], vars: &BTreeMap<&str, String>) -> Vec<String> {
    argv.iter()
        .map(|w| {
            placeholder::scan(w, false, |k| Ok::<_, ()>(vars.get(k).cloned()))
                .unwrap_or_else(|()| w.clone())
        })
        .collect()
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// Stopped because the run is stopping.
    pub interrupted: bool,
    pub took_s: f64,
    /// It could not be started.
    pub error: Option<String>,
}

impl Ran {
    /// Why the command's result cannot be used, if it cannot.
    pub fn failure(&self, timeout: Duration) -> Option<String> {
        if let Some(e) = &self.error {
            Some(e.clone())
        } else if self.timed_out {
            Some(format!(
                "the command ran for more than {} (`timeout`) and was stopped",
                humantime::format_duration(timeout)
            ))
        } else if self.interrupted {
            Some("the command was stopped: the run was interrupted".into())
        } else {
            match self.exit_code {
                Some(0) => None,
                Some(c) => Some(format!("the command exited with code {c}; see its stderr")),
                None => Some("the command was killed by a signal".into()),
            }
        }
    }
}

/// Runs `argv` in `spec.cwd` with `spec.env` added, output to `stdout` and `stderr`.
pub async fn run(
    spec: &CommandSpec,
    argv: &[String],
    stdout: &Path,
    stderr: &Path,
    cancel: &Cancel,
) -> Ran {
    let started = Instant::now();
    let failed = |e: String| Ran {
        exit_code: None,
        timed_out: false,
        interrupted: false,
        took_s: started.elapsed().as_secs_f64(),
        error: Some(e),
    };
    let open = |p: &Path| {
        std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
    };
    let (out, err) = match (open(stdout), open(stderr)) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => return failed(e),
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot run `{}`: {e}", argv[0])),
    };
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    let (mut timed_out, mut interrupted) = (false, false);
    let status = tokio::select! {
        s = child.wait() => s.ok(),
        () = tokio::time::sleep(spec.timeout) => { timed_out = true; None }
        () = cancel.stopping() => { interrupted = true; None }
    };
    let status = match status {
        Some(s) => Some(s),
        None => {
            if let Some(g) = pgid {
                let _ = killpg(g, Signal::SIGTERM);
            }
            match tokio::time::timeout(GRACE, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    if let Some(g) = pgid {
                        let _ = killpg(g, Signal::SIGKILL);
                    }
                    child.wait().await.ok()
                }
            }
        }
    };
    // Whatever it left running in its group goes with it.
    if let Some(g) = pgid {
        let _ = killpg(g, Signal::SIGKILL);
    }
    Ran {
        exit_code: status.and_then(|s| s.code()),
        timed_out,
        interrupted,
        took_s: started.elapsed().as_secs_f64(),
        error: None,
    }
}

/// The metric: the last file under `out` matching `glob`, and the number at `pointer` in it.
pub fn read_metric(out: &Path, glob: &str, pointer: &str) -> Result<(PathBuf, f64), String> {
    let found = super::glob::find(out, glob);
    let Some(file) = found.last() else {
        return Err(format!("no file under {{out}} matches `{glob}`"));
    };
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
    let at = v
        .pointer(pointer)
        .ok_or_else(|| format!("`{pointer}` finds nothing in {}", file.display()))?;
    let x = at
        .as_f64()
        .ok_or_else(|| format!("`{pointer}` in {} is {at}, not a number", file.display()))?;
    Ok((file.clone(), x))
}
