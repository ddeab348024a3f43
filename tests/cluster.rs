//! Cluster submission: the Slurm scripts, sbatch command lines and `--dry-run` text, and the
//! Kubernetes manifest, pinned by snapshots; Slurm tool output parsed into typed states.

mod common;

use std::path::{Path, PathBuf};

use common::write_executable;
use runner::cluster::k8s::{K8sOptions, K8sSubmission};
use runner::cluster::slurm::{
    parse_job_id, parse_sacct, parse_squeue, sacct_outcome, JobId, JobRef, JobState, RenderError,
    SacctError, Submission, SubmitOptions, Tasks,
};
use runner::cluster::status::engine_jobs;
use runner::cluster::submit::{submit, SubmitError};

fn engines() -> Vec<String> {
    vec!["naive".to_string(), "batching".to_string()]
}

fn options() -> SubmitOptions {
    SubmitOptions {
        partition: Some("debug".into()),
        account: Some("perf team".into()),
        time: Some("01:00:00".into()),
        gpus_per_engine: Some(1),
        sbatch_args: vec!["--exclusive".into(), "--comment=it's a sweep".into()],
        runner: PathBuf::from("/opt/runner/bin/runner"),
    }
}

fn submission<'a>(engines: &'a [String], options: &'a SubmitOptions) -> Submission<'a> {
    Submission {
        plan_name: "quickstart",
        plan: Path::new("/home/a/checkout/plans/quickstart.toml"),
        bundle: Path::new("/scratch/results/quickstart 2026-12-01"),
        engines,
        options,
    }
}

#[test]
fn slurm_dry_run_prints_both_scripts_and_submit_commands() {
    let (e, o) = (engines(), options());
    insta::assert_snapshot!(submission(&e, &o).dry_run().expect("render"));
}

#[test]
fn slurm_array_script_without_options() {
    let e = engines();
    let o = SubmitOptions {
        runner: PathBuf::from("/usr/local/bin/runner"),
        ..SubmitOptions::default()
    };
    let s = submission(&e, &o);
    insta::assert_snapshot!(format!(
        "{}\n{}",
        s.array_script().expect("render"),
        runner::cluster::quote::shell_line(&s.array_sbatch().expect("render"))
    ));
}

#[test]
fn slurm_refuses_a_plan_with_no_engines() {
    let o = options();
    let s = submission(&[], &o);
    assert_eq!(s.array_script(), Err(RenderError::NoEngines));
    assert_eq!(s.array_sbatch(), Err(RenderError::NoEngines));
}

/// The rendered script, run by sh as Slurm would run array task 1, execs the runner with the
/// second engine and the exact plan and bundle paths, hostile characters and all.
#[test]
fn slurm_array_script_runs_the_engine_of_its_task() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fake = tmp.path().join("fake runner");
    write_executable(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done\n",
    );
    let e = vec!["naive".to_string(), "it's $(id) `x`\nnext".to_string()];
    let o = SubmitOptions {
        runner: fake,
        ..SubmitOptions::default()
    };
    let s = Submission {
        plan_name: "q",
        plan: Path::new("/p/a plan's dir/$HOME.toml"),
        bundle: Path::new("/b/100% \"done\""),
        engines: &e,
        options: &o,
    };
    let script = s.array_script().expect("render");
    let run = |task: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("SLURM_ARRAY_TASK_ID", task)
            .output()
            .expect("run sh")
    };
    let out = run("1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[exec][/p/a plan's dir/$HOME.toml][--engine][it's $(id) `x`\nnext][--part][/b/100% \"done\"]"
    );
    let out = run("2");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no engine for array task 2"));
}

#[test]
fn slurm_output_paths_escape_percent() {
    let e = engines();
    let o = options();
    let s = Submission {
        bundle: Path::new("/r/100%"),
        ..submission(&e, &o)
    };
    let argv = s.array_sbatch().expect("render");
    assert!(argv.contains(&"--output=/r/100%%/slurm/engine-%A_%a.out".to_string()));
    assert_eq!(
        argv.last().map(String::as_str),
        Some("/r/100%/slurm/engines.sbatch")
    );
    let merge = s
        .merge_sbatch(&JobId {
            id: 42,
            cluster: None,
        })
        .expect("render");
    assert!(merge.contains(&"--dependency=afterany:42".to_string()));
}

#[test]
fn k8s_indexed_job_and_merge_job() {
    let e = engines();
    let o = K8sOptions {
        image: "ghcr.io/example/runner:0.1".into(),
        namespace: Some("bench".into()),
        claim: "results".into(),
        mount_path: "/results".into(),
        runner: "runner".into(),
        gpus_per_engine: Some(1),
        kubectl_image: "bitnami/kubectl:1.31".into(),
    };
    let s = K8sSubmission {
        plan_name: "Quick Start: \"v2\"",
        plan: "/results/plans/quickstart.toml",
        bundle: "/results/quickstart-2026-12-01",
        engines: &e,
        options: &o,
    };
    insta::assert_snapshot!(s.render().expect("render"));
}

