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
max_dispatch_lag = "10s"
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
max_dispatch_lag = "10s"
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

/// A plan with one launched sim engine (its extra flags given) and one workload.
fn sim_plan(name: &str, sim_flags: &str, load: &str) -> String {
    format!(
        r#"
schema = 1
name = "{name}"
[[engine]]
name = "e"
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 2 --itl-ms 5 {sim_flags}"
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
max_dispatch_lag = "10s"
warmup = 0
{load}
"#
    )
}

#[test]
fn a_bundle_in_use_is_refused_to_resume_and_recover_naming_its_runner() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan("locked", "", "concurrency = [2]\nrequests = 100000"),
    );
    let child = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results", "--quiet"])
        .current_dir(s.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start runner");
    let pid = child.id();
    let mut child = Guard(child);
    let bundle = wait_for_journal(&s.path().join("results"), "locked", "e.w.c2");
    let b = bundle.to_str().expect("path");

    let out = s.runner(&["recover", b]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is in use") && stderr.contains(&format!("pid {pid} (runner)")),
        "{stderr}"
    );
    let out = s.runner(&["exec", "plan.toml", "--results", "results", "--resume", b]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("pid {pid}")),
        "{}",
        text(&out)
    );
    // The live run's engine was left alone.
    let m = read_json(&bundle.join("manifest.json"));
    let pgid = m["engines"][0]["pid"].as_i64().expect("pid");
    assert!(
        !group_alive(pgid).is_empty(),
        "recover killed a live run's engine"
    );

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("signal");
    let status = child.0.wait().expect("reap");
    assert_eq!(status.code(), Some(130));
    let m = read_json(&bundle.join("manifest.json"));
    assert_no_engine_survives(&m);
    // Its runner gone, the bundle is free: recover now answers about the bundle itself.
    let out = s.runner(&["recover", b]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not `running`") && !stderr.contains("in use"),
        "{stderr}"
    );
}

/// A plan with one engine launched through `sh -c launch` and one two-request workload.
fn shell_engine_plan(name: &str, launch: &str) -> String {
    format!(
        r#"
schema = 1
name = "{name}"
[[engine]]
name = "e"
shell = true
launch = "{launch}"
model = "m"
stop_grace = "1s"
[engine.health]
interval = "20ms"
timeout = "60s"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 2
[workload.load]
max_dispatch_lag = "10s"
concurrency = [1]
requests = 2
"#
    )
}

#[test]
fn a_health_answer_from_outside_the_engine_group_does_not_count() {
    let s = Scratch::new();
    // The launched group only sleeps; the server on its port escaped into a session of its own,
    // as another run's engine on a fixed port would be.
    s.write(
        "plan.toml",
        &shell_engine_plan(
            "foreign",
            "setsid {runner} engine sim --port {port} --model m & exec sleep 600",
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    let m = read_json(&bundle.join("manifest.json"));
    let failure = m["engines"][0]["failure"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // The stranger is named; kill it before any assertion can fail.
    let stranger: Option<i32> = failure
        .split("answered by pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    if let Some(p) = stranger {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        failure
            .contains("which is not in this engine's process group: another server holds the port")
            && stranger.is_some(),
        "{failure}"
    );
    assert_eq!(m["engines"][0]["status"], "failed");
    let c = read_json(&bundle.join("cells/e.w.c1.summary.json"));
    assert_eq!(
        c["status"], "failed",
        "nothing was measured on the stranger"
    );
    assert!(c["metrics"].is_null(), "{c}");
}

#[test]
fn an_auto_port_taken_by_another_server_is_launched_again_on_a_new_port() {
    let s = Scratch::new();
    // The first launch finds its port taken by a server outside its group (as a second runner's
    // engine would, between the runner choosing the port and the engine binding it); the second
    // launch serves for itself.
    s.write("plan.toml", &shell_engine_plan("collided", "if [ -e taken ]; then exec {runner} engine sim --port {port} --model m; fi; touch taken; setsid {runner} engine sim --port {port} --model m & exec sleep 600"));
    let (out, bundle) = s.exec("plan.toml");
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("before the engine listened on it; launching it again on another port"),
        "{err}"
    );
    assert_eq!(err.matches("launching it again").count(), 1, "{err}");
    let m = read_json(&bundle.join("manifest.json"));
    let e = &m["engines"][0];
    assert!(
        e["stop"]["survivors"]
            .as_array()
            .map_or(true, |v| v.is_empty()),
        "{e}"
    );
    let c = read_json(&bundle.join("cells/e.w.c1.summary.json"));
    assert_eq!(c["status"], "ok", "{c}");
}

#[test]
fn a_launched_engine_serving_another_model_is_refused() {
    let s = Scratch::new();
    s.write(
        "plan.toml",
        &sim_plan("model", "", "concurrency = [1]\nrequests = 2").replacen(
            "--model m",
            "--model other",
            1,
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    let failure = m["engines"][0]["failure"].as_str().expect("failure");
    assert!(
        failure.contains(r#"serves ["other"], not the plan's model `m`"#),
        "{failure}"
    );
    assert_no_engine_survives(&m);
}

/// A local port nothing listens on, held while the returned socket lives: bound without
/// `listen`, so a connection to it is refused, and (no SO_REUSEADDR) no other test's server can
/// take it meanwhile, as one could a port bound and released (two tests' engines once got one
/// port that way).
fn closed_port() -> (std::os::fd::OwnedFd, u16) {
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind");
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd())
        .expect("its address")
        .port();
    (fd, port)
}

#[test]
fn attaching_where_nothing_listens_says_connection_refused_with_a_countdown() {
    let s = Scratch::new();
    let (_held, port) = closed_port();
    s.write(
        "plan.toml",
        &format!(
            "schema = 1\nname = \"refused\"\n[[engine]]\nname = \"e\"\nurl = \"http://127.0.0.1:{port}\"\nmodel = \"m\"\n\
             [engine.health]\ninterval = \"50ms\"\ntimeout = \"2s\"\n\
             [[workload]]\nname = \"w\"\nprompts = [\"hi\"]\nmax_tokens = 2\n[workload.load]\nmax_dispatch_lag = \"10s\"\nconcurrency = [1]\nrequests = 2\n"
        ),
    );
    let (out, bundle) = s.exec("plan.toml");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| l.contains("connection refused"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        first.starts_with(&format!("[e] http://127.0.0.1:{port}: connection refused"))
            && first.ends_with("s left (`health.timeout`)"),
        "{first}"
    );
    let m = read_json(&bundle.join("manifest.json"));
    let failure = m["engines"][0]["failure"].as_str().expect("failure");
    assert!(failure.contains("last: connection refused"), "{failure}");
}

#[test]
fn probe_says_what_is_wrong_with_the_url() {
    let s = Scratch::new();
    let (_held, port) = closed_port();
    let out = s.runner(&["probe", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "connection refused: nothing listens at 127.0.0.1:{port}"
        )),
        "{}",
        text(&out)
    );
    let out = s.runner(&["probe", "localhost:8000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an http:// URL"),
        "{}",
        text(&out)
    );
    let (_sim, url) = spawn_engine(&["engine", "sim", "--port", "0", "--model", "m"]);
    let out = s.runner(&["probe", &format!("{url}/v1/chat/completions")]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ends with the API path `/v1/chat/completions`")
            && stdout.contains(&format!("OK {url}/v1/chat/completions (model m)")),
        "{stdout}"
    );
}
