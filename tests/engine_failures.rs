//! Failures as data (issue 16, section 3): an engine that dies under a cell is relaunched with
//! `on_failure = "restart"` and the run goes on with its next cell; the report names the load
//! it first failed at and why; `until_failure` doubles concurrency past the grid to the knee.
//! The built-in engine's `--max-seqs-before-crash N` is the capacity limit: it exits once more
//! than N sequences are in flight, after a CUDA out-of-memory line.

mod common;

use common::*;

/// Crashes above 5 sequences; one sequence at a time, so a closed loop at 8 always queues 8.
const ENGINE: &str = r#"
[[engine]]
name = "e"
launch = "{runner} engine sim --port {port} --model m --max-batch 1 --step-ms 2 --max-seqs-before-crash 5"
model = "m"
on_failure = "restart"
[engine.health]
interval = "20ms"
timeout = "20s"
"#;

fn plan(load: &str, workloads: &str) -> String {
    format!("schema = 1\nname = \"failures\"\n[load]\nwarmup = 0\nmax_dispatch_lag = \"10s\"\n{load}\n{ENGINE}\n{workloads}")
}

#[test]
fn a_restarted_engine_serves_the_cells_after_the_one_it_died_in() {
    let p = plan(
        "requests = 16",
        r#"
[[workload]]
name = "big"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [1, 8]

[[workload]]
name = "small"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [2]
"#,
    );
    let s = Scratch::new();
    s.write("plan.toml", &p);
    let (out, bundle) = s.exec("plan.toml");
    // A cell failed, so the run says so; but every other cell was measured.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c1 = read_json(&bundle.join("cells/e.big.c1.summary.json"));
    assert_eq!(c1["status"], "ok", "{c1}");
    let died = read_json(&bundle.join("cells/e.big.c8.summary.json"));
    assert_eq!(died["status"], "engine_died", "{died}");
    assert_eq!(died["failure_class"], "cuda_out_of_memory", "{died}");
    assert!(
        died["log_tail"]
            .as_str()
            .is_some_and(|t| t.contains("--max-seqs-before-crash")),
        "{died}"
    );
    // The records measured before the death are kept.
    assert!(died["records"].is_string(), "{died}");
    let after = read_json(&bundle.join("cells/e.small.c2.summary.json"));
    assert_eq!(after["status"], "ok", "{after}");
    assert_eq!(after["metrics"]["requests_ok"], 16, "{after}");

    let m = read_json(&bundle.join("manifest.json"));
    let e = &m["engines"][0];
    let restarts = e["restarts"].as_array().expect("restarts");
    assert_eq!(restarts.len(), 1, "{e}");
    assert_eq!(restarts[0]["after_cell"], "e.big.c8");
    assert_eq!(restarts[0]["failure_class"], "cuda_out_of_memory");
    assert!(restarts[0]["ready_s"].as_f64().is_some(), "{e}");
    assert_eq!(restarts[0]["log"], "logs/e.restart1.log");
    assert!(bundle.join("logs/e.restart1.log").is_file());
    // The first launch keeps its own log and readiness.
    assert_eq!(e["log"], "logs/e.log");
    assert!(e["ready_s"].as_f64().is_some());
    assert_eq!(e["status"], "stopped", "{e}");
    assert_no_engine_survives(&m);

    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    assert!(report.contains("## Where engines failed"), "{report}");
    let row = report
        .lines()
        .find(|l| l.starts_with("| e | big |"))
        .unwrap_or_else(|| panic!("no failure row:\n{report}"));
    assert!(
        row.contains("concurrency 8 (`e.big.c8`)") && row.contains("| cuda_out_of_memory |"),
        "{row}"
    );
    assert!(row.contains("| 1 (ready in "), "{row}");
    let html = std::fs::read_to_string(bundle.join("report.html")).expect("report.html");
    assert!(
        html.contains("<h2>Where engines failed</h2>") && html.contains("cuda_out_of_memory"),
        "{html}"
    );
}

