//! The advisory lock (flock) a runner holds on the bundle directory it writes, for its whole
//! lifetime (`exec`, `exec --resume`, `recover`), so that a second runner never writes a bundle
//! in use. The directory itself is locked: nothing has to be created, so a full or read-only
//! disk still lets `recover` know whether the bundle is in use. The holder is named from
//! /proc/locks.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// A held lock; released when dropped (or when the process dies, however it dies).
#[derive(Debug)]
pub struct BundleLock {
    _lock: Flock<File>,
}

/// The bundle could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "bundle {dir} is in use: {holder} holds its lock; wait for that run to end, or stop it (Ctrl-C, or `kill` that pid) first"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock bundle {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the lock on `dir` without waiting.
pub fn acquire(dir: &Path) -> Result<BundleLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    // Opening a directory read-only gives a descriptor flock works on (Linux).
    let file = File::open(dir).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(BundleLock { _lock: lock }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held {
            dir: dir.to_path_buf(),
            holder: holder(meta.dev(), meta.ino()).map_or_else(
                || "another process (its pid is not in /proc/locks)".to_string(),
                |pid| {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| format!(" ({})", c.trim()))
                        .unwrap_or_default();
                    format!("pid {pid}{comm}")
                },
            ),
        }),
        Err((_, e)) => Err(io(std::io::Error::from(e))),
    }
}

/// The pid holding a flock on the file `dev`/`ino`, from /proc/locks.
fn holder(dev: u64, ino: u64) -> Option<i32> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    parse_locks(&text, &want)
}

/// In /proc/locks text, the pid of the FLOCK on `file` (`MAJ:MIN:INODE`, hex major and minor).
fn parse_locks(text: &str, file: &str) -> Option<i32> {
    text.lines().filter(|l| !l.contains("->")).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // 1: FLOCK  ADVISORY  WRITE 2381 fd:01:1835009 0 EOF
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&file))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = acquire(dir.path()).expect("first lock");
        let err = acquire(dir.path()).expect_err("second lock");
        let me = std::process::id();
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
        drop(held);
        acquire(dir.path()).expect("free again");
    }

    #[test]
    fn reads_the_holder_from_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 11 fd:01:99 0 EOF\n2: FLOCK  ADVISORY  WRITE 2381 fd:01:1835009 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 77 fd:01:1835009 0 EOF\n";
        assert_eq!(parse_locks(text, "fd:01:1835009"), Some(2381));
        assert_eq!(parse_locks(text, "fd:01:99"), None);
    }
}
