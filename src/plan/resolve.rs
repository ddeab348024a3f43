//! From plan file to validated `Plan`: read, check the schema version first, parse strictly,
//! then resolve every value (defaults, files, placeholders, the grid) while gathering every
//! error before failing.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::defaults;
use super::diagnostic::{Diagnostic, Diagnostics, Location};
use super::model::*;
use super::raw::*;

mod client;
mod engine;
mod load;
mod quality;
mod source;
mod workload;

/// The only plan schema this runner reads.
pub const SCHEMA: i64 = 1;

/// What resolution needs from the world outside the plan file.
#[derive(Debug, Clone)]
pub struct ResolveContext {
    /// The running `runner` binary, substituted for `{runner}` in launch commands.
    pub runner_exe: PathBuf,
}

/// Reads, parses and resolves a plan. On success, returns the plan and its warnings; on
/// failure, every error found (and the warnings).
pub fn load(path: &Path, ctx: &ResolveContext) -> Result<(Plan, Diagnostics), Diagnostics> {
    from_bytes(path, &read(path)?, ctx)
}

/// Reads a plan file: the one read of it, whose bytes are hashed and copied into the bundle.
pub fn read(path: &Path) -> Result<Vec<u8>, Diagnostics> {
    std::fs::read(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::error(format!(
            "cannot read plan {}: {e}",
            path.display()
        ))
        .hint("check the path; plans usually live in plans/")])
    })
}

/// Parses and resolves a plan file's bytes, as `read` returned them.
pub fn from_bytes(
    path: &Path,
    bytes: &[u8],
    ctx: &ResolveContext,
) -> Result<(Plan, Diagnostics), Diagnostics> {
    let source = std::str::from_utf8(bytes).map_err(|_| {
        Diagnostics(vec![Diagnostic::error(format!(
            "plan {} is not valid UTF-8",
            path.display()
        ))])
    })?;
    let sha256 = hex(&Sha256::digest(bytes));
    resolve_source(path, source, sha256, ctx)
}

/// Resolves plan text already in memory (`path` is used for messages and relative files).
pub fn resolve_source(
    path: &Path,
    source: &str,
    sha256: String,
    ctx: &ResolveContext,
) -> Result<(Plan, Diagnostics), Diagnostics> {
    let mut r = Resolver {
        path,
        source,
        dir: path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from(".")),
        diags: Vec::new(),
        ctx,
        file: None,
        includes: Vec::new(),
    };
    r.check_schema()?;
    let raw: RawPlan = toml::from_str(source).map_err(|e| Diagnostics(vec![r.toml_error(&e)]))?;
    let plan = r.resolve(raw, sha256);
    let mut diags = r.diags;
    // File order, errors without a location last.
    diags.sort_by_key(|d| d.location.as_ref().map_or(usize::MAX, |l| l.line));
    // An engine or workload expanded by a matrix repeats the errors of its table: once each.
    let mut unique: Vec<Diagnostic> = Vec::with_capacity(diags.len());
    for d in diags {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    let diags = unique;
    let diags = Diagnostics(diags);
    match plan {
        Some(plan) if !diags.has_errors() => Ok((plan, diags)),
        _ => Err(diags),
    }
}

struct Resolver<'a> {
    path: &'a Path,
    source: &'a str,
    dir: PathBuf,
    diags: Vec<Diagnostic>,
    ctx: &'a ResolveContext,
    /// While an included engine is resolved: its file, which its spans point into.
    file: Option<Rc<Included>>,
    /// Every file read by `include`, in plan order.
    includes: Vec<Rc<Included>>,
}

/// A file an `[[engine]]` was read from, and its text.
#[derive(Debug)]
struct Included {
    include: String,
    path: PathBuf,
    text: String,
    sha256: String,
}

/// Only the schema key, read before anything else so that a plan written for another schema
/// gets one clear message instead of a pile of unknown-key errors.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: Option<Spanned<toml::Value>>,
}

const DURATION_HINT: &str = "write a duration like \"500ms\", \"30s\" or \"10m\"";

