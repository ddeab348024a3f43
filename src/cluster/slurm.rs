//! Slurm: the job-array script that runs one engine of a plan per array task, the merge job
//! that runs after them, the `sbatch` command lines that submit both, and typed job states
//! parsed from `sbatch --parsable`, `squeue` and `sacct`. Slurm's own tools do the work; the
//! runner keeps no daemon.

use std::fmt;
use std::path::{Path, PathBuf};

use super::quote::{shell_line, shell_word};

/// Where the rendered scripts and Slurm's job output go, inside the bundle.
pub const SLURM_DIR: &str = "slurm";
/// The job-array script's file name under [`SLURM_DIR`].
pub const ARRAY_SCRIPT: &str = "engines.sbatch";
/// The merge job's script file name under [`SLURM_DIR`].
pub const MERGE_SCRIPT: &str = "merge.sbatch";

/// What `runner submit --slurm` was asked for, beside the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Slurm's time limit syntax (`30`, `01:00:00`, `1-00:00:00`), passed through.
    pub time: Option<String>,
    /// GPUs each engine's job asks for (`--gres=gpu:N`); none asks for no GPU.
    pub gpus_per_engine: Option<u32>,
    /// Further `sbatch` arguments, each one word, given to both jobs.
    pub sbatch_args: Vec<String>,
    /// The runner binary the jobs run: a path every node sees.
    pub runner: PathBuf,
}

/// One submission: the plan, the bundle directory the jobs write into, the engines (one array
/// task each, in this order) and the options.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub plan_name: &'a str,
    pub plan: &'a Path,
    pub bundle: &'a Path,
    pub engines: &'a [String],
    pub options: &'a SubmitOptions,
}

/// A submission that cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("the plan names no engine to submit")]
    NoEngines,
    #[error("{what} {path} is not valid UTF-8; Slurm scripts need a printable path")]
    NotUtf8 { what: &'static str, path: PathBuf },
}

fn utf8<'p>(what: &'static str, path: &'p Path) -> Result<&'p str, RenderError> {
    path.to_str().ok_or_else(|| RenderError::NotUtf8 {
        what,
        path: path.to_path_buf(),
    })
}

/// A job name Slurm and people can read: the plan's name with anything but `[A-Za-z0-9._-]`
/// replaced by `_`.
pub fn job_name(plan_name: &str, suffix: &str) -> String {
    let clean: String = plan_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("runner-{clean}-{suffix}")
}

/// A path for sbatch's `--output`, where `%` starts a pattern: a literal `%` is `%%`.
fn output_pattern(path: &str) -> String {
    path.replace('%', "%%")
}

