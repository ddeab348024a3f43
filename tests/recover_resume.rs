//! A runner killed with SIGKILL leaves a journal that `runner recover` turns into an honest
//! bundle (and it kills the engines left behind); `runner exec --resume` finishes a bundle,
//! skipping the cells already measured, and refuses if the plan changed.

mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn recover_rebuilds_a_bundle_after_sigkill_and_kills_leftover_engines() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        r#"
schema = 1
name = "killed"
[[engine]]
name = "e"
launch = "{runner} engine sim --port {port} --model m --ttft-ms 2 --itl-ms 5"
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [2, 4]
requests = 100000
warmup = 0
"#,
    );
    let mut child = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results", "--quiet"])
        .current_dir(s.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runner");
    // Once the journal has been flushed at least once, kill -9.
    let bundle = wait_for_journal(&s.path().join("results"), "killed", "e.w.c2");
    child.kill().expect("SIGKILL the runner");
    child.wait().expect("reap");

    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(
        m["status"], "running",
        "a killed runner cannot finish its manifest"
    );
    let pgid = m["engines"][0]["pid"].as_i64().expect("pid");
    assert!(
        !group_alive(pgid).is_empty(),
        "the engine outlived the killed runner"
    );

    let out = s.runner(&["recover", bundle.to_str().expect("path")]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("killed a leftover engine process group: e")
    );
    assert!(
        group_alive(pgid).is_empty(),
        "recover killed the leftover engine group"
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "interrupted");
    let c = read_json(&bundle.join("cells/e.w.c2.summary.json"));
    assert_eq!(c["status"], "interrupted");
    assert!(c["reason"]
        .as_str()
        .expect("reason")
        .contains("recovered from the journal"));
    let lines = std::fs::read_to_string(bundle.join("cells/e.w.c2.records.jsonl"))
        .expect("journal")
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count() as u64;
    assert_eq!(c["metrics"]["requests_total"].as_u64(), Some(lines));
    assert!(lines > 0);
    assert!(bundle.join("report.md").is_file());
    // Recovering twice is refused: the bundle is no longer running.
    let again = s.runner(&["recover", bundle.to_str().expect("path")]);
    assert_eq!(again.status.code(), Some(1));
}

const FLAKY: &str = r#"
schema = 1
name = "flaky"
[[engine]]
name = "good"
launch = "{runner} engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1"
model = "m"
[engine.health]
interval = "20ms"
[[engine]]
name = "flaky"
# Fails to start until a file named `ok` exists next to the plan.
launch = ["sh", "-c", "test -f ok && exec \"$0\" engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1 || (echo 'not yet'; exit 3)", "{runner}"]
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 2
[workload.load]
concurrency = [1, 2]
requests = 3
warmup = 0
# A loaded machine can delay the client past the 10 ms default; this test is not about it.
max_dispatch_lag = "10s"
"#;

#[test]
fn resume_runs_only_the_cells_not_yet_measured() {
    let s = Scratch::new();
    s.write("plan.toml", FLAKY);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let before = read_json(&bundle.join("cells/good.w.c1.summary.json"));
    assert_eq!(
        read_json(&bundle.join("cells/flaky.w.c1.summary.json"))["status"],
        "failed"
    );

    s.write("ok", "");
    let b = bundle.to_str().expect("path");
    let out = s.runner(&["exec", "plan.toml", "--resume", b]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("[good] launching"),
        "good's cells were already measured: {stderr}"
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "complete");
    assert!(
        m["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .all(|c| c["status"] == "ok"),
        "{m}"
    );
    assert_eq!(
        read_json(&bundle.join("cells/good.w.c1.summary.json")),
        before
    );
    assert_eq!(
        read_json(&bundle.join("cells/flaky.w.c2.summary.json"))["status"],
        "ok"
    );
    assert_eq!(
        std::fs::read_dir(bundle.parent().expect("plan dir"))
            .expect("dir")
            .count(),
        1,
        "no new bundle"
    );
}

#[test]
fn resume_refuses_a_changed_plan() {
    let s = Scratch::new();
    s.write("plan.toml", FLAKY);
    let (_, bundle) = s.exec("plan.toml");
    s.write("plan.toml", &FLAKY.replace("requests = 3", "requests = 4"));
    let out = s.runner(&[
        "exec",
        "plan.toml",
        "--resume",
        bundle.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("the plan changed since this bundle was written"));
}
