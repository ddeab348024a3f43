//! GPUs as a resource: `[gpu] devices`, per-engine `gpus` and `[run] parallel`, on fake GPUs
//! (`RUNNER_FAKE_GPU` naming a directory of one file per device). Each engine's launch line
//! writes what it saw (`CUDA_VISIBLE_DEVICES`, `{gpus}`, `{gpu_count}`) to a file, and puts
//! (index + 1) GiB on its device's file, held by its own PID.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, Utc};
use common::*;

const GIB: u64 = 1 << 30;

/// A fake GPU directory of `n` devices, each using nothing yet.
fn fake_gpus(s: &Scratch, n: usize) -> std::path::PathBuf {
    let dir = s.path().join("gpu");
    std::fs::create_dir(&dir).expect("gpu dir");
    for i in 0..n {
        std::fs::write(dir.join(i.to_string()), "0\n").expect("fake gpu");
    }
    dir
}

/// One engine: records what it saw in `seen.<name>`, puts (index + 1) GiB on its first
/// device, and (with `wait`) starts only once `wait` other engines are ready in the bundle's
/// manifest: so in a run where it is not running side by side with them, it never comes up.
/// (`ready_a[t]`: the manifest also holds this very command line, which must not count.)
fn engine(name: &str, gpus: Option<u32>, wait: Option<usize>, sim: &str) -> String {
    let gate = match wait {
        Some(n) => format!(
            "until [ \\\"$(cat results/*/*/manifest.json 2>/dev/null | grep -c 'ready_a[t]')\\\" -ge {n} ]; do sleep 0.02; done; "
        ),
        None => String::new(),
    };
    let gpus = gpus.map(|g| format!("gpus = {g}\n")).unwrap_or_default();
    format!(
        r#"
[[engine]]
name = "{name}"
{gpus}shell = true
launch = "echo \"$CUDA_VISIBLE_DEVICES|{{gpus}}|{{gpu_count}}\" > seen.{{name}}; echo \"$FROM_ENV\" > env.{{name}}; first=$(echo $CUDA_VISIBLE_DEVICES | cut -d, -f1); printf '%s\n%s\n' $(( (first + 1) << 30 )) $$ > gpu/$first; {gate}exec {{runner}} engine sim --port {{port}} --model m {sim}"
model = "m"
stop_grace = "20s"
env = {{ FROM_ENV = "{{gpus}}/{{gpu_count}}" }}
[engine.health]
interval = "20ms"
"#
    )
}

fn plan(gpu: &str, parallel: bool, engines: &[String], load: &str) -> String {
    format!(
        r#"
schema = 1
name = "placement"
[run]
parallel = {parallel}
[gpu]
interval = "20ms"
release_timeout = "100ms"
{gpu}
{}
[[workload]]
name = "w"
prompts = ["hi"]
max_tokens = 4
[workload.load]
concurrency = [1]
{load}
warmup = 0
max_dispatch_lag = "10s"
"#,
        engines.concat()
    )
}

const FEW: &str = "requests = 8";
const QUICK: &str = "--ttft-ms 1 --itl-ms 1";

fn exec(s: &Scratch, gpu: &std::path::Path) -> (Output, std::path::PathBuf) {
    let out = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_FAKE_GPU", gpu)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .current_dir(s.path())
        .output()
        .expect("run");
    assert!(s.path().join("results").is_dir(), "{}", text(&out));
    let bundle = find_bundle(&s.path().join("results"));
    (out, bundle)
}

fn seen(s: &Scratch, name: &str) -> String {
    std::fs::read_to_string(s.path().join(format!("seen.{name}")))
        .unwrap_or_else(|e| panic!("engine {name} wrote nothing: {e}"))
        .trim()
        .to_string()
}

fn at(engine: &serde_json::Value, key: &str) -> DateTime<Utc> {
    let t = engine[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {engine}"));
    DateTime::parse_from_rfc3339(t)
        .expect("an RFC 3339 instant")
        .with_timezone(&Utc)
}

fn engine_rec<'a>(m: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    m["engines"]
        .as_array()
        .expect("engines")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no engine {name}"))
}

