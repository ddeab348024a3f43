//! Every reported figure pinned against the built-in engine in fixed-timing mode (first token
//! at arrival + TTFT, token i at arrival + TTFT + (i-1) x ITL). Lower bounds are exact: a timer
//! never fires early. Upper bounds are wide, so a loaded machine cannot make these flake.

mod common;

use common::*;

fn plan(load: &str) -> String {
    format!(
        r#"
schema = 1
name = "measure"
[[engine]]
name = "fixed"
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 40 --itl-ms 10"
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["one two three"]
max_tokens = 6
[workload.load]
{load}
"#
    )
}

fn stat(c: &serde_json::Value, metric: &str, q: &str) -> f64 {
    c["metrics"][metric][q]
        .as_f64()
        .unwrap_or_else(|| panic!("{metric}.{q} in {c}"))
}

fn within(v: f64, lo: f64, hi: f64, what: &str) {
    assert!((lo..=hi).contains(&v), "{what} = {v}, expected {lo}..{hi}");
}

#[test]
fn closed_loop_metrics_match_the_engine_timing() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("concurrency = [4]\nrequests = 16\nwarmup = 2"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/fixed.w.c4.summary.json"));
    assert_eq!(c["valid"], true, "{c}");
    let m = &c["metrics"];
    assert_eq!(m["requests_ok"], 16);
    assert_eq!(m["output_tokens"], 96);
    assert_eq!(m["input_tokens"], 48);
    assert_eq!(m["short_outputs"], 0);
    assert_eq!(m["token_count_mismatches"], 0);
    within(stat(&c, "ttft_ms", "p50"), 40.0, 70.0, "ttft p50");
    within(stat(&c, "ttft_ms", "mean"), 40.0, 70.0, "ttft mean");
    // A late first token (timer granularity) shortens (e2e - ttft), so allow 1 ms per token below.
    within(stat(&c, "tpot_ms", "mean"), 9.0, 25.0, "tpot mean");
    within(stat(&c, "itl_ms", "p50"), 9.0, 25.0, "itl p50");
    assert_eq!(m["itl_ms"]["count"], 16 * 5);
    // 40 + 5 x 10 ms to the last token.
    within(stat(&c, "e2e_ms", "p50"), 90.0, 160.0, "e2e p50");
    within(stat(&c, "ttfb_ms", "p50"), 0.0, 70.0, "ttfb p50");
    // Four workers, 16 requests of ~90 ms each: four rounds.
    let rps = m["request_per_s"].as_f64().expect("rps");
    within(
        rps,
        16.0 / (4.0 * 0.160),
        16.0 / (4.0 * 0.090),
        "request_per_s",
    );
    within(
        m["output_tok_per_s"].as_f64().expect("tok/s"),
        rps * 6.0 - 1e-6,
        rps * 6.0 + 1e-6,
        "tok/s",
    );
    let records =
        std::fs::read_to_string(bundle.join("cells/fixed.w.c4.records.jsonl")).expect("records");
    assert_eq!(records.lines().count(), 16, "warmup is excluded");
}

#[test]
fn open_loop_latency_counts_from_the_schedule_and_rate_is_delivered() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("rate = [25.0]\nrequests = 25\nwarmup = 0"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/fixed.w.r25.summary.json"));
    assert_eq!(c["level"]["rate"], 25.0);
    assert_eq!(c["valid"], true, "{c}");
    let m = &c["metrics"];
    within(
        m["offered_req_per_s"].as_f64().expect("offered"),
        24.99,
        25.01,
        "offered",
    );
    within(
        m["sent_req_per_s"].as_f64().expect("sent"),
        23.75,
        25.5,
        "sent",
    );
    within(
        stat(&c, "dispatch_lag_ms", "p99"),
        0.0,
        10.0,
        "dispatch lag p99",
    );
    within(stat(&c, "ttft_ms", "p50"), 40.0, 70.0, "ttft p50");
    // 25 requests scheduled 40 ms apart (0.96 s), the last ends ~90 ms after its schedule.
    within(
        m["duration_s"].as_f64().expect("duration"),
        1.05,
        1.3,
        "duration",
    );
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(bundle.join("cells/fixed.w.r25.records.jsonl"))
            .expect("records")
            .lines()
            .nth(3)
            .expect("4 records"),
    )
    .expect("json");
    // Scheduled on the constant-rate grid, whatever the server did.
    assert_eq!(
        first["scheduled_us"].as_u64().map(|s| s % 40_000),
        Some(0),
        "{first}"
    );
}

