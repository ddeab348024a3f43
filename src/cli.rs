//! Command-line arguments: `exec`, `merge`, `submit`, `status`, `export`, `validate`,
//! `report`, `compare`, and `engine sim`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::builtin::replay::ReplayArgs;
use crate::builtin::sim::SimArgs;
use crate::plan::model::Api;

/// Turns an LLM-serving experiment, declared in a TOML plan, into a versioned result bundle.
///
/// Exit codes: 0 success; 1 the run could not go on (e.g. a bundle file could not be written);
/// 2 the plan or the arguments are invalid; 3 the run finished but some cells failed;
/// 5 engine processes survived teardown; 130 interrupted by a signal.
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
        /// Finish an interrupted or failed bundle of this same plan: cells already measured
        /// are kept, the others are run. Refused if the plan file changed.
        #[arg(long, value_name = "BUNDLE")]
        resume: Option<PathBuf>,
        /// Run only this engine of the plan, and its cells; repeat it for more engines. A name
        /// the plan does not have is refused, and the plan's engines are listed.
        #[arg(long = "engine", value_name = "NAME")]
        engines: Vec<String>,
        /// Write this run as one part of a split run: into BUNDLE/parts/<engine>/ (a complete
        /// bundle of its own, recording the host and the Slurm job it ran as), for
        /// `runner merge BUNDLE` to combine. Needs exactly one --engine.
        #[arg(long, value_name = "BUNDLE", conflicts_with = "resume")]
        part: Option<PathBuf>,
    },
    /// Combine the parts of a split run into one bundle with one report. With one directory,
    /// the parts are its parts/ (what `runner submit` writes) and it becomes the bundle; with
    /// several, each is a bundle of the same plan run apart, and --output names the new bundle.
    /// Parts of different plans (by the plan file's sha256) are refused; missing and failed
    /// parts are listed. Exits 3 when a part is missing or failed.
    Merge {
        /// A submitted bundle, or two or more bundles of one plan.
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
        /// The merged bundle's directory (needed with more than one bundle; must not exist).
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Submit a plan to a cluster scheduler: one job per engine, each writing its part of the
    /// bundle, and a last job that merges them. The bundle directory is created at once,
    /// marked `submitted`, with the rendered scripts in it.
    Submit {
        /// The plan file.
        plan: PathBuf,
        /// Submit to Slurm (`sbatch`): a job array over the engines and an `afterany` merge job.
        #[arg(long, required_unless_present = "k8s", conflicts_with = "k8s")]
        slurm: bool,
        /// Render Kubernetes objects (an Indexed Job, one index per engine, and a merge Job);
        /// only with --dry-run.
        #[arg(long, requires = "dry_run")]
        k8s: bool,
        /// The Slurm partition to submit to.
        #[arg(long)]
        partition: Option<String>,
        /// The Slurm account to charge.
        #[arg(long)]
        account: Option<String>,
        /// Each job's time limit, in Slurm's syntax (`30`, `01:00:00`, `1-00:00:00`).
        #[arg(long)]
        time: Option<String>,
        /// GPUs each engine's job asks for (`--gres=gpu:N`); by default none is asked for.
        #[arg(long, value_name = "N")]
        gpus_per_engine: Option<u32>,
        /// A further sbatch argument, given to both jobs as one word; repeat it for more.
        #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
        sbatch_args: Vec<String>,
        /// Directory under which the bundle is created, as with `exec`; it must be on a file
        /// system every node sees.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Print the scripts and the commands that would submit them; create and submit nothing.
        #[arg(long)]
        dry_run: bool,
        /// The container image the Kubernetes jobs run, holding the runner at
        /// /usr/local/bin/runner (needed with --k8s).
        #[arg(long, required_if_eq("k8s", "true"))]
        image: Option<String>,
    },
    /// Say where a submitted bundle stands: per engine, its Slurm job's state (from squeue, and
    /// sacct when the cluster keeps accounting) or, once written, its part's state.
    Status {
        /// A bundle created by `runner submit`.
        bundle: PathBuf,
    },
    /// Write a bundle's results in another tool's format: `llm-d` (the llm-d Benchmark Report,
    /// one file per cell) or `vllm` (per-cell JSON as `vllm bench serve --save-result` writes
    /// it). Files are written atomically; cells that are not results are listed as skipped.
    Export {
        /// The bundle directory.
        bundle: PathBuf,
        /// The format to write.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Where to write the files; by default BUNDLE/export/<format>/.
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Rebuild a bundle that a killed runner left marked `running`. First the engines it left
    /// behind are killed (known by the pid, start time and session the runner recorded, so an
    /// engine started through a script or a shim is found too); then summaries of cells cut
    /// short are recomputed from their journals, the bundle is marked `interrupted`, and the
    /// report is rendered. Exits 5 if an engine process could not be killed.
    Recover {
        /// The bundle directory.
        bundle: PathBuf,
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
        /// Render this tera template instead (docs/reports.md lists its variables); the result
        /// is written into the bundle under the template's name without `.tera`.
        #[arg(long, value_name = "FILE")]
        template: Option<PathBuf>,
    },
    /// Compare bundles: cells matched by engine, workload and load level, each metric's ratio
    /// to the first bundle, and a verdict that takes noise into account (repeated runs'
    /// spread, or a relative threshold without repeats). Differences in plan, hardware,
    /// driver and engine versions are listed first.
    Compare {
        /// Two or more bundle directories; the first is the base.
        #[arg(num_args = 2.., required = true)]
        bundles: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: CompareFormat,
        /// Without repeats, relative differences up to this are "no significant difference".
        #[arg(long, default_value_t = 0.05)]
        threshold: f64,
    },
    /// List the bundles under a results directory: plan, status, date, hardware.
    List {
        /// The results directory.
        #[arg(default_value = "results")]
        dir: PathBuf,
    },
    /// Send one request to an OpenAI-compatible endpoint through exactly the client code
    /// `exec` uses, and explain it: verdict, error class and server message, output text,
    /// token counts and their source, chunks, TTFT, TPOT, end-to-end time. Exits 0 when the
    /// request succeeded, 1 otherwise.
    Probe {
        /// The endpoint's base URL, e.g. http://127.0.0.1:8000.
        url: String,
        /// Which API to call.
        #[arg(long, value_enum, default_value = "chat")]
        api: ApiArg,
        /// The model id to request; by default the first one the endpoint lists at /v1/models.
        #[arg(long)]
        model: Option<String>,
        /// The prompt (sent as one user message for the chat API).
        #[arg(long, default_value = "Say hello in one short sentence.")]
        prompt: String,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 32)]
        max_tokens: u32,
        /// Ask for one JSON body instead of an SSE stream.
        #[arg(long)]
        no_stream: bool,
        /// Limit for the whole request, e.g. "30s".
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Send the API key held by this environment variable as a bearer token.
        #[arg(long, value_name = "NAME")]
        api_key_env: Option<String>,
    },
    /// Engines built into the runner.
    #[command(subcommand)]
    Engine(EngineCommand),
}

/// `compare --format` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompareFormat {
    Table,
    Markdown,
    Html,
}

/// `export --format` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    #[value(name = "llm-d")]
    LlmD,
    Vllm,
}

/// `--api` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ApiArg {
    Chat,
    Completions,
}

impl From<ApiArg> for Api {
    fn from(a: ApiArg) -> Api {
        match a {
            ApiArg::Chat => Api::Chat,
            ApiArg::Completions => Api::Completions,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Serve the built-in simulated engine: an OpenAI-compatible server (completions and chat,
    /// streamed or not) whose timing follows a simple model of batched LLM serving. Plans launch
    /// it as `{runner} engine sim --port {port} ...`; it needs no GPU and no model.
    Sim(Box<SimArgs>),
    /// Serve a recorded response body byte for byte to every completion request (optionally in
    /// small writes): to see how `runner` reads a stream some server produced.
    Replay(ReplayArgs),
    /// Run a command on the given CPUs (how engines start when `[client] cpus` pins the
    /// runner: they get the CPUs the runner had before, not the client's).
    #[command(hide = true)]
    Unpinned {
        /// The CPUs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        cpus: Vec<usize>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}
