//! An engine's stdout and stderr, copied by the runner into `logs/<engine>.log` through one
//! pipe: secrets redacted line by line, and bounded by `log_limit`. Once an engine has written
//! more, the log keeps its first half-limit of bytes (the startup, where errors of a bad launch
//! are) and a rolling last half-limit (where it died), with one line between them saying how
//! much was dropped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bundle::redact::Redactor;

/// A longer line is written in pieces (a secret split across two pieces is not found).
const MAX_LINE: usize = 64 * 1024;

/// How a log was cut, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTruncation {
    pub limit_bytes: u64,
    /// Everything the engine wrote.
    pub written_bytes: u64,
    /// Bytes between the kept head and the kept tail that are not in the log.
    pub dropped_bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Every writer of the pipe closed it (the engine and its children are gone).
    eof: bool,
    written: u64,
    dropped: u64,
    error: Option<String>,
}

/// The copying thread's shared state.
#[derive(Debug, Clone)]
pub struct EngineLog {
    pub path: PathBuf,
    limit: u64,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl EngineLog {
    /// Creates the log file and the pipe; returns the log and the pipe's write end, to be the
    /// engine's stdout and stderr. The copying thread runs until every writer closed it.
    pub fn start(
        path: &Path,
        limit: u64,
        redactor: Arc<Redactor>,
    ) -> std::io::Result<(EngineLog, OwnedFd)> {
        let file = open_rw(path)?;
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        let log = EngineLog {
            path: path.to_path_buf(),
            limit,
            state: Arc::default(),
        };
        let state = log.state.clone();
        let sink = Capped::new(file, limit);
        let shown = path.to_path_buf();
        std::thread::Builder::new()
            .name("runner-engine-log".into())
            .spawn(move || copy(File::from(read), sink, &redactor, &state, &shown))?;
        Ok((log, write))
    }

    /// Waits, at most `timeout`, until every writer closed the pipe, so that the log holds all
    /// the engine wrote (its last words before it exited). A child that still holds the pipe
    /// open makes this wait the whole `timeout`.
    pub fn settle(&self, timeout: Duration) {
        let (lock, cvar) = &*self.state;
        let Ok(guard) = lock.lock() else { return };
        let _ = cvar.wait_timeout_while(guard, timeout, |s| !s.eof);
    }

    /// How the log was cut, if it was.
    pub fn truncation(&self) -> Option<LogTruncation> {
        let s = self.state.0.lock().ok()?;
        (s.dropped > 0).then(|| LogTruncation {
            limit_bytes: self.limit,
            written_bytes: s.written,
            dropped_bytes: s.dropped,
        })
    }

    /// Why copying stopped early (a write to the log failed), if it did.
    pub fn error(&self) -> Option<String> {
        self.state.0.lock().ok()?.error.clone()
    }
}

/// The log file, created empty, readable (the tail is read back when the limit is first passed).
fn open_rw(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Reads the pipe to its end, line by line, redacting each line into the capped file.
fn copy(
    mut pipe: File,
    mut sink: Capped,
    redactor: &Redactor,
    state: &(Mutex<State>, Condvar),
    path: &Path,
) {
    let mut buf = vec![0u8; MAX_LINE];
    let mut pending: Vec<u8> = Vec::with_capacity(2 * MAX_LINE);
    let mut failed: Option<String> = None;
    let mut emit = |piece: &[u8], sink: &mut Capped| {
        if failed.is_none() {
            if let Err(e) = sink.write(&redactor.bytes(piece)) {
                failed = Some(format!("cannot write {}: {e}", path.display()));
            }
        }
    };
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &pending[start..]) {
            emit(&pending[start..start + nl + 1], &mut sink);
            start += nl + 1;
        }
        pending.drain(..start);
        if pending.len() >= MAX_LINE {
            emit(&pending, &mut sink);
            pending.clear();
        }
        if let Ok(mut s) = state.0.lock() {
            s.written = sink.written;
            s.dropped = sink.dropped();
        }
    }
    if !pending.is_empty() {
        emit(&pending, &mut sink);
    }
    let end = sink.finish();
    let (lock, cvar) = state;
    if let Ok(mut s) = lock.lock() {
        s.written = sink.written;
        s.dropped = sink.dropped();
        s.eof = true;
        s.error = failed.or_else(|| {
            end.err()
                .map(|e| format!("cannot write {}: {e}", path.display()))
        });
    }
    cvar.notify_all();
}

