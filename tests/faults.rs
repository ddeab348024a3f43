//! Engines that fail: one whose launch command exits at once, one that never answers its
//! health check. Each ends its own cells as failed with the log tail; the run goes on with
//! the other engines, and nothing survives.

mod common;

use common::*;

const PLAN: &str = r#"
schema = 1
name = "faults"

[load]
concurrency = [1, 2]
requests = 4
warmup = 0

[[engine]]
name = "crashes"
launch = ["sh", "-c", "echo 'loading weights'; echo 'RuntimeError: CUDA out of memory' >&2; exit 3"]
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"

[[engine]]
name = "never-ready"
launch = ["sleep", "600"]
port = "auto"
model = "m"
stop_grace = "2s"
[engine.health]
interval = "50ms"
timeout = "1s"

[[engine]]
name = "good"
launch = "{runner} engine sim --port {port} --model m --step-ms 1"
model = "m"
[engine.health]
interval = "20ms"
timeout = "20s"

[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 3
"#;

#[test]
fn failing_engines_fail_their_own_cells_and_the_run_goes_on() {
    let s = Scratch::new();
    s.write("plan.toml", PLAN);
    let (out, bundle) = s.exec("plan.toml");
    // 3 = the run finished but some cells failed.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CUDA out of memory"),
        "log tail on the console: {stderr}"
    );

    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "complete");
    let e = &m["engines"];

    assert_eq!(e[0]["status"], "failed");
    let failure = e[0]["failure"].as_str().expect("failure");
    assert!(
        failure.contains("exited with exit status: 3 while starting"),
        "{failure}"
    );
    assert!(e[0]["log_tail"]
        .as_str()
        .expect("tail")
        .contains("CUDA out of memory"));

    assert_eq!(e[1]["status"], "failed");
    let failure = e[1]["failure"].as_str().expect("failure");
    assert!(failure.contains("was not ready after 1s"), "{failure}");
    assert!(failure.contains("never answered 200"), "{failure}");
    assert_eq!(e[1]["stop"]["survivors"].as_array().map(Vec::len), Some(0));

    assert_eq!(e[2]["status"], "stopped");
    for (id, status) in [
        ("crashes.w.c1", "failed"),
        ("crashes.w.c2", "failed"),
        ("never-ready.w.c1", "failed"),
        ("never-ready.w.c2", "failed"),
        ("good.w.c1", "ok"),
        ("good.w.c2", "ok"),
    ] {
        let c = read_json(&bundle.join(format!("cells/{id}.summary.json")));
        assert_eq!(c["status"], status, "{c}");
        if status == "failed" {
            assert!(
                c["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("not run: engine")),
                "{c}"
            );
        }
    }
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("### crashes failed"), "{report}");
    assert!(report.contains("RuntimeError: CUDA out of memory"));
    assert_no_engine_survives(&m);
}

#[test]
fn a_fixed_port_already_taken_fails_that_engine_before_launch() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &format!(
            "schema = 1\nname = \"taken\"\n[load]\nconcurrency = [1]\nrequests = 1\n\
             [[engine]]\nname = \"e\"\nlaunch = \"{{runner}} engine sim --port {{port}} --model m\"\nport = {port}\nmodel = \"m\"\n\
             [[workload]]\nname = \"w\"\nprompts = [\"hi\"]\n"
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let failure = m["engines"][0]["failure"].as_str().expect("failure");
    assert!(
        failure.contains(&format!("port {port} is already in use")),
        "{failure}"
    );
    assert!(m["engines"][0]["pid"].is_null(), "nothing was launched");
}
