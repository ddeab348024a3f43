//! The fault cases of docs/reliability.md, each provoked with the built-in engine's hidden
//! fault knobs, checking the behaviour, the bundle, the exit code, and that nothing survives.

mod common;

use common::*;

/// A plan with one sim engine (extra flags and engine keys given) and one workload.
fn plan(sim_flags: &str, engine_keys: &str, load: &str) -> String {
    format!(
        r#"
schema = 1
name = "fault"
[[engine]]
name = "e"
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 5 --itl-ms 5 {sim_flags}"
model = "m"
{engine_keys}
[engine.health]
interval = "20ms"
timeout = "20s"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
warmup = 0
# A loaded machine can delay the client past the 10 ms default; no test here is about it.
max_dispatch_lag = "10s"
{load}
"#
    )
}

fn cell(bundle: &std::path::Path, id: &str) -> serde_json::Value {
    read_json(&bundle.join(format!("cells/{id}.summary.json")))
}

#[test]
fn readiness_waits_out_a_loading_503() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("--load-time 1s", "", "concurrency = [1]\nrequests = 3"),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    assert!(m["engines"][0]["ready_s"].as_f64().expect("ready") >= 1.0);
    assert_eq!(cell(&bundle, "e.w.c1")["metrics"]["requests_failed"], 0);
}

#[test]
fn readiness_can_require_a_real_completion() {
    // /v1/models answers at once, but completions fail with 503 for the first second.
    let s = Scratch::new();
    let keys = "";
    let p = plan("--load-time 1s", keys, "concurrency = [1]\nrequests = 3").replace(
        "interval = \"20ms\"",
        "interval = \"20ms\"\npath = \"/v1/models\"\ncompletion = true",
    );
    s.write("plan.toml", &p);
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = cell(&bundle, "e.w.c1");
    assert_eq!(
        c["metrics"]["requests_failed"], 0,
        "no request met a loading engine: {c}"
    );
}

#[test]
fn an_engine_dying_mid_cell_fails_that_cell_keeps_its_data_and_skips_the_rest() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--crash-after 5",
            "",
            "concurrency = [1, 2]\nrequests = 1000",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c = cell(&bundle, "e.w.c1");
    assert_eq!(c["status"], "engine_died");
    let reason = c["reason"].as_str().expect("reason");
    assert!(
        reason.contains("exited with exit status: 3 during cell e.w.c1"),
        "{reason}"
    );
    assert!(reason.contains("measured before are kept"), "{reason}");
    assert_eq!(c["metrics"]["requests_ok"], 5, "{c}");
    let total = c["metrics"]["requests_total"].as_u64().expect("total");
    assert!(
        total < 1000,
        "the level stopped when the engine died: {total}"
    );
    let records =
        std::fs::read_to_string(bundle.join("cells/e.w.c1.records.jsonl")).expect("records");
    assert_eq!(records.lines().count() as u64, total);
    let c2 = cell(&bundle, "e.w.c2");
    assert_eq!(c2["status"], "failed");
    assert!(c2["reason"]
        .as_str()
        .expect("reason")
        .starts_with("not run: engine `e` exited"));
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["engines"][0]["status"], "failed");
    assert!(m["engines"][0]["log_tail"]
        .as_str()
        .expect("tail")
        .contains("--crash-after"));
    assert_no_engine_survives(&m);
}

#[test]
fn hung_requests_fail_by_phase_and_the_level_goes_on() {
    let cases = [
        (
            "--hang-before-headers",
            "first_token_timeout = \"300ms\"",
            "timeout:first_token",
        ),
        (
            "--hang-after-tokens 2",
            "idle_timeout = \"300ms\"",
            "timeout:idle",
        ),
        // 5 + 3 x 500 ms to the last token, past the 1 s limit. The first token (due at 5 ms)
        // would have to be a whole second late to make this a first-token timeout instead.
        (
            "--ttft-ms 5 --itl-ms 500",
            "request_timeout = \"1s\"",
            "timeout:total",
        ),
    ];
    for (flags, timeout, class) in cases {
        let s = Scratch::new();
        let p = plan(
            flags,
            "",
            &format!("concurrency = [2]\nrequests = 4\n{timeout}"),
        )
        .replacen("--ttft-ms 5 --itl-ms 5 --ttft-ms 5", "--ttft-ms 5", 1);
        s.write("plan.toml", &p);
        let (out, bundle) = s.exec("plan.toml");
        assert_eq!(out.status.code(), Some(3), "{flags}: {}", text(&out));
        let c = cell(&bundle, "e.w.c2");
        assert_eq!(
            c["metrics"]["requests_total"], 4,
            "{flags}: every request ran: {c}"
        );
        assert_eq!(c["metrics"]["failures"][class], 4, "{flags}: {c}");
    }
}

