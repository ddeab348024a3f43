//! Engines: launching, readiness, teardown (the built-in engines are `crate::builtin`).

pub mod failure;
pub mod log;
pub mod ready;
pub mod spawn;
pub mod terminate;
pub mod version;
