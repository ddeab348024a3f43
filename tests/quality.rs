//! `[[quality]]` steps end to end against the built-in engine: agreement pinned exactly from
//! the sim's text model (sim vs sim --perturb), perplexity pinned from its known prompt
//! logprobs, an engine without prompt logprobs said "not supported", a fake evaluation command
//! read through its JSON pointer, and the gates that make the run exit 3.

mod common;

use common::*;
use runner::builtin::text::TextMode;

const HEAD: &str = r#"
schema = 1
name = "q"

[load]
concurrency = [1]
requests = 2
warmup = 0
max_dispatch_lag = "10s"

[[workload]]
name = "w"
prompts = ["hello there"]
max_tokens = 4
"#;

fn engine(name: &str, flags: &str) -> String {
    format!(
        r#"
[[engine]]
name = "{name}"
launch = "{{runner}} engine sim --port {{port}} --model m --step-ms 0 --step-ms-per-seq 0 --prefill-ms-per-token 0 {flags}"
model = "m"
api = "completions"
[engine.health]
interval = "20ms"
timeout = "20s"
"#
    )
}

const PROMPTS: [&str; 4] = [
    "what is a token",
    "say something about batching",
    "count to five",
    "describe the cache",
];
const MAX_TOKENS: u64 = 12;

fn quality_of<'a>(
    manifest: &'a serde_json::Value,
    step: &str,
    engine: &str,
) -> &'a serde_json::Value {
    manifest["quality"]
        .as_array()
        .expect("quality records")
        .iter()
        .find(|r| r["step"] == step && r["engine"] == engine)
        .unwrap_or_else(|| panic!("no record of {step} on {engine}: {manifest:#}"))
}

