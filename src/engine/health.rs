//! Readiness: a race between the child exiting, an HTTP probe at the plan's interval, the
//! startup deadline and a stop request. No fixed sleeps: the first of them decides.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::plan::HealthSpec;
use crate::run::signal::Cancel;

/// Why an engine never became ready.
#[derive(Debug)]
pub enum NotReady {
    Exited(ExitStatus),
    Timeout(Duration),
    Stopped,
}

/// Waits until `GET base_url + path` answers the expected status. With a child, its exit
/// ends the wait at once. Returns the time to ready from `started`.
pub async fn wait_ready(
    child: Option<&mut Child>,
    client: &reqwest::Client,
    base_url: &str,
    health: &HealthSpec,
    started: Instant,
    cancel: &Cancel,
) -> Result<Duration, NotReady> {
    let url = format!("{base_url}{}", health.path);
    let deadline = tokio::time::Instant::from_std(started + health.timeout);
    let probe_timeout = health.interval.max(Duration::from_secs(2));
    let probes = async {
        let mut tick = tokio::time::interval(health.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let answer = client.get(&url).timeout(probe_timeout).send().await;
            if answer.is_ok_and(|r| r.status().as_u16() == health.status) {
                return started.elapsed();
            }
        }
    };
    let exited = async {
        match child {
            Some(c) => c.wait().await.ok(),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        ready = probes => Ok(ready),
        status = exited => match status {
            Some(s) => Err(NotReady::Exited(s)),
            None => Err(NotReady::Exited(std::os::unix::process::ExitStatusExt::from_raw(-1))),
        },
        () = tokio::time::sleep_until(deadline) => Err(NotReady::Timeout(health.timeout)),
        () = cancel.stopping() => Err(NotReady::Stopped),
    }
}
