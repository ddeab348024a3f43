//! How engines take turns: one after another (`sequential`), or, with `[run] parallel`, side
//! by side in lanes, each engine starting once the devices it asks for are free.

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::error::RunError;
use super::orchestrator::Run;
use super::placement::Free;

/// Checks at compile time that a lane's future holds no lock across an await.
fn send<F: std::future::Future + Send>(f: F) -> F {
    f
}

impl Run<'_> {
    /// One engine after another, each on the first devices of the pool it asks for; the
    /// first failure ends the run.
    pub(super) async fn sequential(&self) -> Result<(), RunError> {
        for (ei, engine) in self.plan.engines.iter().enumerate() {
            let devices = Free::new(&self.pool)
                .take(self.pool.demand(engine))
                .unwrap_or_default();
            self.engine(ei, engine, &devices).await?;
        }
        Ok(())
    }

    /// `[run] parallel`: every engine whose devices are free starts at once (plan order, first
    /// fit); one that cannot get its devices waits until an engine ends and gives its back. A
    /// failure stops the others (torn down, their cells left marked interrupted) and is
    /// returned once every lane has ended.
    pub(super) async fn parallel(&self) -> Result<(), RunError> {
        let mut free = Free::new(&self.pool);
        let mut waiting: Vec<usize> = (0..self.plan.engines.len()).collect();
        let mut running = FuturesUnordered::new();
        let mut failed: Option<RunError> = None;
        let mut told = std::collections::HashSet::new();
        loop {
            let mut i = 0;
            while i < waiting.len() {
                let ei = waiting[i];
                let spec = &self.plan.engines[ei];
                match free.take(self.pool.demand(spec)) {
                    Some(devices) => {
                        waiting.remove(i);
                        running.push(send(async move {
                            let r = self.engine(ei, spec, &devices).await;
                            (devices, r)
                        }));
                    }
                    None => {
                        if told.insert(ei) {
                            let n = self.pool.demand(spec);
                            self.ledger().progress().engine_waiting(&spec.name, n);
                        }
                        i += 1;
                    }
                }
            }
            let Some((devices, r)) = running.next().await else {
                break;
            };
            free.give_back(&devices);
            if let Err(e) = r {
                if failed.is_none() {
                    self.ledger().warn(&format!(
                        "the run failed ({e}); stopping the engines still running"
                    ));
                    self.fail.escalate();
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}
