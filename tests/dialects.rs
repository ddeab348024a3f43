//! Engine dialects: which non-standard request fields an engine is sent (`accepts`), what is
//! merged into its bodies (`[engine.extra_body]`), and a refused field reported as such.

mod common;

use common::*;

fn plan(engines: &str) -> String {
    format!(
        r#"
schema = 1
name = "dialects"
{engines}
[[workload]]
name = "fixed"
prompts = ["hi"]
max_tokens = 4
ignore_eos = true
[workload.load]
warmup = 0
concurrency = [1, 2]
requests = 4
# A loaded machine can delay the client past the 10 ms default; this test is not about it.
max_dispatch_lag = "10s"
"#
    )
}

fn engine(name: &str, sim_flags: &str, keys: &str) -> String {
    format!(
        r#"
[[engine]]
name = "{name}"
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 2 --itl-ms 2 {sim_flags}"
model = "m"
{keys}
[engine.health]
interval = "20ms"
"#
    )
}

#[test]
fn a_refused_field_marks_that_engines_cells_rejected_with_the_fix() {
    let s = Scratch::new();
    let engines = engine("strict", "--refuse-fields ignore_eos", "") + &engine("lenient", "", "");
    s.write("plan.toml", &plan(&engines));
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let rejected = &m["engines"][0]["rejected_fields"];
    assert_eq!(rejected[0]["field"], "ignore_eos", "{m}");
    assert_eq!(rejected[0]["workload"], "fixed");
    assert!(rejected[0]["answer"]
        .as_str()
        .expect("a string")
        .contains("422"));
    for id in ["strict.fixed.c1", "strict.fixed.c2"] {
        let c = read_json(&bundle.join(format!("cells/{id}.summary.json")));
        assert_eq!(c["status"], "rejected", "{c}");
        let reason = c["reason"].as_str().expect("a string");
        assert!(
            reason.contains("refuses request field `ignore_eos`"),
            "{reason}"
        );
        assert!(reason.contains("`accepts`"), "{reason}");
        assert!(c["metrics"].is_null(), "a rejected cell is not measured");
    }
    // The engine itself is fine: it was stopped normally, and the other engine ran.
    assert_eq!(m["engines"][0]["status"], "stopped");
    let ok = read_json(&bundle.join("cells/lenient.fixed.c2.summary.json"));
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["metrics"]["requests_failed"], 0);
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report.md");
    assert!(report.contains("rejected"), "{report}");
    assert!(text(&out).contains("refuses request field `ignore_eos`"));
    assert_no_engine_survives(&m);
}

#[test]
fn a_field_left_out_of_accepts_is_not_sent_and_validate_warns() {
    let s = Scratch::new();
    let engines = engine("strict", "--refuse-fields ignore_eos", "accepts = []");
    s.write("plan.toml", &plan(&engines));
    let v = s.runner(&["validate", "plan.toml"]);
    assert!(v.status.success(), "{}", text(&v));
    let says = text(&v);
    assert!(
        says.contains("engine `strict` is not sent `ignore_eos`"),
        "{says}"
    );
    assert!(says.contains("plan.toml:"), "names the line: {says}");
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = read_json(&bundle.join("cells/strict.fixed.c2.summary.json"));
    assert_eq!(c["status"], "ok");
    assert_eq!(c["metrics"]["requests_failed"], 0);
}

#[test]
fn extra_body_reaches_the_engine_and_a_refused_key_names_extra_body() {
    let s = Scratch::new();
    let engines = engine(
        "strict",
        "--refuse-fields top_k",
        "[engine.extra_body]\ntop_k = 1",
    );
    s.write("plan.toml", &plan(&engines));
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c = read_json(&bundle.join("cells/strict.fixed.c1.summary.json"));
    assert_eq!(c["status"], "rejected");
    let reason = c["reason"].as_str().expect("a string");
    assert!(reason.contains("[engine.extra_body]"), "{reason}");
}

#[test]
fn bad_dialect_keys_are_plan_errors_with_their_line() {
    let s = Scratch::new();
    let engines = engine("e", "", "accepts = [\"ignore_eos\", \"top_k\"]")
        + &engine("f", "", "[engine.extra_body]\nmax_tokens = 3");
    s.write("plan.toml", &plan(&engines));
    let v = s.runner(&["validate", "plan.toml"]);
    assert_eq!(v.status.code(), Some(2), "{}", text(&v));
    let says = text(&v);
    assert!(
        says.contains("`accepts` names `top_k`, which the runner never sends"),
        "{says}"
    );
    assert!(
        says.contains("sets `max_tokens`, which the runner sets"),
        "{says}"
    );
    assert!(says.contains("plan.toml:9:26"), "{says}");
}
