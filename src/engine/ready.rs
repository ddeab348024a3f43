//! Readiness, every check of it in one room: the wait (a race between the child exiting, an
//! HTTP probe at the plan's interval, the startup deadline and a stop request; no fixed sleeps),
//! then the served model, an optional first completion, and the request-dialect probe. Each
//! returns a typed result; none touches the bundle (the run's ledger records what they found).

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::load::body;
use crate::load::client::{RequestTarget, RetryPolicy, Timeouts};
use crate::metrics::record::RequestRecord;

use crate::plan::model::{EngineSpec, HealthSpec, WorkloadSpec, ACCEPTABLE_FIELDS};
use crate::procfs;
use crate::stop::Cancel;

/// Why an engine never became ready.
#[derive(Debug)]
pub enum NotReady {
    Exited(ExitStatus),
    /// The deadline passed; `last` is why the last probe did not count.
    Timeout {
        after: Duration,
        last: Option<Miss>,
    },
    Stopped,
    /// The health check was answered by a process outside the engine's group (`pid (comm)`).
    Foreign(String),
    /// `api_key_env` names a variable that is not set.
    ApiKeyUnset {
        var: String,
    },
    /// The engine process could not be started (no port, no log file, no program).
    Spawn(String),
    /// `/v1/models` does not list the plan's model (or did not answer a list): why.
    WrongModel(String),
    /// `health.completion`: no 1-token completion succeeded before the deadline (the last error).
    NoCompletion(String),
}

/// Whose answer counts for a launched engine: a process of its group must hold the socket
/// listening on its port, or the answer came from another server on that port.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub pgid: i32,
    pub port: u16,
}

/// Why one probe did not count.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// Nothing listens at the address.
    Refused,
    /// An answer, with another status than the one expected.
    Status(u16),
    /// Any other failure (timeout, reset, ...), with its causes.
    Error(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Refused => write!(f, "connection refused (nothing listens there)"),
            Miss::Status(s) => write!(f, "answered HTTP {s}"),
            Miss::Error(e) => write!(f, "{e}"),
        }
    }
}

