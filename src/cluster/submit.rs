//! Submitting a rendered [`Submission`] to Slurm: the scripts written into `BUNDLE/slurm/`,
//! the job array submitted with `sbatch --parsable`, then the merge job after it
//! (`afterany`). The `sbatch` program is a parameter, so a site wrapper can stand in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::quote::shell_line;
use super::slurm::{
    parse_job_id, JobId, ParseError, RenderError, Submission, ARRAY_SCRIPT, MERGE_SCRIPT, SLURM_DIR,
};

/// The two jobs of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub array: JobId,
    pub merge: JobId,
}

/// A submission that failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}\nhint: is Slurm installed here? `which sbatch`")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Sbatch {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The engines' array job is queued but its merge job could not be: the parts will be
    /// written, and `runner merge BUNDLE` combines them by hand.
    #[error("submitted the engines as job {array}, but not the merge job: {source}\nhint: run `runner merge` on the bundle once job {array} has ended, or `scancel {array}`")]
    MergeNotSubmitted {
        array: JobId,
        #[source]
        source: Box<SubmitError>,
    },
}

fn write_script(path: &Path, text: &str) -> Result<(), SubmitError> {
    let err = |source| SubmitError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(path, mode).map_err(err)
}

/// Writes both scripts under `BUNDLE/slurm/` (created when missing).
pub fn write_scripts(sub: &Submission) -> Result<(), SubmitError> {
    let dir = sub.bundle.join(SLURM_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| SubmitError::Write {
        path: dir.clone(),
        source,
    })?;
    write_script(&dir.join(ARRAY_SCRIPT), &sub.array_script()?)?;
    write_script(&dir.join(MERGE_SCRIPT), &sub.merge_script()?)
}

/// Runs one `sbatch --parsable ...` (argv from [`Submission`]) with `program` as sbatch.
fn sbatch(program: &str, argv: &[String]) -> Result<JobId, SubmitError> {
    let out = Command::new(program)
        .args(&argv[1..])
        .output()
        .map_err(|source| SubmitError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if !out.status.success() {
        let mut shown = argv.to_vec();
        shown[0] = program.to_string();
        return Err(SubmitError::Sbatch {
            command: shell_line(&shown),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(parse_job_id(&String::from_utf8_lossy(&out.stdout))?)
}

/// Writes the scripts, submits the array, then the merge job after it.
pub fn submit(sub: &Submission, program: &str) -> Result<Submitted, SubmitError> {
    write_scripts(sub)?;
    let array = sbatch(program, &sub.array_sbatch()?)?;
    let merge = sub
        .merge_sbatch(&array)
        .map_err(SubmitError::from)
        .and_then(|argv| sbatch(program, &argv))
        .map_err(|e| SubmitError::MergeNotSubmitted {
            array: array.clone(),
            source: Box::new(e),
        })?;
    Ok(Submitted { array, merge })
}
