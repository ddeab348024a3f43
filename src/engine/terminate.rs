//! Stopping an engine: SIGTERM to its whole process group, a grace period, SIGKILL to the
//! group, then a check that nothing of the group survived and that its port is closed.

use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::Child;

use super::procfs::{group_members, ProcInfo};
use crate::run::signal::Cancel;

/// What teardown saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopReport {
    /// The leader's exit status, as text.
    pub exit_status: Option<String>,
    /// SIGKILL was needed: the group outlived the grace period (or a kill was requested).
    pub killed: bool,
    pub took_s: f64,
    /// Processes of the group still alive after SIGKILL.
    pub survivors: Vec<String>,
    /// Something still accepts connections on the engine's port.
    pub port_open_after: bool,
}

/// How often group membership is re-read while waiting for it to empty.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for the group to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

fn live_members(pgid: i32) -> Vec<ProcInfo> {
    group_members(pgid)
}

/// Waits until the leader has exited and no live process remains in the group, or `limit`.
async fn wait_group_gone(
    child: &mut Child,
    pgid: i32,
    limit: Duration,
    cancel: Option<&Cancel>,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(POLL);
    loop {
        let leader_done = matches!(child.try_wait(), Ok(Some(_)));
        if leader_done && live_members(pgid).is_empty() {
            return true;
        }
        let killed = async {
            match cancel {
                Some(c) => c.killed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {},
            () = tokio::time::sleep_until(deadline) => return false,
            () = killed => return false,
        }
    }
}

/// Stops the group led by `child`. A kill request on `cancel` skips the grace period.
pub async fn stop(
    child: &mut Child,
    pgid: i32,
    port: u16,
    grace: Duration,
    cancel: &Cancel,
) -> StopReport {
    let t0 = Instant::now();
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    let mut killed = false;
    if !wait_group_gone(child, pgid, grace, Some(cancel)).await {
        killed = true;
        let _ = killpg(group, Signal::SIGKILL);
        wait_group_gone(child, pgid, KILL_WAIT, None).await;
    }
    let exit_status = match child.try_wait() {
        Ok(Some(s)) => Some(s.to_string()),
        _ => None,
    };
    let survivors = live_members(pgid).iter().map(ToString::to_string).collect();
    let port_open_after = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok();
    StopReport {
        exit_status,
        killed,
        took_s: t0.elapsed().as_secs_f64(),
        survivors,
        port_open_after,
    }
}
