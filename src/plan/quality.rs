//! `[[quality]]` steps: the raw table as written (`RawQuality`) and the validated step
//! (`QualitySpec`) that `quality::` runs against every engine after its cells.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::model::{humantime_serde_compat, Prompt};
use super::raw::RawCommand;

/// One `[[quality]]` table, exactly as written. Which keys apply depends on `kind`; resolution
/// refuses a key that does not apply to the step's kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuality {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    /// The engines it runs against (default: every engine).
    #[serde(default)]
    pub engines: Option<Spanned<Vec<Spanned<String>>>>,
    /// The engine the others are compared with (default: the first engine it runs against).
    #[serde(default)]
    pub baseline: Option<Spanned<String>>,
    // agreement
    #[serde(default)]
    pub prompts: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub prompts_file: Option<Spanned<String>>,
    #[serde(default)]
    pub max_tokens: Option<Spanned<i64>>,
    #[serde(default)]
    pub min_agreement: Option<Spanned<f64>>,
    // perplexity
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    #[serde(default)]
    pub max_perplexity_increase: Option<Spanned<f64>>,
    // command
    #[serde(default)]
    pub command: Option<Spanned<RawCommand>>,
    #[serde(default)]
    pub version_command: Option<Spanned<RawCommand>>,
    #[serde(default)]
    pub metric: Option<Spanned<RawMetric>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub files: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub env: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(default)]
    pub min: Option<Spanned<f64>>,
    #[serde(default)]
    pub max: Option<Spanned<f64>>,
}

/// `metric = { file = "GLOB", pointer = "/results/TASK/acc,none" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    pub file: Spanned<String>,
    pub pointer: Spanned<String>,
}

/// A validated quality step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualitySpec {
    /// Names its folder in the bundle (`quality/<name>/`).
    pub name: String,
    /// The engines (names) it runs against, in plan order.
    pub engines: Vec<String>,
    /// The engine the others are compared with.
    pub baseline: String,
    pub kind: QualityKind,
    pub gates: Gates,
}

/// What a step measures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityKind {
    /// The same prompts at temperature 0 on every engine; outputs compared with the baseline's.
    Agreement {
        /// Where the prompts came from (`inline` or the file).
        source: String,
        prompts: Vec<Prompt>,
        max_tokens: u32,
    },
    /// A local text scored through `/v1/completions` with `echo` and `logprobs`.
    Perplexity {
        file: PathBuf,
        /// The file's passages (split at blank lines), each scored as one prompt.
        passages: Vec<String>,
        /// The sha256 of the file's bytes, hex.
        sha256: String,
    },
    /// Any evaluation program; its metric read from a JSON file it writes.
    Command(CommandSpec),
}

impl QualityKind {
    pub fn label(&self) -> &'static str {
        match self {
            QualityKind::Agreement { .. } => "agreement",
            QualityKind::Perplexity { .. } => "perplexity",
            QualityKind::Command(_) => "command",
        }
    }
}

/// `kind = "command"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandSpec {
    /// argv; `{url}`, `{model}`, `{api}` and `{out}` are filled in per engine.
    pub argv: Vec<String>,
    pub version_command: Option<Vec<String>>,
    pub env: std::collections::BTreeMap<String, String>,
    /// Runs in the plan's directory.
    pub cwd: PathBuf,
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// A glob, relative to `{out}`, of the JSON file holding the metric.
    pub metric_file: String,
    /// A JSON pointer (RFC 6901) into that file.
    pub metric_pointer: String,
    /// Task files copied into the bundle, so the protocol is part of the record.
    pub files: Vec<PathBuf>,
}

/// Thresholds on a step's result; a failed one marks the engine's result failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    /// Agreement: the least share of prompts identical to the baseline's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    /// Perplexity: the most relative increase over the baseline's (0.05 = 5 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_perplexity_increase: Option<f64>,
    /// Command: bounds on the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// The placeholders a quality command may use.
pub const COMMAND_PLACEHOLDERS: &[&str] = &["url", "model", "api", "out", "name", "plan_dir"];

/// The default `timeout` of a command step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The default `max_tokens` of an agreement step.
pub const DEFAULT_MAX_TOKENS: u32 = 32;