#[test]
fn k8s_names_are_rfc1123_labels() {
    use runner::cluster::k8s::object_name;
    assert_eq!(
        object_name("Quick Start: \"v2\"", "engines"),
        "runner-quick-start-v2-engines"
    );
    let long = object_name(&"x".repeat(100), "merge");
    assert!(long.len() <= 63, "{long}");
    assert!(long.ends_with("-merge"));
}

#[test]
fn sbatch_parsable_reads_id_and_cluster() {
    assert_eq!(
        parse_job_id("123\n"),
        Ok(JobId {
            id: 123,
            cluster: None
        })
    );
    assert_eq!(
        parse_job_id("77;west\n"),
        Ok(JobId {
            id: 77,
            cluster: Some("west".into())
        })
    );
    assert!(parse_job_id("").is_err());
    assert!(parse_job_id("Submitted batch job 5").is_err());
    assert!(parse_job_id("5;").is_err());
}

#[test]
fn squeue_rows_become_typed_states() {
    // As printed by `squeue -h -r -o '%i|%T|%N'` on the one-node cluster (.ci/slurm-setup.sh).
    let rows = parse_squeue("5_0|RUNNING|vm\n5_1|PENDING|\n6|PENDING|\n7_[2-3]|PENDING|\n")
        .expect("parse");
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[0].job,
        JobRef {
            id: 5,
            tasks: Tasks::One(0)
        }
    );
    assert_eq!(rows[0].state, JobState::Running);
    assert_eq!(rows[0].nodes.as_deref(), Some("vm"));
    assert_eq!(rows[1].state, JobState::Pending);
    assert_eq!(rows[1].nodes, None);
    assert_eq!(
        rows[2].job,
        JobRef {
            id: 6,
            tasks: Tasks::None
        }
    );
    assert_eq!(rows[3].job.tasks, Tasks::Pending("2-3".into()));
    assert!(parse_squeue("5_0|RUNNING\n").is_err());
    assert!(parse_squeue("x_0|RUNNING|vm\n").is_err());
}

#[test]
fn sacct_rows_skip_steps_and_read_cancelled_by() {
    let out = "5_0|COMPLETED|0:0|vm\n5_0.batch|COMPLETED|0:0|vm\n5_1|CANCELLED by 0|0:15|vm\n6|FAILED|1:0|vm\n8|NEWSTATE|0:0|\n";
    let rows = parse_sacct(out).expect("parse");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].state, JobState::Completed);
    assert_eq!(rows[1].state, JobState::Cancelled);
    assert_eq!(rows[1].exit_code.as_deref(), Some("0:15"));
    assert_eq!(rows[2].state, JobState::Failed);
    assert_eq!(rows[3].state, JobState::Other("NEWSTATE".into()));
    assert!(rows[..3].iter().all(|r| r.state.is_finished()));
    assert!(!JobState::Pending.is_finished());
    assert!(!rows[3].state.is_finished());
}

#[test]
fn sacct_without_accounting_is_a_typed_answer() {
    // What sacct 22.05 prints on a cluster with AccountingStorageType=accounting_storage/none:
    // exit status 1, this on stderr.
    assert_eq!(
        sacct_outcome(
            false,
            "exit status: 1",
            "",
            "Slurm accounting storage is disabled\n"
        ),
        Err(SacctError::AccountingDisabled)
    );
    assert!(matches!(
        sacct_outcome(false, "exit status: 1", "", "sacct: error: slurmdbd down\n"),
        Err(SacctError::Failed { .. })
    ));
    assert_eq!(
        sacct_outcome(true, "exit status: 0", "9|RUNNING|0:0|vm\n", "")
            .expect("rows")
            .len(),
        1
    );
}

