//! Teardown under hostile engines and a hostile machine: a full disk never keeps an engine
//! alive (neither `exec` nor `recover`), `recover` finds engines launched through scripts and
//! shims, and a process that escapes its group with setsid is found and killed; anything
//! that still holds the engine's port after teardown is named and fails the run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// A small tmpfs mounted for one test, unmounted when dropped. Mounting needs root, which the
/// test machines and CI have; elsewhere the test fails saying so rather than passing silently.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test fills a real disk: it mounts a {size} tmpfs at {}, which needs root (run the suite as root, as CI does)",
            at.display()
        );
        std::fs::create_dir_all(at).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs: {}", text(&out));
        Tmpfs(at.to_path_buf())
    }

    /// Writes zeros into a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).expect("filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Kills a process group (and single pids) on drop, so a failing test leaks nothing.
#[derive(Default)]
struct Reaper {
    groups: Vec<i32>,
    pids: Vec<i32>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for g in &self.groups {
            let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
        }
        for p in &self.pids {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
    }
}

/// Polls, bounded, until `pid`'s processes are gone (SIGKILL is delivered asynchronously).
fn gone_soon(check: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn engine_pgid(bundle: &Path) -> i32 {
    let m = read_json(&bundle.join("manifest.json"));
    m["engines"][0]["pid"]
        .as_i64()
        .expect("the engine's pid is recorded") as i32
}

const LOAD: &str = r#"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
max_dispatch_lag = "10s"
concurrency = [4, 8]
requests = 100000
warmup = 0
"#;

fn sim_plan(name: &str) -> String {
    format!(
        r#"
schema = 1
name = "{name}"
[[engine]]
name = "e"
launch = "{{runner}} engine sim --port {{port}} --model m --ttft-ms 1 --itl-ms 1"
model = "m"
[engine.health]
interval = "20ms"
{LOAD}"#
    )
}

#[test]
fn a_full_disk_mid_run_still_tears_the_engine_down() {
    let s = Scratch::new();
    let disk = Tmpfs::mount(&s.path().join("results"), "1m");
    s.write("plan.toml", &sim_plan("full"));
    let mut reaper = Reaper::default();
    let out = s.runner(&["exec", "plan.toml", "--results", "results", "--quiet"]);
    let bundle = find_bundle(&s.path().join("results"));
    let pgid = engine_pgid(&bundle);
    reaper.groups.push(pgid);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device")
            && err.contains(&format!(
                "{}/cells/e.w.c4.records.jsonl",
                bundle.file_name().expect("name").to_string_lossy()
            )),
        "the error names the path: {err}"
    );
    assert!(
        group_alive(pgid as i64).is_empty(),
        "the engine outlived the failed write: {:?}",
        group_alive(pgid as i64)
    );
    drop(disk);
}

#[test]
fn recover_kills_leftovers_before_it_writes_on_a_full_disk() {
    let s = Scratch::new();
    let disk = Tmpfs::mount(&s.path().join("results"), "8m");
    s.write("plan.toml", &sim_plan("killed"));
    let mut runner = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results", "--quiet"])
        .current_dir(s.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runner");
    let bundle = wait_for_journal(&s.path().join("results"), "killed", "e.w.c4");
    runner.kill().expect("SIGKILL the runner");
    runner.wait().expect("reap");
    let pgid = engine_pgid(&bundle);
    let mut reaper = Reaper::default();
    reaper.groups.push(pgid);
    assert!(
        !group_alive(pgid as i64).is_empty(),
        "the engine outlived the runner"
    );
    disk.fill();

    let out = s.runner(&["recover", bundle.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        gone_soon(|| group_alive(pgid as i64).is_empty()),
        "recover killed nothing before failing to write: {:?}",
        group_alive(pgid as i64)
    );
    let all = text(&out);
    assert!(all.contains("No space left on device"), "{all}");
    assert!(
        all.contains("engines left behind were killed before the write failed: e ("),
        "{all}"
    );
}

#[test]
fn recover_finds_an_engine_launched_through_a_shebang_script() {
    let s = Scratch::new();
    // Like a pyenv or conda shim, or a console script such as `vllm serve`: the program the
    // plan names is not the program that runs (here sh stays the leader, the engine its child).
    let script = s.path().join("engine.sh");
    write_executable(
        &script,
        "#!/bin/sh\n\"$1\" engine sim --port \"$2\" --model m --ttft-ms 1 --itl-ms 1\n",
    );
    s.write(
        "plan.toml",
        &format!(
            r#"
schema = 1
name = "shim"
[[engine]]
name = "e"
launch = ["./engine.sh", "{{runner}}", "{{port}}"]
model = "m"
[engine.health]
interval = "20ms"
{LOAD}"#
        ),
    );
    let mut runner = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results", "--quiet"])
        .current_dir(s.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runner");
    let bundle = wait_for_journal(&s.path().join("results"), "shim", "e.w.c4");
    runner.kill().expect("SIGKILL the runner");
    runner.wait().expect("reap");
    let pgid = engine_pgid(&bundle);
    let mut reaper = Reaper::default();
    reaper.groups.push(pgid);
    let before = group_alive(pgid as i64);
    assert!(
        before.len() >= 2,
        "sh and the engine it started outlived the runner: {before:?}"
    );

    let out = s.runner(&["recover", bundle.to_str().expect("path")]);
    assert!(
        gone_soon(|| group_alive(pgid as i64).is_empty()),
        "recover left the engine alive: {:?}\n{}",
        group_alive(pgid as i64),
        text(&out)
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("killed a leftover engine process group: e (")
            && stdout.contains("engine.sh"),
        "recover says what it killed: {stdout}"
    );
}

#[test]
fn an_escaped_setsid_grandchild_that_ignores_sigterm_is_found_and_killed() {
    let s = Scratch::new();
    // A daemonizing double fork: the subshell exits at once, so the grandchild (its own
    // session and group, SIGTERM ignored) has no parent left in the engine's tree.
    write_executable(
        &s.path().join("engine.sh"),
        "#!/bin/sh\n\
         (setsid sh -c 'trap \"\" TERM; echo $$ > escaped.pid; while :; do sleep 1; done' &)\n\
         while [ ! -s escaped.pid ]; do sleep 0.01; done\n\
         exec \"$1\" engine sim --port \"$2\" --model m --ttft-ms 1 --itl-ms 1\n",
    );
    s.write(
        "plan.toml",
        r#"
schema = 1
name = "escape"
[[engine]]
name = "e"
launch = ["./engine.sh", "{runner}", "{port}"]
model = "m"
stop_grace = "300ms"
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
warmup = 0
"#,
    );
    let (out, bundle) = s.exec("plan.toml");
    let escaped: i32 = std::fs::read_to_string(s.path().join("escaped.pid"))
        .expect("the engine wrote its grandchild's pid")
        .trim()
        .parse()
        .expect("a pid");
    let mut reaper = Reaper::default();
    reaper.pids.push(escaped);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        gone_soon(|| !alive(i64::from(escaped))),
        "the setsid'd grandchild survived teardown"
    );
    let m = read_json(&bundle.join("manifest.json"));
    let stop = &m["engines"][0]["stop"];
    let listed = stop["escaped"]
        .as_array()
        .expect("escaped processes are listed");
    assert!(
        listed.iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("pid {escaped} ")))),
        "{stop}"
    );
    assert_eq!(
        stop["survivors"].as_array().map(Vec::len),
        Some(0),
        "{stop}"
    );
    assert_no_engine_survives(&m);
}