#[test]
fn agreement_and_perplexity_are_pinned_and_their_gates_fail_the_run() {
    let s = Scratch::new();
    s.write("text.txt", "aa bbb c\n\nthe quick brown fox\n");
    let mut plan = HEAD.to_string();
    plan += &engine("base", "--text");
    plan += &engine("same", "--text");
    plan += &engine("half", "--text --perturb 0.5");
    plan += &engine("noecho", "--text --no-prompt-logprobs");
    plan += &format!(
        r#"
[[quality]]
name = "agree"
kind = "agreement"
prompts = {PROMPTS:?}
max_tokens = {MAX_TOKENS}
min_agreement = 0.9

[[quality]]
name = "ppl"
kind = "perplexity"
file = "text.txt"
max_perplexity_increase = 0.5
"#
    );
    s.write("plan.toml", &plan);
    let (out, bundle) = s.exec("plan.toml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr.contains("quality `agree` on `half`: gate `min_agreement` failed"),
        "{stderr}"
    );
    let m = read_json(&bundle.join("manifest.json"));

    // The baseline is the first engine; it is the reference, not compared with itself.
    let base = quality_of(&m, "agree", "base");
    assert_eq!(base["status"], "ok");
    assert!(base["agreement"].is_null());

    let same = quality_of(&m, "agree", "same");
    assert_eq!(same["status"], "ok", "{same:#}");
    assert_eq!(same["agreement"]["agreement"], 1.0);
    assert_eq!(same["agreement"]["mean_common_prefix"], MAX_TOKENS as f64);
    assert_eq!(same["agreement"]["unit"], "tokens");
    assert_eq!(same["agreement"]["mean_abs_logprob_diff"], 0.0);
    assert!(same["agreement"]["first_divergence"].is_null());

    // The perturbed engine, from the sim's own text model: each prompt's common prefix ends at
    // its first perturbed position; every logprob on it is lowered by exactly 0.5.
    let half_mode = TextMode {
        text: true,
        perturb: 0.5,
        no_prompt_logprobs: false,
    };
    let prefixes: Vec<u64> = PROMPTS
        .iter()
        .map(|p| {
            (1..=MAX_TOKENS)
                .find(|&i| half_mode.perturbed(p, i))
                .map_or(MAX_TOKENS, |i| i - 1)
        })
        .collect();
    let identical = prefixes.iter().filter(|&&n| n == MAX_TOKENS).count();
    let half = quality_of(&m, "agree", "half");
    let a = &half["agreement"];
    assert_eq!(a["prompts"], 4);
    assert_eq!(a["prompts_identical"], identical);
    assert_eq!(a["agreement"], identical as f64 / 4.0);
    assert_eq!(
        a["mean_common_prefix"],
        prefixes.iter().sum::<u64>() as f64 / 4.0
    );
    assert_eq!(a["logprob_tokens"], prefixes.iter().sum::<u64>());
    assert_eq!(a["mean_abs_logprob_diff"], 0.5);
    let first = prefixes
        .iter()
        .position(|&n| n < MAX_TOKENS)
        .expect("a prompt diverges");
    assert_eq!(a["first_divergence"]["prompt"], first);
    assert_eq!(a["first_divergence"]["position"], prefixes[first]);
    assert_eq!(half["status"], "failed");
    assert_eq!(half["gates"][0]["gate"], "min_agreement");
    assert_eq!(half["gates"][0]["passed"], false);
    assert!(identical < 4, "the perturbed engine must differ somewhere");

    // Perplexity: "aa bbb c" scores " bbb" (-1) and " c" (-0.5); "the quick brown fox" scores
    // " quick" (-0.5), " brown" (-0.5), " fox" (-1): 3.5 nats over 5 tokens.
    let p = &quality_of(&m, "ppl", "base")["perplexity"];
    assert_eq!(p["tokens_scored"], 5);
    assert_eq!(p["mean_nll"], 0.7);
    assert_eq!(p["perplexity"], 0.7f64.exp());
    assert_eq!(p["increase"], 0.0);
    // The perturbed engine's logprobs are each 0.5 lower: its perplexity is e^0.5 times.
    let ph = quality_of(&m, "ppl", "half");
    let inc = ph["perplexity"]["increase"].as_f64().expect("increase");
    assert!((inc - (0.5f64.exp() - 1.0)).abs() < 1e-12, "{inc}");
    assert_eq!(ph["status"], "failed");
    assert!(ph["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("gate `max_perplexity_increase` failed"));
    let ne = quality_of(&m, "ppl", "noecho");
    assert_eq!(ne["status"], "not_supported", "{ne:#}");
    assert!(ne["reason"]
        .as_str()
        .unwrap_or_default()
        .starts_with("not supported by this engine"));
    assert!(ne["perplexity"].is_null());
    assert_eq!(ne["gates"][0]["passed"], serde_json::Value::Null);

    // The CSV carries each step's figure per engine.
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("csv");
    let header: Vec<&str> = csv.lines().next().expect("header").split(',').collect();
    for line in csv.lines() {
        assert_eq!(line.split(',').count(), header.len(), "{line}");
    }
    let col = header
        .iter()
        .position(|h| *h == "quality_agree")
        .expect("quality column");
    let half_row: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("half,"))
        .expect("half's row")
        .split(',')
        .collect();
    assert_eq!(half_row[col], format!("{:.6}", identical as f64 / 4.0));
    assert_eq!(half_row[col + 1], "failed");

    // `runner compare` covers quality: the same bundle with the perturbed engine's perplexity
    // doubled is worse on it.
    let other = s.path().join("other");
    derive_bundle(&bundle, &other, &|name, v| {
        if name == "manifest.json" {
            for r in v["quality"].as_array_mut().expect("records") {
                if r["step"] == "ppl" && r["engine"] == "half" {
                    let p = r["perplexity"]["perplexity"].as_f64().expect("ppl");
                    r["perplexity"]["perplexity"] = (2.0 * p).into();
                }
            }
        }
    });
    let cmp = s.runner(&[
        "compare",
        bundle.to_str().expect("path"),
        other.to_str().expect("path"),
    ]);
    let table = String::from_utf8_lossy(&cmp.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("half") && l.contains("quality ppl") && l.contains("perplexity"))
        .unwrap_or_else(|| panic!("no quality row: {table}"));
    assert!(line.contains("2.000x") && line.ends_with("worse"), "{line}");
    assert!(
        table.lines().any(|l| l.starts_with("same")
            && l.contains("quality agree")
            && l.contains("no significant difference")),
        "{table}"
    );

    // The raw outputs are in the bundle, and the report says which gate failed.
    assert!(bundle.join("quality/agree/half.outputs.jsonl").is_file());
    assert!(bundle.join("quality/ppl/base.scores.jsonl").is_file());
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains("gate `min_agreement` failed"), "{report}");
    assert!(
        report.contains(
            "![agree: agreement with the baseline vs output tokens/s](charts/quality_agree.svg)"
        ),
        "{report}"
    );
    let svg = std::fs::read_to_string(bundle.join("charts/quality_agree.svg")).expect("chart");
    assert!(
        svg.contains("Pareto front") && svg.contains("half"),
        "{svg}"
    );
}

