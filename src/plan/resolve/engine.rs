//! Resolving `[[engine]]` tables: API and dialect, launch command or attach URL, health check.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Resolver;
use crate::plan::defaults;
use crate::plan::model::*;
use crate::plan::placeholder;
use crate::plan::raw::*;

impl Resolver<'_> {
    pub(super) fn engine(&mut self, e: &RawEngine) -> Option<EngineSpec> {
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
            // Filled in at launch, with `{port}`: the engine's device set is placed then.
            ("gpus", "{gpus}".to_string()),
            ("gpu_count", "{gpu_count}".to_string()),
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
                    ("gpus", e.gpus.is_some()),
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
                let stop_grace = self.duration(&e.stop_grace, defaults::STOP_GRACE);
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
        let gpus = e
            .gpus
            .as_ref()
            .and_then(|g| self.positive(g, "`gpus`", 1024))
            .map(|g| g as u32);
        if let Some(g) = &e.gpus {
            if e.env.contains_key(CUDA_VISIBLE_DEVICES) {
                self.error_at(
                    g.span(),
                    format!("engine `{name}` sets both `gpus` and `env` {CUDA_VISIBLE_DEVICES}"),
                    Some(format!("remove {CUDA_VISIBLE_DEVICES} from `env`: the runner sets it to the devices `gpus` places the engine on")),
                );
            }
        }
        let on_failure = self.on_failure(e);
        let metrics_interval = match &e.metrics_interval {
            Some(v) if v.get_ref() == "off" => None,
            v => Some(self.duration(v, defaults::METRICS_INTERVAL)),
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
                metrics_interval,
                matrix: MatrixValues::default(),
                gpus,
                on_failure,
            }),
            _ => None,
        }
    }

    /// Warns where a workload asks for a fixed output length that an engine's `accepts` list
    /// keeps out of its requests: its outputs may end early.
    pub(super) fn check_dialects(
        &mut self,
        raw: &[Spanned<RawEngine>],
        files: &[Option<std::rc::Rc<super::Included>>],
        engines: &[EngineSpec],
        workloads: &[WorkloadSpec],
    ) {
        for ((e, raw_e), file) in engines.iter().zip(raw).zip(files) {
            self.file = file.clone();
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
        self.file = None;
    }

    /// `on_failure` and `max_restarts`.
    fn on_failure(&mut self, e: &RawEngine) -> OnFailure {
        let restart = match e.on_failure.as_ref() {
            None => false,
            Some(o) => match o.get_ref().as_str() {
                "skip" => false,
                "restart" if e.launch.is_none() => {
                    self.error_at(
                        o.span(),
                        "an engine attached by `url` cannot be restarted",
                        Some("the runner relaunches only engines it launched: use `launch`, or `on_failure = \"skip\"`".into()),
                    );
                    false
                }
                "restart" => true,
                other => {
                    self.error_at(
                        o.span(),
                        format!("unknown `on_failure` value `{other}`"),
                        Some("use \"skip\" (its remaining cells are not run) or \"restart\" (it is relaunched and the run goes on)".into()),
                    );
                    false
                }
            },
        };
        match (&e.max_restarts, restart) {
            (None, true) => OnFailure::Restart {
                max_restarts: defaults::MAX_RESTARTS,
            },
            (None, false) => OnFailure::Skip,
            (Some(m), false) => {
                self.error_at(
                    m.span(),
                    "`max_restarts` has no effect without `on_failure = \"restart\"`",
                    Some(
                        "add `on_failure = \"restart\"` to the engine, or remove `max_restarts`"
                            .into(),
                    ),
                );
                OnFailure::Skip
            }
            (Some(m), true) => match self.positive(m, "`max_restarts`", 1000) {
                Some(n) => OnFailure::Restart {
                    max_restarts: n as u32,
                },
                None => OnFailure::Skip,
            },
        }
    }

    pub(super) fn accepts(&mut self, e: &RawEngine) -> Accepts {
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

    pub(super) fn extra_body(
        &mut self,
        e: &RawEngine,
    ) -> serde_json::Map<String, serde_json::Value> {
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

    /// A command's words: a list as written, or a line split as a shell would (`shlex`); an
    /// unbalanced quote or an empty command is a plan error naming `key`.
    pub(super) fn command_words(
        &mut self,
        c: &Spanned<RawCommand>,
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
        if words.first().map_or(true, |w| w.is_empty()) {
            self.error_at(
                c.span(),
                format!("`{key}` is empty"),
                Some("give the program to run and its arguments".into()),
            );
            return None;
        }
        Some(words)
    }

    pub(super) fn command(
        &mut self,
        c: &Spanned<RawCommand>,
        vars: &BTreeMap<&str, String>,
        key: &str,
    ) -> Option<Vec<String>> {
        let words = self.command_words(c, key)?;
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
    pub(super) fn shell_command(
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
                let q = if placeholder::AT_LAUNCH.contains(k) {
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

    pub(super) fn health(&mut self, h: Option<&RawHealth>) -> HealthSpec {
        let default = HealthSpec {
            path: defaults::HEALTH_PATH.into(),
            status: defaults::HEALTH_STATUS,
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
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
            None => defaults::HEALTH_STATUS,
            Some(s) if (100..=599).contains(s.get_ref()) => {
                u16::try_from(*s.get_ref()).unwrap_or(defaults::HEALTH_STATUS)
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
}