impl Resolver<'_> {
    fn loc(&self, span: Range<usize>) -> Location {
        match &self.file {
            Some(f) => Location::from_span(&f.path, &f.text, span),
            None => Location::from_span(self.path, self.source, span),
        }
    }

    /// `include = "..."` of the `index`th `[[engine]]`: the table read from that file (which
    /// errors then point into), or `None` after the errors saying why not.
    fn include_engine(
        &mut self,
        index: usize,
        inc: &Spanned<String>,
    ) -> Option<(RawEngine, Rc<Included>)> {
        // The engine table as written, keys only: `include` stands alone.
        let others: Vec<String> = toml::from_str::<toml::Table>(self.source)
            .ok()
            .and_then(|t| match t.get("engine") {
                Some(toml::Value::Array(a)) => a.get(index).cloned(),
                _ => None,
            })
            .and_then(|e| match e {
                toml::Value::Table(t) => {
                    Some(t.keys().filter(|k| *k != "include").cloned().collect())
                }
                _ => None,
            })
            .unwrap_or_default();
        if !others.is_empty() {
            self.error_at(
                inc.span(),
                "an `[[engine]]` with `include` has no other key",
                Some(format!(
                    "move {} into {}, or write the engine here without `include`",
                    others
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    inc.get_ref()
                )),
            );
            return None;
        }
        let path = self.relative(inc.get_ref());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                self.error_at(
                    inc.span(),
                    format!("cannot read included engine {}: {e}", path.display()),
                    Some("the path is relative to the plan's directory".into()),
                );
                return None;
            }
        };
        let Ok(text) = String::from_utf8(bytes.clone()) else {
            self.error_at(
                inc.span(),
                format!("included engine {} is not valid UTF-8", path.display()),
                None,
            );
            return None;
        };
        let included = match self
            .includes
            .iter()
            .find(|f| f.path == path && f.text == text)
        {
            Some(f) => f.clone(),
            None => {
                let f = Rc::new(Included {
                    include: inc.get_ref().clone(),
                    path,
                    text,
                    sha256: hex(&Sha256::digest(&bytes)),
                });
                self.includes.push(f.clone());
                f
            }
        };
        let parsed: Result<RawEngine, _> = toml::from_str(&included.text);
        let before = self.file.replace(included.clone());
        let out = match parsed {
            Ok(e) if e.include.is_some() => {
                let span = e.include.as_ref().map_or(0..0, Spanned::span);
                self.error_at(
                    span,
                    "an included engine cannot include another",
                    Some("write the engine's keys in this file".into()),
                );
                None
            }
            Ok(e) => Some((e, included)),
            Err(e) => {
                let d = self.toml_error(&e);
                self.diags.push(d);
                None
            }
        };
        self.file = before;
        out
    }

    fn error_at(&mut self, span: Range<usize>, msg: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::error(msg).at(self.loc(span));
        d.hint = hint;
        self.diags.push(d);
    }

    fn warn_at(&mut self, span: Range<usize>, msg: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::warning(msg).at(self.loc(span));
        d.hint = hint;
        self.diags.push(d);
    }

    fn error(&mut self, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::error(msg).hint(hint));
    }

    fn check_schema(&self) -> Result<(), Diagnostics> {
        let probe: SchemaProbe = match toml::from_str(self.source) {
            Ok(p) => p,
            Err(e) => return Err(Diagnostics(vec![self.toml_error(&e)])),
        };
        match probe.schema {
            None => Err(Diagnostics(vec![Diagnostic::error(format!(
                "plan {} has no `schema` key",
                self.path.display()
            ))
            .hint("add `schema = 1` as the first line of the plan")])),
            Some(s) if s.get_ref().as_integer() == Some(SCHEMA) => Ok(()),
            Some(s) => Err(Diagnostics(vec![Diagnostic::error(format!(
                "unsupported plan schema {}; this runner reads schema {SCHEMA}",
                s.get_ref()
            ))
            .at(self.loc(s.span()))
            .hint("use a runner that reads this schema, or rewrite the plan for schema 1 (docs/plan.md)")])),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> Diagnostic {
        let message = e
            .message()
            .trim()
            .replace("expected i64", "expected an integer")
            .replace("expected f64", "expected a number")
            .replace("expected a boolean", "expected true or false");
        // The hint names the closest key or lists them all; the message need not.
        let short = match message.split_once(", expected one of") {
            Some((head, _)) if message.starts_with("unknown field") => head.to_string(),
            _ => message.clone(),
        };
        let mut d = Diagnostic::error(short);
        if let Some(span) = e.span() {
            d = d.at(self.loc(span));
        }
        if let Some(hint) = unknown_field_hint(&message) {
            d = d.hint(hint);
        } else if message.contains("invalid type") {
            d = d.hint("see docs/plan.md for the type each key takes");
        } else if message.starts_with("missing field") {
            d = d.hint("add the key; docs/plan.md lists the required keys of each table");
        } else if !message.contains("expected") || message.starts_with("invalid") {
            d = d.hint(
                "this is a TOML syntax error: check quotes, brackets and commas at the caret",
            );
        }
        d
    }

    fn duration(&mut self, value: &Option<Spanned<String>>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => match humantime::parse_duration(s.get_ref()) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.error_at(
                        s.span(),
                        "a zero duration is not allowed here",
                        Some(DURATION_HINT.into()),
                    );
                    default
                }
                Err(e) => {
                    self.error_at(
                        s.span(),
                        format!("`{}` is not a duration: {e}", s.get_ref()),
                        Some(DURATION_HINT.into()),
                    );
                    default
                }
            },
        }
    }

    /// `log_limit = "64MiB"`: a size of at least 4 KiB.
    fn log_limit(&mut self, value: &Option<Spanned<String>>) -> u64 {
        const MIN: u64 = 4 << 10;
        let Some(v) = value else {
            return defaults::LOG_LIMIT;
        };
        match parse_size(v.get_ref()) {
            Some(n) if n >= MIN => n,
            Some(_) => {
                self.error_at(
                    v.span(),
                    format!("`log_limit` must be at least 4KiB, not `{}`", v.get_ref()),
                    Some("e.g. \"64MiB\" (the default) or \"1GiB\"".into()),
                );
                defaults::LOG_LIMIT
            }
            None => {
                self.error_at(
                    v.span(),
                    format!("`{}` is not a size", v.get_ref()),
                    Some(
                        "write a number and a unit: \"64MiB\", \"512KiB\", \"2GiB\", \"100MB\""
                            .into(),
                    ),
                );
                defaults::LOG_LIMIT
            }
        }
    }

    /// `[cost]`: `usd_per_hour` and `usd_per_kwh`, each a positive number, at least one given.
    fn cost(&mut self, c: &Spanned<RawCost>) -> (Option<f64>, Option<f64>) {
        let mut price = |v: &Option<Spanned<f64>>, key: &str, hint: &str| {
            let v = v.as_ref()?;
            let x = *v.get_ref();
            if x > 0.0 && x.is_finite() {
                return Some(x);
            }
            self.error_at(
                v.span(),
                format!("`{key}` must be a positive number"),
                Some(hint.to_string()),
            );
            None
        };
        let cost = c.get_ref();
        let hour = price(
            &cost.usd_per_hour,
            "usd_per_hour",
            "the machine's price per hour in US dollars, e.g. 2.49",
        );
        let kwh = price(
            &cost.usd_per_kwh,
            "usd_per_kwh",
            "the electricity price per kilowatt-hour in US dollars, e.g. 0.12",
        );
        if cost.usd_per_hour.is_none() && cost.usd_per_kwh.is_none() {
            self.error_at(
                c.span(),
                "`[cost]` names no price",
                Some(
                    "give `usd_per_hour` (the machine) or `usd_per_kwh` (its electricity), or both"
                        .into(),
                ),
            );
        }
        (hour, kwh)
    }

    fn positive(&mut self, value: &Spanned<i64>, what: &str, max: i64) -> Option<u64> {
        let v = *value.get_ref();
        if v < 1 || v > max {
            self.error_at(
                value.span(),
                format!("{what} must be between 1 and {max}, not {v}"),
                None,
            );
            None
        } else {
            u64::try_from(v).ok()
        }
    }

    fn safe_name(&mut self, name: &Spanned<String>, what: &str) -> bool {
        let n = name.get_ref();
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            self.error_at(
                name.span(),
                format!("{what} name `{n}` is not safe as a file name"),
                Some("use letters, digits, `-` and `_` only, starting with a letter or digit (at most 64)".into()),
            );
        }
        ok
    }

    /// The plan's directory as an absolute path: engines run with it as their working
    /// directory by default, and `{plan_dir}` must mean the same wherever the runner starts.
    fn abs_dir(&self) -> PathBuf {
        std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone())
    }

    fn relative(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() || self.dir == Path::new(".") {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// `[gpu] devices`: NVML indexes, each once.
    fn devices(&mut self, d: &Spanned<Vec<Spanned<i64>>>) -> Vec<u32> {
        if d.get_ref().is_empty() {
            self.error_at(
                d.span(),
                "`[gpu] devices` lists no device",
                Some("list the GPUs' indexes (as nvidia-smi numbers them), or leave `devices` out to use every GPU NVML sees".into()),
            );
        }
        let mut out: Vec<u32> = Vec::new();
        for i in d.get_ref() {
            let Ok(index) = u32::try_from(*i.get_ref()) else {
                self.error_at(
                    i.span(),
                    format!("GPU index {} is not a device", i.get_ref()),
                    Some("indexes count from 0, as nvidia-smi numbers the GPUs".into()),
                );
                continue;
            };
            if out.contains(&index) {
                self.error_at(
                    i.span(),
                    format!("GPU {index} is listed twice in `[gpu] devices`"),
                    Some("list each device once: an engine given it twice would share it with itself".into()),
                );
                continue;
            }
            out.push(index);
        }
        out
    }

    /// Each engine's `gpus` fits the devices the plan lists (when it lists them), and there are
    /// devices to place it on at all.
    fn check_gpus(&mut self, raw: &[Spanned<RawEngine>], gpu: &GpuSpec) {
        for r in raw {
            let r = r.get_ref();
            let Some(g) = &r.gpus else { continue };
            let (n, span, name) = (*g.get_ref(), g.span(), r.name.get_ref());
            let s = if n == 1 { "" } else { "s" };
            if n < 1 {
                continue; // said where `gpus` is resolved
            }
            match &gpu.devices {
                Some(d) if n as usize > d.len() && !d.is_empty() => self.error_at(
                    span,
                    format!(
                        "engine `{name}` asks for {n} GPU{s}, but `[gpu] devices` lists {}",
                        d.len()
                    ),
                    Some("lower `gpus`, or list more devices in `[gpu] devices`".into()),
                ),
                None if !gpu.enabled => self.error_at(
                    span,
                    format!(
                        "engine `{name}` asks for {n} GPU{s}, but `[gpu] enabled = false` leaves NVML unasked, so no device is known"
                    ),
                    Some("list the devices in `[gpu] devices`".into()),
                ),
                _ => {}
            }
        }
    }

    fn resolve(&mut self, raw: RawPlan, sha256: String) -> Option<Plan> {
        self.safe_name(&raw.name, "plan");
        let default_load = raw.load.unwrap_or_default();

        if raw.engines.is_empty() {
            self.error(
                "the plan has no `[[engine]]`",
                "add at least one `[[engine]]` table (docs/plan.md)",
            );
        }
        if raw.workloads.is_empty() {
            self.error(
                "the plan has no `[[workload]]`",
                "add at least one `[[workload]]` table (docs/plan.md)",
            );
        }

        // `include` and `[engine.matrix]`: from here on, one raw table per expanded engine,
        // each with the file its spans point into (`None`: the plan).
        let mut raw_engines = Vec::new();
        let mut matrices = Vec::new();
        let mut files: Vec<Option<Rc<Included>>> = Vec::new();
        for (i, e) in raw.engines.iter().enumerate() {
            let (table, span, file) = match &e.get_ref().include {
                None => (e.get_ref().clone(), e.span(), None),
                Some(inc) => match self.include_engine(i, inc) {
                    Some((t, f)) => {
                        let span = t.name.span();
                        (t, span, Some(f))
                    }
                    None => continue,
                },
            };
            self.file = file.clone();
            for (key, value) in [("name", &table.name), ("model", &table.model)] {
                if is_missing(value) {
                    let at = if file.is_some() { 0..0 } else { e.span() };
                    self.error_at(
                        at,
                        format!("missing field `{key}`"),
                        Some(
                            "add the key; docs/plan.md lists the required keys of each table"
                                .into(),
                        ),
                    );
                }
            }
            if is_missing(&table.name) || is_missing(&table.model) {
                self.file = None;
                continue;
            }
            let (expanded, errors) = super::matrix::expand_engine(&table);
            for m in errors {
                self.error_at(m.span, m.message, Some(m.hint));
            }
            self.file = None;
            for (x, values) in expanded {
                raw_engines.push(Spanned::new(span.clone(), x));
                matrices.push(values);
                files.push(file.clone());
            }
        }
        let mut engines = Vec::new();
        let mut seen = BTreeSet::new();
        for ((e, values), file) in raw_engines.iter().zip(matrices).zip(&files) {
            self.file = file.clone();
            let e = e.get_ref();
            if !seen.insert(e.name.get_ref().clone()) {
                self.error_at(
                    e.name.span(),
                    format!("engine name `{}` is used twice", e.name.get_ref()),
                    Some(
                        "give every engine a unique name; it names its files in the bundle".into(),
                    ),
                );
            }
            if let Some(mut spec) = self.engine(e) {
                spec.matrix = values;
                engines.push(spec);
            }
            self.file = None;
        }

        let mut workloads = Vec::new();
        let mut seen = BTreeSet::new();
        let mut raw_workloads = Vec::new();
        for w in &raw.workloads {
            let (expanded, errors) = super::matrix::expand_workload(w.get_ref());
            for m in errors {
                self.error_at(m.span, m.message, Some(m.hint));
            }
            raw_workloads.extend(expanded);
        }
        for (w, values) in raw_workloads {
            let w = &w;
            if !seen.insert(w.name.get_ref().clone()) {
                self.error_at(
                    w.name.span(),
                    format!("workload name `{}` is used twice", w.name.get_ref()),
                    Some(
                        "give every workload a unique name; it names its files in the bundle"
                            .into(),
                    ),
                );
            }
            if let Some(mut spec) = self.workload(w, &default_load) {
                spec.matrix = values;
                workloads.push(spec);
            }
        }

        let gpu = match &raw.gpu {
            None => GpuSpec {
                enabled: true,
                interval: defaults::GPU_INTERVAL,
                release_timeout: defaults::GPU_RELEASE_TIMEOUT,
                devices: None,
            },
            Some(g) => GpuSpec {
                enabled: g.enabled.unwrap_or(true),
                interval: self.duration(&g.interval, defaults::GPU_INTERVAL),
                release_timeout: self.duration(&g.release_timeout, defaults::GPU_RELEASE_TIMEOUT),
                devices: g.devices.as_ref().map(|d| self.devices(d)),
            },
        };
        self.check_gpus(&raw_engines, &gpu);
        let parallel = raw.run.as_ref().and_then(|r| r.parallel).unwrap_or(false);
        let report = ReportSpec {
            template: match raw.report.as_ref().and_then(|r| r.template.as_ref()) {
                None => None,
                Some(t) => {
                    let p = self.relative(t.get_ref());
                    if !p.is_file() {
                        self.error_at(
                            t.span(),
                            format!("report template {} does not exist", p.display()),
                            Some("the path is relative to the plan's directory".into()),
                        );
                    }
                    Some(p)
                }
            },
            percentiles: match raw.report.as_ref().and_then(|r| r.percentiles.as_ref()) {
                None => Percentiles::NearestRank,
                Some(p) => match p.get_ref().as_str() {
                    "nearest_rank" => Percentiles::NearestRank,
                    "interpolated" => Percentiles::Interpolated,
                    other => {
                        self.error_at(
                            p.span(),
                            format!("`{other}` is not a percentile estimator"),
                            Some("use \"nearest_rank\" (the default) or \"interpolated\" (numpy's linear, as vLLM's bench)".into()),
                        );
                        Percentiles::NearestRank
                    }
                },
            },
        };
        let client = self.client(raw.client.as_ref());

        let (usd_per_hour, usd_per_kwh) = match &raw.cost {
            None => (None, None),
            Some(c) => self.cost(c),
        };
        let repeat = raw
            .repeat
            .as_ref()
            .map_or(Some(1), |r| self.positive(r, "`repeat`", 100))
            .unwrap_or(1) as u32;
        let quality = self.quality_steps(&raw.quality, &engines);
        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }
        self.check_dialects(&raw_engines, &files, &engines, &workloads);
        let mut cells = Vec::new();
        for ei in 0..engines.len() {
            for (wi, w) in workloads.iter().enumerate() {
                for &level in &w.load.levels {
                    cells.push(Cell::new(&engines, &workloads, ei, wi, level));
                }
            }
        }
        Some(Plan {
            schema: 1,
            name: raw.name.into_inner(),
            description: raw.description.unwrap_or_default(),
            path: self.path.to_path_buf(),
            sha256,
            engines,
            workloads,
            gpu,
            report,
            client,
            usd_per_hour,
            usd_per_kwh,
            repeat,
            parallel,
            cells,
            quality,
            includes: self
                .includes
                .iter()
                .map(|f| IncludedFile {
                    include: f.include.clone(),
                    path: f.path.clone(),
                    sha256: f.sha256.clone(),
                })
                .collect(),
        })
    }
}

