//! The load loops. Closed loop: N workers, each sending its next request as soon as its
//! previous one ends. Open loop: requests sent on a schedule (constant, Poisson or gamma
//! gaps) whatever the server does, optionally capped in flight. Either stops after a request
//! count or a duration, on a stop request, or early on too many errors. Warmup requests run
//! first at the same load and are dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use super::arrival::Arrivals;
use super::client::{self, RequestTarget};
use super::conn::Endpoint;
use super::session::{History, SessionPlan};
use crate::metrics::record::RequestRecord;
use crate::plan::model::{Arrival, LoadLevel, StopRule};
use crate::stop::Cancel;

/// What every request of a level shares.
#[derive(Debug)]
pub struct Level {
    /// Where the requests go, and the connections they go on.
    pub endpoint: Endpoint,
    pub target: RequestTarget,
    pub bodies: Vec<Bytes>,
    /// The client-side prompt length of each body (same order), recorded with each request;
    /// empty when unknown.
    pub prompt_lens: Vec<u64>,
    /// A trace's schedule: request `i` is due this many microseconds after the start, and the
    /// level is one pass over it; empty: the arrival process decides.
    pub offsets_us: Vec<u64>,
    pub load: LoadLevel,
    pub arrival: Arrival,
    pub max_in_flight: Option<u32>,
    pub stop: StopRule,
    pub warmup: u32,
    pub max_errors: Option<u64>,
    pub max_error_rate: Option<f64>,
    /// Which run of the cell this is (plan `repeat`), recorded in each record.
    pub run: u32,
    /// `[workload.sessions]`: the level sends whole sessions, turn after turn, closed loop
    /// (the concurrency is sessions in flight); `bodies` are then unused.
    pub sessions: Option<SessionPlan>,
    /// Every session's `X-Session-ID` starts with this (unique to the run and the cell).
    pub session_prefix: String,
}

impl Level {
    /// The client-side prompt length of request `i` (it uses body `i mod bodies`).
    fn prompt_len(&self, i: u64) -> Option<u64> {
        if self.prompt_lens.is_empty() {
            return None;
        }
        self.prompt_lens
            .get((i % self.prompt_lens.len() as u64) as usize)
            .copied()
    }
}

/// How a level ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelOutcome {
    /// A stop was requested before the level finished.
    pub interrupted: bool,
    /// Why the level ended before its request count or duration (too many errors).
    pub stopped_early: Option<String>,
}

/// Counts finished requests and decides an early stop on errors.
#[derive(Debug, Default)]
struct Tally {
    done: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    reason: Mutex<Option<String>>,
}

/// Error-rate stops wait for this many finished requests, so one early failure is not a rate.
const MIN_FOR_RATE: u64 = 20;

