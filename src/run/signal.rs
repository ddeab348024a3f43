//! The runner owns Ctrl-C and SIGTERM: the first signal asks the run to stop (no new
//! requests, in-flight ones get a grace period, engines are torn down, the bundle is written
//! as `interrupted`); a second one kills every engine process at once, from the handler
//! itself, and tells the pipeline to stop waiting. The stop state itself is `crate::stop`.

use crate::stop::{StopState, Stopper, IN_FLIGHT_GRACE};

/// Listens for SIGINT and SIGTERM for the whole run, escalating on each.
pub fn install(stopper: Stopper) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            match stopper.escalate() {
                StopState::Kill => {
                    // Here, not in the pipeline: the pipeline may be busy (writing, waiting on
                    // a request) and must not delay the kill.
                    let n = crate::engine::terminate::kill_everything_now();
                    eprintln!("\nsecond signal: killed every engine process at once (SIGKILL to {n} processes)");
                }
                _ => eprintln!(
                    "\nstopping: no new requests, in-flight ones get {}s, then engines are stopped (signal again to kill at once)",
                    IN_FLIGHT_GRACE.as_secs()
                ),
            }
        }
    });
    Ok(())
}
