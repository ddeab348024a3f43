//! The append-only JSONL journals of a bundle (a cell's records, `samples.jsonl`,
//! `telemetry.jsonl`): one writer thread a file, fed batches of whole lines, so a write that
//! blocks (the page cache throttling a slow disk) never stalls the load. A `JournalWriter`
//! gathers lines and hands them over once it holds 64 KiB or a second has passed since its last
//! hand-over: a killed runner loses at most about a second of lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::write::WriteError;

/// Lines a writer gathers before handing them over.
const BATCH: usize = 64 * 1024;
/// The longest a line waits in a writer, counted at its next line.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

enum Msg {
    Lines(Vec<u8>),
    /// The owner is done: write what came before and stop, whoever still holds a writer.
    Close,
}

/// One journal file and its writer thread.
pub struct Journal {
    path: PathBuf,
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Journal {
    /// A new journal at `path` (an existing file is replaced).
    pub fn create(path: &Path) -> Result<Journal, WriteError> {
        Self::open(path, std::fs::File::create(path))
    }

    /// Appends to the journal at `path`, creating it: a resumed run keeps the lines of the first.
    pub fn append(path: &Path) -> Result<Journal, WriteError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        Self::open(path, file)
    }

    fn open(path: &Path, file: std::io::Result<std::fs::File>) -> Result<Journal, WriteError> {
        let err = |e| WriteError {
            path: path.to_path_buf(),
            source: e,
        };
        let mut file = file.map_err(err)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let thread = std::thread::Builder::new()
            .name("runner-journal".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Lines(batch) => file.write_all(&batch)?,
                        Msg::Close => break,
                    }
                }
                file.flush()
            })
            .map_err(err)?;
        Ok(Journal {
            path: path.to_path_buf(),
            tx,
            thread: Some(thread),
        })
    }

    /// A writer of lines into this journal; several may write at once, each line whole.
    pub fn writer(&self) -> JournalWriter {
        JournalWriter {
            tx: self.tx.clone(),
            buf: Vec::with_capacity(BATCH + 4096),
            last_sent: Instant::now(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes every line handed over so far and closes the file; the first write error, with
    /// the path. Drop (or `flush`) writers first: lines a writer still holds are lost.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), WriteError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // Fails only when the thread already stopped on an error, which the join reports.
        let _ = self.tx.send(Msg::Close);
        let source = match thread.join() {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::other("the journal writer thread panicked"),
        };
        Err(WriteError {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // `finish` reports errors; a journal dropped unfinished still gets its lines written.
        let _ = self.close();
    }
}

/// Gathers whole lines for a journal; hands the rest over when dropped.
pub struct JournalWriter {
    tx: mpsc::Sender<Msg>,
    buf: Vec<u8>,
    last_sent: Instant,
}

impl JournalWriter {
    /// Appends `value` as one JSON line. `false` once the writer thread stopped on an error
    /// (which `Journal::finish` reports): what is pushed then is lost.
    pub fn push<T: Serialize>(&mut self, value: &T) -> bool {
        let mark = self.buf.len();
        if serde_json::to_writer(&mut self.buf, value).is_ok() {
            self.buf.push(b'\n');
            self.hand_over_if_due()
        } else {
            // Never half a line.
            self.buf.truncate(mark);
            true
        }
    }

    fn hand_over_if_due(&mut self) -> bool {
        if self.buf.len() >= BATCH || self.last_sent.elapsed() >= FLUSH_EVERY {
            self.hand_over()
        } else {
            true
        }
    }

    /// Hands every gathered line to the writer thread now; `false` once it stopped on an error.
    pub fn hand_over(&mut self) -> bool {
        self.last_sent = Instant::now();
        if self.buf.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(BATCH + 4096));
        self.tx.send(Msg::Lines(batch)).is_ok()
    }
}

/// For code that writes lines with `serde_json::to_writer` and `b"\n"` (the samplers, which know
/// no bundle): a batch is handed over only after a newline, so lines stay whole.
impl Write for JournalWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if bytes.ends_with(b"\n") && !self.hand_over_if_due() {
            return Err(std::io::Error::other("the journal writer stopped"));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.hand_over() {
            Ok(())
        } else {
            Err(std::io::Error::other("the journal writer stopped"))
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        // A failure is the writer thread's, which `Journal::finish` reports.
        self.hand_over();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_several_writers_arrive_whole_and_finish_reports_the_path_on_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.jsonl");
        let journal = Journal::create(&path).expect("create");
        let mut a = journal.writer();
        let mut b = journal.writer();
        for i in 0..1000u32 {
            assert!(a.push(&serde_json::json!({ "w": "a", "i": i })));
            assert!(b.push(&serde_json::json!({ "w": "b", "i": i })));
        }
        b.flush().expect("flush");
        drop((a, b));
        journal.finish().expect("finish");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a whole JSON line"))
            .collect();
        assert_eq!(lines.len(), 2000);
        // Each writer's lines keep their order.
        let of = |w: &str| -> Vec<u64> {
            lines
                .iter()
                .filter(|l| l["w"] == w)
                .filter_map(|l| l["i"].as_u64())
                .collect()
        };
        assert_eq!(of("a"), (0..1000).collect::<Vec<_>>());
        assert_eq!(of("b"), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn append_keeps_earlier_lines_and_a_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.jsonl");
        for n in 0..2 {
            let j = Journal::append(&path).expect("append");
            let mut w = j.writer();
            writeln!(w, "{{\"n\":{n}}}").expect("write");
            drop(w);
            j.finish().expect("finish");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"n\":0}\n{\"n\":1}\n");
        let missing = dir.path().join("no/such/dir/r.jsonl");
        let err = Journal::create(&missing).err().expect("an error");
        assert!(err.to_string().contains("no/such/dir/r.jsonl"), "{err}");
    }
}