/// An HTTP engine that shares its port (SO_REUSEPORT). As `engine` it listens, writes its
/// port to `port`, and answers its health check 503 until `held` exists; as `holder` it
/// listens on that port too, then writes `held`. Both answer the model list and non-streamed
/// completions alike, so it does not matter which of the two the kernel hands a connection.
const SHARED_PORT_SERVER: &str = r#"
import http.server, os, socket, sys
port, role = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health" and not os.path.exists("held"):
            return self.reply(503, b'{"loading":true}')
        self.reply(200, b'{"object":"list","data":[{"id":"m","object":"model"}]}')
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.reply(200, b'{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')
class S(http.server.ThreadingHTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()
srv = S(("127.0.0.1", port), H)
done = "port" if role == "engine" else "held"
open(done + ".tmp", "w").write(str(port))
os.rename(done + ".tmp", done)
srv.serve_forever()
"#;

#[test]
fn a_process_outside_the_engine_holding_its_port_is_named_and_fails_the_run() {
    let s = Scratch::new();
    s.write("serve.py", SHARED_PORT_SERVER);
    s.write(
        "plan.toml",
        r#"
schema = 1
name = "held"
[[engine]]
name = "e"
launch = ["python3", "serve.py", "{port}", "engine"]
model = "m"
[engine.health]
interval = "20ms"
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 1
stream = false
[workload.load]
max_dispatch_lag = "10s"
concurrency = [1]
requests = 2
warmup = 0
"#,
    );
    let runner = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .current_dir(s.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start runner");
    let mut reaper = Reaper::default();
    reaper.pids.push(runner.id() as i32);
    // The engine tells its port; a process the runner did not launch then listens on it too.
    let port_file = s.path().join("port");
    assert!(
        gone_soon(|| port_file.is_file()),
        "the engine never wrote its port"
    );
    let port = std::fs::read_to_string(&port_file).expect("port");
    let holder = Command::new("python3")
        .args(["serve.py", port.trim(), "holder"])
        .current_dir(s.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the holder");
    let holder_pid = holder.id();
    let _holder = Guard(holder);
    let out = runner.wait_with_output().expect("runner output");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let named = format!("pid {holder_pid} `");
    assert!(
        err.contains("still alive after teardown") && err.contains(&named),
        "the survivor is named on stderr: {err}"
    );
    let bundle = find_bundle(&s.path().join("results"));
    let m = read_json(&bundle.join("manifest.json"));
    let stop = &m["engines"][0]["stop"];
    assert_eq!(stop["port_open_after"], true, "{stop}");
    let survivor = stop["survivors"][0].as_str().expect("a survivor");
    assert!(
        survivor.contains(&named)
            && survivor.contains("serve.py")
            && survivor.contains(&format!("port {}", port.trim())),
        "{survivor}"
    );
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(report.contains(&named), "the report names the survivor");
}
