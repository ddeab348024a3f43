//! `[[engine]] include = "..."` (issue 16, section 4): an engine kept in its own file, read as
//! if written in the plan, its errors pointing into it, stored in the bundle with its hash.

mod common;

use common::*;
use sha2::Digest;

const PLAN: &str = r#"schema = 1
name = "inc"
[load]
concurrency = [1]
requests = 2
warmup = 0
max_dispatch_lag = "10s"

[[engine]]
include = "engines/sim.toml"

[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
"#;

const ENGINE: &str = r#"# A sim engine kept as a file, swept over its batch size.
name = "sim-b{batch}"
launch = "{runner} engine sim --port {port} --model {model} --max-batch {batch}"
model = "m"
[matrix]
batch = [1, 4]
[health]
interval = "20ms"
timeout = "20s"
"#;

#[test]
fn an_included_engine_runs_and_the_bundle_keeps_its_file_and_hash() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("engines")).expect("engines/");
    s.write("engines/sim.toml", ENGINE);
    s.write("plan.toml", PLAN);
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let names: Vec<&str> = m["engines"]
        .as_array()
        .expect("engines")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["sim-b1", "sim-b4"]);
    let inc = &m["plan"]["includes"][0];
    assert_eq!(inc["include"], "engines/sim.toml");
    let sha = sha2::Sha256::digest(ENGINE.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert_eq!(inc["sha256"], sha.as_str());
    assert_eq!(inc["stored"], "includes/0-sim.toml");
    let stored = std::fs::read_to_string(bundle.join("includes/0-sim.toml")).expect("copy");
    assert_eq!(stored, ENGINE);
    assert_no_engine_survives(&m);
}

fn validate(plan: &str, engine: &str) -> String {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path().join("engines")).expect("engines/");
    s.write("engines/sim.toml", engine);
    s.write("plan.toml", plan);
    let out = s.runner(&["validate", "plan.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_error_in_an_included_engine_points_into_its_file() {
    insta::assert_snapshot!(validate(
        PLAN,
        &ENGINE.replace("model = \"m\"", "model = \"m\"\nport = \"any\"")
    ));
}

#[test]
fn a_typo_in_an_included_engine_points_into_its_file() {
    insta::assert_snapshot!(validate(PLAN, &ENGINE.replace("launch =", "lanch =")));
}

#[test]
fn an_include_beside_other_keys_is_an_error() {
    insta::assert_snapshot!(validate(
        &PLAN.replace(
            "include = \"engines/sim.toml\"",
            "include = \"engines/sim.toml\"\nmodel = \"m\""
        ),
        ENGINE
    ));
}

#[test]
fn a_missing_included_file_is_an_error_at_the_include() {
    insta::assert_snapshot!(validate(
        &PLAN.replace("engines/sim.toml", "engines/nope.toml"),
        ENGINE
    ));
}
