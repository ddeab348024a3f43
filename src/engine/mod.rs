//! Engines: launching, readiness, teardown, and the built-in simulated engine.

pub mod health;
pub mod log;
pub mod procfs;
pub mod replay;
pub mod sim;
pub mod spawn;
pub mod terminate;
pub mod version;

use std::path::PathBuf;

/// Why an engine could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("port {port} is already in use ({why})")]
    PortTaken { port: u16, why: String },
    #[error("cannot create log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
}