#[test]
fn without_restart_the_cells_after_a_death_are_not_run() {
    let p = plan(
        "requests = 16",
        r#"
[[workload]]
name = "big"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [8, 1]
"#,
    )
    .replace("on_failure = \"restart\"\n", "");
    let s = Scratch::new();
    s.write("plan.toml", &p);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let died = read_json(&bundle.join("cells/e.big.c8.summary.json"));
    assert_eq!(died["status"], "engine_died", "{died}");
    let after = read_json(&bundle.join("cells/e.big.c1.summary.json"));
    assert_eq!(after["status"], "failed", "{after}");
    assert!(
        after["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("not run: engine `e` exited")),
        "{after}"
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert!(m["engines"][0].get("restarts").is_none(), "{m}");
    assert_eq!(m["engines"][0]["status"], "failed");
}

#[test]
fn until_failure_doubles_past_the_grid_to_the_knee() {
    let p = plan(
        "requests = 64\nuntil_failure = true\nmax_concurrency = 64",
        r#"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [1, 2]
"#,
    );
    let s = Scratch::new();
    s.write("plan.toml", &p);
    let out = s.runner(&["validate", "plan.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("restarted when it dies (at most 3 times)")
            && stdout.contains("then doubling concurrency until it fails, up to 64"),
        "{stdout}"
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let knee = &m["until_failure"][0];
    assert_eq!(knee["engine"], "e");
    assert_eq!(knee["workload"], "w");
    // 4 holds (at most 4 in flight), 8 crosses the limit of 5.
    assert_eq!(knee["last_passing"], 4, "{knee}");
    assert_eq!(knee["first_failing"], 8, "{knee}");
    assert_eq!(knee["failure_class"], "cuda_out_of_memory", "{knee}");
    assert_eq!(knee["probes"], serde_json::json!([4, 8]), "{knee}");
    assert_eq!(knee["complete"], true);
    let ids: Vec<&str> = m["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(ids, ["e.w.c1", "e.w.c2", "e.w.c4", "e.w.c8"]);
    assert_eq!(
        read_json(&bundle.join("cells/e.w.c8.summary.json"))["status"],
        "engine_died"
    );
    // It died in its last cell: nothing was left to relaunch it for.
    assert!(m["engines"][0].get("restarts").is_none(), "{m}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    assert!(
        report.contains("| e | w | 4 | 8 | cuda_out_of_memory |"),
        "{report}"
    );
    assert!(
        report
            .contains("- `e` on `w`: passed up to concurrency 4, failed at 8 (cuda_out_of_memory"),
        "{report}"
    );
    let html = std::fs::read_to_string(bundle.join("report.html")).expect("report.html");
    assert!(html.contains("<h2>Until failure</h2>"), "{html}");
    assert_no_engine_survives(&m);
}

#[test]
fn until_failure_that_never_fails_stops_at_its_bound() {
    let p = plan(
        "requests = 8\nuntil_failure = true\nmax_concurrency = 5",
        r#"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 2
[workload.load]
concurrency = [1]
"#,
    );
    let s = Scratch::new();
    s.write("plan.toml", &p);
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let knee = &m["until_failure"][0];
    assert_eq!(knee["probes"], serde_json::json!([2, 4, 5]), "{knee}");
    assert_eq!(knee["last_passing"], 5, "{knee}");
    assert!(knee["first_failing"].is_null(), "{knee}");
    assert_eq!(knee["complete"], true);
}

#[test]
fn plans_oom_surface_names_each_engines_knee_and_restarts_the_small_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/oom_surface.toml");
    let p = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let s = Scratch::new();
    s.write("oom_surface.toml", &p);
    let (out, bundle) = s.exec("oom_surface.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let knees: Vec<(String, serde_json::Value, serde_json::Value)> = m["until_failure"]
        .as_array()
        .expect("until_failure")
        .iter()
        .map(|k| {
            (
                k["engine"].as_str().unwrap_or_default().to_string(),
                k["last_passing"].clone(),
                k["first_failing"].clone(),
            )
        })
        .collect();
    // Capacity 6 fails in the grid already (8 in flight); capacity 24 passes 16, fails 32.
    assert_eq!(
        knees,
        [
            ("sim-cap6".to_string(), 1.into(), 8.into()),
            ("sim-cap24".to_string(), 16.into(), 32.into()),
        ],
        "{m}"
    );
    // The small engine died in the grid and was relaunched for `short`; the large one died in
    // its last probe, with nothing left to serve.
    assert_eq!(
        m["engines"][0]["restarts"][0]["after_cell"],
        "sim-cap6.chat.c8"
    );
    assert!(m["engines"][1].get("restarts").is_none(), "{m}");
    for e in ["sim-cap6", "sim-cap24"] {
        let c = read_json(&bundle.join(format!("cells/{e}.short.c2.summary.json")));
        assert_eq!(c["status"], "ok", "{c}");
    }
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    for row in [
        "| sim-cap6 | chat | concurrency 8 (`sim-cap6.chat.c8`) | cuda_out_of_memory | 1 | 1 (ready in ",
        "| sim-cap24 | chat | concurrency 32 (`sim-cap24.chat.c32`) | cuda_out_of_memory | 1 | none |",
        "| sim-cap6 | chat | 1 | 8 | cuda_out_of_memory |",
        "| sim-cap24 | chat | 16 | 32 | cuda_out_of_memory |",
    ] {
        assert!(report.contains(row), "{row}\n{report}");
    }
    assert_no_engine_survives(&m);
}

#[test]
fn until_failure_judges_only_measured_grid_levels() {
    // Without restart, concurrency 8 kills the engine and 1 is never run: the knee is 8, and
    // the unmeasured level counts neither way.
    let p = plan(
        "requests = 16\nuntil_failure = true\nmax_concurrency = 64",
        r#"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [8, 1]
"#,
    )
    .replace("on_failure = \"restart\"\n", "");
    let s = Scratch::new();
    s.write("plan.toml", &p);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let knee = &m["until_failure"][0];
    assert!(knee["last_passing"].is_null(), "{knee}");
    assert_eq!(knee["first_failing"], 8, "{knee}");
    assert_eq!(knee["probes"], serde_json::json!([]), "{knee}");
}
