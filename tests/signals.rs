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