#[test]
fn open_loop_backpressure_is_queueing_not_dispatch_lag() {
    // 100 requests/s into one slot, each request ~90 ms (40 ms + 5 x 10 ms): the backlog
    // grows by ~80 ms a request, and that wait is the server's, not the client's.
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("rate = [100.0]\nrequests = 10\nwarmup = 0\nmax_in_flight = 1"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/fixed.w.r100.summary.json"));
    assert_eq!(c["valid"], true, "{c}");
    within(
        stat(&c, "dispatch_lag_ms", "p99"),
        0.0,
        10.0,
        "dispatch lag p99",
    );
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(bundle.join("cells/fixed.w.r100.records.jsonl"))
            .expect("records")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    assert_eq!(records.len(), 10);
    for r in &records {
        let (sched, sent, queued) = (
            r["scheduled_us"].as_u64().expect("scheduled"),
            r["sent_us"].as_u64().expect("sent"),
            r["queued_us"].as_u64().expect("queued"),
        );
        assert!(queued <= sent - sched, "queued beyond the send delay: {r}");
        // Request i cannot start before the i before it ended (>= 90 ms each), and was due at
        // 10 ms x i: it waited at least 80 ms x i.
        let i = r["index"].as_u64().expect("index");
        assert!(
            queued >= 80_000 * i,
            "request {i} queued only {queued} us: {r}"
        );
    }
}

#[test]
fn a_rate_the_client_cannot_send_makes_the_cell_invalid() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("rate = [1000000.0]\nrequests = 2000\nwarmup = 0\nmax_dispatch_lag = \"1ms\"")
            .replace("--ttft-ms 40 --itl-ms 10", "--ttft-ms 1 --itl-ms 1")
            .replace("max_tokens = 6", "max_tokens = 1"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(
        out.status.code(),
        Some(3),
        "an invalid cell is not a result: {}",
        text(&out)
    );
    let c = read_json(&bundle.join("cells/fixed.w.r1000000.summary.json"));
    assert_eq!(c["valid"], false, "{c}");
    let why = c["invalid_reason"].as_str().expect("reason");
    assert!(why.starts_with("client bottleneck"), "{why}");
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("csv");
    let row = csv.lines().nth(1).expect("a row");
    assert!(row.contains(",false,"), "{row}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("| INVALID |"), "{report}");
    assert!(report.contains("client bottleneck"));
}

#[test]
fn a_level_ends_early_when_errors_pile_up() {
    let s = Scratch::new();
    // The engine answers every request HTTP 429 (a model it does not serve is refused at
    // readiness now, before any request).
    s.write(
        "plan.toml",
        &plan("concurrency = [2]\nrequests = 500\nwarmup = 0\nmax_errors = 5")
            .replace("--itl-ms 10\"", "--itl-ms 10 --reject-every 1\""),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c = read_json(&bundle.join("cells/fixed.w.c2.summary.json"));
    assert_eq!(c["status"], "failed");
    let total = c["metrics"]["requests_total"].as_u64().expect("total");
    assert!(
        (5..=6).contains(&total),
        "stopped after max_errors, not 500: {total}"
    );
    assert_eq!(c["metrics"]["failures"]["http_status:429"], total);
    assert!(c["reason"]
        .as_str()
        .expect("reason")
        .contains("The server is busy; retry later."));
}

#[test]
fn capacity_search_finds_the_highest_concurrency_meeting_the_slo() {
    // Four sequences per step: up to 4 concurrent requests start at once; a fifth waits a
    // whole request (10 tokens x 5 ms), which breaks a 30 ms TTFT p95.
    let s = Scratch::new();
    s.write(
        "plan.toml",
        r#"
schema = 1
name = "search"
[[engine]]
name = "batch4"
launch = "{runner} engine sim --port {port} --model m --max-batch 4 --step-ms 5 --step-ms-per-seq 0"
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 10
[workload.load]
requests = 20
warmup = 0
[workload.slo]
ttft_p95_ms = 30
[workload.search]
over = "concurrency"
min = 1
max = 64
max_steps = 8
"#,
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let search = &m["searches"][0];
    assert_eq!(search["capacity"]["concurrency"], 4, "{search}");
    let probed: Vec<u64> = search["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| p["level"]["concurrency"].as_u64().expect("level"))
        .collect();
    assert_eq!(&probed[..4], &[1, 2, 4, 8], "doubling first: {probed:?}");
    for c in &probed {
        assert!(
            bundle
                .join(format!("cells/batch4.w.c{c}.summary.json"))
                .is_file(),
            "probe {c} is a cell"
        );
    }
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(
        report.contains("**batch4**: 4 concurrent requests (capacity search over"),
        "{report}"
    );
}

#[test]
fn probe_explains_one_request_to_the_built_in_engine() {
    use std::process::Command;
    let (sim, addr) = spawn_engine(&[
        "engine",
        "sim",
        "--port",
        "0",
        "--model",
        "m",
        "--ttft-ms",
        "40",
        "--itl-ms",
        "10",
    ]);
    let out = Command::new(RUNNER)
        .args(["probe", &addr, "--max-tokens", "5", "--json"])
        .output()
        .expect("probe");
    drop(sim);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["model"], "m", "found through /v1/models");
    assert_eq!(v["error_class"], serde_json::Value::Null);
    assert_eq!(v["output_tokens"], 5);
    assert_eq!(v["output_tokens_source"], "usage");
    assert_eq!(v["chunks"], 5);
    assert_eq!(v["output_text"], "the model is a simulation ");
    within(v["ttft_ms"].as_f64().expect("ttft"), 40.0, 70.0, "ttft");
    within(v["tpot_ms"].as_f64().expect("tpot"), 9.0, 25.0, "tpot");
    within(v["e2e_ms"].as_f64().expect("e2e"), 80.0, 150.0, "e2e");
}
