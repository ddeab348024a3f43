//! Creating a bundle and writing into it. Every file but the append-only journals is written
//! to a temporary name and renamed, so a reader never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::redact::Redactor;

/// A bundle write failed; the message names the path.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A bundle directory being written. Every file written through it passes its redactor.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    redactor: Arc<Redactor>,
}

impl Bundle {
    /// Creates `<root>/<plan>/<UTC timestamp>-<short id>/` with its `cells/`, `logs/` and
    /// `workloads/`;
    /// never reuses an existing directory.
    pub fn create(root: &Path, plan_name: &str) -> Result<Bundle, WriteError> {
        let parent = root.join(plan_name);
        std::fs::create_dir_all(&parent).map_err(|e| WriteError {
            path: parent.clone(),
            source: e,
        })?;
        for attempt in 0u32..100 {
            let now = Utc::now();
            let seed = format!(
                "{}-{}-{attempt}",
                now.timestamp_nanos_opt().unwrap_or(0),
                std::process::id()
            );
            let id: String = Sha256::digest(seed.as_bytes())
                .iter()
                .take(3)
                .map(|b| format!("{b:02x}"))
                .collect();
            let dir = parent.join(format!("{}-{id}", now.format("%Y%m%dT%H%M%SZ")));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let b = Bundle {
                        dir,
                        redactor: Arc::default(),
                    };
                    b.mkdir(super::layout::CELLS)?;
                    b.mkdir(super::layout::LOGS)?;
                    b.mkdir(super::layout::WORKLOADS)?;
                    return Ok(b);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(WriteError {
                        path: dir,
                        source: e,
                    })
                }
            }
        }
        Err(WriteError {
            path: parent,
            source: std::io::Error::other("no unused bundle name after 100 tries"),
        })
    }

    /// Creates the bundle at exactly `dir` (a part of a split run, `BUNDLE/parts/<engine>/`),
    /// its parents too; refuses a directory that exists already, so a part is never written
    /// over another run's.
    pub fn create_at(dir: &Path) -> Result<Bundle, WriteError> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| WriteError {
                path: parent.to_path_buf(),
                source: e,
            })?;
        }
        std::fs::create_dir(dir).map_err(|e| WriteError {
            path: dir.to_path_buf(),
            source: if e.kind() == std::io::ErrorKind::AlreadyExists {
                std::io::Error::other(
                    "it exists already: a part is written once (remove it to run that part again)",
                )
            } else {
                e
            },
        })?;
        let b = Bundle {
            dir: dir.to_path_buf(),
            redactor: Arc::default(),
        };
        b.mkdir(super::layout::CELLS)?;
        b.mkdir(super::layout::LOGS)?;
        b.mkdir(super::layout::WORKLOADS)?;
        Ok(b)
    }

    /// Opens an existing bundle directory for rewriting derived files.
    pub fn open(dir: &Path) -> Bundle {
        Bundle {
            dir: dir.to_path_buf(),
            redactor: Arc::default(),
        }
    }

    /// The same bundle, every later write redacted by `redactor`.
    pub fn with_redactor(mut self, redactor: Redactor) -> Bundle {
        self.redactor = Arc::new(redactor);
        self
    }

    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    fn mkdir(&self, rel: &str) -> Result<(), WriteError> {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(&p).map_err(|e| WriteError { path: p, source: e })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Writes `bytes`, secrets redacted, to `rel` atomically (temporary file, then rename).
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), WriteError> {
        atomic_write(&self.path(rel), &self.redactor.bytes(bytes))
    }

    /// Writes pretty JSON, secrets redacted in every string, to `rel` atomically.
    pub fn write_json<T: Serialize>(&self, rel: &str, value: &T) -> Result<(), WriteError> {
        let err = |e| WriteError {
            path: self.path(rel),
            source: std::io::Error::other(e),
        };
        let mut value = serde_json::to_value(value).map_err(err)?;
        self.redactor.json(&mut value);
        let mut bytes = serde_json::to_vec_pretty(&value).map_err(err)?;
        bytes.push(b'\n');
        self.write(rel, &bytes)
    }
}

impl Bundle {
    /// Writes many files at once (`(rel, bytes)`): every temporary file first, one `syncfs`
    /// for them all, then the renames. Each file is still whole or absent, but a thousand
    /// files cost one flush, not a thousand.
    pub fn write_batch(&self, files: &[(String, Vec<u8>)]) -> Result<(), WriteError> {
        let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(files.len());
        // A failure leaves no temporary file behind (on a full disk they would hold its space).
        let unstage = |staged: &[(PathBuf, PathBuf)]| {
            for (tmp, _) in staged {
                let _ = std::fs::remove_file(tmp);
            }
        };
        for (rel, bytes) in files {
            let path = self.path(rel);
            let tmp = tmp_path(&path);
            if let Err(e) = std::fs::write(&tmp, bytes) {
                let _ = std::fs::remove_file(&tmp);
                unstage(&staged);
                return Err(WriteError { path, source: e });
            }
            staged.push((tmp, path));
        }
        let synced = std::fs::File::open(&self.dir)
            .and_then(|dir| {
                nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
                    .map_err(std::io::Error::from)
            })
            .map_err(|e| WriteError {
                path: self.dir.clone(),
                source: e,
            });
        if let Err(e) = synced {
            unstage(&staged);
            return Err(e);
        }
        for (tmp, path) in staged {
            std::fs::rename(&tmp, &path).map_err(|e| WriteError { path, source: e })?;
        }
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes a file via a temporary sibling and a rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |e| WriteError {
        path: path.to_path_buf(),
        source: e,
    };
    let tmp = tmp_path(path);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_data()
    });
    if let Err(e) = written {
        // On a full disk a half-written temporary file would keep holding its space.
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(err)
}