/// Suggests the closest known key for serde's "unknown field `x`, expected one of ..." message.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|k| (strsim::jaro_winkler(field, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    Some(match best {
        Some((_, k)) => format!("did you mean `{k}`? (unknown keys are errors: a typo would silently change the experiment)"),
        None => format!(
            "this table takes {}; see docs/plan.md",
            expected.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// A size such as `64MiB`, `512 KiB`, `100MB` or `4096` (bytes).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    let bytes = num * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ResolveContext {
        ResolveContext {
            runner_exe: PathBuf::from("/bin/runner"),
        }
    }

    fn resolve(src: &str) -> Result<(Plan, Diagnostics), Diagnostics> {
        resolve_source(Path::new("plans/t.toml"), src, "0".into(), &ctx())
    }

    pub(super) const MINIMAL: &str = r#"
schema = 1
name = "t"
[load]
concurrency = [1, 4]
requests = 10
[[engine]]
name = "a"
launch = "{runner} engine sim --port {port} --model {model}"
model = "m"
[[engine]]
name = "b"
url = "http://127.0.0.1:9/"
model = "m"
api = "completions"
[[workload]]
name = "chat"
prompts = ["hi there", "hello"]
max_tokens = 8
"#;

    #[test]
    fn resolves_defaults_and_expands_the_grid() {
        let (plan, warnings) = resolve(MINIMAL).expect("plan resolves");
        assert!(warnings.0.is_empty(), "{warnings}");
        let ids: Vec<_> = plan.cells.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a.chat.c1", "a.chat.c4", "b.chat.c1", "b.chat.c4"]);
        let EngineTarget::Launch(l) = &plan.engines[0].target else {
            panic!("engine a launches")
        };
        assert_eq!(
            l.argv,
            [
                "/bin/runner",
                "engine",
                "sim",
                "--port",
                "{port}",
                "--model",
                "m"
            ]
        );
        assert_eq!(l.port, PortSpec::Auto);
        assert!(l.cwd.ends_with("plans"), "{}", l.cwd.display());
        assert_eq!(plan.engines[0].api, Api::Chat);
        assert_eq!(plan.engines[0].health.path, "/health");
        let EngineTarget::Attach { url } = &plan.engines[1].target else {
            panic!("engine b attaches")
        };
        assert_eq!(url, "http://127.0.0.1:9");
        let w = &plan.workloads[0];
        assert_eq!(w.load.stop, StopRule::Requests(10));
        assert_eq!(w.load.warmup, 2);
        assert!(w.stream);
        assert_eq!(w.prompts.len(), 2);
    }

    #[test]
    fn workload_load_overrides_the_plan_default_key_by_key() {
        let src = MINIMAL.replace(
            "max_tokens = 8",
            "max_tokens = 8\n[workload.load]\nconcurrency = [2]\nwarmup = 0",
        );
        let (plan, _) = resolve(&src).expect("plan resolves");
        let l = &plan.workloads[0].load;
        assert_eq!(l.levels, [LoadLevel::Concurrency(2)]);
        assert_eq!(l.warmup, 0);
        assert_eq!(l.stop, StopRule::Requests(10));
    }

    #[test]
    fn default_request_count_is_prompts_times_repeat() {
        let src = MINIMAL
            .replace("requests = 10\n", "")
            .replace("max_tokens = 8", "max_tokens = 8\nrepeat = 3");
        let (plan, _) = resolve(&src).expect("plan resolves");
        assert_eq!(plan.workloads[0].load.stop, StopRule::Requests(6));
    }

    #[test]
    fn gathers_every_error_before_failing() {
        let src = MINIMAL
            .replace("name = \"b\"", "name = \"a\"")
            .replace("max_tokens = 8", "max_tokens = 0\ntemperature = 9.0")
            .replace("{model}\"", "{modle}\"");
        let err = resolve(&src).expect_err("plan is invalid");
        let text = err.to_string();
        assert_eq!(err.error_count(), 4, "{text}");
        assert!(text.contains("engine name `a` is used twice"), "{text}");
        assert!(text.contains("unknown placeholder `{modle}`"), "{text}");
        assert!(text.contains("`max_tokens` must be between"), "{text}");
        assert!(
            text.contains("`temperature` must be between 0 and 2"),
            "{text}"
        );
    }

    #[test]
    fn unknown_key_points_at_it_with_a_suggestion() {
        let src = MINIMAL.replace("requests = 10", "requets = 10");
        let err = resolve(&src).expect_err("typo is an error");
        let d = &err.0[0];
        let loc = d.location.as_ref().expect("has a location");
        assert_eq!(loc.line, 6);
        assert!(
            d.message.contains("unknown field `requets`"),
            "{}",
            d.message
        );
        assert!(d.hint.as_deref().unwrap_or("").contains("`requests`"));
    }

    #[test]
    fn schema_is_checked_first() {
        let err = resolve("schema = 2\nwhatever = 1\n").expect_err("schema 2 is refused");
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].message.contains("unsupported plan schema 2"));
        let err = resolve("name = \"x\"\n").expect_err("no schema");
        assert!(err.0[0].message.contains("no `schema` key"));
    }

    #[test]
    fn names_must_be_safe_file_names() {
        let src = MINIMAL.replace("name = \"chat\"", "name = \"../evil\"");
        let err = resolve(&src).expect_err("unsafe name");
        assert!(err.to_string().contains("not safe as a file name"));
    }

    #[test]
    fn requests_and_duration_conflict() {
        let src = MINIMAL.replace("requests = 10", "requests = 10\nduration = \"5s\"");
        let err = resolve(&src).expect_err("both set");
        assert!(err
            .to_string()
            .contains("`requests` and `duration` are both set"));
    }

    #[test]
    fn slo_rules_are_read_and_impossible_ones_refused() {
        let src = MINIMAL.replace(
            "max_tokens = 8",
            "max_tokens = 8\n[workload.slo]\nttft_p95_ms = 2000\ne2e_p99_ms = 3000",
        );
        let (plan, _) = resolve(&src).expect("plan resolves");
        let keys: Vec<_> = plan.workloads[0].slo.iter().map(SloRule::key).collect();
        assert_eq!(keys, ["ttft_p95_ms", "e2e_p99_ms"]);
        let bad = src.replace("ttft_p95_ms = 2000", "ttft_p95_ms = -1.0");
        assert!(resolve(&bad)
            .expect_err("negative SLO")
            .to_string()
            .contains("can never be met"));
    }

    #[test]
    fn until_failure_and_restart_resolve_and_an_unreachable_bound_is_warned_about() {
        let src = MINIMAL
            .replace(
                "requests = 10",
                "requests = 10\nuntil_failure = true\nmax_concurrency = 32\nsteady_state = true",
            )
            .replace(
                "model = \"m\"\n[[engine]]",
                "model = \"m\"\non_failure = \"restart\"\n[[engine]]",
            );
        let (plan, warnings) = resolve(&src).expect("plan resolves");
        let l = &plan.workloads[0].load;
        assert_eq!(
            l.until_failure,
            Some(UntilFailureSpec {
                max_concurrency: 32
            })
        );
        assert!(l.steady_state);
        assert_eq!(
            plan.engines[0].on_failure,
            OnFailure::Restart { max_restarts: 3 }
        );
        assert_eq!(plan.engines[1].on_failure, OnFailure::Skip);
        let text = warnings.to_string();
        assert!(
            text.contains("`max_concurrency` (32) is above the 10 requests sent per level"),
            "{text}"
        );
        let attached = MINIMAL.replace(
            "api = \"completions\"",
            "api = \"completions\"\non_failure = \"restart\"",
        );
        assert!(resolve(&attached)
            .expect_err("an attached engine cannot restart")
            .to_string()
            .contains("an engine attached by `url` cannot be restarted"));
    }

    #[test]
    fn launch_and_url_are_exclusive() {
        let src = MINIMAL.replace(
            "url = \"http://127.0.0.1:9/\"",
            "url = \"http://127.0.0.1:9/\"\nlaunch = \"x\"",
        );
        assert!(resolve(&src)
            .expect_err("both")
            .to_string()
            .contains("has both `launch` and `url`"));
    }
}

