//! Recording what version of an engine produced the numbers: the output of the plan's
//! `version_command`, bounded in time and size.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Runs the command in `cwd` and returns its trimmed output (stdout, then stderr), or why not.
pub async fn capture(argv: &[String], cwd: &Path) -> Result<String, String> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| "version_command ran for more than 60 s".to_string())?
        .map_err(|e| format!("cannot run `{}`: {e}", argv[0]))?;
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if text.is_empty() {
        text = err.trim().to_string();
    }
    if !out.status.success() {
        return Err(format!(
            "version_command exited with {}: {}",
            out.status, text
        ));
    }
    text.truncate(text.char_indices().nth(4000).map_or(text.len(), |(i, _)| i));
    Ok(text)
}