impl Submission<'_> {
    fn slurm_dir(&self) -> PathBuf {
        self.bundle.join(SLURM_DIR)
    }

    /// The job-array script: array task `i` runs engine `i` into `BUNDLE/parts/<engine>/`.
    pub fn array_script(&self) -> Result<String, RenderError> {
        if self.engines.is_empty() {
            return Err(RenderError::NoEngines);
        }
        let runner = utf8("the runner binary", &self.options.runner)?;
        let plan = utf8("the plan", self.plan)?;
        let bundle = utf8("the bundle directory", self.bundle)?;
        let mut s = String::new();
        s.push_str("#!/bin/sh\n");
        s.push_str(&format!(
            "# Rendered by `runner submit --slurm` for plan {}: one array task per engine.\n",
            self.plan_name.replace('\n', " ")
        ));
        s.push_str("# Task i runs engine i into BUNDLE/parts/<engine>/.\n");
        s.push_str("set -eu\n");
        s.push_str("case \"${SLURM_ARRAY_TASK_ID:?runs as a Slurm array task}\" in\n");
        for (i, engine) in self.engines.iter().enumerate() {
            s.push_str(&format!("  {i}) engine={} ;;\n", shell_word(engine)));
        }
        s.push_str(
            "  *) echo \"runner: no engine for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\n",
        );
        s.push_str("esac\n");
        s.push_str(&format!(
            "exec {} exec {} --engine \"$engine\" --part {}\n",
            shell_word(runner),
            shell_word(plan),
            shell_word(bundle)
        ));
        Ok(s)
    }

    /// The merge job's script: combines the parts into one bundle and one report.
    pub fn merge_script(&self) -> Result<String, RenderError> {
        let runner = utf8("the runner binary", &self.options.runner)?;
        let bundle = utf8("the bundle directory", self.bundle)?;
        let mut s = String::new();
        s.push_str("#!/bin/sh\n");
        s.push_str(&format!(
            "# Rendered by `runner submit --slurm` for plan {}: runs after every engine's\n",
            self.plan_name.replace('\n', " ")
        ));
        s.push_str("# task ended, however it ended (afterany), and merges their parts.\n");
        s.push_str("set -eu\n");
        s.push_str(&format!(
            "exec {} merge {}\n",
            shell_word(runner),
            shell_word(bundle)
        ));
        Ok(s)
    }

    fn common_args(&self, args: &mut Vec<String>) {
        let o = self.options;
        if let Some(p) = &o.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &o.account {
            args.push(format!("--account={a}"));
        }
        if let Some(t) = &o.time {
            args.push(format!("--time={t}"));
        }
    }

    /// `sbatch` argv for the job array (no shell between: each value is one argument).
    /// Options live here rather than in `#SBATCH` lines, whose quoting rules are sbatch's own.
    pub fn array_sbatch(&self) -> Result<Vec<String>, RenderError> {
        if self.engines.is_empty() {
            return Err(RenderError::NoEngines);
        }
        let dir = self.slurm_dir();
        let dir_s = utf8("the bundle directory", &dir)?;
        let mut args = vec![
            "sbatch".to_string(),
            "--parsable".to_string(),
            format!("--job-name={}", job_name(self.plan_name, "engines")),
            format!("--array=0-{}", self.engines.len() - 1),
            "--nodes=1".to_string(),
            "--ntasks=1".to_string(),
            format!("--output={}/engine-%A_%a.out", output_pattern(dir_s)),
        ];
        self.common_args(&mut args);
        if let Some(n) = self.options.gpus_per_engine {
            args.push(format!("--gres=gpu:{n}"));
        }
        args.extend(self.options.sbatch_args.iter().cloned());
        args.push(format!("{dir_s}/{ARRAY_SCRIPT}"));
        Ok(args)
    }

    /// `sbatch` argv for the merge job, after the array job `array` ended in any state.
    pub fn merge_sbatch(&self, array: &JobId) -> Result<Vec<String>, RenderError> {
        let dir = self.slurm_dir();
        let dir_s = utf8("the bundle directory", &dir)?;
        let mut args = vec![
            "sbatch".to_string(),
            "--parsable".to_string(),
            format!("--job-name={}", job_name(self.plan_name, "merge")),
            format!("--dependency=afterany:{}", array.id),
            "--nodes=1".to_string(),
            "--ntasks=1".to_string(),
            format!("--output={}/merge-%j.out", output_pattern(dir_s)),
        ];
        self.common_args(&mut args);
        args.extend(self.options.sbatch_args.iter().cloned());
        args.push(format!("{dir_s}/{MERGE_SCRIPT}"));
        Ok(args)
    }

    /// What `--dry-run` prints: both scripts and the two commands that would submit them.
    pub fn dry_run(&self) -> Result<String, RenderError> {
        let placeholder = JobId {
            id: 0,
            cluster: None,
        };
        let merge_cmd = shell_line(&self.merge_sbatch(&placeholder)?)
            .replace("afterany:0", "afterany:$ARRAY_JOB_ID");
        Ok(format!(
            "# {dir}/{ARRAY_SCRIPT}\n{array}\n# {dir}/{MERGE_SCRIPT}\n{merge}\n\
             # submitted with:\nARRAY_JOB_ID=$({array_cmd})\n{merge_cmd}\n",
            dir = self.slurm_dir().display(),
            array = self.array_script()?,
            merge = self.merge_script()?,
            array_cmd = shell_line(&self.array_sbatch()?),
        ))
    }
}