#[test]
fn four_engines_on_four_gpus_run_side_by_side_into_one_bundle() {
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 4);
    // `a` comes up only once the three others are ready: run one after another, it never would.
    let engines = [
        engine("a", Some(1), Some(3), QUICK),
        engine("b", Some(1), None, QUICK),
        engine("c", Some(1), None, QUICK),
        engine("d", Some(1), None, QUICK),
    ];
    s.write("plan.toml", &plan("", true, &engines, FEW));
    let (out, bundle) = exec(&s, &gpu);
    assert!(out.status.success(), "{}", text(&out));

    // Plan order, first fit: a on GPU 0, b on 1, ...; each saw only its own.
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        assert_eq!(seen(&s, name), format!("{i}|{i}|1"), "engine {name}");
        // `env` values take the placeholders too.
        let env = std::fs::read_to_string(s.path().join(format!("env.{name}"))).expect("env");
        assert_eq!(env.trim(), format!("{i}/1"));
    }
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "complete", "{m}");
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let e = engine_rec(&m, name);
        assert_eq!(e["gpus"], serde_json::json!([i]), "{e}");
        assert_eq!(e["cuda_visible_devices"], i.to_string(), "{e}");
        assert_eq!(e["status"], "stopped", "{e}");
        // One bundle with every engine's cell, measured.
        let c = read_json(&bundle.join(format!("cells/{name}.w.c1.summary.json")));
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["metrics"]["requests_ok"], 8, "{c}");
        // GPU memory of its own device only, and held by its own process group.
        let want = (i as u64 + 1) * GIB;
        assert_eq!(
            c["resources"]["gpu_mem_used_peak_bytes"].as_u64(),
            Some(want),
            "{c}"
        );
        assert_eq!(
            c["resources"]["engine_gpu_mem_peak_bytes"].as_u64(),
            Some(want),
            "{c}"
        );
    }
    // The lifecycles overlapped: every other engine was ready before `a` was torn down.
    let a = engine_rec(&m, "a");
    for name in ["b", "c", "d"] {
        let e = engine_rec(&m, name);
        assert!(at(e, "ready_at") < at(a, "stopped_at"), "{e}\n{a}");
        assert!(at(e, "ready_at") <= at(a, "ready_at"), "{e}\n{a}");
    }
    let csv = std::fs::read_to_string(bundle.join("summary.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let report = std::fs::read_to_string(bundle.join("report.md")).expect("report");
    assert!(
        report.contains("on GPU 2 (CUDA_VISIBLE_DEVICES=2)"),
        "{report}"
    );
    assert!(report.contains("side by side"), "{report}");
    assert!(report.contains("the run took"), "{report}");
    assert_no_engine_survives(&m);
}

#[test]
fn engines_needing_overlapping_devices_run_one_after_another() {
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 2);
    // `a` takes both GPUs; `b` and `c` (one each) wait for it, then run side by side.
    let engines = [
        engine("a", Some(2), None, QUICK),
        engine("b", Some(1), None, QUICK),
        engine("c", Some(1), Some(2), QUICK),
    ];
    s.write("plan.toml", &plan("", true, &engines, FEW));
    let (out, bundle) = exec(&s, &gpu);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[b] waiting for 1 free GPU"), "{err}");
    assert_eq!(seen(&s, "a"), "0,1|0,1|2");
    assert_eq!(seen(&s, "b"), "0|0|1");
    assert_eq!(seen(&s, "c"), "1|1|1");
    let m = read_json(&bundle.join("manifest.json"));
    let a = engine_rec(&m, "a");
    for name in ["b", "c"] {
        let e = engine_rec(&m, name);
        assert!(at(e, "launched_at") >= at(a, "stopped_at"), "{e}\n{a}");
        let c = read_json(&bundle.join(format!("cells/{name}.w.c1.summary.json")));
        assert_eq!(c["status"], "ok", "{c}");
    }
    // a's cell saw both its devices: 1 GiB on GPU 0 (its first), and GPU 1 as it was.
    let ca = read_json(&bundle.join("cells/a.w.c1.summary.json"));
    assert_eq!(
        ca["resources"]["gpu_mem_used_peak_bytes"].as_u64(),
        Some(GIB),
        "{ca}"
    );
    assert_no_engine_survives(&m);
}

#[test]
fn without_parallel_each_engine_gets_the_first_devices_of_the_list_in_turn() {
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 4);
    let engines = [
        engine("a", Some(1), None, QUICK),
        engine("b", Some(2), None, QUICK),
        engine("c", None, None, QUICK),
    ];
    s.write(
        "plan.toml",
        &plan("devices = [3, 1, 2]", false, &engines, FEW),
    );
    let (out, bundle) = exec(&s, &gpu);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(seen(&s, "a"), "3|3|1");
    assert_eq!(seen(&s, "b"), "3,1|3,1|2");
    // No `gpus`: every listed device, as before placement existed.
    assert_eq!(seen(&s, "c"), "3,1,2|3,1,2|3");
    let m = read_json(&bundle.join("manifest.json"));
    let (a, b) = (engine_rec(&m, "a"), engine_rec(&m, "b"));
    assert!(at(b, "launched_at") >= at(a, "stopped_at"), "{b}\n{a}");
}

#[test]
fn an_engine_asking_for_more_gpus_than_the_machine_has_stops_the_run_before_it_starts() {
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 2);
    let engines = [engine("a", Some(3), None, QUICK)];
    s.write("plan.toml", &plan("", true, &engines, FEW));
    let out = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_FAKE_GPU", &gpu)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .current_dir(s.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("engine `a` asks for 3 GPUs, but NVML sees 2 (0,1)"),
        "{err}"
    );
    assert!(!s.path().join("results").exists(), "no bundle is started");
}

