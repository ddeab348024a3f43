//! The receive side of the client's self-check (issue 20): a cell whose responses the client
//! could not observe as they came is invalid, naming why. One engine sends every response whole
//! after its last token is due; another run pins the client (`[client] cpus`) and is kept off the
//! CPU by SIGSTOP most of the time. The assertions rest only on what those setups make certain:
//! a response sent in one write arrives within 1 ms, one streamed a token every 60 ms never
//! does; a process stopped twice as long as it runs wakes its timer late by far more than a
//! tenth of `max_dispatch_lag`. (A busy spinner on the client's CPU, even at nice -20, did not:
//! the scheduler let the timer thread in on time often enough, once in about twenty full runs
//! under a parallel build.)

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn plan(sim_flags: &str, top: &str, load: &str) -> String {
    format!(
        r#"
schema = 1
name = "starve"
{top}
[[engine]]
name = "e"
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 20 --itl-ms 5 {sim_flags}"
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 16
[workload.load]
warmup = 0
concurrency = [1]
requests = 4
{load}
"#
    )
}

/// A realtime client starves whatever else runs on its CPU: the tests of this file take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn cell(bundle: &std::path::Path) -> serde_json::Value {
    read_json(&bundle.join("cells/e.w.c1.summary.json"))
}

#[test]
fn responses_sent_whole_make_the_cell_invalid_and_streamed_ones_do_not() {
    let _turn = turn();
    let s = Scratch::new();
    s.write(
        "burst.toml",
        &plan("--burst", "", "max_dispatch_lag = \"10s\""),
    );
    let (out, bundle) = s.exec("burst.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c = cell(&bundle);
    assert_eq!(c["valid"], false, "{c}");
    let why = c["invalid_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("client starved")
            && why.contains("4 of 4 streamed responses arrived in one burst"),
        "{why}"
    );
    assert!(why.contains("[client] cpus"), "says what to try: {why}");
    assert_eq!(c["metrics"]["burst_responses"], 4, "{c}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("arrived in one burst"), "{report}");

    // The same engine streaming: every response checked, none a burst. Its tokens come 60 ms
    // apart (a response spans 900 ms), so only a client kept off the CPU for a whole response
    // could see one as a burst; with 5 ms (75 ms) a loaded machine did, once in six full runs.
    let s = Scratch::new();
    s.write(
        "stream.toml",
        &plan("", "", "max_dispatch_lag = \"10s\"")
            .replace("\"starve\"", "\"stream\"")
            .replace("--itl-ms 5 ", "--itl-ms 60 "),
    );
    let (out, bundle) = s.exec("stream.toml");
    let c = cell(&bundle);
    assert_eq!(
        (
            &c["metrics"]["burst_checked"],
            &c["metrics"]["burst_responses"]
        ),
        (&serde_json::json!(4), &serde_json::json!(0)),
        "{c}\n{}",
        text(&out)
    );
    let why = c["invalid_reason"].as_str().unwrap_or_default();
    assert!(!why.contains("burst"), "{why}");
}

/// Runs `runner exec PLAN` while keeping it off the CPU: SIGSTOP, wait, SIGCONT, wait, until it
/// exits. Each stop lasts at least 50 ms and twice as long as the running spell before it (from
/// SIGCONT to the next SIGSTOP, however late this thread came back), so the runner's 2 ms timer
/// wakes more than 3 ms late on average over any stretch holding a few stops, whatever the
/// machine does: the setup, not the scheduler, decides that the client is starved.
fn exec_kept_off_the_cpu(s: &Scratch, plan: &str) -> (std::process::ExitStatus, PathBuf) {
    use nix::sys::signal::{kill, Signal};
    use std::time::{Duration, Instant};
    let log = |name: &str| std::fs::File::create(s.path().join(name)).expect("a log file");
    let mut child = Command::new(RUNNER)
        .args(["exec", plan, "--results", "results"])
        .current_dir(s.path())
        .stdout(log("stdout.txt"))
        .stderr(log("stderr.txt"))
        .spawn()
        .expect("start the runner");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut resumed: Option<Instant> = None;
    let status = loop {
        // Signalled only while unreaped: the pid cannot belong to anyone else.
        if let Some(status) = child.try_wait().expect("wait for the runner") {
            break status;
        }
        kill(pid, Signal::SIGSTOP).expect("stop the runner");
        // How long it ran since the last SIGCONT, however late this thread came back.
        let ran = resumed.map_or(Duration::ZERO, |t| t.elapsed());
        std::thread::sleep((2 * ran).max(Duration::from_millis(50)));
        kill(pid, Signal::SIGCONT).expect("continue the runner");
        resumed = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, find_bundle(&s.path().join("results")))
}

#[test]
fn a_pinned_client_kept_off_the_cpu_is_starved_and_its_engine_is_not_pinned() {
    let _turn = turn();
    let cpus = runner::affinity::allowed_cpus();
    let cpu = *cpus.last().expect("some CPU");
    let s = Scratch::new();
    // The engine prints the CPUs it may use, then becomes the sim.
    let p = plan("", &format!("[client]\ncpus = [{cpu}]"), "").replace(
        "launch = \"{runner} engine sim",
        "launch = \"sh -c 'grep Cpus_allowed_list /proc/self/status; exec \\\"$0\\\" \\\"$@\\\"' {runner} engine sim",
    );
    // Four responses of 16 tokens 30 ms apart: a cell of 1.9 s at least, so it spans many stops
    // even if this test's thread is kept waiting for a CPU itself.
    let p = p.replace("--itl-ms 5 ", "--itl-ms 30 ");
    s.write("pinned.toml", &p);
    let (status, bundle) = exec_kept_off_the_cpu(&s, "pinned.toml");
    let out = || {
        ["stdout.txt", "stderr.txt"]
            .map(|f| std::fs::read_to_string(s.path().join(f)).unwrap_or_default())
            .join("\n")
    };
    assert_eq!(status.code(), Some(3), "{}", out());
    let c = cell(&bundle);
    assert_eq!(c["valid"], false, "{c}\n{}", out());
    let why = c["invalid_reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("client starved") && why.contains("timer thread woke"),
        "{why}"
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["host"]["client"]["cpus"], serde_json::json!([cpu]), "{m}");
    // The engine kept the CPUs the runner had before it was pinned.
    let log = std::fs::read_to_string(bundle.join("logs/e.log")).expect("engine log");
    let line = log
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .unwrap_or_else(|| panic!("no CPU list in the engine log: {log}"));
    if cpus.len() > 1 {
        // "0-1" or "0,1": anything but the client's one CPU.
        assert_ne!(
            line.split_whitespace().nth(1),
            Some(cpu.to_string().as_str()),
            "{line}"
        );
    }
}

/// `[client] priority = "realtime"` is best effort: granted, the runner is SCHED_FIFO and its
/// engine is not (reset on fork); refused, a warning is recorded and the run goes on.
#[test]
fn a_realtime_client_leaves_its_engine_at_the_normal_policy() {
    if Command::new("chrt").arg("--version").output().is_err() {
        eprintln!("skipped: no chrt");
        return;
    }
    let _turn = turn();
    let s = Scratch::new();
    let p = plan(
        "",
        "[client]\npriority = \"realtime\"",
        "max_dispatch_lag = \"10s\"",
    )
    .replace(
        "launch = \"{runner} engine sim",
        "launch = \"sh -c 'chrt -p $$; exec \\\"$0\\\" \\\"$@\\\"' {runner} engine sim",
    );
    s.write("rt.toml", &p);
    let (out, bundle) = s.exec("rt.toml");
    let m = read_json(&bundle.join("manifest.json"));
    let client = &m["host"]["client"];
    assert_eq!(client["realtime_requested"], true, "{m}\n{}", text(&out));
    let log = std::fs::read_to_string(bundle.join("logs/e.log")).expect("engine log");
    if client["realtime"] == true {
        assert!(log.contains("SCHED_OTHER"), "{log}");
    } else {
        let w = client["warnings"][0].as_str().unwrap_or_default();
        assert!(w.contains("was not applied"), "{m}");
        assert!(text(&out).contains("was not applied"), "{}", text(&out));
    }
}