/// The log file, bounded: the head on disk as written; past the limit, the tail in memory,
/// put on disk after the head at least every `tail_cap` bytes and every 2 s of output.
struct Capped {
    file: File,
    limit: u64,
    head_cap: u64,
    tail_cap: usize,
    /// Bytes on disk while not truncated.
    on_disk: u64,
    written: u64,
    tail: Option<VecDeque<u8>>,
    since_checkpoint: usize,
    last_checkpoint: Instant,
}

impl Capped {
    fn new(file: File, limit: u64) -> Capped {
        let head_cap = limit / 2;
        Capped {
            file,
            limit,
            head_cap,
            tail_cap: usize::try_from(limit - head_cap).unwrap_or(usize::MAX),
            on_disk: 0,
            written: 0,
            tail: None,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        }
    }

    fn dropped(&self) -> u64 {
        match &self.tail {
            None => 0,
            Some(t) => self.written - self.head_cap - t.len() as u64,
        }
    }

    fn write(&mut self, piece: &[u8]) -> std::io::Result<()> {
        self.written += piece.len() as u64;
        let mut piece = piece;
        if self.tail.is_none() {
            if self.on_disk + piece.len() as u64 <= self.limit {
                self.on_disk += piece.len() as u64;
                return self.file.write_all(piece);
            }
            // Past the limit: the head is filled first, then the tail starts as the end of
            // what is on disk after the head.
            let room = usize::try_from(self.head_cap.saturating_sub(self.on_disk))
                .unwrap_or(usize::MAX)
                .min(piece.len());
            self.file.write_all(&piece[..room])?;
            self.on_disk += room as u64;
            piece = &piece[room..];
            let keep = (self.tail_cap.saturating_sub(piece.len()) as u64)
                .min(self.on_disk - self.head_cap);
            let mut t = vec![0u8; keep as usize];
            self.file.seek(SeekFrom::Start(self.on_disk - keep))?;
            self.file.read_exact(&mut t)?;
            self.tail = Some(VecDeque::from(t));
        }
        let cap = self.tail_cap;
        if let Some(t) = self.tail.as_mut() {
            let piece = &piece[piece.len().saturating_sub(cap)..];
            let over = (t.len() + piece.len()).saturating_sub(cap);
            t.drain(..over);
            t.extend(piece);
        }
        self.since_checkpoint += piece.len();
        if self.since_checkpoint >= self.tail_cap
            || self.last_checkpoint.elapsed() >= Duration::from_secs(2)
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Rewrites the file as head, the cut line, tail.
    fn checkpoint(&mut self) -> std::io::Result<()> {
        let Some(t) = &self.tail else { return Ok(()) };
        let dropped = self.written - self.head_cap - t.len() as u64;
        let line = format!(
            "\n[runner: {dropped} bytes of engine output dropped here; this log keeps the first {} and the last {} bytes (`log_limit`)]\n",
            self.head_cap,
            t.len()
        );
        self.file.set_len(self.head_cap)?;
        self.file.seek(SeekFrom::Start(self.head_cap))?;
        self.file.write_all(line.as_bytes())?;
        let (a, b) = t.as_slices();
        self.file.write_all(a)?;
        self.file.write_all(b)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.checkpoint()?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_and_counts_what_it_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.log");
        let mut c = Capped::new(open_rw(&path).expect("create"), 100);
        let lines: Vec<String> = (0..100).map(|i| format!("line {i:03}\n")).collect();
        for l in &lines {
            c.write(l.as_bytes()).expect("write");
        }
        c.finish().expect("finish");
        let all = lines.concat();
        let log = std::fs::read_to_string(&path).expect("read");
        assert_eq!(c.written, 900);
        assert_eq!(c.dropped(), 800);
        let (head, rest) = log.split_at(50);
        assert_eq!(head, &all[..50]);
        assert!(rest.starts_with("\n[runner: 800 bytes of engine output dropped here;"));
        assert!(log.ends_with(&all[850..]), "{log}");
    }

    #[test]
    fn a_log_under_the_limit_is_written_as_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e.log");
        let mut c = Capped::new(open_rw(&path).expect("create"), 100);
        c.write(b"hello\n").expect("write");
        c.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), b"hello\n");
        assert_eq!(c.dropped(), 0);
    }
}
