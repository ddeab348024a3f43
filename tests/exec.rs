//! End-to-end: the real binary runs a small plan against the built-in engine and writes a
//! complete bundle; nothing it launched survives.

mod common;

use common::*;

const PLAN: &str = r#"
schema = 1
name = "e2e"
description = "two sim engines, tiny grid"

[load]
concurrency = [1, 4]
requests = 8
warmup = 1
# A loaded machine can delay the client past the 10 ms default; this test is not about it.
max_dispatch_lag = "10s"

[[engine]]
name = "one-at-a-time"
launch = "{runner} engine sim --port {port} --model m --max-batch 1 --step-ms 2"
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"

[[engine]]
name = "batched"
launch = ["{runner}", "engine", "sim", "--port", "{port}", "--model", "m", "--max-batch", "8", "--step-ms", "2"]
model = "m"
api = "completions"
stop_grace = "5s"
version_command = "{runner} --version"
[engine.health]
interval = "20ms"
timeout = "20s"

[[workload]]
name = "chat"
prompts = ["hello there", "how are you today"]
max_tokens = 6
[workload.slo]
# The request timeout (10 min): a request slower than this would have failed anyway, so the
# verdict does not depend on how loaded the machine is.
e2e_p95_ms = 600000
"#;

#[test]
fn exec_writes_a_complete_bundle_and_leaves_no_process() {
    let s = Scratch::new();
    s.write("plan.toml", PLAN);
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));

    for f in [
        "manifest.json",
        "plan.toml",
        "plan.resolved.json",
        "summary.csv",
        "report.md",
        "samples.jsonl",
        "logs/one-at-a-time.log",
        "logs/batched.log",
    ] {
        assert!(bundle.join(f).is_file(), "missing {f}");
    }
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["format_version"], 1);
    assert_eq!(m["status"], "complete");
    assert!(m["plan"]["sha256"].as_str().is_some_and(|h| h.len() == 64));
    assert_eq!(m["gpu"]["available"], false);
    assert!(m["gpu"]["unavailable_reason"].as_str().is_some());
    let engines = m["engines"].as_array().expect("engines");
    assert_eq!(engines.len(), 2);
    for e in engines {
        assert_eq!(e["status"], "stopped", "{e}");
        assert!(e["ready_s"].as_f64().is_some(), "{e}");
        assert_eq!(e["stop"]["survivors"].as_array().map(Vec::len), Some(0));
    }
    assert!(engines[1]["version"]
        .as_str()
        .is_some_and(|v| v.starts_with("runner ")));

    let cells = [
        "one-at-a-time.chat.c1",
        "one-at-a-time.chat.c4",
        "batched.chat.c1",
        "batched.chat.c4",
    ];
    for id in cells {
        let c = read_json(&bundle.join(format!("cells/{id}.summary.json")));
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["metrics"]["requests_ok"], 8, "{c}");
        assert_eq!(c["metrics"]["output_tokens"], 48, "{c}");
        assert_eq!(c["metrics"]["output_tokens_source"], "usage");
        assert!(c["metrics"]["ttft_ms"]["p95"].as_f64().is_some());
        assert!(
            c["resources"]["rss_peak_bytes"]
                .as_u64()
                .is_some_and(|b| b > 0),
            "{c}"
        );
        assert_eq!(c["slo"]["passed"], true);
        let records = std::fs::read_to_string(bundle.join(format!("cells/{id}.records.jsonl")))
            .expect("records");
        assert_eq!(
            records.lines().count(),
            8,
            "one record per measured request, warmup excluded"
        );
    }
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 1 + cells.len());
    assert!(csv.starts_with("engine,workload,concurrency,rate_per_s,status,valid,"));
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("# e2e"));
    assert!(report.contains("| batched | 4 | ok |"), "{report}");
    assert!(report.contains("Highest load meeting the SLO"));

    assert_no_engine_survives(&m);

    // The report is rendered from the bundle alone: delete it and render it again.
    std::fs::remove_file(bundle.join("report.md")).expect("rm report");
    let out = s.runner(&["report", bundle.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(bundle.join("report.md")).expect("report"),
        report
    );
}

#[test]
fn validate_prints_the_grid_and_request_count() {
    let s = Scratch::new();
    s.write("plan.toml", PLAN);
    let out = s.runner(&["validate", "plan.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("grid: 4 cells, 36 requests (32 measured + 4 warmup)"),
        "{stdout}"
    );
    assert!(stdout.contains("ok: plan is valid"));
}
