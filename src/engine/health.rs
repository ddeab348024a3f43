//! Readiness: a race between the child exiting, an HTTP probe at the plan's interval, the
//! startup deadline and a stop request. No fixed sleeps: the first of them decides.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::plan::HealthSpec;
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