/// Mutation fuzzing: no input makes resolution panic. Every plan in plans/ and the tests'
/// minimal plan are mutated thousands of times (bytes deleted, inserted, lines duplicated or
/// swapped) from a fixed seed, and each mutant is resolved.
#[cfg(test)]
mod fuzz {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n.max(1) as u64) as usize
        }
    }

    const PIECES: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        "=",
        ",",
        "\n",
        "#",
        "[[engine]]",
        "[[workload]]",
        "[load]",
        "concurrency = []",
        "rate = [0.0]",
        "-1",
        "1e309",
        "nan",
        "\"\"",
        "{port}",
        "{",
        "}}",
        "[workload.search]",
        "over = \"rate\"",
        "max = 0",
        "\u{feff}",
        "é",
        "\t",
        "requests = 0",
        "duration = \"0s\"",
        "schema = 1",
        "name = \"../x\"",
        "true",
    ];

    fn mutate(src: &str, rng: &mut Rng) -> String {
        let mut s = src.to_string();
        for _ in 0..1 + rng.next(4) {
            let at = {
                let mut i = rng.next(s.len() + 1);
                while !s.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            match rng.next(4) {
                0 => {
                    let mut end = (at + 1 + rng.next(20)).min(s.len());
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    s.replace_range(at..end, "");
                }
                1 => s.insert_str(at, PIECES[rng.next(PIECES.len())]),
                2 => {
                    let lines: Vec<&str> = s.lines().collect();
                    if !lines.is_empty() {
                        let l = lines[rng.next(lines.len())].to_string();
                        s.insert_str(at, &format!("\n{l}\n"));
                    }
                }
                _ => {
                    let mut lines: Vec<String> = s.lines().map(String::from).collect();
                    if lines.len() > 1 {
                        let (a, b) = (rng.next(lines.len()), rng.next(lines.len()));
                        lines.swap(a, b);
                        s = lines.join("\n");
                    }
                }
            }
        }
        s
    }

    #[test]
    fn no_mutated_plan_makes_resolution_panic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seeds = vec![tests::MINIMAL.to_string()];
        for e in std::fs::read_dir(root.join("plans"))
            .expect("plans/")
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "toml") {
                seeds.push(std::fs::read_to_string(e.path()).expect("plan"));
            }
        }
        let ctx = ResolveContext {
            runner_exe: PathBuf::from("/bin/runner"),
        };
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let mut rejected = 0;
        for seed in &seeds {
            for _ in 0..2500 {
                let m = mutate(seed, &mut rng);
                if resolve_source(&root.join("plans/fuzz.toml"), &m, "0".into(), &ctx).is_err() {
                    rejected += 1;
                }
            }
        }
        // The mutations are not all harmless: most mutants are rejected with diagnostics.
        assert!(rejected > seeds.len() * 1000, "{rejected}");
    }
}
