//! `runner`: turns an LLM-serving experiment, declared in a TOML plan, into a result bundle.
//!
//! The pipeline: plan file -> `plan::raw` -> `plan::model::Plan` (validated, grid expanded) ->
//! `run::orchestrator` (per engine: spawn, ready, cells, shutdown; each cell written to the
//! bundle as it finishes) -> `report` rendered from the bundle alone. `commands` holds one
//! function per subcommand; `error`, `stop`, `procfs` and `affinity` are the primitives every
//! stage uses.

pub mod affinity;
pub mod builtin;
pub mod bundle;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod engine;
pub mod error;
pub mod export;
pub mod load;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod procfs;
pub mod quality;
pub mod report;
pub mod run;
pub mod stop;
pub mod workload;

/// Parses arguments, runs the command, prints any error once, returns the exit code.
pub fn main() -> i32 {
    use clap::Parser;
    commands::run(cli::Cli::parse().command)
}