/// A Slurm job id as `sbatch --parsable` prints it: `123`, or `123;cluster` on a federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobId {
    pub id: u64,
    pub cluster: Option<String>,
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)
    }
}

/// Output of a Slurm tool that does not read as expected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("sbatch --parsable printed {0:?}, not a job id (`123` or `123;cluster`)")]
    JobId(String),
    #[error("{tool} line {line:?} has {found} fields, expected {expected} (`{format}`)")]
    Fields {
        tool: &'static str,
        line: String,
        found: usize,
        expected: usize,
        format: &'static str,
    },
    #[error("{tool} line {line:?} names job {job:?}, not `ID`, `ID_TASK` or `ID_[TASKS]`")]
    Job {
        tool: &'static str,
        line: String,
        job: String,
    },
}

/// Reads `sbatch --parsable` output.
pub fn parse_job_id(stdout: &str) -> Result<JobId, ParseError> {
    let text = stdout.trim();
    let (id, cluster) = match text.split_once(';') {
        Some((id, cluster)) => (id, Some(cluster.trim().to_string())),
        None => (text, None),
    };
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| ParseError::JobId(stdout.to_string()))?;
    if cluster.as_deref() == Some("") {
        return Err(ParseError::JobId(stdout.to_string()));
    }
    Ok(JobId { id, cluster })
}

/// Which array tasks a row is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tasks {
    /// A job that is not an array (the merge job).
    None,
    /// One task of an array.
    One(u32),
    /// Tasks squeue folds into one row while they wait (`0-3`, `1,3`, `0-7%2`), as printed.
    Pending(String),
}

/// A job, or a task of a job array, as Slurm's tools name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub id: u64,
    pub tasks: Tasks,
}

fn parse_job_ref(tool: &'static str, line: &str, s: &str) -> Result<JobRef, ParseError> {
    let bad = || ParseError::Job {
        tool,
        line: line.to_string(),
        job: s.to_string(),
    };
    let (id, tasks) = match s.split_once('_') {
        None => (s, Tasks::None),
        Some((id, rest)) => {
            let tasks = if let Some(inner) = rest.strip_prefix('[') {
                Tasks::Pending(inner.strip_suffix(']').ok_or_else(bad)?.to_string())
            } else {
                Tasks::One(rest.parse().map_err(|_| bad())?)
            };
            (id, tasks)
        }
    };
    Ok(JobRef {
        id: id.parse().map_err(|_| bad())?,
        tasks,
    })
}

/// A job's state, as `squeue -o %T` and `sacct -o State` spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Configuring,
    Running,
    Completing,
    Suspended,
    Requeued,
    Resizing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    OutOfMemory,
    Preempted,
    BootFail,
    Deadline,
    /// A state this runner does not know (a newer Slurm's), kept as printed.
    Other(String),
}

impl JobState {
    /// Reads a state word; sacct's `CANCELLED by 1000` reads as `Cancelled`.
    pub fn parse(s: &str) -> JobState {
        let word = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('+');
        match word {
            "PENDING" | "PD" => JobState::Pending,
            "CONFIGURING" | "CF" => JobState::Configuring,
            "RUNNING" | "R" => JobState::Running,
            "COMPLETING" | "CG" => JobState::Completing,
            "SUSPENDED" | "S" => JobState::Suspended,
            "REQUEUED" | "RQ" | "REQUEUE_HOLD" | "REQUEUE_FED" => JobState::Requeued,
            "RESIZING" | "RS" => JobState::Resizing,
            "COMPLETED" | "CD" => JobState::Completed,
            "FAILED" | "F" => JobState::Failed,
            "CANCELLED" | "CA" => JobState::Cancelled,
            "TIMEOUT" | "TO" => JobState::Timeout,
            "NODE_FAIL" | "NF" => JobState::NodeFail,
            "OUT_OF_MEMORY" | "OOM" => JobState::OutOfMemory,
            "PREEMPTED" | "PR" => JobState::Preempted,
            "BOOT_FAIL" | "BF" => JobState::BootFail,
            "DEADLINE" | "DL" => JobState::Deadline,
            _ => JobState::Other(s.trim().to_string()),
        }
    }