impl Tally {
    fn finished(&self, ok: bool, level: &Level) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let failed = if ok {
            self.failed.load(Ordering::Relaxed)
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed) + 1
        };
        let why = match (level.max_errors, level.max_error_rate) {
            (Some(max), _) if failed >= max => Some(format!(
                "stopped early: {failed} failed requests reached `max_errors = {max}`"
            )),
            (_, Some(rate)) if done >= MIN_FOR_RATE && failed as f64 / done as f64 >= rate => {
                Some(format!(
                    "stopped early: {failed} of {done} requests failed, at or above `max_error_rate = {rate}`"
                ))
            }
            _ => None,
        };
        if let Some(why) = why {
            if !self.stop.swap(true, Ordering::Relaxed) {
                if let Ok(mut r) = self.reason.lock() {
                    *r = Some(why);
                }
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Runs warmup, then the measured requests; each measured record goes to `sink` as it ends.
/// `progress` counts measured requests done.
pub async fn run_level(
    level: Arc<Level>,
    cancel: Cancel,
    progress: Arc<AtomicU64>,
    sink: mpsc::Sender<RequestRecord>,
) -> LevelOutcome {
    preconnect(&level).await;
    if level.warmup > 0 {
        let (tx, mut rx) = mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let warm = Arc::new(Tally::default());
        let stop = StopRule::Requests(u64::from(level.warmup));
        let progress = Arc::new(AtomicU64::new(0));
        phase(&level, stop, &cancel, progress, tx, warm, "w").await;
        let _ = drain.await;
    }
    let tally = Arc::new(Tally::default());
    phase(
        &level,
        level.stop,
        &cancel,
        progress,
        sink,
        tally.clone(),
        "m",
    )
    .await;
    let stopped_early = tally.reason.lock().ok().and_then(|r| r.clone());
    LevelOutcome {
        interrupted: cancel.is_stopping(),
        stopped_early,
    }
}

/// Opens as many keep-alive connections as the level will use at once: otherwise the first
/// wave of a high-concurrency level pays TCP connection setup inside its measured latency.
async fn preconnect(level: &Level) {
    let n = match level.load {
        LoadLevel::Concurrency(c) => c,
        LoadLevel::Rate(_) => level.max_in_flight.unwrap_or(16),
    }
    .min(1024);
    level.endpoint.preconnect(n as usize).await;
}

async fn phase(
    level: &Arc<Level>,
    stop: StopRule,
    cancel: &Cancel,
    progress: Arc<AtomicU64>,
    sink: mpsc::Sender<RequestRecord>,
    tally: Arc<Tally>,
    tag: &str,
) {
    match level.load {
        LoadLevel::Concurrency(n) if level.sessions.is_some() => {
            let prefix = format!("{}-{tag}", level.session_prefix);
            sessions(level, n, stop, cancel, progress, sink, tally, prefix).await
        }
        LoadLevel::Concurrency(n) => closed(level, n, stop, cancel, progress, sink, tally).await,
        LoadLevel::Rate(r) => open(level, r, stop, cancel, progress, sink, tally).await,
    }
}

fn more(stop: StopRule, i: u64, elapsed: Duration) -> bool {
    match stop {
        StopRule::Requests(n) => i < n,
        StopRule::Duration(d) => elapsed < d,
    }
}

async fn closed(
    level: &Arc<Level>,
    concurrency: u32,
    stop: StopRule,
    cancel: &Cancel,
    progress: Arc<AtomicU64>,
    sink: mpsc::Sender<RequestRecord>,
    tally: Arc<Tally>,
) {
    let origin = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(concurrency as usize);
    for worker in 0..concurrency {
        let (level, cancel, next, sink, progress, tally) = (
            level.clone(),
            cancel.clone(),
            next.clone(),
            sink.clone(),
            progress.clone(),
            tally.clone(),
        );
        workers.push(tokio::spawn(async move {
            // A closed-loop request is due when its worker's previous request ended, so the
            // client's own turnaround shows up as dispatch lag.
            let mut due = 0;
            loop {
                if cancel.is_stopping() || tally.stopped() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if !more(stop, i, origin.elapsed()) {
                    break;
                }
                let body = level.bodies[(i % level.bodies.len() as u64) as usize].clone();
                let out = client::send(
                    &level.endpoint,
                    &level.target,
                    body,
                    None,
                    origin,
                    due,
                    cancel.in_flight_expired(),
                )
                .await;
                let mut rec = out.record;
                due = rec.end_us;
                rec.index = i;
                rec.client_prompt_tokens = level.prompt_len(i);
                rec.worker = worker;
                rec.run = level.run;
                tally.finished(rec.ok, &level);
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
}

/// Closed loop over sessions: each of `concurrency` workers takes the next session (in turn,
/// starting over after the last) and sends its turns one after another, each after the
/// session's history with the engine's actual answers, waiting `think_time` between a turn's
/// end and the next. The stop rule counts turns; a failed turn ends its session (its later
/// turns are not sent), as does the level's end.
#[allow(clippy::too_many_arguments)]
async fn sessions(
    level: &Arc<Level>,
    concurrency: u32,
    stop: StopRule,
    cancel: &Cancel,
    progress: Arc<AtomicU64>,
    sink: mpsc::Sender<RequestRecord>,
    tally: Arc<Tally>,
    prefix: String,
) {
    let origin = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let next_session = Arc::new(AtomicU64::new(0));
    let prefix = Arc::new(prefix);
    let mut workers = Vec::with_capacity(concurrency as usize);
    for worker in 0..concurrency {
        let (level, cancel, next, next_session, sink, progress, tally, prefix) = (
            level.clone(),
            cancel.clone(),
            next.clone(),
            next_session.clone(),
            sink.clone(),
            progress.clone(),
            tally.clone(),
            prefix.clone(),
        );
        workers.push(tokio::spawn(async move {
            let Some(plan) = level.sessions.as_ref() else {
                return;
            };
            if plan.sessions.is_empty() {
                return;
            }
            let think_us = plan.think_time.as_micros() as u64;
            let mut due = 0;
            'sessions: loop {
                let k = next_session.fetch_add(1, Ordering::Relaxed);
                let turns = &plan.sessions[(k % plan.sessions.len() as u64) as usize];
                // Unique within the run: the bundle, the cell, its run and phase, the session.
                let id = http::HeaderValue::from_str(&format!("{prefix}-{k}")).ok();
                let mut history = History::default();
                for (t, turn) in turns.iter().enumerate() {
                    if cancel.is_stopping() || tally.stopped() {
                        break 'sessions;
                    }
                    if t > 0 && think_us > 0 {
                        // The user reads the answer and types: workload behaviour, not a wait
                        // for anything. The next turn is due when it ends.
                        due += think_us;
                        let wait = Duration::from_micros(due.saturating_sub(client::since(origin)));
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = cancel.stopping() => break 'sessions,
                        }
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if !more(stop, i, origin.elapsed()) {
                        break 'sessions;
                    }
                    let body = plan.body(turn, &history);
                    let out = client::send(
                        &level.endpoint,
                        &level.target,
                        body,
                        id.as_ref(),
                        origin,
                        due,
                        cancel.in_flight_expired(),
                    )
                    .await;
                    let mut rec = out.record;
                    due = rec.end_us;
                    rec.index = i;
                    rec.client_prompt_tokens = Some(history.prompt_len(turn));
                    rec.session = Some(turn.session);
                    rec.turn = Some(turn.turn);
                    rec.worker = worker;
                    rec.run = level.run;
                    let (ok, tokens) = (rec.ok, rec.output_tokens);
                    tally.finished(ok, &level);
                    progress.fetch_add(1, Ordering::Relaxed);
                    if sink.send(rec).await.is_err() {
                        break 'sessions;
                    }
                    if !ok {
                        // The history would lack this turn's answer: the session ends here.
                        break;
                    }
                    history.push(turn, out.text.unwrap_or_default(), tokens, plan.unit());
                }
            }
        }));
    }
    drop(sink);
    for w in workers {
        let _ = w.await;
    }
}

async fn open(
    level: &Arc<Level>,
    rate: f64,
    stop: StopRule,
    cancel: &Cancel,
    progress: Arc<AtomicU64>,
    sink: mpsc::Sender<RequestRecord>,
    tally: Arc<Tally>,
) {
    let origin = Instant::now();
    let slots = level
        .max_in_flight
        .map(|m| Arc::new(Semaphore::new(m as usize)));
    // The schedule is kept by a thread of its own: tokio's timer wakes on millisecond ticks,
    // which alone would add up to a millisecond of dispatch lag to every request.
    let (due_tx, mut due_rx) = mpsc::unbounded_channel();
    let (halt_tx, halt_rx) = std::sync::mpsc::channel::<()>();
    let pacer = {
        let schedule = match level.offsets_us.is_empty() {
            true => Schedule::Arrivals(Arrivals::new(level.arrival, rate)),
            false => Schedule::Trace(level.offsets_us.clone()),
        };
        let (cancel, tally) = (cancel.clone(), tally.clone());
        std::thread::Builder::new()
            .name("runner-pacer".into())
            .spawn(move || {
                // The schedule is the client's: it runs at the client's priority.
                crate::affinity::join_realtime();
                pace(origin, schedule, stop, &cancel, &tally, &due_tx, &halt_rx)
            })
    };
    let mut tasks = tokio::task::JoinSet::new();
    // Until when the dispatcher last waited for a free slot: requests due meanwhile were held
    // back by the server (queued), not by the client.
    let mut waited_until_us = 0u64;
    loop {
        let (index, scheduled_us) = tokio::select! {
            d = due_rx.recv() => match d {
                Some(d) => d,
                None => break,
            },
            () = cancel.stopping() => break,
        };
        if tally.stopped() {
            break;
        }
        let (permit, queued_us) = match &slots {
            None => (None, 0),
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => {
                    let backlog = waited_until_us.saturating_sub(scheduled_us);
                    let late = client::since(origin).saturating_sub(scheduled_us);
                    (Some(p), backlog.min(late))
                }
                Err(_) => {
                    let p = tokio::select! {
                        p = s.clone().acquire_owned() => p.ok(),
                        () = cancel.stopping() => break,
                    };
                    waited_until_us = client::since(origin);
                    (p, waited_until_us.saturating_sub(scheduled_us))
                }
            },
        };
        let body = level.bodies[(index % level.bodies.len() as u64) as usize].clone();
        let (level2, cancel2, sink2, progress2, tally2) = (
            level.clone(),
            cancel.clone(),
            sink.clone(),
            progress.clone(),
            tally.clone(),
        );
        tasks.spawn(async move {
            let out = client::send(
                &level2.endpoint,
                &level2.target,
                body,
                None,
                origin,
                scheduled_us,
                cancel2.in_flight_expired(),
            )
            .await;
            drop(permit);
            let mut rec = out.record;
            rec.index = index;
            rec.client_prompt_tokens = level2.prompt_len(index);
            rec.run = level2.run;
            rec.queued_us = queued_us;
            tally2.finished(rec.ok, &level2);
            progress2.fetch_add(1, Ordering::Relaxed);
            let _ = sink2.send(rec).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    // Wakes the pacer if it sleeps, and makes its next send fail if it does not.
    drop(halt_tx);
    drop(due_rx);
    if let Ok(pacer) = pacer {
        let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    }
    drop(sink);
    while tasks.join_next().await.is_some() {}
}

/// The open loop's clock: sends each request's (index, due instant) when it is due, sleeping in
/// between on the OS's high-resolution timer, until the stop rule, a stop request, an early
/// stop on errors, or a halt from the dispatcher.
fn pace(
    origin: Instant,
    mut schedule: Schedule,
    stop: StopRule,
    cancel: &Cancel,
    tally: &Tally,
    due_tx: &mpsc::UnboundedSender<(u64, u64)>,
    halt: &std::sync::mpsc::Receiver<()>,
) {
    // Linux lets a sleeping thread wake up to 50 µs late by default: ask for none.
    let _ = nix::sys::prctl::set_timerslack(1);
    let mut i = 0u64;
    let mut due_s = match schedule.due_s(0) {
        Some(d) => d,
        None => return,
    };
    while !cancel.is_stopping() && !tally.stopped() && more(stop, i, Duration::from_secs_f64(due_s))
    {
        let due = origin + Duration::from_secs_f64(due_s);
        let now = Instant::now();
        if due > now {
            match halt.recv_timeout(due - now) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
        let due_us = match &schedule {
            // A trace's offsets are exact microseconds: no float round trip.
            Schedule::Trace(t) => t[i as usize],
            Schedule::Arrivals(_) => (due_s * 1e6) as u64,
        };
        if due_tx.send((i, due_us)).is_err() {
            return;
        }
        i += 1;
        due_s = match &mut schedule {
            Schedule::Arrivals(a) => due_s + a.next_gap_s(),
            Schedule::Trace(_) => match schedule.due_s(i) {
                Some(d) => d,
                None => return,
            },
        };
    }
}

/// When the open loop's requests are due.
enum Schedule {
    /// Gaps drawn from the plan's arrival process.
    Arrivals(Arrivals),
    /// A trace's recorded offsets (µs), one pass.
    Trace(Vec<u64>),
}

impl Schedule {
    /// Request `i`'s due time in seconds from the start; `None` past a trace's end.
    fn due_s(&self, i: u64) -> Option<f64> {
        match self {
            Schedule::Arrivals(_) => (i == 0).then_some(0.0),
            Schedule::Trace(t) => t.get(i as usize).map(|&us| us as f64 / 1e6),
        }
    }
}
