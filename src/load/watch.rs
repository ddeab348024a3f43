//! The client watching itself while a cell runs, for the receive side of its self-check
//! (`metrics::client_check`): a timer thread that sleeps [`TIMER_PERIOD`] at a time and records
//! how late each wake-up came (a client that waits for a CPU observes every instant that late),
//! and the run-queue wait of the runner's own threads over the cell (/proc/self/task/*/schedstat).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::summary::{LatencyHistogram, Stats};

/// How long the timer thread asks to sleep each time: short enough to see a client kept off its
/// CPU for milliseconds, long enough to cost nothing (500 wake-ups a second).
pub const TIMER_PERIOD: Duration = Duration::from_millis(2);

/// What the watch saw over one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// How late the timer thread woke, in milliseconds past its period.
    pub timer_late_ms: Option<Stats>,
    /// The run-queue wait of the runner's threads over the cell, seconds (summed over threads).
    pub run_queue_wait_s: Option<f64>,
}

/// A running watch; [`Watch::finish`] stops it.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<LatencyHistogram>>,
    wait0: Option<u64>,
}

impl Watch {
    pub fn start() -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("runner-watch".into())
            .spawn(move || {
                // Started after `[client] priority` was applied, it would begin at the normal
                // policy and measure a thread the client does not have.
                crate::affinity::join_realtime();
                let mut late = LatencyHistogram::default();
                while !flag.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    std::thread::sleep(TIMER_PERIOD);
                    let over = t.elapsed().saturating_sub(TIMER_PERIOD);
                    late.record(over.as_micros() as u64);
                }
                late
            })
            .ok();
        Watch {
            stop,
            thread,
            wait0: crate::procfs::self_run_queue_wait_ns(),
        }
    }

    pub fn finish(mut self) -> Watched {
        let wait1 = crate::procfs::self_run_queue_wait_ns();
        self.stop.store(true, Ordering::Relaxed);
        let timer = self.thread.take().and_then(|t| t.join().ok());
        Watched {
            timer_late_ms: timer.and_then(|h| h.stats()),
            run_queue_wait_s: match (self.wait0, wait1) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
                _ => None,
            },
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
