//! What keeps a bundle honest and its own: secrets never reach it, a bundle in use is locked,
//! readiness counts only this run's engine, engine logs are bounded, and attach and probe
//! errors say what happened.

mod common;

use std::process::Command;

use common::*;

/// Every file under `dir`, with its path, for grepping the whole bundle.
fn all_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            let bytes = std::fs::read(&p).expect("read file");
            out.push((p, bytes));
        }
    }
    out
}

const SECRETS: [&str; 7] = [
    "hf_lowercase_secret",
    "passwd-secret-1",
    "auth-secret-1",
    "cred-secret-1",
    "sk-verysecret",
    "sk-keyvalue",
    "runner-env-secret",
];

#[test]
fn no_secret_reaches_any_file_of_the_bundle() {
    let s = Scratch::new();
    let plan = r#"
schema = 1
name = "secrets"
[[engine]]
name = "e"
shell = true
launch = "echo \"env: $hf_token $DB_PASSWD $X_AUTH $AWS_CREDENTIALS $MY_API_KEY $RUNNER_TEST_KEY\"; exec {runner} engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1"
model = "m"
env = { hf_token = "hf_lowercase_secret", DB_PASSWD = "passwd-secret-1", X_AUTH = "auth-secret-1", AWS_CREDENTIALS = "cred-secret-1", MY_API_KEY = "sk-verysecret", short_password = "abc" }
api_key_env = "RUNNER_TEST_KEY"
version_command = "sh -c 'echo v1 $RUNNER_TEST_KEY $MY_SERVICE_CREDENTIAL'"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 2
[workload.load]
concurrency = [1]
requests = 2
"#;
    let plan_path = s.write("plan.toml", plan);
    let out = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_TEST_KEY", "sk-keyvalue")
        .env("MY_SERVICE_CREDENTIAL", "runner-env-secret")
        .current_dir(s.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    let bundle = find_bundle(&s.path().join("results"));
    let files = all_files(&bundle);
    assert!(files.len() >= 8, "{files:?}");
    for (path, bytes) in &files {
        let t = String::from_utf8_lossy(bytes);
        for secret in SECRETS {
            assert!(!t.contains(secret), "{} holds {secret}", path.display());
        }
    }
    let m = read_json(&bundle.join("manifest.json"));
    // The version command ran and its output was kept, but its secrets were not.
    assert_eq!(
        m["engines"][0]["version"], "v1 <redacted> <redacted>",
        "{m}"
    );
    // The copy is the plan with its secret values replaced in place; the hash is the original's.
    let copy = std::fs::read_to_string(bundle.join("plan.toml")).expect("plan copy");
    assert!(
        copy.contains(r#"short_password = "<redacted>""#) && copy.contains(r#"name = "secrets""#),
        "{copy}"
    );
    use sha2::Digest;
    let original = std::fs::read(&plan_path).expect("plan");
    let hex: String = sha2::Sha256::digest(&original)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(m["plan"]["sha256"], hex.as_str());
    let log = std::fs::read_to_string(bundle.join("logs/e.log")).expect("log");
    assert!(log.contains("env: <redacted> <redacted>"), "{log}");
}

#[test]
fn a_chatty_engine_log_keeps_its_head_and_tail_within_log_limit() {
    let s = Scratch::new();
    // 200000 numbered lines (1288895 bytes) before the engine starts, then the sim's own lines.
    let plan = r#"
schema = 1
name = "chatty"
[[engine]]
name = "e"
shell = true
launch = "seq 1 200000; exec {runner} engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1"
model = "m"
log_limit = "64KiB"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 2
[workload.load]
concurrency = [1]
requests = 2
"#;
    s.write("plan.toml", plan);
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let log = std::fs::read_to_string(bundle.join("logs/e.log")).expect("log");
    let m = read_json(&bundle.join("manifest.json"));
    let t = &m["engines"][0]["log_truncated"];
    assert_eq!(t["limit_bytes"], 65536, "{m}");
    let written = t["written_bytes"].as_u64().expect("written");
    let dropped = t["dropped_bytes"].as_u64().expect("dropped");
    assert!(written > 1_288_895, "{t}");
    assert_eq!(written - dropped, 65536, "head + tail are the limit: {t}");
    let cut = format!("\n[runner: {dropped} bytes of engine output dropped here;");
    let at = log
        .find(&cut)
        .unwrap_or_else(|| panic!("no cut line in the log"));
    assert_eq!(at, 32768, "the head is half the limit");
    assert!(log.starts_with("1\n2\n3\n"), "the head is the start");
    let tail = &log[log[at + 1..].find('\n').expect("cut line ends") + at + 2..];
    assert_eq!(tail.len(), 32768, "the tail is the other half");
    assert!(
        tail.contains("199999\n200000\nrunner sim engine: model m on http://"),
        "the tail is the end: {tail:.200}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("raise `log_limit`"),
        "{}",
        text(&out)
    );
}