/// Whether a request failed because nothing listens: an `io::Error` of kind
/// `ConnectionRefused` somewhere in its causes.
pub fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Called with each new reason a probe did not count (and again every `REPEAT_MISS` while it
/// lasts) and the time left before the deadline.
pub type OnMiss<'a> = &'a (dyn Fn(&Miss, Duration) + Sync);

/// How often an unchanged miss is reported again.
const REPEAT_MISS: Duration = Duration::from_secs(5);

/// Waits until `GET base_url + path` answers the expected status (from `owner`'s group, when
/// given: an answer from outside it ends the wait with `Foreign`). With a child, its exit ends the wait at once. Returns the time to ready from
/// `started`.
#[allow(clippy::too_many_arguments)] // each is one independent input of the race
pub async fn wait_ready(
    child: Option<&mut Child>,
    client: &reqwest::Client,
    base_url: &str,
    health: &HealthSpec,
    started: Instant,
    cancel: &Cancel,
    owner: Option<Owner>,
    on_miss: Option<OnMiss<'_>>,
) -> Result<Duration, NotReady> {
    let url = format!("{base_url}{}", health.path);
    let deadline = tokio::time::Instant::from_std(started + health.timeout);
    let probe_timeout = health.interval.max(Duration::from_secs(2));
    let last: std::sync::Mutex<Option<Miss>> = std::sync::Mutex::new(None);
    let probes = async {
        let mut tick = tokio::time::interval(health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Option<(Miss, tokio::time::Instant)> = None;
        loop {
            tick.tick().await;
            let miss = match client.get(&url).timeout(probe_timeout).send().await {
                Ok(r) if r.status().as_u16() == health.status => match owner {
                    // Another server holds the port: this engine cannot get it, and its
                    // answers are not this engine's. No point waiting out the deadline.
                    Some(o) if !procfs::group_listens_on(o.pgid, o.port) => {
                        return Err(procfs::port_holder(o.port)
                            .unwrap_or_else(|| "a process /proc does not show".into()));
                    }
                    _ => return Ok(started.elapsed()),
                },
                Ok(r) => Miss::Status(r.status().as_u16()),
                Err(e) if is_refused(&e) => Miss::Refused,
                Err(e) if e.is_timeout() => Miss::Error(format!(
                    "no answer within {}",
                    humantime::format_duration(probe_timeout)
                )),
                Err(e) => Miss::Error(crate::error::error_chain(&e)),
            };
            let now = tokio::time::Instant::now();
            let again = reported.as_ref().map_or(true, |(m, at)| {
                *m != miss || now.duration_since(*at) >= REPEAT_MISS
            });
            if again {
                if let Some(f) = on_miss {
                    f(&miss, deadline.saturating_duration_since(now));
                }
                reported = Some((miss.clone(), now));
            }
            if let Ok(mut l) = last.lock() {
                *l = Some(miss);
            }
        }
    };
    let exited = async {
        match child {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        ready = probes => ready.map_err(NotReady::Foreign),
        status = exited => match status {
            Some(s) => Err(NotReady::Exited(s)),
            None => Err(NotReady::Exited(std::os::unix::process::ExitStatusExt::from_raw(-1))),
        },
        () = tokio::time::sleep_until(deadline) => Err(NotReady::Timeout {
            after: health.timeout,
            last: None,
        }),
        () = cancel.stopping() => Err(NotReady::Stopped),
    };
    match outcome {
        Err(NotReady::Timeout { after, .. }) => Err(NotReady::Timeout {
            after,
            last: last.into_inner().ok().flatten(),
        }),
        other => other,
    }
}

/// The engine's API key, read from the environment variable `api_key_env` names.
pub fn api_key(spec: &EngineSpec) -> Option<String> {
    spec.api_key_env
        .as_deref()
        .and_then(|k| std::env::var(k).ok())
}

/// `api_key_env` must name a variable that is set: else the engine is not started at all.
pub fn check_api_key(spec: &EngineSpec) -> Result<bool, NotReady> {
    match &spec.api_key_env {
        Some(var) if std::env::var_os(var).is_none() => {
            Err(NotReady::ApiKeyUnset { var: var.clone() })
        }
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// An engine must serve the plan's model, so the run never benchmarks the wrong server (or a
/// launch line that loaded another model): its `/v1/models` must list it.
pub async fn check_model(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    api_key: Option<&str>,
) -> Result<(), NotReady> {
    let mut req = client
        .get(format!("{url}/v1/models"))
        .timeout(std::time::Duration::from_secs(10));
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let listed: serde_json::Value = req
        .send()
        .await
        .map_err(|e| NotReady::WrongModel(format!("GET {url}/v1/models failed: {e}")))?
        .json()
        .await
        .map_err(|e| {
            NotReady::WrongModel(format!(
                "GET {url}/v1/models did not answer a model list: {e}"
            ))
        })?;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    if ids.contains(&model) {
        Ok(())
    } else {
        Err(NotReady::WrongModel(format!(
            "serves {ids:?}, not the plan's model `{model}`: refusing to benchmark what may be the wrong server"
        )))
    }
}

/// One request outside any cell (readiness, dialect check), with default timeouts and no
/// retry; the body's `stream` decides how the answer is read.
pub async fn send_one(
    spec: &EngineSpec,
    base_url: &str,
    body: serde_json::Value,
    api_key: Option<String>,
    cancel: &Cancel,
) -> RequestRecord {
    let target = RequestTarget {
        url: format!("{base_url}{}", spec.api.path()),
        stream: body["stream"].as_bool().unwrap_or(false),
        timeouts: Timeouts::default(),
        keep_text: false,
        retry: RetryPolicy::default(),
        api_key,
        expect_tokens: 0,
        // These check that the engine answers; a 1-token answer may well be empty.
        allow_empty_output: true,
    };
    crate::load::client::send_alone(&target, body.to_string().into(), cancel.stopping())
        .await
        .record
}

/// `[engine.health] completion = true`: one real 1-token completion must succeed, retried
/// at the health interval until the startup deadline.
pub async fn first_completion(
    spec: &EngineSpec,
    base_url: &str,
    api_key: Option<String>,
    deadline: tokio::time::Instant,
    cancel: &Cancel,
) -> Result<(), NotReady> {
    let body = body::BodySpec {
        api: spec.api,
        model: &spec.model,
        max_tokens: 1,
        min_tokens: None,
        temperature: 0.0,
        stream: false,
        ignore_eos: false,
        extra: Some(&spec.extra_body),
    }
    .render(&crate::plan::model::Prompt::Text("Hello".into()));
    let mut last = String::new();
    loop {
        let rec = send_one(spec, base_url, body.clone(), api_key.clone(), cancel).await;
        if rec.ok {
            return Ok(());
        }
        last = rec.error_message.unwrap_or(last);
        if cancel.is_stopping() || tokio::time::Instant::now() + spec.health.interval > deadline {
            return Err(NotReady::NoCompletion(last));
        }
        tokio::time::sleep(spec.health.interval).await;
    }
}

/// A request field an engine refuses, found by `check_dialect`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub field: String,
    /// The engine's error message.
    pub answer: String,
    /// What the user sees: the engine, the field, its answer and the fix.
    pub why: String,
}

/// For a workload whose requests carry fields outside the OpenAI API (`ignore_eos`,
/// `min_tokens`, `[engine.extra_body]`), one request shaped like the workload's (first prompt,
/// 1 token). An HTTP 4xx whose message names one of those fields means the engine refuses it:
/// the workload's cells are then `rejected` with the fix, instead of being measured as a wall
/// of failed requests. `None` when nothing is refused (or nothing was to check).
pub async fn check_dialect(
    spec: &EngineSpec,
    w: &WorkloadSpec,
    base_url: &str,
    plan_path: &std::path::Path,
    cancel: &Cancel,
) -> Option<Refused> {
    let fields = body::nonstandard_fields(spec, w);
    if fields.is_empty() || cancel.is_stopping() {
        return None;
    }
    let prompt = w.prompts.first()?;
    let mut body = body::BodySpec::new(spec, w);
    body.max_tokens = 1;
    body.min_tokens = body.min_tokens.map(|_| 1);
    let rec = send_one(spec, base_url, body.render(prompt), api_key(spec), cancel).await;
    let status = rec.status.unwrap_or(0);
    if rec.ok || !(400..500).contains(&status) || status == 429 {
        return None;
    }
    let message = rec.error_message.unwrap_or_default();
    let field = fields.iter().find(|f| message.contains(f.as_str()))?;
    let fix = if ACCEPTABLE_FIELDS.contains(&field.as_str()) {
        format!(
            "leave `{field}` out of engine `{}`'s `accepts` list in {} (its outputs may then end early), or use an engine that takes it",
            spec.name,
            plan_path.display()
        )
    } else {
        format!(
            "remove `{field}` from engine `{}`'s [engine.extra_body] in {}",
            spec.name,
            plan_path.display()
        )
    };
    let why = format!(
        "engine `{}` refuses request field `{field}` ({message}); fix: {fix}",
        spec.name
    );
    Some(Refused {
        field: field.clone(),
        answer: message,
        why,
    })
}
