//! The receive side of the client's self-check (issue 20): a cell whose responses the client
//! could not observe as they came is invalid, naming why. One engine sends every response whole
//! after its last token is due; another run pins the client (`[client] cpus`) to a CPU that a
//! busy-spinning helper at the highest priority holds. The assertions rest only on what those
//! setups make certain: 16 tokens 5 ms apart span 75 ms, never under the 1 ms of a burst; a
//! response sent in one write arrives within it; a thread that competes for its only CPU with a
//! nice -20 spinner waits on the run queue for most of the cell (about 99% of the CPU is the
//! spinner's).

mod common;

use std::process::{Child, Command};

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

/// The spinner starves whatever else runs on its CPU: the tests of this file take turns.
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

/// A helper that spins on one CPU at the highest priority, stopped on drop.
struct Spinner(Child);

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spin_on(cpu: usize) -> Spinner {
    // nice -20 needs privileges; without them the spinner runs at the default priority, which
    // still halves the client's share of the CPU.
    let nice = if nix::unistd::geteuid().is_root() {
        "-20"
    } else {
        "0"
    };
    Spinner(
        Command::new("taskset")
            .args(["-c", &cpu.to_string(), "nice", "-n", nice])
            .args(["sh", "-c", "while :; do :; done"])
            .spawn()
            .expect("start the spinner (taskset, nice)"),
    )
}

#[test]
fn a_client_pinned_under_a_busy_spinner_is_starved_and_its_engine_is_not_pinned() {
    if Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("skipped: no taskset");
        return;
    }
    let _turn = turn();
    let cpus = runner::affinity::allowed_cpus();
    let cpu = *cpus.last().expect("some CPU");
    let s = Scratch::new();
    // The engine prints the CPUs it may use, then becomes the sim.
    let p = plan("", &format!("[client]\ncpus = [{cpu}]"), "").replace(
        "launch = \"{runner} engine sim",
        "launch = \"sh -c 'grep Cpus_allowed_list /proc/self/status; exec \\\"$0\\\" \\\"$@\\\"' {runner} engine sim",
    );
    s.write("pinned.toml", &p);
    let spinner = spin_on(cpu);
    let (out, bundle) = s.exec("pinned.toml");
    drop(spinner);
    let c = cell(&bundle);
    assert_eq!(c["valid"], false, "{c}\n{}", text(&out));
    let why = c["invalid_reason"].as_str().unwrap_or_default();
    assert!(why.contains("client starved"), "{why}");
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
