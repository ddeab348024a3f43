//! Running a plan split by engine: `exec --engine/--part`, `merge`, `submit --slurm` (dry run
//! snapshot, and for real against the one-node Slurm of `.ci/slurm-setup.sh`), `status`,
//! `submit --k8s --dry-run`, `export`, and `compare` of one plan run from two checkouts.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The quickstart plan with `requests = N`: the same engines, workload and grid, fewer
/// requests per level.
fn small_quickstart(dir: &Path, requests: u32) -> PathBuf {
    let text = std::fs::read_to_string(root().join("plans/quickstart.toml")).expect("read plan");
    let text = text.replace(
        "requests = 32     # measured",
        &format!("requests = {requests}     # measured"),
    );
    assert!(text.contains(&format!("requests = {requests} ")));
    // Structure, not speed: on a loaded machine the client guard must not turn a part's cell
    // invalid (which `merge` then reports), so it is relaxed as in every test plan.
    let text = text.replacen("[load]\n", "[load]\nmax_dispatch_lag = \"10s\"\n", 1);
    assert!(text.contains("max_dispatch_lag = \"10s\""));
    let p = dir.join("quickstart.toml");
    std::fs::write(&p, text).expect("write plan");
    p
}

/// Whether a Slurm controller answers here. Without one the test is skipped with a reason,
/// unless `CI` is set: CI must have Slurm (`.ci/run` starts it with `.ci/slurm-setup.sh`).
pub fn slurm_or_skip(test: &str) -> bool {
    let up = std::process::Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI is set but no Slurm answers `sinfo`; .ci/slurm-setup.sh (root) starts one"
        );
        eprintln!("skipped {test}: no Slurm answers `sinfo` (run .ci/slurm-setup.sh as root)");
    }
    up
}

fn runner_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(RUNNER)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run the runner binary")
}

/// Every file of a bundle, relative, without the split run's own directories.
fn files(bundle: &Path) -> BTreeSet<String> {
    walk(bundle)
        .into_iter()
        .map(|p| {
            p.strip_prefix(bundle)
                .expect("inside")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|p| !p.starts_with("parts/") && !p.starts_with("slurm/") && !p.contains("/."))
        .filter(|p| !p.starts_with('.'))
        .collect()
}

fn cell_ids(bundle: &Path) -> Vec<(String, String)> {
    read_json(&bundle.join("manifest.json"))["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_string(),
                c["status"].as_str().expect("status").to_string(),
            )
        })
        .collect()
}

