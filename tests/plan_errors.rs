//! What a user sees for a broken plan: `path:line:col`, the line, a caret and a hint. The
//! exact text is pinned by snapshots, one bad plan per test.

mod common;

use common::*;

const GOOD: &str = r#"schema = 1
name = "p"

[load]
concurrency = [1, 4]
requests = 10

[[engine]]
name = "sim"
launch = "{runner} engine sim --port {port} --model m"
model = "m"

[[workload]]
name = "chat"
prompts = ["hi"]
max_tokens = 16
"#;

/// `runner validate` of a plan made from GOOD by one replacement; returns stderr.
fn validate_with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "GOOD has {from:?}");
    let s = Scratch::new();
    s.write("plan.toml", &GOOD.replacen(from, to, 1));
    let out = s.runner(&["validate", "plan.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn misspelled_key() {
    insta::assert_snapshot!(validate_with("concurrency =", "concurency ="));
}

#[test]
fn wrong_type() {
    insta::assert_snapshot!(validate_with("requests = 10", "requests = \"ten\""));
}

#[test]
fn unknown_placeholder() {
    insta::assert_snapshot!(validate_with("--model m\"", "--model {modle}\""));
}

#[test]
fn missing_prompt_file() {
    insta::assert_snapshot!(validate_with(
        "prompts = [\"hi\"]",
        "prompts_file = \"prompts.txt\""
    ));
}

#[test]
fn duplicate_engine_name() {
    let dup = "model = \"m\"\n\n[[engine]]\nname = \"sim\"\nurl = \"http://127.0.0.1:9\"\nmodel = \"m\"\n";
    insta::assert_snapshot!(validate_with("model = \"m\"\n", dup));
}

#[test]
fn https_engine_url() {
    insta::assert_snapshot!(validate_with(
        "launch = \"{runner} engine sim --port {port} --model m\"",
        "url = \"https://llm.example.com\""
    ));
}

#[test]
fn empty_grid() {
    insta::assert_snapshot!(validate_with("concurrency = [1, 4]", "concurrency = []"));
}

#[test]
fn bad_duration() {
    insta::assert_snapshot!(validate_with(
        "model = \"m\"\n",
        "model = \"m\"\nstop_grace = \"ten seconds\"\n"
    ));
}

#[test]
fn future_schema() {
    insta::assert_snapshot!(validate_with("schema = 1", "schema = 2"));
}

#[test]
fn toml_syntax_error() {
    insta::assert_snapshot!(validate_with("name = \"p\"", "name = \"p"));
}

#[test]
fn missing_program_is_a_warning_not_an_error() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &GOOD.replace("{runner} engine sim", "vllm-not-installed-here serve"),
    );
    let out = s.runner(&["validate", "plan.toml"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning: engine `sim`: program `vllm-not-installed-here` is not on PATH here"
        ),
        "{stderr}"
    );
}

/// GOOD's engine table, which the matrix tests replace whole.
const ENGINE: &str =
    "name = \"sim\"\nlaunch = \"{runner} engine sim --port {port} --model m\"\nmodel = \"m\"\n";

#[test]
fn matrix_key_shadows_a_builtin_placeholder() {
    insta::assert_snapshot!(validate_with(
        ENGINE,
        "name = \"sim-{port}\"\nlaunch = \"{runner} engine sim --port {port} --model m\"\nmodel = \"m\"\n[engine.matrix]\nport = [8000, 8001]\n"
    ));
}

#[test]
fn matrix_key_missing_from_the_name() {
    insta::assert_snapshot!(validate_with(
        ENGINE,
        "name = \"sim\"\nlaunch = \"{runner} engine sim --port {port} --max-batch {batch}\"\nmodel = \"m\"\n[engine.matrix]\nbatch = [1, 8]\n"
    ));
}

#[test]
fn matrix_key_that_varies_nothing() {
    insta::assert_snapshot!(validate_with(
        ENGINE,
        "name = \"sim-b{batch}\"\nlaunch = \"{runner} engine sim --port {port} --model m\"\nmodel = \"m\"\n[engine.matrix]\nbatch = [1, 8]\n"
    ));
}