#[test]
fn a_reset_connection_is_an_io_or_truncation_failure_with_a_message() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--reset-after-tokens 2",
            "",
            "concurrency = [1]\nrequests = 3",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c = cell(&bundle, "e.w.c1");
    let failures = c["metrics"]["failures"].as_object().expect("failures");
    let n: u64 = failures.values().filter_map(|v| v.as_u64()).sum();
    assert_eq!(n, 3, "{c}");
    assert!(
        failures.keys().all(|k| k == "io" || k == "truncated"),
        "{c}"
    );
}

#[test]
fn busy_answers_are_retried_only_when_the_plan_says_so() {
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
    // 4: finished with failed requests (docs/bundle.md).
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let c = cell(&bundle, "e.w.c1");
    assert_eq!(c["metrics"]["requests_failed"], 3, "{c}");
    assert_eq!(c["metrics"]["failures"]["http_status:429"], 3);
    assert!(c["metrics"]["failure_examples"]["http_status:429"]
        .as_str()
        .expect("message")
        .contains("(Retry-After 0s)"));

    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--reject-every 2 --retry-after 0",
            "",
            "concurrency = [1]\nrequests = 6\nretries = 2",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let c = cell(&bundle, "e.w.c1");
    assert_eq!(c["metrics"]["requests_ok"], 6, "{c}");
    assert!(
        c["metrics"]["retries"].as_u64().expect("retries") >= 3,
        "{c}"
    );
    assert_eq!(c["metrics"]["retries"], c["metrics"]["requests_retried"]);
}

#[test]
fn a_group_that_ignores_sigterm_and_forks_is_killed_whole() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan(
            "--ignore-sigterm --fork-children 2",
            "stop_grace = \"300ms\"",
            "concurrency = [1]\nrequests = 2",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let stop = &m["engines"][0]["stop"];
    assert_eq!(stop["killed"], true, "{stop}");
    assert_eq!(
        stop["survivors"].as_array().map(Vec::len),
        Some(0),
        "{stop}"
    );
    assert_eq!(stop["port_open_after"], false);
    assert_no_engine_survives(&m);
}

