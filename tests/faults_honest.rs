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
max_dispatch_lag = "10s"
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
        let m = read_json(&bundle.join("manifest.json"));
        // Every cell failed: `complete`, but never without saying so.
        assert_eq!(m["status"], "complete");
        assert!(
            m["message"]
                .as_str()
                .is_some_and(|t| t.starts_with("every cell failed")),
            "{flags}: {m}"
        );
        let listing = s.runner(&["list", "results"]);
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        assert!(
            listing.contains("complete, nothing measured") && listing.contains("0/1"),
            "{flags}: {listing}"
        );
        assert_no_engine_survives(&m);
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
    // Headers (and the chat role chunk) at once, the first token after 3 s: the idle timeout
    // of 1 s must not fire before it, the first-token timeout of 20 s governs. (After the first
    // token, tokens come 5 ms apart: a 1 s silence there would take a stalled machine.)
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--ttft-ms 3000",
            "",
            "concurrency = [2]\nrequests = 2\nidle_timeout = \"1s\"\nfirst_token_timeout = \"20s\"",
        )
        .replacen("--ttft-ms 5 ", "", 1),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = cell(&bundle, "e.w.c2");
    assert_eq!(c["metrics"]["requests_ok"], 2, "{c}");
}

#[test]
fn an_engine_lying_about_usage_is_invalid_and_never_compared() {
    // Two engines with the same timings; the second claims 400 tokens for each 4-token answer.
    let s = Scratch::new();
    let p = plan("", "", "concurrency = [1]\nrequests = 3").replacen(
        "[[workload]]",
        r#"[[engine]]
name = "liar"
launch = "{runner} engine sim --port {port} --model m --ttft-ms 5 --itl-ms 5 --lie-usage 400"
model = "m"
[[workload]]"#,
        1,
    );
    s.write("plan.toml", &p);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let honest = cell(&bundle, "e.w.c1");
    assert_eq!(honest["valid"], true, "{honest}");
    let liar = cell(&bundle, "liar.w.c1");
    assert_eq!(liar["valid"], false, "{liar}");
    let why = liar["invalid_reason"].as_str().expect("reason");
    assert!(
        why.contains("token counts cannot be trusted")
            && why.contains("400 completion tokens, above the request's max_tokens 4"),
        "{why}"
    );
    // Its tokens are counted from the chunks received, not from the lie.
    assert_eq!(liar["metrics"]["output_tokens"], 12, "{liar}");
    assert_eq!(liar["metrics"]["usage_untrusted"], 3, "{liar}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(
        !report.contains("the output throughput of"),
        "no finding compares against the liar: {report}"
    );
    assert!(
        report.contains("liar at 1 is invalid, not a result: token counts cannot be trusted"),
        "{report}"
    );
}

#[test]
fn a_cell_with_failed_requests_says_so_with_its_own_exit_code() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--reject-every 2 --retry-after 0",
            "",
            "concurrency = [1]\nrequests = 6",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    // 4: every cell measured and valid, but some requests failed.
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("e.w.c1: 3 of 6 requests failed (mostly http_status:429: HTTP 429")
            && stderr.contains("The server is busy; retry later."),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAILED REQUESTS e at 1: 3 of 6 requests failed"),
        "{stdout}"
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["message"], "1 cells finished with failed requests", "{m}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(
        report.contains("3 of 6 requests failed (mostly http_status:429"),
        "{report}"
    );
}

#[test]
fn requests_in_flight_when_the_engine_dies_are_engine_died() {
    // The engine's leader (a shell) is killed by the sim on the first request, while the sim
    // itself keeps the requests open (they hang before headers): the runner sees its engine
    // exit with requests in flight, and nobody interrupted the run.
    let s = Scratch::new();
    let p = plan("", "", "concurrency = [2]\nrequests = 2").replacen(
        "launch = \"{runner} engine sim --port {port} --model m --ttft-ms 5 --itl-ms 5 \"",
        r#"launch = ["sh", "-c", "{runner} engine sim --port {port} --model m --hang-before-headers --kill-parent-after 0; exit 0"]"#,
        1,
    );
    assert!(p.contains("--kill-parent-after"), "{p}");
    s.write("plan.toml", &p);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c = cell(&bundle, "e.w.c2");
    assert_eq!(c["status"], "engine_died", "{c}");
    assert_eq!(c["failure_class"], "killed_by_signal_9", "{c}");
    let failures = c["metrics"]["failures"].as_object().expect("failures");
    assert_eq!(c["metrics"]["failures"]["engine_died"], 2, "{c}");
    assert!(!failures.contains_key("cancelled"), "{c}");
    assert!(c["metrics"]["failure_examples"]["engine_died"]
        .as_str()
        .is_some_and(|m| m.contains("engine `e` exited while this request was in flight")));
    assert_no_engine_survives(&read_json(&bundle.join("manifest.json")));
}