#[test]
fn matrix_names_collide_after_expansion() {
    insta::assert_snapshot!(validate_with(
        ENGINE,
        "name = \"sim-b{batch}\"\nlaunch = \"{runner} engine sim --port {port} --max-batch {batch}\"\nmodel = \"m\"\n[engine.matrix]\nbatch = [1, \"1\"]\n"
    ));
}

#[test]
fn matrix_exclude_names_an_unknown_key() {
    insta::assert_snapshot!(validate_with(
        ENGINE,
        "name = \"sim-b{batch}\"\nlaunch = \"{runner} engine sim --port {port} --max-batch {batch}\"\nmodel = \"m\"\n[engine.matrix]\nbatch = [1, 8]\nexclude = [{ bacth = 1 }]\n"
    ));
}

#[test]
fn matrix_exclude_names_an_unknown_value() {
    insta::assert_snapshot!(validate_with(
        ENGINE,
        "name = \"sim-b{batch}\"\nlaunch = \"{runner} engine sim --port {port} --max-batch {batch}\"\nmodel = \"m\"\n[engine.matrix]\nbatch = [1, 8]\nexclude = [{ batch = 4 }]\n"
    ));
}

#[test]
fn workload_matrix_varies_an_unknown_key() {
    insta::assert_snapshot!(validate_with(
        "name = \"chat\"\nprompts = [\"hi\"]\nmax_tokens = 16\n",
        "name = \"chat-{stream}\"\nprompts = [\"hi\"]\nmax_tokens = 16\n[workload.matrix]\nstream = [true, false]\n"
    ));
}

#[test]
fn workload_matrix_key_also_set_in_the_workload() {
    insta::assert_snapshot!(validate_with(
        "name = \"chat\"\nprompts = [\"hi\"]\nmax_tokens = 16\n",
        "name = \"chat-out{max_tokens}\"\nprompts = [\"hi\"]\nmax_tokens = 16\n[workload.matrix]\nmax_tokens = [8, 32]\n"
    ));
}

/// GOOD with its inline prompts replaced by a `[workload.synthetic]` table of these keys.
fn synthetic_with(keys: &str) -> String {
    validate_with(
        "prompts = [\"hi\"]\nmax_tokens = 16\n",
        &format!("[workload.synthetic]\n{keys}"),
    )
}

#[test]
fn synthetic_stddev_and_range_together() {
    insta::assert_snapshot!(synthetic_with(
        "input_tokens_range = [8, 32]\ninput_tokens_stddev = 4.0\ncount = 4\n"
    ));
}

#[test]
fn synthetic_prefix_groups_without_prefix_tokens() {
    insta::assert_snapshot!(synthetic_with(
        "input_tokens = 64\nprefix_groups = 4\ncount = 8\n"
    ));
}

#[test]
fn synthetic_prefix_longer_than_the_prompt() {
    insta::assert_snapshot!(synthetic_with(
        "input_tokens = 16\nprefix_tokens = 16\ncount = 8\n"
    ));
}

#[test]
fn sessions_with_an_open_loop_rate() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &GOOD
            .replacen("concurrency = [1, 4]", "rate = [2.0]", 1)
            .replacen(
            "prompts = [\"hi\"]\nmax_tokens = 16\n",
            "[workload.synthetic]\ninput_tokens = 8\ncount = 2\n[workload.sessions]\nturns = 3\n",
            1,
        ),
    );
    let out = s.runner(&["validate", "plan.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr));
}

#[test]
fn sessions_with_inline_prompts() {
    insta::assert_snapshot!(validate_with(
        "max_tokens = 16\n",
        "max_tokens = 16\n[workload.sessions]\nthink_time = \"1s\"\n"
    ));
}

#[test]
fn synthetic_sessions_without_turns() {
    insta::assert_snapshot!(synthetic_with(
        "input_tokens = 8\ncount = 2\n[workload.sessions]\nthink_time = \"1s\"\n"
    ));
}