    /// The job will not run again: its outcome is final.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            JobState::Completed
                | JobState::Failed
                | JobState::Cancelled
                | JobState::Timeout
                | JobState::NodeFail
                | JobState::OutOfMemory
                | JobState::Preempted
                | JobState::BootFail
                | JobState::Deadline
        )
    }
}

/// One row of `squeue` or `sacct`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub job: JobRef,
    pub state: JobState,
    /// The node(s) it runs or ran on; none while pending.
    pub nodes: Option<String>,
    /// sacct's `ExitCode` (`0:0`, `1:0`, `0:15`): the exit status and the signal.
    pub exit_code: Option<String>,
}

/// The `squeue` arguments whose output [`parse_squeue`] reads: one row per array task
/// (`-r`), no header.
pub fn squeue_args(jobs: &[JobId]) -> Vec<String> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    vec![
        "squeue".into(),
        "-h".into(),
        "-r".into(),
        "-o".into(),
        SQUEUE_FORMAT.into(),
        "-j".into(),
        ids.join(","),
    ]
}

/// `squeue -o`: job (with task), state, nodes.
pub const SQUEUE_FORMAT: &str = "%i|%T|%N";
/// `sacct -o`: job (with task; steps are `ID.batch`), state, exit code, nodes.
pub const SACCT_FORMAT: &str = "JobID,State,ExitCode,NodeList";

/// The `sacct` arguments whose output [`parse_sacct`] reads.
pub fn sacct_args(jobs: &[JobId]) -> Vec<String> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    vec![
        "sacct".into(),
        "-n".into(),
        "-P".into(),
        "-o".into(),
        SACCT_FORMAT.into(),
        "-j".into(),
        ids.join(","),
    ]
}

fn node_field(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s != "None assigned" && s != "(null)").then(|| s.to_string())
}

/// Reads `squeue -h -r -o '%i|%T|%N'`.
pub fn parse_squeue(stdout: &str) -> Result<Vec<JobRow>, ParseError> {
    let mut rows = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 3 {
            return Err(ParseError::Fields {
                tool: "squeue",
                line: line.to_string(),
                found: f.len(),
                expected: 3,
                format: SQUEUE_FORMAT,
            });
        }
        rows.push(JobRow {
            job: parse_job_ref("squeue", line, f[0].trim())?,
            state: JobState::parse(f[1]),
            nodes: node_field(f[2]),
            exit_code: None,
        });
    }
    Ok(rows)
}

/// Reads `sacct -n -P -o JobID,State,ExitCode,NodeList`; job steps (`ID.batch`, `ID.0`) are
/// left out, their job's row says how it ended.
pub fn parse_sacct(stdout: &str) -> Result<Vec<JobRow>, ParseError> {
    let mut rows = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 4 {
            return Err(ParseError::Fields {
                tool: "sacct",
                line: line.to_string(),
                found: f.len(),
                expected: 4,
                format: SACCT_FORMAT,
            });
        }
        let job = f[0].trim();
        if job.contains('.') {
            continue;
        }
        rows.push(JobRow {
            job: parse_job_ref("sacct", line, job)?,
            state: JobState::parse(f[1]),
            nodes: node_field(f[3]),
            exit_code: node_field(f[2]),
        });
    }
    Ok(rows)
}

/// Why `sacct` gave no rows.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SacctError {
    /// The cluster keeps no job accounting (`AccountingStorageType=accounting_storage/none`):
    /// finished jobs are known only from the parts they wrote.
    #[error("Slurm accounting is off on this cluster: finished jobs are read from their parts")]
    AccountingDisabled,
    #[error("sacct failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Reads a finished `sacct` run: its exit status, stdout and stderr.
pub fn sacct_outcome(
    success: bool,
    status: &str,
    stdout: &str,
    stderr: &str,
) -> Result<Vec<JobRow>, SacctError> {
    if stderr
        .to_ascii_lowercase()
        .contains("accounting storage is disabled")
    {
        return Err(SacctError::AccountingDisabled);
    }
    if !success {
        return Err(SacctError::Failed {
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(parse_sacct(stdout)?)
}
