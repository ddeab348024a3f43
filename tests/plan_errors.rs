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

const ENGINE_MODEL: &str = "model = \"m\"\n\n[[workload]]";

/// GOOD with `gpu` (a `[gpu]` table's lines) and `engine` (lines of the engine) added.
fn gpus_with(gpu: &str, engine: &str) -> String {
    let to = format!("model = \"m\"\n{engine}\n\n[gpu]\n{gpu}\n\n[[workload]]");
    validate_with(ENGINE_MODEL, &to)
}

#[test]
fn gpus_zero() {
    insta::assert_snapshot!(gpus_with("devices = [0, 1]", "gpus = 0"));
}

#[test]
fn gpu_device_listed_twice() {
    insta::assert_snapshot!(gpus_with("devices = [0, 1, 0]", "gpus = 1"));
}

#[test]
fn gpu_devices_empty() {
    insta::assert_snapshot!(gpus_with("devices = []", ""));
}

#[test]
fn gpu_device_negative() {
    insta::assert_snapshot!(gpus_with("devices = [0, -1]", ""));
}

#[test]
fn gpus_more_than_devices() {
    insta::assert_snapshot!(gpus_with("devices = [0, 1]", "gpus = 3"));
}

#[test]
fn gpus_with_gpu_disabled_and_no_devices() {
    insta::assert_snapshot!(gpus_with("enabled = false", "gpus = 1"));
}

#[test]
fn gpus_and_env_cuda_visible_devices() {
    insta::assert_snapshot!(gpus_with(
        "devices = [0, 1]",
        "gpus = 1\nenv = { CUDA_VISIBLE_DEVICES = \"1\" }"
    ));
}

#[test]
fn gpus_on_an_attached_engine() {
    insta::assert_snapshot!(validate_with(
        "launch = \"{runner} engine sim --port {port} --model m\"",
        "url = \"http://127.0.0.1:9\"\ngpus = 1"
    ));
}

#[test]
fn quality_key_of_another_kind() {
    insta::assert_snapshot!(validate_with(
        "max_tokens = 16\n",
        "max_tokens = 16\n\n[[quality]]\nname = \"ppl\"\nkind = \"perplexity\"\nfile = \"plan.toml\"\nmin_agreement = 0.9\n"
    ));
}

#[test]
fn cost_without_a_price() {
    insta::assert_snapshot!(validate_with("[load]", "[cost]\n\n[load]"));
}

#[test]
fn negative_usd_per_kwh() {
    insta::assert_snapshot!(validate_with(
        "[load]",
        "[cost]\nusd_per_hour = 2.49\nusd_per_kwh = -0.12\n\n[load]"
    ));
}

#[test]
fn quality_baseline_names_an_unknown_engine() {
    insta::assert_snapshot!(validate_with(
        "max_tokens = 16\n",
        "max_tokens = 16\n\n[[quality]]\nname = \"agree\"\nkind = \"agreement\"\nprompts = [\"hi\"]\nbaseline = \"hf\"\n"
    ));
}

#[test]
fn quality_command_with_an_unknown_placeholder() {
    insta::assert_snapshot!(validate_with(
        "max_tokens = 16\n",
        "max_tokens = 16\n\n[[quality]]\nname = \"eval\"\nkind = \"command\"\ncommand = \"lm_eval --model_args base_url={uri}\"\nmetric = { file = \"*.json\", pointer = \"/acc\" }\n"
    ));
}

#[test]
fn unknown_on_failure() {
    insta::assert_snapshot!(validate_with(
        "model = \"m\"\n",
        "model = \"m\"\non_failure = \"retry\"\n"
    ));
}

#[test]
fn max_restarts_without_restart() {
    insta::assert_snapshot!(validate_with(
        "model = \"m\"\n",
        "model = \"m\"\nmax_restarts = 2\n"
    ));
}

#[test]
fn until_failure_without_max_concurrency() {
    insta::assert_snapshot!(validate_with(
        "requests = 10\n",
        "requests = 10\nuntil_failure = true\n"
    ));
}

#[test]
fn until_failure_bound_below_the_grid() {
    insta::assert_snapshot!(validate_with(
        "requests = 10\n",
        "requests = 10\nuntil_failure = true\nmax_concurrency = 4\n"
    ));
}

#[test]
fn until_failure_on_an_open_loop() {
    insta::assert_snapshot!(validate_with(
        "concurrency = [1, 4]\nrequests = 10\n",
        "rate = [1.0]\nrequests = 10\nuntil_failure = true\nmax_concurrency = 8\n"
    ));
}

#[test]
fn workload_matrix_synthetic_key_without_synthetic() {
    insta::assert_snapshot!(validate_with(
        "name = \"chat\"\nprompts = [\"hi\"]\nmax_tokens = 16\n",
        "name = \"chat-in{input_tokens}\"\nprompts = [\"hi\"]\nmax_tokens = 16\n[workload.matrix]\ninput_tokens = [64, 128]\n"
    ));
}

#[test]
fn steady_state_on_an_open_loop() {
    insta::assert_snapshot!(validate_with(
        "concurrency = [1, 4]\nrequests = 10\n",
        "rate = [1.0]\nrequests = 10\nsteady_state = true\n"
    ));
}

#[test]
fn unknown_client_priority() {
    insta::assert_snapshot!(validate_with(
        "[load]",
        "[client]\ncpus = [0]\npriority = \"high\"\n\n[load]"
    ));
}

#[test]
fn unknown_percentile_estimator() {
    insta::assert_snapshot!(validate_with(
        "[load]",
        "[report]\npercentiles = \"median\"\n\n[load]"
    ));
}

#[test]
fn bad_metrics_interval() {
    insta::assert_snapshot!(validate_with(
        "model = \"m\"\n",
        "model = \"m\"\nmetrics_interval = \"often\"\n"
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
