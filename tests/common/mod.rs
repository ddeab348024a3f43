//! Helpers shared by the integration tests: run the real `runner` binary on a plan written
//! into a temporary directory, and read back what it wrote.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RUNNER: &str = env!("CARGO_BIN_EXE_runner");

/// A temporary directory holding one plan.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("create a temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }

    /// Runs `runner ARGS` with the scratch directory as the working directory.
    pub fn runner(&self, args: &[&str]) -> Output {
        Command::new(RUNNER)
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("run the runner binary")
    }

    /// Runs `runner exec PLAN --results results` and returns the output and the bundle.
    pub fn exec(&self, plan: &str) -> (Output, PathBuf) {
        let out = self.runner(&["exec", plan, "--results", "results"]);
        let bundle = find_bundle(&self.path().join("results"));
        (out, bundle)
    }
}

/// The one bundle under `results/<plan>/`.
pub fn find_bundle(results: &Path) -> PathBuf {
    let plan_dirs: Vec<_> = std::fs::read_dir(results)
        .unwrap_or_else(|e| panic!("no results dir {}: {e}", results.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(plan_dirs.len(), 1, "one plan dir in {}", results.display());
    let bundles: Vec<_> = std::fs::read_dir(&plan_dirs[0])
        .expect("read plan dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(bundles.len(), 1, "one bundle in {}", plan_dirs[0].display());
    bundles[0].clone()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

pub fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether a process with this PID still exists (zombies count as gone).
pub fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Every live process whose process group is `pgid`.
pub fn group_alive(pgid: i64) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X") {
            out.push(stat[..close + 1].to_string());
        }
    }
    out
}

/// Asserts that no process of any engine in the manifest survived.
pub fn assert_no_engine_survives(manifest: &serde_json::Value) {
    for e in manifest["engines"].as_array().expect("engines") {
        if let Some(pid) = e["pid"].as_i64() {
            assert!(
                !alive(pid),
                "engine {} (pid {pid}) is still alive",
                e["name"]
            );
            let left = group_alive(pid);
            assert!(
                left.is_empty(),
                "engine {} left processes: {left:?}",
                e["name"]
            );
        }
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `runner ARGS` (an engine) and returns it with the base URL it prints once it
/// listens: the listening line is the synchronization, not the clock.
pub fn spawn_engine(args: &[&str]) -> (Guard, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(RUNNER)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the engine");
    let stdout = child.stdout.take().expect("stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the listening line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (guard, url)
}

/// How long a test waits for something the runner will do, however loaded the machine: a
/// deadline for a poll, never a measurement.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(180);

/// Waits, bounded by `PATIENCE`, until the journal of `cell` in some bundle under
/// `results/<plan>` holds a record; returns that bundle. Polls the file: the runner has no
/// other signal for it.
pub fn wait_for_journal(results: &Path, plan: &str, cell: &str) -> PathBuf {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if let Ok(d) = std::fs::read_dir(results.join(plan)) {
            for b in d.flatten() {
                let f = b.path().join(format!("cells/{cell}.records.jsonl"));
                if std::fs::metadata(&f).is_ok_and(|m| m.len() > 0) {
                    return b.path();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no record of {cell} was journaled within {PATIENCE:?}");
}

/// The cell's summary, typed.
pub fn summary(bundle: &Path, cell: &str) -> runner::bundle::format::CellSummary {
    let v = read_json(&bundle.join(format!("cells/{cell}.summary.json")));
    serde_json::from_value(v).unwrap_or_else(|e| panic!("summary of {cell}: {e}"))
}

/// The records the cell journaled, in journal order.
pub fn records(bundle: &Path, cell: &str) -> Vec<runner::metrics::record::RequestRecord> {
    let path = bundle.join(format!("cells/{cell}.records.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record {l}: {e}")))
        .collect()
}

/// A cell's metrics recomputed from its own records, as JSON read back the way the summary
/// file is (so floats compare exactly): a summary equal to this is derived from the journal
/// and from nothing else.
pub fn metrics_from_records(
    records: &[runner::metrics::record::RequestRecord],
    max_tokens: u64,
    open_loop: bool,
) -> serde_json::Value {
    let mut acc = runner::metrics::summary::Accumulator::new(Some(max_tokens), None);
    if open_loop {
        acc = acc.open_loop();
    }
    for r in records {
        acc.add(r);
    }
    as_read_back(&acc.finish())
}

/// The statistics of `values` (microseconds) as the summary writes them, read back.
pub fn stats_of(values: impl IntoIterator<Item = u64>) -> serde_json::Value {
    let mut h = runner::metrics::summary::LatencyHistogram::default();
    for v in values {
        h.record(v);
    }
    as_read_back(&h.stats())
}

/// `v` as the summary file gives it back: written as text and parsed again (serde_json's
/// parser may land one unit in the last place away from the value written).
pub fn read_back(v: f64) -> f64 {
    as_read_back(&v).as_f64().expect("a number")
}

fn as_read_back(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::from_str(&serde_json::to_string(v).expect("serialize")).expect("parse")
}

/// Asserts that `valid` and `invalid_reason` are the client self-check's verdict on the
/// cell's own figures, with `max_lag` the plan's `max_dispatch_lag`: whether a loaded machine
/// kept up is the machine's business; deciding it from the figures is the runner's.
pub fn assert_validity_follows_the_figures(
    c: &runner::bundle::format::CellSummary,
    max_lag: std::time::Duration,
) {
    let m = c.metrics.as_ref().expect("metrics");
    let usage = c.client.as_ref().expect("client usage");
    let verdict = runner::metrics::client_check::verdict(m, usage, max_lag);
    assert_eq!(c.valid, verdict.is_none(), "{c:?}");
    assert_eq!(c.invalid_reason, verdict, "{c:?}");
}

/// Copies a bundle directory, applying `edit` to every JSON file (by its path inside it).
pub fn derive_bundle(from: &Path, to: &Path, edit: &dyn Fn(&str, &mut serde_json::Value)) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).expect("inside");
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        let name = rel.to_string_lossy().into_owned();
        if name.ends_with(".json") {
            let mut v = read_json(&entry);
            edit(&name, &mut v);
            std::fs::write(&dest, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
        } else {
            std::fs::copy(&entry, &dest).expect("copy");
        }
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Writes an executable script. The file is written by a `sh` child, never through a file
/// descriptor of this process: a test thread that forks (to spawn anything) while another
/// thread holds a script open for writing gives the child a copy of that descriptor until it
/// execs, and executing the script in that window fails with ETXTBSY ("Text file busy"), a
/// flake seen in tests/cluster.rs.
pub fn write_executable(path: &Path, text: &str) {
    use std::io::Write;
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sh to write a script");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the script");
    let status = child.wait().expect("wait for sh");
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
}
