//! Hostile engines that answer without generating, abort, lie about usage or die with requests
//! in flight: the bundle, the report and the exit code must say so (docs/reliability.md,
//! cases 4, 5, 7 and 11 of issue 13). Each is provoked with the built-in engine's hidden fault
//! knobs and judged on what the runner decided, never on timings.

mod common;

use common::*;

/// A plan with one sim engine (extra flags) and one workload (extra keys, load keys).
fn plan(sim_flags: &str, workload_keys: &str, load: &str) -> String {
    format!(
        r#"
schema = 1
name = "honest"
[[engine]]
name = "e"
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 5 --itl-ms 5 {sim_flags}"
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
{workload_keys}
[workload.load]
warmup = 0
{load}
"#
    )
}

fn cell(bundle: &std::path::Path, id: &str) -> serde_json::Value {
    read_json(&bundle.join(format!("cells/{id}.summary.json")))
}

#[test]
fn answers_that_generate_nothing_or_abort_are_failures_by_class() {
    let cases = [
        (
            "--empty-output --finish-reason stop",
            "true",
            "empty_output",
        ),
        (
            "--empty-output --finish-reason stop",
            "false",
            "empty_output",
        ),
        ("--finish-reason abort", "true", "aborted"),
        ("--finish-reason error", "false", "aborted"),
    ];
    for (flags, stream, class) in cases {
        let s = Scratch::new();
        s.write(
            "plan.toml",
            &plan(
                flags,
                &format!("stream = {stream}"),
                "concurrency = [2]\nrequests = 4",
            ),
        );
        let (out, bundle) = s.exec("plan.toml");
        assert_eq!(out.status.code(), Some(3), "{flags}: {}", text(&out));
        let c = cell(&bundle, "e.w.c2");
        assert_eq!(c["status"], "failed", "{flags}: {c}");
        assert_eq!(c["metrics"]["requests_ok"], 0, "{flags}: {c}");
        assert_eq!(c["metrics"]["failures"][class], 4, "{flags}: {c}");
        assert!(c["slo"].is_null(), "{flags}: {c}");
        assert_no_engine_survives(&read_json(&bundle.join("manifest.json")));
    }
}

#[test]
fn a_workload_can_declare_empty_outputs_legitimate() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--empty-output --finish-reason stop",
            "allow_empty_output = true",
            "concurrency = [1]\nrequests = 3",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = cell(&bundle, "e.w.c1");
    assert_eq!(c["metrics"]["requests_ok"], 3, "{c}");
    assert_eq!(c["metrics"]["output_tokens"], 0, "{c}");
}

#[test]
fn the_idle_clock_starts_at_the_first_token() {
    // Headers (and the chat role chunk) at once, the first token after 1.5 s: the idle timeout
    // of 300 ms must not fire before it, the first-token timeout of 20 s governs.
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--ttft-ms 1500",
            "",
            "concurrency = [2]\nrequests = 2\nidle_timeout = \"300ms\"\nfirst_token_timeout = \"20s\"",
        )
        .replacen("--ttft-ms 5 ", "", 1),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = cell(&bundle, "e.w.c2");
    assert_eq!(c["metrics"]["requests_ok"], 2, "{c}");
}
