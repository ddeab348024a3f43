//! Ctrl-C and SIGTERM: the first signal stops new requests, lets in-flight ones finish within a
//! grace period, tears engines down and writes the bundle marked `interrupted` (exit 130); a
//! second signal kills every engine group at once.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PLAN: &str = r#"
schema = 1
name = "signals"
[[engine]]
name = "e"
launch = "{runner} engine sim --port {port} --model m --ttft-ms 5 --itl-ms 20 FLAGS"
model = "m"
stop_grace = "GRACE"
[engine.health]
interval = "20ms"
[[engine]]
name = "never-reached"
launch = "{runner} engine sim --port {port} --model m"
model = "m"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 20
[workload.load]
concurrency = [2, 4]
requests = 100000
warmup = 0
"#;

/// Starts `runner exec` and returns it with a channel of its stderr lines.
fn start(s: &Scratch) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .current_dir(s.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start runner");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) {
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => continue,
            Err(e) => panic!("never saw {needle:?} on stderr: {e}"),
        }
    }
}

fn wait_for_records(s: &Scratch) {
    wait_for_journal(&s.path().join("results"), "signals", "e.w.c2");
}

#[test]
fn first_signal_writes_an_interrupted_bundle_and_exits_130() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &PLAN.replace("FLAGS", "").replace("GRACE", "60s"),
    );
    let (mut child, rx) = start(&s);
    wait_for(&rx, "[e] ready");
    wait_for_records(&s);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let bundle = find_bundle(&s.path().join("results"));
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "interrupted");
    assert_eq!(m["engines"][0]["status"], "stopped");
    assert_eq!(m["engines"][1]["status"], "skipped");
    let c2 = read_json(&bundle.join("cells/e.w.c2.summary.json"));
    assert_eq!(c2["status"], "interrupted");
    assert!(
        c2["metrics"]["requests_ok"].as_u64().expect("ok") >= 1,
        "{c2}"
    );
    assert!(c2["slo"].is_null());
    let c4 = read_json(&bundle.join("cells/e.w.c4.summary.json"));
    assert_eq!(c4["status"], "interrupted");
    assert!(bundle.join("report.md").is_file());
    // Every journaled line is whole JSON: nothing half-written.
    let journal =
        std::fs::read_to_string(bundle.join("cells/e.w.c2.records.jsonl")).expect("journal");
    for line in journal.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("a whole record");
    }
    assert_no_engine_survives(&m);
}

#[test]
fn second_signal_kills_every_engine_group_at_once() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &PLAN
            .replace("FLAGS", "--ignore-sigterm --fork-children 1")
            .replace("GRACE", "120s"),
    );
    let (mut child, rx) = start(&s);
    wait_for(&rx, "[e] ready");
    wait_for_records(&s);
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGTERM).expect("first signal");
    wait_for(&rx, "stopping:");
    kill(pid, Signal::SIGINT).expect("second signal");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let bundle = find_bundle(&s.path().join("results"));
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "interrupted");
    let stop = &m["engines"][0]["stop"];
    assert_eq!(stop["killed"], true, "{stop}");
    // Killed on the second signal, not after the 120 s grace period: the grace timer never
    // ends early, so a stop shorter than the grace can only be the signal's doing, however
    // slow the machine.
    assert!(stop["took_s"].as_f64().expect("took") < 120.0, "{stop}");
    assert_no_engine_survives(&m);
}

/// The signals plan with `n` concurrency levels: a grid far larger than the run will reach.
fn huge_grid(n: usize, flags: &str, grace: &str) -> String {
    let levels: Vec<String> = (1..=n).map(|c| c.to_string()).collect();
    PLAN.replace("FLAGS", flags)
        .replace("GRACE", grace)
        .replace(
            "concurrency = [2, 4]",
            &format!("concurrency = [{}]", levels.join(", ")),
        )
        .replace("e.w.c2", "e.w.c1")
}

/// Counts renames onto `manifest.json` in `dir` (every manifest write is one) until `stop`
/// returns, through inotify: the count is what the runner did, not how long it took.
fn manifest_writes_during(dir: &std::path::Path, stop: impl FnOnce()) -> usize {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_NONBLOCK).expect("inotify");
    ino.add_watch(dir, AddWatchFlags::IN_MOVED_TO)
        .expect("watch the bundle");
    stop();
    let mut n = 0;
    while let Ok(events) = ino.read_events() {
        if events.is_empty() {
            break;
        }
        n += events
            .iter()
            .filter(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("manifest.json")))
            .count();
    }
    n
}

#[test]
fn an_interrupt_marks_every_unreached_cell_in_a_few_manifest_writes() {
    const LEVELS: usize = 2000;
    let s = Scratch::new();
    s.write("plan.toml", &huge_grid(LEVELS, "", "10s"));
    let (mut child, rx) = start(&s);
    wait_for(&rx, "[e] ready");
    let bundle = wait_for_journal(&s.path().join("results"), "signals", "e.w.c1");
    let writes = manifest_writes_during(&bundle, || {
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal");
        assert_eq!(child.wait().expect("wait").code(), Some(130));
    });
    // The cell cut short, the batch of unreached cells, teardown, the skipped engine, the
    // end of the run: a handful, whatever the grid's size (it was one per unreached cell).
    assert!(
        writes <= 10,
        "{writes} manifest writes to mark {LEVELS} unreached cells"
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "interrupted");
    let cells = m["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 2 * LEVELS);
    assert!(cells.iter().all(|c| c["status"] == "interrupted"), "{m}");
    let last = read_json(&bundle.join(format!("cells/e.w.c{LEVELS}.summary.json")));
    assert_eq!(last["status"], "interrupted");
    assert_eq!(last["reason"], "not run: the run was interrupted");
    assert_no_engine_survives(&m);
}

#[test]
fn a_second_signal_kills_the_engines_from_the_handler_itself() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &huge_grid(200, "--ignore-sigterm --fork-children 1", "120s"),
    );
    let (mut child, rx) = start(&s);
    wait_for(&rx, "[e] ready");
    let bundle = wait_for_journal(&s.path().join("results"), "signals", "e.w.c1");
    let pgid = read_json(&bundle.join("manifest.json"))["engines"][0]["pid"]
        .as_i64()
        .expect("pid");
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGTERM).expect("first signal");
    wait_for(&rx, "stopping:");
    kill(pid, Signal::SIGINT).expect("second signal");
    // The handler has sent SIGKILL by the time it says so, whatever the pipeline is doing.
    wait_for(&rx, "second signal: killed every engine process at once");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !group_alive(pgid).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(group_alive(pgid).is_empty(), "{:?}", group_alive(pgid));
    assert_eq!(child.wait().expect("wait").code(), Some(130));
}
