//! Stopping, as every stage sees it: a `Stopper` escalates running -> stopping (in-flight work
//! gets a grace period) -> kill, and every `Cancel` handle watches it. The signal handlers
//! (`run::signal::install`) are one stopper; a cell's own stop (its engine died) is another.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long in-flight requests may run on after a stop is requested.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// The stop state every stage can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopState {
    Running,
    /// Stop: in-flight work may continue until the deadline.
    Stopping {
        deadline: Instant,
    },
    /// Kill everything now.
    Kill,
}

/// A handle to the stop state.
#[derive(Debug, Clone)]
pub struct Cancel {
    rx: watch::Receiver<StopState>,
}

/// The side that requests stops.
#[derive(Debug, Clone)]
pub struct Stopper {
    tx: watch::Sender<StopState>,
}

/// A connected stopper and cancel handle.
pub fn channel() -> (Stopper, Cancel) {
    let (tx, rx) = watch::channel(StopState::Running);
    (Stopper { tx }, Cancel { rx })
}

impl Stopper {
    /// A kill was already requested.
    pub fn is_killed(&self) -> bool {
        *self.tx.borrow() == StopState::Kill
    }

    /// Skips the grace period: kill now, whatever the state.
    pub fn kill(&self) {
        self.tx.send_replace(StopState::Kill);
    }

    /// Escalates: running -> stopping -> kill.
    pub fn escalate(&self) -> StopState {
        let mut next = StopState::Running;
        self.tx.send_modify(|s| {
            *s = match *s {
                StopState::Running => StopState::Stopping {
                    deadline: Instant::now() + IN_FLIGHT_GRACE,
                },
                _ => StopState::Kill,
            };
            next = *s;
        });
        next
    }
}

impl Cancel {
    /// A handle that never fires (for one-off requests outside a run).
    pub fn never() -> Cancel {
        let (tx, rx) = watch::channel(StopState::Running);
        std::mem::forget(tx);
        Cancel { rx }
    }

    pub fn state(&self) -> StopState {
        *self.rx.borrow()
    }

    pub fn is_stopping(&self) -> bool {
        self.state() != StopState::Running
    }

    /// Completes once a stop has been requested.
    pub async fn stopping(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| *s != StopState::Running).await;
    }

    /// Completes when in-flight work must end: the stop's grace deadline, or a kill.
    pub async fn in_flight_expired(&self) {
        let mut rx = self.rx.clone();
        loop {
            let state = *rx.borrow_and_update();
            match state {
                StopState::Kill => return,
                StopState::Stopping { deadline } => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => return,
                        r = rx.changed() => if r.is_err() { return },
                    }
                }
                StopState::Running => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// A handle that follows this one and can also be stopped on its own (for one cell); the
    /// returned task forwards this handle's stops and should be aborted when the cell ends.
    pub fn child(&self) -> (Stopper, Cancel, tokio::task::JoinHandle<()>) {
        let (stopper, cancel) = channel();
        let (parent, s) = (self.clone(), stopper.clone());
        let forward = tokio::spawn(async move {
            parent.stopping().await;
            s.escalate();
            parent.killed().await;
            s.escalate();
        });
        (stopper, cancel, forward)
    }

    /// Completes when a kill is requested.
    pub async fn killed(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| *s == StopState::Kill).await;
    }
}