#[test]
fn a_command_metric_is_read_by_pointer_and_gated() {
    // The plan in a folder of its own: its command runs there, not where the runner runs.
    let s = Scratch::new();
    std::fs::create_dir(s.path().join("plans")).expect("plans/");
    s.write("plans/task.yaml", "task: t\n");
    s.write(
        "plans/eval.sh",
        "mkdir -p \"$1/m__x\" && printf '{\"results\": {\"t\": {\"acc,none\": 0.75}}}' > \"$1/m__x/results_2026.json\"\necho \"evaluated $2 at $3\"\n",
    );
    let mut plan = HEAD.to_string();
    plan += &engine("sim", "");
    plan += r#"
[[quality]]
name = "passes"
kind = "command"
command = "sh eval.sh {out} {model} {url}{api}"
version_command = "sh -c 'echo fake-eval 1.2'"
metric = { file = "**/results_*.json", pointer = "/results/t/acc,none" }
files = ["task.yaml"]
env = { EVAL_API_KEY = "sk-quality-secret-123" }
timeout = "60s"
min = 0.5
max = 0.9

[[quality]]
name = "fails"
kind = "command"
command = "sh eval.sh {out} {model} {url}{api}"
metric = { file = "**/results_*.json", pointer = "/results/t/acc,none" }
min = 0.8
"#;
    s.write("plans/plan.toml", &plan);
    let (out, bundle) = s.exec("plans/plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quality `fails` on `sim`: gate `min` failed: metric 0.75 is below 0.8"),
        "{stderr}"
    );
    let m = read_json(&bundle.join("manifest.json"));
    let ok = quality_of(&m, "passes", "sim");
    assert_eq!(ok["status"], "ok", "{ok:#}");
    let c = &ok["command"];
    assert_eq!(c["metric"], 0.75);
    assert_eq!(c["exit_code"], 0);
    assert_eq!(c["version"], "fake-eval 1.2");
    assert_eq!(
        c["metric_file"],
        "quality/passes/sim/out/m__x/results_2026.json"
    );
    assert!(ok["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .all(|g| g["passed"] == true));
    let logged = std::fs::read_to_string(bundle.join(c["stdout"].as_str().expect("stdout")))
        .expect("stdout log");
    assert!(
        logged.starts_with("evaluated m at http://127.0.0.1:"),
        "{logged}"
    );
    assert!(logged.trim_end().ends_with("/v1/completions"), "{logged}");
    assert_eq!(
        std::fs::read_to_string(bundle.join("quality/passes/files/task.yaml")).expect("task file"),
        "task: t\n"
    );
    assert_eq!(quality_of(&m, "fails", "sim")["status"], "failed");
    // An evaluator's secret never reaches the bundle's plan copies.
    for f in ["plan.toml", "plan.resolved.json", "manifest.json"] {
        let t = std::fs::read_to_string(bundle.join(f)).expect("bundle file");
        assert!(!t.contains("sk-quality-secret-123"), "{f}: {t}");
    }
}

#[test]
fn a_pointer_that_finds_nothing_fails_the_step_and_says_why() {
    let s = Scratch::new();
    let mut plan = HEAD.to_string();
    plan += &engine("sim", "");
    plan += r#"
[[quality]]
name = "eval"
kind = "command"
command = ["sh", "-c", "echo '{{\"results\": {{}}}}' > \"$0/r.json\"", "{out}"]
metric = { file = "r.json", pointer = "/results/t/acc,none" }
"#;
    s.write("plan.toml", &plan);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let r = quality_of(&m, "eval", "sim");
    assert_eq!(r["status"], "failed");
    let why = r["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("`/results/t/acc,none` finds nothing in"),
        "{why}"
    );
}

#[test]
fn an_engine_that_died_has_its_steps_skipped_with_the_reason() {
    let s = Scratch::new();
    let mut plan = HEAD.to_string();
    plan += &engine("dies", "--crash-after 1");
    plan += r#"
[[quality]]
name = "agree"
kind = "agreement"
prompts = ["hi"]
"#;
    s.write("plan.toml", &plan);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let r = quality_of(&m, "agree", "dies");
    assert_eq!(r["status"], "skipped", "{r:#}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("not run: engine `dies` exited"),
        "{r:#}"
    );
}

#[test]
fn parts_run_apart_are_judged_again_when_merged() {
    let s = Scratch::new();
    let mut plan = HEAD.to_string();
    plan += &engine("base", "--text");
    plan += &engine("half", "--text --perturb 0.5");
    plan += &format!(
        r#"
[[quality]]
name = "agree"
kind = "agreement"
prompts = {PROMPTS:?}
max_tokens = {MAX_TOKENS}
"#
    );
    s.write("plan.toml", &plan);
    let part = |engine: &str, results: &str| {
        let out = s.runner(&[
            "exec",
            "plan.toml",
            "--engine",
            engine,
            "--results",
            results,
            "-q",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        find_bundle(&s.path().join(results))
    };
    let (a, b) = (part("base", "r1"), part("half", "r2"));
    // Alone, the perturbed engine's part has no baseline to compare with.
    let alone = read_json(&b.join("manifest.json"));
    assert_eq!(quality_of(&alone, "agree", "half")["status"], "no_baseline");
    let merged = s.path().join("merged");
    let out = s.runner(&[
        "merge",
        a.to_str().expect("path"),
        b.to_str().expect("path"),
        "--output",
        merged.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&merged.join("manifest.json"));
    let half = quality_of(&m, "agree", "half");
    assert_eq!(half["status"], "ok", "{half:#}");
    assert_eq!(half["agreement"]["mean_abs_logprob_diff"], 0.5);
    assert!(merged.join("quality/agree/base.outputs.jsonl").is_file());
}

#[test]
fn a_command_past_its_timeout_is_stopped_and_fails() {
    let s = Scratch::new();
    let mut plan = HEAD.to_string();
    plan += &engine("sim", "");
    plan += r#"
[[quality]]
name = "slow"
kind = "command"
command = "sleep 600"
metric = { file = "r.json", pointer = "/acc" }
timeout = "1s"
"#;
    s.write("plan.toml", &plan);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let r = quality_of(&m, "slow", "sim");
    assert_eq!(r["status"], "failed");
    assert_eq!(r["command"]["timed_out"], true);
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("ran for more than 1s"),
        "{r:#}"
    );
}

#[test]
fn an_engine_that_refuses_token_ids_and_logprobs_is_asked_for_less() {
    let s = Scratch::new();
    let mut plan = HEAD.to_string();
    plan += &engine("base", "--text");
    plan += &engine(
        "strict",
        "--text --refuse-fields return_tokens_as_token_ids,logprobs",
    );
    plan += &format!(
        r#"
[[quality]]
name = "agree"
kind = "agreement"
prompts = {PROMPTS:?}
max_tokens = {MAX_TOKENS}
"#
    );
    s.write("plan.toml", &plan);
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let a = &quality_of(&m, "agree", "strict")["agreement"];
    // The same text model answers the same words, compared without tokens or logprobs.
    assert_eq!(a["agreement"], 1.0, "{a:#}");
    assert_eq!(a["unit"], "words");
    assert!(a["mean_abs_logprob_diff"].is_null());
}
