//! A run: the orchestrator, its progress output, host facts, and signal handling.

pub mod host;
pub mod orchestrator;
pub mod progress;
pub mod recover;
pub mod search;
pub mod signal;