#[test]
fn an_attached_engine_serving_another_model_is_refused() {
    let (sim, url) = spawn_engine(&["engine", "sim", "--port", "0", "--model", "other"]);
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &format!(
            "schema = 1\nname = \"attach\"\n[[engine]]\nname = \"e\"\nurl = \"{url}\"\nmodel = \"m\"\n\
             [[workload]]\nname = \"w\"\nprompts = [\"hi\"]\n[workload.load]\nconcurrency = [1]\nrequests = 1\n"
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    drop(sim);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let failure = m["engines"][0]["failure"].as_str().expect("failure");
    assert!(
        failure.contains("serves [\"other\"], not the plan's model `m`"),
        "{failure}"
    );
}

#[test]
fn secrets_never_reach_the_bundle() {
    let s = Scratch::new();
    let p = plan(
        "",
        "env = { HF_TOKEN = \"hf_verysecret\", MY_API_KEY = \"sk-verysecret\" }\napi_key_env = \"RUNNER_TEST_KEY\"",
        "concurrency = [1]\nrequests = 2",
    );
    s.write("plan.toml", &p);
    // Missing variable: the engine fails before launch, naming the variable.
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    assert!(m["engines"][0]["failure"]
        .as_str()
        .expect("failure")
        .contains("`RUNNER_TEST_KEY`, which is not set"));

    let s = Scratch::new();
    s.write("plan.toml", &p);
    let out = std::process::Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_TEST_KEY", "sk-keyvalue")
        .current_dir(s.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let bundle = find_bundle(&s.path().join("results"));
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["engines"][0]["api_key_env"], "RUNNER_TEST_KEY");
    assert_eq!(m["engines"][0]["api_key_used"], true);
    for f in [
        "manifest.json",
        "plan.resolved.json",
        "cells/e.w.c1.summary.json",
        "report.md",
    ] {
        let t = std::fs::read_to_string(bundle.join(f)).expect("file");
        for secret in ["sk-keyvalue", "hf_verysecret", "sk-verysecret"] {
            assert!(!t.contains(secret), "{f} holds {secret}");
        }
    }
}

#[test]
fn an_unwritable_results_path_fails_with_the_path() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &plan("", "", "concurrency = [1]\nrequests = 1"),
    );
    s.write("not-a-dir", "a file");
    let out = s.runner(&["exec", "plan.toml", "--results", "not-a-dir/results"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-a-dir/results"), "{stderr}");
}

#[test]
fn gpu_memory_not_released_after_teardown_is_reported_with_its_holder() {
    // NVML is replaced by a file (RUNNER_FAKE_GPU): line 1 used bytes, line 2 the holder's PID.
    // `leaky` raises GPU memory and leaves it held by PID 4242 after it is gone; `clean`
    // touches nothing.
    let s = Scratch::new();
    let gpu = s.write("gpu", "1073741824\n");
    s.write(
        "plan.toml",
        r#"
schema = 1
name = "gpu"
[gpu]
interval = "50ms"
release_timeout = "300ms"
[[engine]]
name = "leaky"
shell = true
launch = "printf '6442450944\n4242\n' > gpu && exec {runner} engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1"
model = "m"
[engine.health]
interval = "20ms"
[[engine]]
name = "clean"
launch = "{runner} engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1"
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 2
[workload.load]
concurrency = [1]
requests = 2
warmup = 0
max_dispatch_lag = "10s"
"#,
    );
    let out = std::process::Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_FAKE_GPU", &gpu)
        .current_dir(s.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[leaky] WARNING: GPU memory not back"),
        "{stderr}"
    );
    assert!(stderr.contains("pid 4242 on GPU 0"), "{stderr}");
    let bundle = find_bundle(&s.path().join("results"));
    let m = read_json(&bundle.join("manifest.json"));
    let leaky = &m["engines"][0]["gpu_release"];
    assert_eq!(leaky["released"], false, "{leaky}");
    assert_eq!(leaky["before_launch_bytes"], 1u64 << 30);
    assert_eq!(leaky["after_stop_bytes"], 6u64 << 30);
    assert_eq!(leaky["holders"][0]["pid"], 4242);
    assert_eq!(m["engines"][1]["gpu_release"]["released"], true);
    let c = read_json(&bundle.join("cells/leaky.w.c1.summary.json"));
    assert_eq!(
        c["resources"]["gpu_mem_used_peak_bytes"],
        6u64 << 30,
        "GPU figures come from the sampler"
    );
}

#[test]
fn an_engine_crashing_past_a_concurrency_serves_the_levels_below_it() {
    // One sequence at a time, so a second concurrent request always queues in the engine.
    let p = r#"
schema = 1
name = "fault"
[[engine]]
name = "e"
launch = "{runner} engine sim --port {port} --model m --max-batch 1 --step-ms 5 --max-seqs-before-crash 1"
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 8
[workload.load]
warmup = 0
max_dispatch_lag = "10s"
concurrency = [1, 2]
requests = 20
"#;
    let s = Scratch::new();
    s.write("plan.toml", p);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let c1 = cell(&bundle, "e.w.c1");
    assert_eq!(c1["status"], "ok", "{c1}");
    assert_eq!(c1["metrics"]["requests_ok"], 20, "{c1}");
    let c2 = cell(&bundle, "e.w.c2");
    assert_eq!(c2["status"], "engine_died", "{c2}");
    let reason = c2["reason"].as_str().expect("reason");
    assert!(
        reason.contains("exited with exit status: 3 during cell e.w.c2"),
        "{reason}"
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert!(m["engines"][0]["log_tail"]
        .as_str()
        .expect("tail")
        .contains("--max-seqs-before-crash"));
    assert_no_engine_survives(&m);
}
