//! Engine telemetry: the engine's own Prometheus page scraped during each cell, pinned against
//! the built-in engine, whose `/metrics` reports its batch (running), its queue (waiting) and
//! the tokens it generated; and GPU memory attributed to the engine's own processes.

mod common;

use common::*;

fn plan(engine_keys: &str) -> String {
    format!(
        r#"
schema = 1
name = "telemetry"
[gpu]
interval = "20ms"
[[engine]]
name = "batch2"
launch = "{{runner}} engine sim --port {{port}} --model m --max-batch 2 --step-ms 10 --step-ms-per-seq 0 --prefill-ms-per-token 0"
model = "m"
metrics_interval = "20ms"
{engine_keys}
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 8
[workload.load]
concurrency = [4]
requests = 16
warmup = 0
# A loaded machine can delay the client past the 10 ms default; this test is not about it.
max_dispatch_lag = "10s"
"#
    )
}

/// `metrics_interval = "off"`: the page is read once at the cell's start and once at its end,
/// and the cell says how many scrapes it made.
#[test]
fn with_sampling_off_a_cell_is_scraped_at_its_start_and_end_only() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("").replace("metrics_interval = \"20ms\"", "metrics_interval = \"off\""),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/batch2.w.c4.summary.json"));
    assert_eq!(c["engine_metrics"]["scrapes"], 2, "{}", c["engine_metrics"]);
    let resolved = read_json(&bundle.join("plan.resolved.json"));
    assert_eq!(resolved["engines"][0]["metrics_interval"], "off");
}

#[test]
fn a_cell_keeps_what_the_engine_reported_about_its_batch_and_queue() {
    let s = Scratch::new();
    s.write("plan.toml", &plan(""));
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    assert!(m["engines"][0]["metrics_url"]
        .as_str()
        .is_some_and(|u| u.ends_with("/metrics")));
    let c = read_json(&bundle.join("cells/batch2.w.c4.summary.json"));
    let t = &c["engine_metrics"];
    assert!(t["scrapes"].as_u64().expect("scrapes") >= 2, "{t}");
    // Four clients against a batch of two: the engine runs at most two and queues the rest.
    let running = t["gauges"]["sim:num_requests_running"]["peak"]
        .as_f64()
        .expect("running");
    assert!((1.0..=2.0).contains(&running), "{t}");
    let waiting = t["gauges"]["sim:num_requests_waiting"]["peak"]
        .as_f64()
        .expect("waiting");
    assert!(waiting >= 1.0, "{t}");
    let journal = std::fs::read_to_string(bundle.join("telemetry.jsonl")).expect("journal");
    assert!(journal.lines().count() >= 2);
    assert!(journal.contains("\"label\":\"batch2.w.c4\""));
    // A counter's figure is its increase from the cell's first scrape to its last, as the
    // journal holds them. The last scrape comes after the last response, so it has counted
    // every token of the cell (the engine served nothing else). The first is taken as the
    // load starts: how many tokens a loaded machine let the engine generate before it is not
    // pinned.
    let generated: Vec<f64> = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a journal line"))
        .filter(|l| l["label"] == "batch2.w.c4")
        .map(|l| {
            l["counters"]["sim:generation_tokens_total"]
                .as_f64()
                .expect("counter")
        })
        .collect();
    assert_eq!(generated.last(), Some(&(16.0 * 8.0)), "{journal}");
    assert_eq!(
        t["counters"]["sim:generation_tokens_total"].as_f64(),
        Some(16.0 * 8.0 - generated[0]),
        "{t}"
    );
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("What the engines reported"), "{report}");
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("csv");
    assert!(csv
        .lines()
        .next()
        .is_some_and(|h| h.contains("engine_running_peak")));
}

#[test]
fn an_empty_metrics_path_turns_scraping_off() {
    let s = Scratch::new();
    s.write("plan.toml", &plan("metrics_path = \"\""));
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/batch2.w.c4.summary.json"));
    assert!(c.get("engine_metrics").is_none(), "{c}");
    let m = read_json(&bundle.join("manifest.json"));
    assert!(m["engines"][0].get("metrics_url").is_none());
}

#[test]
fn gpu_memory_is_attributed_to_the_engines_process_group() {
    // NVML is replaced by a file (RUNNER_FAKE_GPU): line 1 used bytes, line 2 the holder's PID.
    // `own` writes its own PID (the shell that execs the engine keeps it); `foreign` names a
    // PID outside its group, so nothing is attributed to it.
    let s = Scratch::new();
    let gpu = s.write("gpu", "0\n");
    let engine = |name: &str, pid: &str| {
        format!(
            r#"
[[engine]]
name = "{name}"
shell = true
launch = "printf '3221225472\n%s\n' {pid} > gpu && exec {{runner}} engine sim --port {{port}} --model m --ttft-ms 1 --itl-ms 1"
model = "m"
[engine.health]
interval = "20ms"
"#
        )
    };
    let text_plan = format!(
        r#"
schema = 1
name = "gpu"
[gpu]
interval = "20ms"
release_timeout = "100ms"
{}{}
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [1]
requests = 4
warmup = 0
max_dispatch_lag = "10s"
"#,
        engine("own", "$$"),
        engine("foreign", "1")
    );
    s.write("plan.toml", &text_plan);
    let out = std::process::Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_FAKE_GPU", &gpu)
        .current_dir(s.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let bundle = find_bundle(&s.path().join("results"));
    let own = read_json(&bundle.join("cells/own.w.c1.summary.json"));
    assert_eq!(
        own["resources"]["engine_gpu_mem_peak_bytes"].as_u64(),
        Some(3u64 << 30),
        "{own}"
    );
    let foreign = read_json(&bundle.join("cells/foreign.w.c1.summary.json"));
    assert_eq!(
        foreign["resources"]["engine_gpu_mem_peak_bytes"].as_u64(),
        Some(0),
        "{foreign}"
    );
    assert_eq!(
        foreign["resources"]["gpu_mem_used_peak_bytes"].as_u64(),
        Some(3u64 << 30)
    );
}
