//! The errors of building a workload's requests: each names the file (and line) it is about.

use std::path::PathBuf;

/// A workload that cannot be built. Messages fit after "failed to build the workload: ".
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no tokenizer.json (a tokenizer is a `tokenizer.json` file or a model folder holding one)", path.display())]
    NoTokenizerJson { path: PathBuf },
    #[error("cannot load the tokenizer {}: {message}", path.display())]
    TokenizerLoad { path: PathBuf, message: String },
    #[error("the tokenizer {} cannot encode a prompt: {message}", path.display())]
    Encode { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", path.display())]
    Record {
        path: PathBuf,
        /// 1-based.
        line: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: `sample = {requested}` asks for more records than the {available} the file keeps after its filters", path.display())]
    SampleTooLarge {
        path: PathBuf,
        requested: usize,
        available: usize,
    },
    #[error("cannot make a prompt of exactly {target} {unit}: {why}")]
    Length {
        target: usize,
        unit: &'static str,
        why: String,
    },
    #[error("invalid workload setting: {0}")]
    Setting(String),
}

pub type Result<T> = std::result::Result<T, WorkloadError>;