/// The report's structure: its headings and table header rows, no numbers.
fn report_shape(bundle: &Path) -> Vec<String> {
    std::fs::read_to_string(bundle.join("report.md"))
        .expect("report.md")
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn exec_refuses_an_unknown_engine_listing_the_known_ones() {
    let out = runner_in(
        &root(),
        &[
            "exec",
            "plans/quickstart.toml",
            "--engine",
            "nope",
            "--engine",
            "naive",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the plan has no engine nope; its engines are: naive, batching"),
        "{}",
        text(&out)
    );
}

/// Two engines run apart with `--engine`, merged with `--output`: one bundle with every
/// cell in plan order, one report, each part recorded; a bundle of another plan is refused,
/// naming both.
#[test]
fn parts_run_apart_merge_into_one_bundle_and_other_plans_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plan = small_quickstart(tmp.path(), 2);
    let plan_s = plan.to_str().expect("utf8");
    let run = |engine: &str, results: &str| {
        let out = runner_in(
            tmp.path(),
            &[
                "exec",
                plan_s,
                "--engine",
                engine,
                "--results",
                results,
                "-q",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        find_bundle(&tmp.path().join(results))
    };
    let naive = run("naive", "r1");
    let batching = run("batching", "r2");
    let m = read_json(&naive.join("manifest.json"));
    assert_eq!(m["engines"].as_array().expect("engines").len(), 1);
    assert_eq!(cell_ids(&naive).len(), 6);

    let merged = tmp.path().join("merged");
    let out = runner_in(
        tmp.path(),
        &[
            "merge",
            batching.to_str().expect("utf8"),
            naive.to_str().expect("utf8"),
            "--output",
            merged.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ids: Vec<String> = cell_ids(&merged).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 12);
    assert!(ids[0].starts_with("batching.") && ids[11].starts_with("naive."));
    let m = read_json(&merged.join("manifest.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["merged_from"].as_array().expect("parts").len(), 2);
    // What was sent travels with the cells: one materialized file per workload.
    let workloads = m["workloads"].as_array().expect("workloads");
    assert!(!workloads.is_empty(), "{m}");
    for w in workloads {
        let path = w["path"].as_str().expect("path");
        assert!(merged.join(path).is_file(), "{path} in the merged bundle");
    }
    assert!(merged.join("report.md").exists() && merged.join("summary.csv").exists());
    for id in &ids {
        assert!(merged.join(format!("cells/{id}.summary.json")).exists());
        assert!(merged.join(format!("cells/{id}.records.jsonl")).exists());
    }

    // A bundle of another plan file (one more request) does not merge with these.
    let other_dir = tmp.path().join("other");
    std::fs::create_dir(&other_dir).expect("mkdir");
    let other_plan = small_quickstart(&other_dir, 3);
    let out = runner_in(
        tmp.path(),
        &[
            "exec",
            other_plan.to_str().expect("utf8"),
            "--engine",
            "batching",
            "--results",
            "r3",
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let other = find_bundle(&tmp.path().join("r3"));
    let out = runner_in(
        tmp.path(),
        &[
            "merge",
            naive.to_str().expect("utf8"),
            other.to_str().expect("utf8"),
            "--output",
            tmp.path().join("bad").to_str().expect("utf8"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("are bundles of different plans")
            && err.contains(naive.to_str().expect("utf8"))
            && err.contains(other.to_str().expect("utf8")),
        "{}",
        text(&out)
    );
    assert!(
        !tmp.path().join("bad").exists(),
        "a refused merge leaves nothing"
    );
}

/// `--dry-run` prints both scripts and the sbatch lines and creates nothing.
#[test]
fn submit_slurm_dry_run_prints_the_scripts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let out = runner_in(
        &root(),
        &[
            "submit",
            "plans/quickstart.toml",
            "--slurm",
            "--dry-run",
            "--partition",
            "debug",
            "--time",
            "00:30:00",
            "--gpus-per-engine",
            "1",
            "--sbatch-arg",
            "--exclusive",
            "--results",
            results.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!results.exists(), "a dry run creates nothing");
    let stdout = String::from_utf8_lossy(&out.stdout)
        .replace(RUNNER, "{runner}")
        .replace(root().to_str().expect("utf8"), "{repo}")
        .replace(tmp.path().to_str().expect("utf8"), "{tmp}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn submit_k8s_dry_run_renders_the_jobs() {
    let out = runner_in(
        &root(),
        &[
            "submit",
            "plans/quickstart.toml",
            "--k8s",
            "--dry-run",
            "--image",
            "registry.example/runner:1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn export_writes_both_formats_into_the_bundle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plan = small_quickstart(tmp.path(), 2);
    let out = runner_in(
        tmp.path(),
        &[
            "exec",
            plan.to_str().expect("utf8"),
            "--engine",
            "naive",
            "-q",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let bundle = find_bundle(&tmp.path().join("results"));
    let b = bundle.to_str().expect("utf8");
    for (format, dir) in [("llm-d", "export/llm-d"), ("vllm", "export/vllm")] {
        let out = runner_in(tmp.path(), &["export", b, "--format", format]);
        assert!(out.status.success(), "{}", text(&out));
        let written: Vec<PathBuf> = walk(&bundle.join(dir));
        let ok = cell_ids(&bundle).iter().filter(|(_, s)| s == "ok").count();
        let skipped = String::from_utf8_lossy(&out.stdout)
            .matches("skipped ")
            .count();
        assert_eq!(written.len() + skipped, 6, "{}", text(&out));
        assert!(written.len() <= ok);
        for f in written {
            read_json(&f);
        }
    }
}

/// One plan run from two copies of its directory: `compare` lists no command difference,
/// though every launched command names the runner and the plan's directory differs.
#[test]
fn compare_of_two_checkouts_lists_no_command_difference() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut bundles = Vec::new();
    for (copy, results) in [
        ("checkout-a", "results-a"),
        ("elsewhere/checkout-b", "results-b"),
    ] {
        let dir = tmp.path().join(copy).join("plans");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let plan = small_quickstart(&dir, 2);
        // A path under the plan's directory in the command line (a value the sim engine only
        // uses when it rejects requests, which it does not here): the same plan file in
        // both copies, an absolute path that differs once launched.
        let source = std::fs::read_to_string(&plan).expect("read");
        let source = source.replacen(
            "--max-batch 1 --step-ms 3",
            "--max-batch 1 --step-ms 3 --retry-after {plan_dir}/models/tiny",
            1,
        );
        std::fs::write(&plan, source).expect("write");
        let out = runner_in(
            tmp.path(),
            &[
                "exec",
                plan.to_str().expect("utf8"),
                "--engine",
                "naive",
                "-q",
                "--results",
                results,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let b = find_bundle(&tmp.path().join(results));
        let m = read_json(&b.join("manifest.json"));
        let rel = m["engines"][0]["argv_relative"]
            .as_array()
            .expect("relative")
            .clone();
        assert_eq!(rel[0], "{runner}");
        assert!(rel.iter().any(|a| a == "{plan_dir}/models/tiny"), "{rel:?}");
        assert_eq!(
            m["plan"]["git_commit"],
            serde_json::Value::Null,
            "not in a repository"
        );
        bundles.push(b);
    }
    let out = runner_in(
        tmp.path(),
        &[
            "compare",
            bundles[0].to_str().expect("utf8"),
            bundles[1].to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("command"),
        "{}",
        text(&out)
    );
}

/// Against the real one-node Slurm: `runner submit --slurm` creates the bundle marked
/// `submitted`, the array runs each engine's part and the merge job combines them;
/// `runner status` follows it; the merged bundle has the cells, files and report structure of
/// a local run of the same plan (no numbers compared).
#[test]
fn slurm_submit_end_to_end_matches_a_local_run() {
    if !slurm_or_skip("slurm_submit_end_to_end_matches_a_local_run") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let plan = small_quickstart(tmp.path(), 4);
    let plan_s = plan.to_str().expect("utf8");
    let out = runner_in(
        tmp.path(),
        &[
            "submit",
            plan_s,
            "--slurm",
            "--time",
            "10",
            "--results",
            "slurm-results",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let bundle = find_bundle(&tmp.path().join("slurm-results"));
    let m = read_json(&bundle.join("manifest.json"));
    assert!(m["slurm"]["array_job_id"].is_u64(), "{m}");
    assert!(bundle.join("slurm/engines.sbatch").exists());
    let b = bundle.to_str().expect("utf8");

    let deadline = Instant::now() + Duration::from_secs(300);
    let last = loop {
        let out = runner_in(tmp.path(), &["status", b]);
        assert!(out.status.success(), "{}", text(&out));
        let last = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = read_json(&bundle.join("manifest.json"))["status"].clone();
        if status != "submitted"
            && last.contains("merge: job")
            && !last.contains("pending")
            && !last.contains("running")
        {
            break last;
        }
        assert!(
            Instant::now() < deadline,
            "the submitted run did not finish in 300s; last status:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        last.contains("naive: job") && last.contains("part complete"),
        "{last}"
    );

    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "complete", "{last}");
    let parts = m["merged_from"].as_array().expect("parts");
    assert_eq!(parts.len(), 2);
    for p in parts {
        assert_eq!(
            p["part"]["slurm_array_job_id"],
            m["slurm"]["array_job_id"].to_string()
        );
        assert!(p["part"]["slurmd_nodename"].is_string());
    }

    let out = runner_in(tmp.path(), &["exec", plan_s, "-q", "--results", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    let local = find_bundle(&tmp.path().join("local"));
    assert_eq!(cell_ids(&bundle), cell_ids(&local));
    assert_eq!(files(&bundle), files(&local));
    assert_eq!(report_shape(&bundle), report_shape(&local));
}

/// Without a real Slurm (a stand-in `sbatch` on PATH): `submit` creates the bundle marked
/// `submitted` with the job ids; one engine's part is run by hand with `--part`, and `merge`
/// lists the other as missing, exits 3, and marks the bundle failed with that engine skipped.
#[test]
fn merge_of_a_submitted_bundle_lists_the_missing_part() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let sbatch = bin.join("sbatch");
    write_executable(&sbatch, "#!/bin/sh\necho 42\n");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let plan = small_quickstart(tmp.path(), 2);
    let plan_s = plan.to_str().expect("utf8");
    let out = std::process::Command::new(RUNNER)
        .args(["submit", plan_s, "--slurm", "--results", "r"])
        .current_dir(tmp.path())
        .env("PATH", &path)
        .output()
        .expect("run submit");
    assert!(out.status.success(), "{}", text(&out));
    let bundle = find_bundle(&tmp.path().join("r"));
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "submitted");
    assert_eq!(m["slurm"]["array_job_id"], 42);
    let b = bundle.to_str().expect("utf8");

    let out = runner_in(
        tmp.path(),
        &["exec", plan_s, "--engine", "naive", "--part", b, "-q"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let part = read_json(&bundle.join("parts/naive/manifest.json"));
    assert_eq!(part["part"]["engines"][0], "naive");
    assert!(part["part"]["host"].is_string());

    let out = runner_in(tmp.path(), &["merge", b]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing part: engine batching wrote none"),
        "{}",
        text(&out)
    );
    let m = read_json(&bundle.join("manifest.json"));
    assert_eq!(m["status"], "failed");
    assert_eq!(m["engines"][1]["status"], "skipped");
    let cells = cell_ids(&bundle);
    assert_eq!(cells.len(), 12);
    assert!(cells[..6].iter().all(|(_, s)| s == "ok"), "{cells:?}");
    assert!(cells[6..].iter().all(|(_, s)| s == "pending"), "{cells:?}");
    assert!(bundle.join("report.md").exists());
}
