//! Issue 16, section 5: closed-loop cells report over their steady-state window too
//! (`steady_state = true`), and `repeat` runs are judged one by one, so a failed or missing run
//! is never hidden inside a mean. Structure only, never speed.

mod common;

use common::*;

const ENGINE: &str = r#"
[[engine]]
name = "e"
launch = "{runner} engine sim --port {port} --model m --step-ms 2 EXTRA"
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
"#;

fn plan(load: &str, extra: &str, top: &str) -> String {
    format!(
        "schema = 1\nname = \"steady\"\n{top}\n[load]\nwarmup = 0\nmax_dispatch_lag = \"10s\"\n{load}\n{}",
        ENGINE.replace("EXTRA", extra)
    )
}

#[test]
fn a_closed_loop_cell_reports_its_steady_state_window_beside_the_whole_cell() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "concurrency = [4]\nrequests = 40\nsteady_state = true",
            "",
            "",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/e.w.c4.summary.json"));
    let st = &c["steady_state"];
    assert_eq!(st["min_in_flight"], 4, "{c}");
    let windows = st["windows_s"].as_array().expect("windows");
    assert_eq!(windows.len(), 1, "one run, one window: {st}");
    let (start, end) = (
        windows[0][0].as_f64().expect("start"),
        windows[0][1].as_f64().expect("end"),
    );
    assert!(end > start, "{st}");
    // Only requests sent and finished inside the window count; the first one sent was sent
    // before the fourth, when the window opens.
    let inside = st["metrics"]["requests_ok"].as_u64().expect("requests");
    assert!(inside > 0 && inside < 40, "{st}");
    assert_eq!(
        c["metrics"]["requests_ok"], 40,
        "the whole cell keeps all: {c}"
    );
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    assert!(
        report.contains("#### Steady state: the window where the level was held"),
        "{report}"
    );
    assert!(
        report.contains("The tables above are over whole cells"),
        "the report says which figures are which"
    );
    assert!(report.contains("| e | 4 | 4 | "), "{report}");
    let html = std::fs::read_to_string(bundle.join("report.html")).expect("report.html");
    assert!(
        html.contains("<h4>Steady state: the window where the level was held</h4>"),
        "{html}"
    );
}

#[test]
fn without_steady_state_no_window_is_reported() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("concurrency = [2]\nrequests = 8", "", ""),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/e.w.c2.summary.json"));
    assert!(c.get("steady_state").is_none(), "{c}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    assert!(!report.contains("#### Steady state"), "{report}");
}

#[test]
fn a_repeated_cell_whose_run_stopped_early_is_no_result() {
    // Every second request is refused (429, no retries): the first run ends on `max_errors`,
    // so the later runs never happen and the mean would stand on one bad run.
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "concurrency = [1]\nrequests = 10\nmax_errors = 2\nretries = 0",
            "--reject-every 2",
            "repeat = 3",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.code().is_some(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/e.w.c1.summary.json"));
    assert_eq!(c["valid"], false, "{c}");
    let why = c["invalid_reason"].as_str().expect("invalid_reason");
    assert!(why.contains("only 1 of 3 runs were measured"), "{why}");
    assert!(why.contains("the mean over runs is not a result"), "{why}");
    let runs = c["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{c}");
    assert!(c["slo"].is_null());
}

#[test]
fn repeated_runs_that_all_hold_are_each_judged_and_the_cell_stays_a_result() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("concurrency = [1]\nrequests = 4", "", "repeat = 2"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/e.w.c1.summary.json"));
    assert_eq!(c["valid"], true, "{c}");
    assert_eq!(
        c["runs"],
        serde_json::json!([
            { "run": 0, "ok": true, "valid": true },
            { "run": 1, "ok": true, "valid": true }
        ]),
        "{c}"
    );
}