#[test]
fn a_signal_tears_down_every_engine_running_side_by_side() {
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 4);
    let busy = "--ttft-ms 5 --itl-ms 20";
    let engines: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| engine(n, Some(1), None, busy))
        .collect();
    s.write("plan.toml", &plan("", true, &engines, "requests = 100000"));
    let mut child = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_FAKE_GPU", &gpu)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .current_dir(s.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start runner");
    let stderr = child.stderr.take().expect("stderr");
    let mut ready = std::collections::BTreeSet::new();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    for line in lines.by_ref() {
        for n in ["a", "b", "c", "d"] {
            if line.starts_with(&format!("[{n}] ready")) {
                ready.insert(n);
            }
        }
        if ready.len() == 4 {
            break;
        }
    }
    assert_eq!(ready.len(), 4, "every engine came up");
    let results = s.path().join("results");
    for n in ["a", "b", "c", "d"] {
        wait_for_journal(&results, "placement", &format!("{n}.w.c1"));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal");
    // Keep reading stderr so the runner never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    let m = read_json(&find_bundle(&results).join("manifest.json"));
    assert_eq!(m["status"], "interrupted");
    for n in ["a", "b", "c", "d"] {
        let e = engine_rec(&m, n);
        assert_eq!(e["status"], "stopped", "{e}");
        assert!(e["stop"].is_object(), "{e}");
    }
    assert_no_engine_survives(&m);
}

#[test]
fn an_engine_that_fails_side_by_side_fails_its_cells_and_the_others_go_on() {
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 2);
    let engines = [
        engine("bad", Some(1), None, "--no-such-flag"),
        engine("good", Some(1), None, QUICK),
    ];
    s.write("plan.toml", &plan("", true, &engines, FEW));
    let (out, bundle) = exec(&s, &gpu);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(engine_rec(&m, "bad")["status"], "failed", "{m}");
    assert_eq!(engine_rec(&m, "good")["status"], "stopped", "{m}");
    let bad = read_json(&bundle.join("cells/bad.w.c1.summary.json"));
    assert_eq!(bad["status"], "failed", "{bad}");
    let good = read_json(&bundle.join("cells/good.w.c1.summary.json"));
    assert_eq!(good["status"], "ok", "{good}");
    assert_eq!(seen(&s, "good"), "1|1|1");
    assert_no_engine_survives(&m);
}

/// A small tmpfs mounted for one test (needs root, as CI has), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test fills a real disk: it mounts a {size} tmpfs at {}, which needs root",
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
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_run_failure_in_one_lane_stops_the_engines_running_beside_it() {
    // `fast` fills the bundle's 1 MiB disk with records, and its lane fails on the write; `slow`
    // never sends a first token, so only the run's own stop ends its cell: then it is torn down.
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 2);
    let disk = Tmpfs::mount(&s.path().join("results"), "1m");
    let engines = [
        engine("slow", Some(1), None, "--ttft-ms 3600000 --itl-ms 1"),
        engine("fast", Some(1), None, QUICK),
    ];
    let load = "requests = 1000000\nfirst_token_timeout = \"1h\"\nrequest_timeout = \"2h\"";
    s.write(
        "plan.toml",
        &plan("", true, &engines, load).replace("concurrency = [1]", "concurrency = [4]"),
    );
    let out = Command::new(RUNNER)
        .args(["exec", "plan.toml", "--results", "results"])
        .env("RUNNER_FAKE_GPU", &gpu)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .current_dir(s.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("stopping the engines still running"), "{err}");
    let m = read_json(&find_bundle(&s.path().join("results")).join("manifest.json"));
    for name in ["slow", "fast"] {
        let pid = engine_rec(&m, name)["pid"]
            .as_i64()
            .expect("a recorded pid");
        assert!(
            group_alive(pid).is_empty(),
            "engine {name} outlived the failed run: {:?}",
            group_alive(pid)
        );
    }
    drop(disk);
}

#[test]
fn a_plan_that_asks_for_no_placement_leaves_cuda_visible_devices_alone() {
    // No `[gpu] devices`, no `gpus`, no `parallel`, no `{gpus}`: the engine's environment is as
    // before placement existed (nothing set), while its figures still cover every GPU.
    let s = Scratch::new();
    let gpu = fake_gpus(&s, 2);
    let toml = plan("", false, &[], FEW).replace(
        "[[workload]]",
        r#"[[engine]]
name = "a"
shell = true
launch = "echo \"[${CUDA_VISIBLE_DEVICES-unset}]\" > seen.a; exec {runner} engine sim --port {port} --model m --ttft-ms 1 --itl-ms 1"
model = "m"

[[workload]]"#,
    );
    s.write(
        "plan.toml",
        &toml
            .replace("${CUDA", "${{CUDA")
            .replace("-unset}", "-unset}}"),
    );
    let (out, bundle) = exec(&s, &gpu);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(seen(&s, "a"), "[unset]");
    let m = read_json(&bundle.join("manifest.json"));
    let a = engine_rec(&m, "a");
    assert_eq!(a["gpus"], serde_json::json!([0, 1]), "{a}");
    assert!(a.get("cuda_visible_devices").is_none(), "{a}");
}
