//! From plan file to validated `Plan`: read, check the schema version first, parse strictly,
//! then resolve every value (defaults, files, placeholders, the grid) while gathering every
//! error before failing.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::diagnostic::{Diagnostic, Diagnostics, Location};
use super::model::*;
use super::placeholder;
use super::prompts;
use super::raw::*;

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
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::error(format!(
            "cannot read plan {}: {e}",
            path.display()
        ))
        .hint("check the path; plans usually live in plans/")])
    })?;
    let source = String::from_utf8(bytes.clone()).map_err(|_| {
        Diagnostics(vec![Diagnostic::error(format!(
            "plan {} is not valid UTF-8",
            path.display()
        ))])
    })?;
    let sha256 = hex(&Sha256::digest(&bytes));
    resolve_source(path, &source, sha256, ctx)
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
    };
    r.check_schema()?;
    let raw: RawPlan = toml::from_str(source).map_err(|e| Diagnostics(vec![r.toml_error(&e)]))?;
    let plan = r.resolve(raw, sha256);
    let mut diags = r.diags;
    // File order, errors without a location last.
    diags.sort_by_key(|d| d.location.as_ref().map_or(usize::MAX, |l| l.line));
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
        Location::from_span(self.path, self.source, span)
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
            return crate::engine::log::DEFAULT_LOG_LIMIT;
        };
        match parse_size(v.get_ref()) {
            Some(n) if n >= MIN => n,
            Some(_) => {
                self.error_at(
                    v.span(),
                    format!("`log_limit` must be at least 4KiB, not `{}`", v.get_ref()),
                    Some("e.g. \"64MiB\" (the default) or \"1GiB\"".into()),
                );
                crate::engine::log::DEFAULT_LOG_LIMIT
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
                crate::engine::log::DEFAULT_LOG_LIMIT
            }
        }
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

        let mut engines = Vec::new();
        let mut seen = BTreeSet::new();
        for e in &raw.engines {
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
            if let Some(spec) = self.engine(e) {
                engines.push(spec);
            }
        }

        let mut workloads = Vec::new();
        let mut seen = BTreeSet::new();
        for w in &raw.workloads {
            let w = w.get_ref();
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
            if let Some(spec) = self.workload(w, &default_load) {
                workloads.push(spec);
            }
        }

        let gpu = match &raw.gpu {
            None => GpuSpec {
                enabled: true,
                interval: Duration::from_millis(500),
                release_timeout: Duration::from_secs(30),
            },
            Some(g) => GpuSpec {
                enabled: g.enabled.unwrap_or(true),
                interval: self.duration(&g.interval, Duration::from_millis(500)),
                release_timeout: self.duration(&g.release_timeout, Duration::from_secs(30)),
            },
        };
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
        };

        let usd_per_hour = match &raw.cost {
            None => None,
            Some(c) if *c.usd_per_hour.get_ref() > 0.0 && c.usd_per_hour.get_ref().is_finite() => {
                Some(*c.usd_per_hour.get_ref())
            }
            Some(c) => {
                self.error_at(
                    c.usd_per_hour.span(),
                    "`usd_per_hour` must be a positive number",
                    Some("the machine's price per hour in US dollars, e.g. 2.49".into()),
                );
                None
            }
        };
        let repeat = raw
            .repeat
            .as_ref()
            .map_or(Some(1), |r| self.positive(r, "`repeat`", 100))
            .unwrap_or(1) as u32;
        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }
        self.check_dialects(&raw.engines, &engines, &workloads);
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
            usd_per_hour,
            repeat,
            cells,
        })
    }

    fn engine(&mut self, e: &RawEngine) -> Option<EngineSpec> {
        let name_ok = self.safe_name(&e.name, "engine");
        let name = e.name.get_ref().clone();
        let api = match e.api.as_ref() {
            None => Api::Chat,
            Some(a) => match a.get_ref().as_str() {
                "chat" => Api::Chat,
                "completions" => Api::Completions,
                other => {
                    self.error_at(
                        a.span(),
                        format!("unknown api `{other}`"),
                        Some("use \"chat\" (/v1/chat/completions) or \"completions\" (/v1/completions)".into()),
                    );
                    Api::Chat
                }
            },
        };
        if e.model.get_ref().trim().is_empty() {
            self.error_at(
                e.model.span(),
                "`model` is empty",
                Some("set it to the model id the engine serves (see its /v1/models)".into()),
            );
        }
        let health = self.health(e.health.as_ref());
        let vars: BTreeMap<&str, String> = BTreeMap::from([
            ("port", "{port}".to_string()),
            ("model", e.model.get_ref().clone()),
            ("name", name.clone()),
            ("host", "127.0.0.1".to_string()),
            ("runner", self.ctx.runner_exe.to_string_lossy().into_owned()),
            ("plan_dir", self.abs_dir().to_string_lossy().into_owned()),
        ]);

        let version_command = e
            .version_command
            .as_ref()
            .and_then(|c| self.command(c, &vars, "version_command"));

        let target = match (&e.launch, &e.url) {
            (Some(_), Some(u)) => {
                self.error_at(
                    u.span(),
                    format!("engine `{name}` has both `launch` and `url`"),
                    Some("use `launch` to have the runner start the engine, or `url` to attach to one already running, not both".into()),
                );
                None
            }
            (None, None) => {
                self.error_at(
                    e.name.span(),
                    format!("engine `{name}` has neither `launch` nor `url`"),
                    Some(
                        "add `launch = \"...\"` (a command line) or `url = \"http://host:port\"`"
                            .into(),
                    ),
                );
                None
            }
            (None, Some(u)) => {
                for (key, present) in [
                    ("port", e.port.is_some()),
                    ("cwd", e.cwd.is_some()),
                    ("stop_grace", e.stop_grace.is_some()),
                    ("log_limit", e.log_limit.is_some()),
                    ("env", !e.env.is_empty()),
                ] {
                    if present {
                        self.error_at(
                            u.span(),
                            format!(
                                "engine `{name}` attaches to a `url`, so `{key}` has no effect"
                            ),
                            Some(format!(
                                "remove `{key}`, or launch the engine with `launch`"
                            )),
                        );
                    }
                }
                match reqwest::Url::parse(u.get_ref()) {
                    Ok(url) if url.scheme() == "http" => Some(EngineTarget::Attach {
                        url: u.get_ref().trim_end_matches('/').to_string(),
                    }),
                    Ok(url) if url.scheme() == "https" => {
                        self.error_at(
                            u.span(),
                            format!("`{}`: runner speaks plain HTTP only (no TLS)", u.get_ref()),
                            Some(
                                "use the engine's plain HTTP port, or a local TLS-terminating proxy in front of it"
                                    .into(),
                            ),
                        );
                        None
                    }
                    _ => {
                        self.error_at(
                            u.span(),
                            format!("`{}` is not an http URL", u.get_ref()),
                            Some(
                                "write the engine's base URL, e.g. \"http://127.0.0.1:8000\""
                                    .into(),
                            ),
                        );
                        None
                    }
                }
            }
            (Some(l), None) => {
                let argv = if e.shell == Some(true) {
                    self.shell_command(l, &vars)
                } else {
                    self.command(l, &vars, "launch")
                };
                let port = match e.port.as_ref() {
                    None => PortSpec::Auto,
                    Some(p) => match p.get_ref() {
                        RawPort::Number(n) if (1..=65535).contains(n) => {
                            PortSpec::Fixed(u16::try_from(*n).unwrap_or(0))
                        }
                        RawPort::Word(w) if w == "auto" => PortSpec::Auto,
                        _ => {
                            self.error_at(
                                p.span(),
                                "`port` must be a number from 1 to 65535 or \"auto\"",
                                None,
                            );
                            PortSpec::Auto
                        }
                    },
                };
                let mut env = BTreeMap::new();
                for (k, v) in &e.env {
                    match placeholder::expand(v, &vars) {
                        Ok(v) => {
                            env.insert(k.clone(), v);
                        }
                        Err(unknown) => self.error_at(
                            e.name.span(),
                            format!("env `{k}` of engine `{name}` uses unknown placeholder `{{{unknown}}}`"),
                            Some(placeholder::HINT.into()),
                        ),
                    }
                }
                if let Some(a) = &argv {
                    if !a.iter().any(|s| s.contains("{port}")) && port == PortSpec::Auto {
                        self.warn_at(
                            l.span(),
                            format!("engine `{name}` has `port = \"auto\"` but its launch command has no `{{port}}`"),
                            Some("pass `{port}` to the engine's port flag, or set a fixed `port`".into()),
                        );
                    }
                }
                let cwd = e
                    .cwd
                    .as_ref()
                    .map_or_else(|| self.abs_dir(), |c| self.abs_dir().join(c.get_ref()));
                let stop_grace = self.duration(&e.stop_grace, Duration::from_secs(10));
                let log_limit = self.log_limit(&e.log_limit);
                argv.map(|argv| {
                    EngineTarget::Launch(LaunchSpec {
                        argv,
                        env,
                        cwd,
                        port,
                        stop_grace,
                        log_limit,
                    })
                })
            }
        };
        let api_key_env = e.api_key_env.as_ref().and_then(|k| {
            let n = k.get_ref();
            let ok = !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                self.error_at(
                    k.span(),
                    format!("`api_key_env` must name an environment variable, not `{n}`"),
                    Some(
                        "write the variable's name, e.g. \"OPENAI_API_KEY\"; never the key itself"
                            .into(),
                    ),
                );
            }
            ok.then(|| n.clone())
        });
        let accepts = self.accepts(e);
        let extra_body = self.extra_body(e);
        let metrics_path = match &e.metrics_path {
            None => Some("/metrics".to_string()),
            Some(p) if p.get_ref().is_empty() => None,
            Some(p) if p.get_ref().starts_with('/') => Some(p.get_ref().clone()),
            Some(p) => {
                self.error_at(
                    p.span(),
                    format!("`metrics_path` must start with `/`, not `{}`", p.get_ref()),
                    Some("e.g. \"/metrics\"; \"\" turns scraping off".into()),
                );
                None
            }
        };
        match (target, name_ok) {
            (Some(target), true) => Some(EngineSpec {
                name,
                model: e.model.get_ref().clone(),
                api,
                target,
                health,
                version_command,
                api_key_env,
                accepts,
                extra_body,
                metrics_path,
            }),
            _ => None,
        }
    }

    /// Warns where a workload asks for a fixed output length that an engine's `accepts` list
    /// keeps out of its requests: its outputs may end early.
    fn check_dialects(
        &mut self,
        raw: &[Spanned<RawEngine>],
        engines: &[EngineSpec],
        workloads: &[WorkloadSpec],
    ) {
        for (e, raw_e) in engines.iter().zip(raw) {
            let span = raw_e
                .get_ref()
                .accepts
                .as_ref()
                .map_or_else(|| raw_e.span(), Spanned::span);
            for w in workloads {
                let dropped: Vec<&str> = [
                    (w.ignore_eos && !e.accepts.ignore_eos, "ignore_eos"),
                    (
                        w.min_tokens.is_some() && !e.accepts.min_tokens,
                        "min_tokens",
                    ),
                ]
                .into_iter()
                .filter_map(|(d, f)| d.then_some(f))
                .collect();
                if !dropped.is_empty() {
                    self.warn_at(
                        span.clone(),
                        format!(
                            "engine `{}` is not sent `{}` (not in its `accepts`): workload `{}` may get shorter outputs from it",
                            e.name,
                            dropped.join("`, `"),
                            w.name
                        ),
                        Some("short outputs are counted in each cell's summary; compare tokens/s rather than requests/s".into()),
                    );
                }
            }
        }
    }

    fn accepts(&mut self, e: &RawEngine) -> Accepts {
        let Some(list) = &e.accepts else {
            return Accepts::default();
        };
        let mut a = Accepts {
            ignore_eos: false,
            min_tokens: false,
        };
        for f in list.get_ref() {
            match f.get_ref().as_str() {
                "ignore_eos" => a.ignore_eos = true,
                "min_tokens" => a.min_tokens = true,
                other => self.error_at(
                    f.span(),
                    format!("`accepts` names `{other}`, which the runner never sends"),
                    Some(format!(
                        "list any of {}; put other fields in [engine.extra_body]",
                        ACCEPTABLE_FIELDS.join(", ")
                    )),
                ),
            }
        }
        a
    }

    fn extra_body(&mut self, e: &RawEngine) -> serde_json::Map<String, serde_json::Value> {
        let Some(table) = &e.extra_body else {
            return serde_json::Map::new();
        };
        let mut out = serde_json::Map::new();
        for (k, v) in table.get_ref() {
            if RESERVED_BODY_FIELDS.contains(&k.as_str()) {
                self.error_at(
                    table.span(),
                    format!(
                        "[engine.extra_body] sets `{k}`, which the runner sets from the workload"
                    ),
                    Some("set it in the [[workload]] instead (max_tokens, stream, prompts)".into()),
                );
                continue;
            }
            match serde_json::to_value(v) {
                Ok(j) => {
                    out.insert(k.clone(), j);
                }
                Err(err) => self.error_at(
                    table.span(),
                    format!("[engine.extra_body] `{k}` cannot be sent as JSON: {err}"),
                    Some("use strings, numbers, booleans, arrays or tables".into()),
                ),
            }
        }
        out
    }

    fn command(
        &mut self,
        c: &Spanned<RawCommand>,
        vars: &BTreeMap<&str, String>,
        key: &str,
    ) -> Option<Vec<String>> {
        let words = match c.get_ref() {
            RawCommand::Argv(a) => a.clone(),
            RawCommand::Line(line) => match shlex::split(line) {
                Some(w) => w,
                None => {
                    self.error_at(
                        c.span(),
                        format!("`{key}` has unbalanced quotes"),
                        Some(
                            "close every quote, or write the command as a list of arguments".into(),
                        ),
                    );
                    return None;
                }
            },
        };
        if words.is_empty() || words[0].is_empty() {
            self.error_at(
                c.span(),
                format!("`{key}` is empty"),
                Some("give the program to run and its arguments".into()),
            );
            return None;
        }
        let mut out = Vec::with_capacity(words.len());
        for w in words {
            match placeholder::expand(&w, vars) {
                Ok(s) => out.push(s),
                Err(unknown) => {
                    self.error_at(
                        c.span(),
                        format!("`{key}` uses unknown placeholder `{{{unknown}}}`"),
                        Some(placeholder::HINT.into()),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// `shell = true`: the launch line runs under `sh -c`, with every placeholder value quoted
    /// for the shell so that a value can never become a command.
    fn shell_command(
        &mut self,
        c: &Spanned<RawCommand>,
        vars: &BTreeMap<&str, String>,
    ) -> Option<Vec<String>> {
        let RawCommand::Line(line) = c.get_ref() else {
            self.error_at(
                c.span(),
                "with `shell = true`, `launch` must be one string",
                Some("write the shell command line as a string".into()),
            );
            return None;
        };
        let quoted: BTreeMap<&str, String> = vars
            .iter()
            .map(|(k, v)| {
                let q = if *k == "port" {
                    v.clone()
                } else {
                    shlex::try_quote(v).map_or_else(|_| v.clone(), |q| q.into_owned())
                };
                (*k, q)
            })
            .collect();
        match placeholder::expand(line, &quoted) {
            Ok(l) => Some(vec!["sh".into(), "-c".into(), l]),
            Err(unknown) => {
                self.error_at(
                    c.span(),
                    format!("`launch` uses unknown placeholder `{{{unknown}}}`"),
                    Some(placeholder::HINT.into()),
                );
                None
            }
        }
    }

    fn health(&mut self, h: Option<&RawHealth>) -> HealthSpec {
        let default = HealthSpec {
            path: "/health".into(),
            status: 200,
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
            completion: false,
        };
        let Some(h) = h else { return default };
        let path = match &h.path {
            None => default.path,
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
            Some(p) => {
                self.error_at(
                    p.span(),
                    "health `path` must start with `/`",
                    Some("e.g. \"/health\" or \"/v1/models\"".into()),
                );
                default.path
            }
        };
        let status = match &h.status {
            None => 200,
            Some(s) if (100..=599).contains(s.get_ref()) => {
                u16::try_from(*s.get_ref()).unwrap_or(200)
            }
            Some(s) => {
                self.error_at(
                    s.span(),
                    "health `status` must be an HTTP status (100-599)",
                    None,
                );
                200
            }
        };
        HealthSpec {
            path,
            status,
            interval: self.duration(&h.interval, default.interval),
            timeout: self.duration(&h.timeout, default.timeout),
            completion: h.completion.unwrap_or(false),
        }
    }

    fn workload(&mut self, w: &RawWorkload, default_load: &RawLoad) -> Option<WorkloadSpec> {
        let name_ok = self.safe_name(&w.name, "workload");
        let name = w.name.get_ref().clone();
        let sources = [
            w.prompts.as_ref().map(|p| p.span()),
            w.prompts_file.as_ref().map(|p| p.span()),
            w.documents.as_ref().map(|p| p.span()),
            w.synthetic.as_ref().map(|p| p.span()),
        ];
        let given: Vec<_> = sources.iter().flatten().cloned().collect();
        let source_hint = "use exactly one of `prompts = [...]`, `prompts_file = \"...\"`, `[workload.documents]` or `[workload.synthetic]`";
        if given.len() != 1 {
            let span = given.get(1).cloned().unwrap_or(w.name.span());
            let msg = if given.is_empty() {
                format!("workload `{name}` has no prompts")
            } else {
                format!("workload `{name}` has more than one prompt source")
            };
            self.error_at(span, msg, Some(source_hint.into()));
            return None;
        }
        let loaded = if let Some(p) = &w.prompts {
            Ok((
                "inline".to_string(),
                p.get_ref().iter().cloned().map(Prompt::Text).collect(),
            ))
        } else if let Some(f) = &w.prompts_file {
            let path = self.relative(f.get_ref());
            prompts::from_file(&path)
                .map(|p| (format!("file {}", f.get_ref()), p))
                .map_err(|e| (f.span(), e))
        } else if let Some(d) = &w.documents {
            let d = d.get_ref();
            let path = self.relative(d.file.get_ref());
            let marker = d.marker.clone().unwrap_or_else(|| "[DOC]".into());
            let template = d.template.as_ref().map(|t| t.get_ref().clone());
            if let Some(t) = &d.template {
                if !t.get_ref().contains("{doc}") {
                    self.error_at(
                        t.span(),
                        "the documents `template` has no `{doc}`",
                        Some("put `{doc}` where each document's text goes".into()),
                    );
                }
            }
            prompts::from_documents(&path, &marker, template.as_deref().unwrap_or("{doc}"))
                .map(|p| {
                    (
                        format!("documents {} split on {marker}", d.file.get_ref()),
                        p,
                    )
                })
                .map_err(|e| (d.file.span(), e))
        } else if let Some(s) = &w.synthetic {
            let s = s.get_ref();
            match (
                self.positive(&s.input_tokens, "`input_tokens`", 1_000_000),
                s.count
                    .as_ref()
                    .map_or(Some(16), |c| self.positive(c, "`count`", 1_000_000)),
            ) {
                (Some(len), Some(count)) if len * count > 50_000_000 => {
                    self.error_at(
                        s.input_tokens.span(),
                        format!("{count} synthetic prompts of {len} words is more text than a benchmark needs"),
                        Some("keep `input_tokens x count` under 50 million words; requests reuse prompts in turn".into()),
                    );
                    return None;
                }
                (Some(len), Some(count)) => {
                    let seed = s.seed.unwrap_or(0);
                    Ok((
                        format!("synthetic {len} words x {count}, seed {seed}"),
                        prompts::synthetic(len as usize, count as usize, seed),
                    ))
                }
                _ => return None,
            }
        } else {
            return None;
        };
        let (source, prompts) = match loaded {
            Ok(v) => v,
            Err((span, e)) => {
                self.error_at(span, e.message, e.hint);
                return None;
            }
        };
        if prompts.is_empty() {
            self.error_at(
                given[0].clone(),
                format!("workload `{name}` has no prompts"),
                Some("the prompt source is empty; add prompts".into()),
            );
            return None;
        }

        let max_tokens = w
            .max_tokens
            .as_ref()
            .map_or(Some(128), |m| self.positive(m, "`max_tokens`", 1_000_000));
        let min_tokens = match &w.min_tokens {
            None => Some(None),
            Some(m) => match (self.positive(m, "`min_tokens`", 1_000_000), max_tokens) {
                (Some(v), Some(max)) if v > max => {
                    self.error_at(
                        m.span(),
                        format!("`min_tokens` ({v}) is above `max_tokens` ({max})"),
                        Some("set `min_tokens = max_tokens` for a fixed output length".into()),
                    );
                    None
                }
                (v, _) => v.map(|v| Some(v as u32)),
            },
        };
        let repeat = w
            .repeat
            .as_ref()
            .map_or(Some(1), |r| self.positive(r, "`repeat`", 1_000_000));
        let temperature = match &w.temperature {
            None => 0.0,
            Some(t) if (0.0..=2.0).contains(t.get_ref()) => *t.get_ref(),
            Some(t) => {
                self.error_at(t.span(), "`temperature` must be between 0 and 2", None);
                0.0
            }
        };
        let slo = w.slo.as_ref().map(|s| self.slo(s)).unwrap_or_default();
        let mut search = match &w.search {
            None => None,
            Some(sp) => {
                if slo.is_empty() {
                    self.error_at(
                        sp.span(),
                        format!("workload `{name}` has a `[workload.search]` but no SLO to search under"),
                        Some("add `[workload.slo]` with e.g. `ttft_p95_ms = 2000`".into()),
                    );
                }
                self.search(sp.get_ref())
            }
        };
        let load = self.load(
            &name,
            w.load.as_ref(),
            default_load,
            prompts.len() as u64 * repeat.unwrap_or(1),
            search.is_some(),
        );
        if let Some(l) = &load {
            self.check_reach(&name, w, l, search.as_mut());
        }
        match (load, name_ok, max_tokens, repeat, min_tokens) {
            (Some(load), true, Some(max_tokens), Some(repeat), Some(min_tokens)) => {
                Some(WorkloadSpec {
                    name,
                    source,
                    prompts,
                    max_tokens: max_tokens as u32,
                    min_tokens,
                    temperature,
                    ignore_eos: w.ignore_eos.unwrap_or(false),
                    allow_empty_output: w.allow_empty_output.unwrap_or(false),
                    stream: w.stream.unwrap_or(true),
                    repeat: repeat as u32,
                    load,
                    slo,
                    search,
                })
            }
            _ => None,
        }
    }

    fn load(
        &mut self,
        workload: &str,
        own: Option<&RawLoad>,
        default: &RawLoad,
        default_requests: u64,
        searched: bool,
    ) -> Option<LoadSpec> {
        let pick = |f: fn(&RawLoad) -> bool| own.filter(|o| f(o)).unwrap_or(default);
        // `concurrency` and `rate` are one choice: an override of either replaces both.
        let level_src = pick(|l| l.concurrency.is_some() || l.rate.is_some());
        let levels = match (&level_src.concurrency, &level_src.rate) {
            (Some(_), Some(r)) => {
                self.error_at(
                    r.span(),
                    "`concurrency` and `rate` are both set",
                    Some("a level is closed loop (`concurrency`) or open loop (`rate`, requests per second): keep one".into()),
                );
                return None;
            }
            (None, None) if searched => Vec::new(),
            (None, None) => {
                self.error(
                    format!("workload `{workload}` has no load levels"),
                    "add `concurrency = [1, 4, 16]` (closed loop) or `rate = [5.0, 10.0]` (open loop, requests/s) under `[load]` or `[workload.load]`",
                );
                return None;
            }
            (Some(conc), None) => {
                let mut levels = Vec::new();
                for &c in conc.get_ref() {
                    if !(1..=100_000).contains(&c) {
                        self.error_at(
                            conc.span(),
                            format!("concurrency {c} is out of range"),
                            Some(
                                "each level is a number of requests in flight, from 1 to 100000"
                                    .into(),
                            ),
                        );
                        return None;
                    }
                    levels.push(LoadLevel::Concurrency(c as u32));
                }
                self.check_levels(levels, conc.span(), "concurrency")?
            }
            (None, Some(rate)) => {
                let mut levels = Vec::new();
                for &r in rate.get_ref() {
                    if !(r > 0.0 && r <= 10_000_000.0) {
                        self.error_at(
                            rate.span(),
                            format!("rate {r} is out of range"),
                            Some("each level is a number of requests per second, above 0".into()),
                        );
                        return None;
                    }
                    levels.push(LoadLevel::Rate(r));
                }
                self.check_levels(levels, rate.span(), "rate")?
            }
        };
        let arrival_src =
            pick(|l| l.arrival.is_some() || l.seed.is_some() || l.burstiness.is_some());
        let seed = arrival_src.seed.unwrap_or(0);
        let arrival = match arrival_src.arrival.as_ref().map(|a| a.get_ref().as_str()) {
            None | Some("constant") => Arrival::Constant,
            Some("poisson") => Arrival::Poisson { seed },
            Some("gamma") => {
                let b = arrival_src
                    .burstiness
                    .as_ref()
                    .map_or(1.0, |b| *b.get_ref());
                if !(b > 0.0 && b.is_finite()) {
                    if let Some(bs) = &arrival_src.burstiness {
                        self.error_at(
                            bs.span(),
                            "`burstiness` must be above 0",
                            Some("1 is a Poisson process; above 1 is burstier".into()),
                        );
                    }
                    return None;
                }
                Arrival::Gamma {
                    seed,
                    burstiness: b,
                }
            }
            Some(other) => {
                let span = arrival_src.arrival.as_ref().map_or(0..0, |a| a.span());
                self.error_at(
                    span,
                    format!("unknown arrival `{other}`"),
                    Some("use \"constant\", \"poisson\" or \"gamma\"".into()),
                );
                return None;
            }
        };
        let max_in_flight = match &pick(|l| l.max_in_flight.is_some()).max_in_flight {
            None => None,
            Some(m) => Some(self.positive(m, "`max_in_flight`", 1_000_000)? as u32),
        };
        // `requests` and `duration` are one choice: an override of either replaces both.
        let stop_src = if own.is_some_and(|o| o.requests.is_some() || o.duration.is_some()) {
            own.unwrap_or(default)
        } else {
            default
        };
        let stop = match (&stop_src.requests, &stop_src.duration) {
            (Some(_), Some(d)) => {
                self.error_at(
                    d.span(),
                    "`requests` and `duration` are both set",
                    Some(
                        "a level ends after a number of requests or after a duration: keep one"
                            .into(),
                    ),
                );
                return None;
            }
            (Some(r), None) => StopRule::Requests(self.positive(r, "`requests`", 100_000_000)?),
            (None, Some(_)) => {
                StopRule::Duration(self.duration(&stop_src.duration, Duration::from_secs(60)))
            }
            (None, None) => StopRule::Requests(default_requests),
        };
        let warmup = match &pick(|l| l.warmup.is_some()).warmup {
            None => 2,
            Some(w) if (0..=1_000_000).contains(w.get_ref()) => *w.get_ref() as u32,
            Some(w) => {
                self.error_at(w.span(), "`warmup` must be between 0 and 1000000", None);
                return None;
            }
        };
        let total = self.duration(
            &pick(|l| l.request_timeout.is_some()).request_timeout,
            Duration::from_secs(600),
        );
        let timeouts = TimeoutSpec {
            connect: self.duration(
                &pick(|l| l.connect_timeout.is_some()).connect_timeout,
                Duration::from_secs(10),
            ),
            first_token: self.duration(
                &pick(|l| l.first_token_timeout.is_some()).first_token_timeout,
                total,
            ),
            idle: self.duration(
                &pick(|l| l.idle_timeout.is_some()).idle_timeout,
                Duration::from_secs(120).min(total),
            ),
            total,
        };
        let max_errors = match &pick(|l| l.max_errors.is_some()).max_errors {
            None => None,
            Some(m) => Some(self.positive(m, "`max_errors`", i64::MAX)?),
        };
        let max_error_rate = match &pick(|l| l.max_error_rate.is_some()).max_error_rate {
            None => None,
            Some(r) if *r.get_ref() > 0.0 && *r.get_ref() <= 1.0 => Some(*r.get_ref()),
            Some(r) => {
                self.error_at(
                    r.span(),
                    "`max_error_rate` must be above 0 and at most 1",
                    Some("e.g. 0.5 ends a level once half its requests fail".into()),
                );
                return None;
            }
        };
        let max_dispatch_lag = self.duration(
            &pick(|l| l.max_dispatch_lag.is_some()).max_dispatch_lag,
            Duration::from_millis(10),
        );
        let retries = match &pick(|l| l.retries.is_some()).retries {
            None => 0,
            Some(r) if (0..=100).contains(r.get_ref()) => *r.get_ref() as u32,
            Some(r) => {
                self.error_at(
                    r.span(),
                    "`retries` must be between 0 and 100",
                    Some("retries apply to 429 and 503 answers only".into()),
                );
                return None;
            }
        };
        let retry_max_wait = self.duration(
            &pick(|l| l.retry_max_wait.is_some()).retry_max_wait,
            Duration::from_secs(10),
        );
        Some(LoadSpec {
            levels,
            arrival,
            max_in_flight,
            stop,
            warmup,
            timeouts,
            max_errors,
            max_error_rate,
            max_dispatch_lag,
            retries,
            retry_max_wait,
        })
    }

    /// A closed-loop level has at most `requests` in flight: a concurrency above the requests
    /// per level is never reached. A search is capped there (so it never reports a level it
    /// did not reach), with a warning; a search whose `min` is above it is refused; grid
    /// levels above it are warned about.
    fn check_reach(
        &mut self,
        name: &str,
        w: &RawWorkload,
        load: &LoadSpec,
        search: Option<&mut SearchSpec>,
    ) {
        let StopRule::Requests(n) = load.stop else {
            return;
        };
        if let (Some(s), Some(raw)) = (search, &w.search) {
            let reach = n as f64;
            if s.over == SearchOver::Concurrency && s.min > reach {
                self.error_at(
                    raw.span(),
                    format!(
                        "workload `{name}` searches from concurrency {} but sends {n} requests per level: no level of the search is ever reached",
                        s.min
                    ),
                    Some(format!(
                        "send at least {} requests per level (`requests` in `[workload.load]`)",
                        s.max
                    )),
                );
            } else if s.over == SearchOver::Concurrency && s.max > reach {
                self.warn_at(
                    raw.span(),
                    format!(
                        "workload `{name}` searches up to concurrency {} but sends {n} requests per level: the search stops at {n}, the most a level can have in flight",
                        s.max
                    ),
                    Some(format!(
                        "send at least {} requests per level (`requests` in `[workload.load]`) to search that high",
                        s.max
                    )),
                );
                s.max = reach;
            }
        }
        let unreached: Vec<String> = load
            .levels
            .iter()
            .filter_map(|l| match l {
                LoadLevel::Concurrency(c) if u64::from(*c) > n => Some(c.to_string()),
                _ => None,
            })
            .collect();
        if !unreached.is_empty() {
            self.warn_at(
                w.name.span(),
                format!(
                    "workload `{name}` sends {n} requests per level, fewer than concurrency {}: those levels never have that many requests in flight",
                    unreached.join(", ")
                ),
                Some("raise `requests` to at least the highest concurrency, or use `duration`".into()),
            );
        }
    }

    fn search(&mut self, s: &RawSearch) -> Option<SearchSpec> {
        let over = match s.over.get_ref().as_str() {
            "concurrency" => SearchOver::Concurrency,
            "rate" => SearchOver::Rate,
            other => {
                self.error_at(
                    s.over.span(),
                    format!("cannot search over `{other}`"),
                    Some(
                        "use \"concurrency\" (closed loop) or \"rate\" (open loop, requests/s)"
                            .into(),
                    ),
                );
                return None;
            }
        };
        let min = s.min.as_ref().map_or(1.0, |m| *m.get_ref());
        let max = *s.max.get_ref();
        let whole = |v: f64| over == SearchOver::Rate || v.fract() == 0.0;
        if !(min > 0.0 && whole(min)) {
            let span = s.min.as_ref().map_or(s.over.span(), |m| m.span());
            self.error_at(
                span,
                "search `min` must be above 0 (a whole number for concurrency)",
                None,
            );
            return None;
        }
        if !(max >= min && whole(max) && max <= 10_000_000.0) {
            self.error_at(
                s.max.span(),
                format!("search `max` ({max}) must be at least `min` ({min})"),
                Some("the search probes levels between `min` and `max`".into()),
            );
            return None;
        }
        let max_steps = match &s.max_steps {
            None => 10,
            Some(m) => self.positive(m, "`max_steps`", 100)? as u32,
        };
        Some(SearchSpec {
            over,
            min,
            max,
            max_steps,
        })
    }

    fn check_levels(
        &mut self,
        levels: Vec<LoadLevel>,
        span: Range<usize>,
        key: &str,
    ) -> Option<Vec<LoadLevel>> {
        if levels.is_empty() {
            self.error_at(
                span,
                format!("`{key}` is empty, so the grid has no cells"),
                Some(format!("list at least one level, e.g. `{key} = [1]`")),
            );
            return None;
        }
        for (i, l) in levels.iter().enumerate() {
            if levels[..i].contains(l) {
                self.error_at(
                    span,
                    format!("{key} {} is listed twice", l.magnitude()),
                    Some("list each level once".into()),
                );
                return None;
            }
        }
        Some(levels)
    }

    fn slo(&mut self, s: &Spanned<RawSlo>) -> Vec<SloRule> {
        use Percentile::*;
        use SloMetric::*;
        let r = s.get_ref();
        let all = [
            (Ttft, P50, r.ttft_p50_ms),
            (Ttft, P90, r.ttft_p90_ms),
            (Ttft, P95, r.ttft_p95_ms),
            (Ttft, P99, r.ttft_p99_ms),
            (Tpot, P50, r.tpot_p50_ms),
            (Tpot, P90, r.tpot_p90_ms),
            (Tpot, P95, r.tpot_p95_ms),
            (Tpot, P99, r.tpot_p99_ms),
            (Itl, P50, r.itl_p50_ms),
            (Itl, P90, r.itl_p90_ms),
            (Itl, P95, r.itl_p95_ms),
            (Itl, P99, r.itl_p99_ms),
            (E2e, P50, r.e2e_p50_ms),
            (E2e, P90, r.e2e_p90_ms),
            (E2e, P95, r.e2e_p95_ms),
            (E2e, P99, r.e2e_p99_ms),
        ];
        let mut rules = Vec::new();
        for (metric, percentile, v) in all {
            let Some(max_ms) = v else { continue };
            let rule = SloRule {
                metric,
                percentile,
                max_ms,
            };
            if !(max_ms > 0.0 && max_ms.is_finite()) {
                self.error_at(
                    s.span(),
                    format!("SLO `{}` = {max_ms} can never be met", rule.key()),
                    Some("an SLO threshold is a positive number of milliseconds".into()),
                );
                continue;
            }
            rules.push(rule);
        }
        if rules.is_empty() && self.diags.iter().all(|d| !d.is_error()) {
            self.warn_at(
                s.span(),
                "`[workload.slo]` sets no threshold",
                Some("add e.g. `ttft_p95_ms = 2000`, or remove the table".into()),
            );
        }
        rules
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