/// Against a real Slurm (`.ci/slurm-setup.sh`, run as root): the rendered array script and
/// merge job, submitted with the rendered sbatch lines, run each engine's task and then the
/// merge, which sees every part. The runner is a stand-in script that records its arguments,
/// so this pins the Slurm side alone. Without a Slurm it is skipped with a reason, unless `CI`
/// is set (CI must have Slurm: `.ci/run` starts one with `.ci/slurm-setup.sh`).
#[test]
fn slurm_real_cluster_runs_every_engine_then_the_merge() {
    let up = std::process::Command::new("sinfo")
        .arg("-h")
        .output()
        .is_ok_and(|o| o.status.success());
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no Slurm answers `sinfo`; .ci/slurm-setup.sh (root) starts one"
        );
        eprintln!("skipped: no Slurm answers `sinfo` (run .ci/slurm-setup.sh as root)");
        return;
    }
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle with space");
    std::fs::create_dir_all(bundle.join("slurm")).expect("mkdir");
    let fake = tmp.path().join("runner");
    write_executable(&fake, "#!/bin/sh\nset -eu\ncase \"$1\" in\n\
         exec) mkdir -p \"$6/parts/$4\"; echo \"$SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $(hostname -s)\" > \"$6/parts/$4/done\" ;;\n\
         merge) ls \"$2/parts\" > \"$2/merged.tmp\"; mv \"$2/merged.tmp\" \"$2/merged\" ;;\n\
         esac\n");
    let e = vec!["naive".to_string(), "batching".to_string()];
    let o = SubmitOptions {
        runner: fake,
        partition: Some("debug".into()),
        ..SubmitOptions::default()
    };
    let plan = tmp.path().join("plan.toml");
    let s = Submission {
        plan_name: "quickstart",
        plan: &plan,
        bundle: &bundle,
        engines: &e,
        options: &o,
    };
    let submitted = submit(&s, "sbatch").expect("submit");
    let (array, merge) = (submitted.array, submitted.merge);
    assert!(bundle.join("slurm/engines.sbatch").exists());

    // squeue answers for both jobs (or they already left the queue); every engine it lists
    // is queued, the rest are unknown until their part says.
    let q = std::process::Command::new("squeue")
        .args(&runner::cluster::slurm::squeue_args(&[array.clone(), merge.clone()])[1..])
        .output()
        .expect("run squeue");
    let rows = parse_squeue(&String::from_utf8_lossy(&q.stdout)).expect("parse squeue");
    assert!(rows
        .iter()
        .all(|r| r.job.id == array.id || r.job.id == merge.id));
    assert_eq!(engine_jobs(&e, &array, &rows, &[]).len(), 2);

    let merged = bundle.join("merged");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !merged.exists() {
        assert!(
            Instant::now() < deadline,
            "merge job {merge} wrote nothing in 120s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        std::fs::read_to_string(&merged).expect("read"),
        "batching\nnaive\n"
    );
    for (task, engine) in e.iter().enumerate() {
        let done = std::fs::read_to_string(bundle.join("parts").join(engine).join("done"))
            .expect("part written");
        let f: Vec<&str> = done.split_whitespace().collect();
        assert_eq!(f[0], array.id.to_string());
        assert_eq!(f[1], task.to_string());
    }
    assert!(bundle.join("slurm").read_dir().expect("ls").any(|f| f
        .map(|f| f.file_name().to_string_lossy().starts_with("merge-"))
        .unwrap_or(false)));
}

fn fake_sbatch(dir: &Path, body: &str) -> String {
    let p = dir.join("sbatch");
    write_executable(&p, &format!("#!/bin/sh\n{body}\n"));
    p.to_string_lossy().into_owned()
}

/// sbatch refusing the array is an error naming the command and sbatch's own words.
#[test]
fn submit_reports_sbatch_refusing_the_array() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sbatch = fake_sbatch(
        tmp.path(),
        "echo 'sbatch: error: invalid partition specified: gpu' >&2; exit 1",
    );
    let (e, o) = (engines(), options());
    let bundle = tmp.path().join("b");
    let s = Submission {
        bundle: &bundle,
        ..submission(&e, &o)
    };
    match submit(&s, &sbatch) {
        Err(SubmitError::Sbatch {
            command, stderr, ..
        }) => {
            assert!(command.contains("--array=0-1"), "{command}");
            assert_eq!(stderr, "sbatch: error: invalid partition specified: gpu");
        }
        other => panic!("expected an sbatch error, got {other:?}"),
    }
    // The scripts are in the bundle either way, for the user to read or submit by hand.
    assert!(bundle.join("slurm/engines.sbatch").exists());
    assert!(bundle.join("slurm/merge.sbatch").exists());
}

/// The array queued but the merge job refused: the error says which job holds the engines
/// and what to do about the merge.
#[test]
fn submit_reports_a_merge_job_that_was_not_queued() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sbatch = fake_sbatch(
        tmp.path(),
        "case \"$*\" in *--dependency=afterany:41*) echo 'sbatch: error: Job dependency problem' >&2; exit 1 ;; esac\necho '41;west'",
    );
    let (e, o) = (engines(), options());
    let bundle = tmp.path().join("b");
    let s = Submission {
        bundle: &bundle,
        ..submission(&e, &o)
    };
    let err = submit(&s, &sbatch).expect_err("merge refused");
    match &err {
        SubmitError::MergeNotSubmitted { array, .. } => assert_eq!(array.id, 41),
        other => panic!("expected MergeNotSubmitted, got {other:?}"),
    }
    assert!(err.to_string().contains("runner merge"), "{err}");
}

#[test]
fn submit_returns_both_job_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sbatch = fake_sbatch(
        tmp.path(),
        "case \"$*\" in *--dependency=afterany:41*) echo 42 ;; *) echo 41 ;; esac",
    );
    let (e, o) = (engines(), options());
    let bundle = tmp.path().join("b");
    let s = Submission {
        bundle: &bundle,
        ..submission(&e, &o)
    };
    let got = submit(&s, &sbatch).expect("submitted");
    assert_eq!((got.array.id, got.merge.id), (41, 42));
}
