//! `[load] until_failure = true`: past a closed-loop grid, concurrency keeps doubling (up to
//! `max_concurrency`) until the engine fails or its errors exceed `max_error_rate`. The grid's
//! own levels are judged first; the last passing and the first failing levels are recorded.

use super::error::RunError;
use super::orchestrator::Run;
use super::session::Up;
use crate::bundle::format::{CellStatus, CellSummary, UntilFailureRecord};
use crate::plan::model::{Cell, EngineSpec, LoadLevel, UntilFailureSpec};

/// Whether an engine held up at a cell's load: `Err` says why not. A cell fails when its engine
/// died, when it did not measure to the end, or when more than `max_error_rate` of its
/// requests failed (any failure counts only with a `max_error_rate`). Validity (a client that
/// set the pace) is not the engine's failure.
pub fn held_up(s: &CellSummary, max_error_rate: Option<f64>) -> Result<(), String> {
    let why = || {
        s.reason
            .clone()
            .unwrap_or_else(|| format!("cell {} {}", s.id, crate::bundle::format::label(&s.status)))
    };
    match s.status {
        CellStatus::Ok => {}
        _ => return Err(why()),
    }
    if let (Some(max), Some(m)) = (max_error_rate, &s.metrics) {
        let done = m.requests_ok + m.requests_failed;
        if done > 0 {
            let rate = m.requests_failed as f64 / done as f64;
            if rate > max {
                return Err(format!(
                    "{} of {done} requests failed, above `max_error_rate` = {max}",
                    m.requests_failed
                ));
            }
        }
    }
    Ok(())
}

/// The next level to probe after `c` passed: double it, capped at the bound; `None` once the
/// bound itself passed.
pub fn next_level(c: u32, max: u32) -> Option<u32> {
    (c < max).then(|| c.saturating_mul(2).clamp(1, max))
}

impl Run<'_> {
    /// Judges the grid's levels of workload `wi`, then doubles past them until a level fails.
    pub(super) async fn until_failure(
        &self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
        dead: &mut Option<String>,
        wi: usize,
        uf: UntilFailureSpec,
    ) -> Result<(), RunError> {
        let w = &self.plan.workloads[wi];
        let max_error_rate = w.load.max_error_rate;
        let mut grid: Vec<u32> = w
            .load
            .levels
            .iter()
            .filter_map(LoadLevel::concurrency)
            .collect();
        grid.sort_unstable();
        let mut record = UntilFailureRecord {
            engine: spec.name.clone(),
            workload: w.name.clone(),
            last_passing: None,
            first_failing: None,
            reason: None,
            failure_class: None,
            probes: Vec::new(),
            max_concurrency: uf.max_concurrency,
            complete: false,
        };
        let cell_of = |run: &Run<'_>, c: u32| {
            Cell::new(
                &run.plan.engines,
                &run.plan.workloads,
                ei,
                wi,
                LoadLevel::Concurrency(c),
            )
        };
        let judge = |record: &mut UntilFailureRecord, c: u32, s: &CellSummary| match held_up(
            s,
            max_error_rate,
        ) {
            Ok(()) => {
                record.last_passing = Some(c);
                true
            }
            Err(why) => {
                record.first_failing = Some(c);
                record.reason = Some(why);
                record.failure_class = s.failure_class;
                record.complete = true;
                false
            }
        };
        for &c in &grid {
            let id = cell_of(self, c).id;
            let summary = self.ledger().summary(&id).cloned();
            match summary {
                Some(s) if s.metrics.is_some() && s.status != CellStatus::Interrupted => {
                    if !judge(&mut record, c, &s) {
                        return self.ledger().until_failure_done(record).map_err(Into::into);
                    }
                }
                // Not measured (the run stopped first, or the engine was already gone): it says
                // nothing about the engine at that load.
                _ => continue,
            }
        }
        let mut next = match grid.last() {
            Some(&top) => next_level(top, uf.max_concurrency),
            None => Some(1),
        };
        while let Some(c) = next {
            if !self.cancel.is_stopping() {
                self.revive(ei, spec, up, dead).await?;
            }
            if self.cancel.is_stopping() || dead.is_some() {
                break;
            }
            let cell = cell_of(self, c);
            self.ledger().search_cell(&cell.id);
            record.probes.push(c);
            let measured = self.ledger().measured(&cell.id);
            let summary = match measured {
                Some(s) => Some(s),
                None => self.run_one(ei, spec, up, &cell, dead).await?,
            };
            // Cut short by a signal: no verdict on the engine at that load.
            let Some(s) = summary.filter(|s| s.status != CellStatus::Interrupted) else {
                break;
            };
            if !judge(&mut record, c, &s) {
                break;
            }
            next = next_level(c, uf.max_concurrency);
            if next.is_none() {
                record.complete = true;
            }
        }
        self.ledger().until_failure_done(record).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(status: CellStatus, ok: u64, failed: u64) -> CellSummary {
        let mut m = crate::metrics::summary::Accumulator::default().finish();
        m.requests_ok = ok;
        m.requests_failed = failed;
        m.requests_total = ok + failed;
        let mut s: CellSummary = serde_json::from_value(serde_json::json!({
            "id": "e.w.c8", "engine": "e", "workload": "w",
            "level": { "concurrency": 8 }, "status": status, "reason": null,
            "started_at": null, "finished_at": null, "metrics": null,
            "resources": null, "slo": null, "records": null,
        }))
        .unwrap_or_else(|e| panic!("summary: {e}"));
        s.metrics = Some(m);
        s
    }

    #[test]
    fn doubling_stops_at_the_bound() {
        assert_eq!(next_level(4, 64), Some(8));
        assert_eq!(next_level(48, 64), Some(64));
        assert_eq!(next_level(64, 64), None);
        assert_eq!(next_level(0, 64), Some(1));
    }

    #[test]
    fn a_dead_engine_or_too_many_errors_fail_a_level() {
        assert_eq!(held_up(&summary(CellStatus::Ok, 10, 0), Some(0.1)), Ok(()));
        // Errors count only against a `max_error_rate`.
        assert_eq!(held_up(&summary(CellStatus::Ok, 5, 5), None), Ok(()));
        assert_eq!(held_up(&summary(CellStatus::Ok, 9, 1), Some(0.1)), Ok(()));
        let e = held_up(&summary(CellStatus::Ok, 8, 2), Some(0.1)).expect_err("20% > 10%");
        assert!(e.contains("2 of 10 requests failed"), "{e}");
        let mut died = summary(CellStatus::EngineDied, 3, 5);
        died.reason = Some("engine `e` exited with exit status: 3 during cell e.w.c8".into());
        let e = held_up(&died, None).expect_err("died");
        assert!(e.contains("exited"), "{e}");
        let e = held_up(&summary(CellStatus::Failed, 0, 8), None).expect_err("failed");
        assert_eq!(e, "cell e.w.c8 failed");
    }
}
