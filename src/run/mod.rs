//! A run: the orchestrator (the pipeline), its lanes (engines in turn or side by side), one
//! engine's session, one cell, the searches, the ledger that records them, GPU placement, typed
//! failures, progress output, host facts, and signal handling.

pub mod cell;
pub mod error;
pub mod host;
pub mod lanes;
pub mod ledger;
pub mod merge;
pub mod orchestrator;
pub mod part;
pub mod placement;
pub mod progress;
pub mod quality;
pub mod recover;
pub mod search;
pub mod session;
pub mod signal;
pub mod until_failure;