#[test]
fn an_engine_alive_but_no_longer_listening_is_dead_and_its_other_cells_are_not_run() {
    // The sim answers its fourth request with a 500, closes its port and stays alive, as vllm-awq
    // on CPU once did in CI: the cell's refused requests
    // are the engine's death, not the client's bottleneck, and the cells left are not run.
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--close-port-after 3",
            "",
            "concurrency = [1, 2]\nrequests = 8",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c = cell(&bundle, "e.w.c1");
    assert_eq!(c["status"], "engine_died", "{c}");
    let reason = c["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("engine `e` stopped listening on its port")
            && reason.contains("during cell e.w.c1 (its process is alive"),
        "{reason}"
    );
    assert_eq!(c["metrics"]["requests_ok"], 3, "{c}");
    assert!(
        c["metrics"]["failures"]["connect"].as_u64() > Some(0),
        "{c}"
    );
    assert!(c["log_tail"]
        .as_str()
        .is_some_and(|t| t.contains("closing its port on request 4")));
    let next = cell(&bundle, "e.w.c2");
    assert_eq!(next["status"], "failed", "{next}");
    assert!(next["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("not run: engine `e` stopped listening")));
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["engines"][0]["status"], "failed", "{m}");
    // Alive when it was judged dead: teardown still stopped it.
    assert_no_engine_survives(&m);
}

#[test]
fn a_search_reports_at_least_its_max_and_reuses_the_grid_cell() {
    let s = Scratch::new();
    let p = r#"
schema = 1
name = "honest"
[[engine]]
name = "e"
launch = "{runner} engine sim --port {port} --model m --ttft-ms 5 --itl-ms 5"
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
max_dispatch_lag = "10s"
warmup = 0
concurrency = [2]
requests = 4
[workload.slo]
e2e_p95_ms = 60000
[workload.search]
over = "concurrency"
min = 1
max = 4
max_steps = 6
"#;
    s.write("plan.toml", p);
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let search = &m["searches"][0];
    assert_eq!(search["capacity"]["concurrency"], 4, "{search}");
    assert_eq!(search["capacity_at_max"], true, "{search}");
    let probes = search["probes"].as_array().expect("probes");
    let reused: Vec<u64> = probes
        .iter()
        .filter(|p| p["reused"] == true)
        .map(|p| p["level"]["concurrency"].as_u64().expect("level"))
        .collect();
    assert_eq!(
        reused,
        [2],
        "the grid's c2 is judged, not measured again: {search}"
    );
    // The grid cell's journal holds its own 4 requests, not a second measurement's.
    let records =
        std::fs::read_to_string(bundle.join("cells/e.w.c2.records.jsonl")).expect("records");
    assert_eq!(records.lines().count(), 4);
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains(">= 4 concurrent requests"), "{report}");
    assert!(
        report.contains("| highest load meeting the SLO | >= 4 |"),
        "{report}"
    );
    assert!(
        text(&out).contains("capacity for w: >= 4 (probed 1 ok, 2 ok, 4 ok)"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_search_above_the_requests_per_level_is_capped_with_a_warning() {
    let s = Scratch::new();
    let p = r#"
schema = 1
name = "honest"
[[engine]]
name = "e"
launch = "{runner} engine sim --port {port} --model m"
model = "m"
[[workload]]
name = "w"
prompts = ["hi"]
[workload.load]
max_dispatch_lag = "10s"
requests = 8
[workload.slo]
e2e_p95_ms = 60000
[workload.search]
over = "concurrency"
max = 64
"#;
    s.write("plan.toml", p);
    let out = s.runner(&["validate", "plan.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "searches up to concurrency 64 but sends 8 requests per level: the search stops at 8"
        ),
        "{err}"
    );
    let p = p.replace("max = 64", "min = 16\nmax = 64");
    s.write("plan.toml", &p);
    let out = s.runner(&["validate", "plan.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no level of the search is ever reached"),
        "{}",
        text(&out)
    );
}
