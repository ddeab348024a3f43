//! Command-line arguments: `exec`, `validate`, `report`, and `engine sim`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::engine::sim::SimArgs;

/// Turns an LLM-serving experiment, declared in a TOML plan, into a versioned result bundle.
///
/// Exit codes: 0 success; 1 the run could not go on (e.g. a bundle file could not be written);
/// 2 the plan or the arguments are invalid; 3 the run finished but some cells failed;
/// 130 interrupted by a signal.
#[derive(Debug, Parser)]
#[command(name = "runner", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plan: launch each engine, wait until it is healthy, warm it up, sweep the load
    /// grid, tear it down, and write a result bundle with a report.
    Exec {
        /// The plan file (TOML, schema 1; see docs/plan.md).
        plan: PathBuf,
        /// Directory under which bundles are written, as <results>/<plan name>/<timestamp>-<id>/.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Print only the final summary, not progress.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a plan without launching anything: schema, values, files, programs on PATH, free
    /// ports. Prints the grid and the number of requests it would send.
    Validate {
        /// The plan file.
        plan: PathBuf,
    },
    /// Re-render a bundle's report.md and summary.csv from the bundle alone, and print its
    /// summary table.
    Report {
        /// A bundle directory, e.g. results/quickstart/20261123T120000Z-a1b2c3.
        bundle: PathBuf,
    },
    /// Engines built into the runner.
    #[command(subcommand)]
    Engine(EngineCommand),
}

#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Serve the built-in simulated engine: an OpenAI-compatible server (completions and chat,
    /// streamed or not) whose timing follows a simple model of batched LLM serving. Plans launch
    /// it as `{runner} engine sim --port {port} ...`; it needs no GPU and no model.
    Sim(SimArgs),
}
