//! Closed-loop load: N workers, each sending its next request as soon as its previous one
//! ends, until the level's request count or duration is reached. Warmup requests run first
//! at the same concurrency and are dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::client::{self, RequestTarget};
use crate::metrics::record::RequestRecord;
use crate::plan::StopRule;
use crate::run::signal::Cancel;

/// What every worker of a level shares.
#[derive(Debug)]
pub struct Level {
    pub client: reqwest::Client,
    pub target: RequestTarget,
    pub bodies: Vec<Bytes>,
    pub concurrency: u32,
    pub stop: StopRule,
    pub warmup: u32,
}

/// How a level ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelOutcome {
    /// Measured requests sent.
    pub sent: u64,
    /// A stop was requested before the level finished.
    pub interrupted: bool,
    /// The instant all measured requests are timed from.
    pub origin: Instant,
}

/// Runs warmup, then the measured requests; each measured record goes to `sink` as it ends.
/// `progress` counts measured requests done.
pub async fn run_level(
    level: Arc<Level>,
    cancel: Cancel,
    progress: Arc<AtomicU64>,
    sink: mpsc::Sender<RequestRecord>,
) -> LevelOutcome {
    if level.warmup > 0 {
        let (tx, mut rx) = mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let _ = phase(
            level.clone(),
            StopRule::Requests(u64::from(level.warmup)),
            cancel.clone(),
            Arc::new(AtomicU64::new(0)),
            tx,
        )
        .await;
        let _ = drain.await;
    }
    phase(level.clone(), level.stop, cancel, progress, sink).await
}

async fn phase(
    level: Arc<Level>,
    stop: StopRule,
    cancel: Cancel,
    progress: Arc<AtomicU64>,
    sink: mpsc::Sender<RequestRecord>,
) -> LevelOutcome {
    let origin = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(level.concurrency as usize);
    for worker in 0..level.concurrency {
        let (level, cancel, next, sink, progress) = (
            level.clone(),
            cancel.clone(),
            next.clone(),
            sink.clone(),
            progress.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                if cancel.is_stopping() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let more = match stop {
                    StopRule::Requests(n) => i < n,
                    StopRule::Duration(d) => origin.elapsed() < d,
                };
                if !more {
                    break;
                }
                let body = level.bodies[(i % level.bodies.len() as u64) as usize].clone();
                let scheduled = client::since(origin);
                let mut rec = client::send(
                    &level.client,
                    &level.target,
                    body,
                    origin,
                    scheduled,
                    cancel.in_flight_expired(),
                )
                .await;
                rec.index = i;
                rec.worker = worker;
                progress.fetch_add(1, Ordering::Relaxed);
                if sink.send(rec).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(sink);
    for w in workers {
        let _ = w.await;
    }
    let started = next.load(Ordering::Relaxed);
    let sent = match stop {
        StopRule::Requests(n) => started.min(n),
        StopRule::Duration(_) => progress.load(Ordering::Relaxed),
    };
    LevelOutcome {
        sent,
        interrupted: cancel.is_stopping(),
        origin,
    }
}
