//! Capacity search: the highest load level that meets a workload's SLO, found by doubling from
//! `min` until a level fails (or `max` passes), then bisecting between the last pass and the
//! first fail, within a bound on probes. Concurrency is searched in whole requests; rates
//! until the bracket is within 5%. `Run::searches` drives them on a ready engine.

use serde::{Deserialize, Serialize};

use super::error::RunError;
use super::orchestrator::Run;
use super::session::Up;
use crate::bundle::format::{SearchProbe, SearchRecord};
use crate::plan::model::{Cell, EngineSpec};
use crate::plan::model::{LoadLevel, SearchOver, SearchSpec};

/// Rate searches stop once the pass/fail bracket is this tight, relative to the fail.
const RATE_TOLERANCE: f64 = 0.05;

/// The state of one search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub spec: SearchSpec,
    pub probes: Vec<(LoadLevel, bool)>,
    highest_pass: Option<f64>,
    lowest_fail: Option<f64>,
    next: Option<f64>,
}

impl Search {
    pub fn new(spec: SearchSpec) -> Search {
        Search {
            next: Some(spec.min),
            spec,
            probes: Vec::new(),
            highest_pass: None,
            lowest_fail: None,
        }
    }

    fn level(&self, x: f64) -> LoadLevel {
        match self.spec.over {
            SearchOver::Concurrency => LoadLevel::Concurrency(x.round() as u32),
            SearchOver::Rate => LoadLevel::Rate(x),
        }
    }

    /// The next level to probe, or `None` when the search is over.
    pub fn next(&self) -> Option<LoadLevel> {
        if self.probes.len() as u32 >= self.spec.max_steps {
            return None;
        }
        self.next.map(|x| self.level(x))
    }

    /// Records whether the last probed level met the SLO.
    pub fn record(&mut self, passed: bool) {
        let Some(x) = self.next else { return };
        self.probes.push((self.level(x), passed));
        if passed {
            self.highest_pass = Some(self.highest_pass.map_or(x, |p| p.max(x)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(x, |f| f.min(x)));
        }
        self.next = match (self.highest_pass, self.lowest_fail) {
            // Still doubling.
            (Some(p), None) if p < self.spec.max => Some((p * 2.0).min(self.spec.max)),
            (Some(_), None) => None,
            // Even the smallest level failed.
            (None, Some(_)) => None,
            (Some(p), Some(f)) => {
                let mid = match self.spec.over {
                    SearchOver::Concurrency => ((p + f) / 2.0).floor(),
                    SearchOver::Rate => (p + f) / 2.0,
                };
                let done = match self.spec.over {
                    SearchOver::Concurrency => f - p <= 1.0,
                    SearchOver::Rate => (f - p) / f <= RATE_TOLERANCE,
                };
                (!done && mid > p && mid < f).then_some(mid)
            }
            (None, None) => None,
        };
    }

    /// The highest level that met the SLO.
    pub fn capacity(&self) -> Option<LoadLevel> {
        self.highest_pass.map(|x| self.level(x))
    }

    /// The capacity is the search's `max`: the engine met the SLO at the highest level the
    /// search may probe, so its true capacity is that or more (written `>= max`).
    pub fn capacity_at_max(&self) -> bool {
        self.highest_pass.is_some_and(|p| p >= self.spec.max)
    }

    /// The capacity as the report and the console write it: `>= max` when the search never
    /// found a level the engine failed.
    pub fn capacity_text(&self) -> Option<String> {
        let l = self.capacity()?;
        Some(if self.capacity_at_max() {
            format!(">= {}", l.label())
        } else {
            l.label()
        })
    }
}

impl Run<'_> {
    /// A ready engine's capacity searches, one per workload that has one, each probing levels
    /// until the search settles, the run stops or the engine dies.
    pub(super) async fn searches(
        &self,
        ei: usize,
        spec: &EngineSpec,
        up: &mut Up,
        dead: &mut Option<String>,
    ) -> Result<(), RunError> {
        for (wi, w) in self.plan.workloads.iter().enumerate() {
            let Some(search_spec) = w.search else {
                continue;
            };
            if up.rejected.contains_key(&wi) {
                continue;
            }
            let mut search = Search::new(search_spec);
            let mut reused_levels: Vec<usize> = Vec::new();
            while let Some(level) = search.next() {
                if !self.cancel.is_stopping() {
                    self.revive(ei, spec, up, dead).await?;
                }
                if self.cancel.is_stopping() || dead.is_some() {
                    break;
                }
                let cell = Cell::new(&self.plan.engines, &self.plan.workloads, ei, wi, level);
                self.ledger().search_cell(&cell.id);
                // A level the grid (or a resumed run) already measured is judged from its
                // summary, never measured again over it.
                let measured = self.ledger().measured(&cell.id);
                let reused = measured.is_some();
                let summary = match measured {
                    Some(s) => Some(s),
                    None => self.run_one(ei, spec, up, &cell, dead).await?,
                };
                let passed =
                    summary.is_some_and(|s| s.valid && s.slo.as_ref().is_some_and(|v| v.passed));
                search.record(passed);
                if reused {
                    reused_levels.push(search.probes.len() - 1);
                }
            }
            let record = SearchRecord {
                engine: spec.name.clone(),
                workload: w.name.clone(),
                over: search_spec.over,
                capacity: search.capacity(),
                capacity_at_max: search.capacity_at_max(),
                probes: search
                    .probes
                    .iter()
                    .enumerate()
                    .map(|(i, (level, passed))| SearchProbe {
                        level: *level,
                        passed: *passed,
                        reused: reused_levels.contains(&i),
                    })
                    .collect(),
                complete: search.next().is_none()
                    || search.probes.len() as u32 >= search_spec.max_steps,
            };
            self.ledger().search_done(&search, record)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: SearchSpec, passes: impl Fn(f64) -> bool) -> Search {
        let mut s = Search::new(spec);
        while let Some(l) = s.next() {
            s.record(passes(l.magnitude()));
        }
        s
    }

    fn conc(min: f64, max: f64, max_steps: u32) -> SearchSpec {
        SearchSpec {
            over: SearchOver::Concurrency,
            min,
            max,
            max_steps,
        }
    }

    #[test]
    fn doubles_then_bisects_to_the_exact_concurrency() {
        let s = run(conc(1.0, 256.0, 20), |x| x <= 37.0);
        assert_eq!(s.capacity(), Some(LoadLevel::Concurrency(37)));
        let probed: Vec<f64> = s.probes.iter().map(|(l, _)| l.magnitude()).collect();
        assert_eq!(&probed[..7], &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]);
        assert!(probed.len() <= 12, "{probed:?}");
    }

    #[test]
    fn respects_the_step_bound_and_the_maximum() {
        let s = run(conc(1.0, 256.0, 4), |x| x <= 37.0);
        assert_eq!(s.probes.len(), 4);
        assert_eq!(s.capacity(), Some(LoadLevel::Concurrency(8)));
        let s = run(conc(1.0, 100.0, 20), |_| true);
        assert_eq!(s.capacity(), Some(LoadLevel::Concurrency(100)));
        // Never failed: the capacity is at least the maximum, not the maximum.
        assert!(s.capacity_at_max());
        assert_eq!(s.capacity_text().as_deref(), Some(">= 100"));
        let s = run(conc(1.0, 256.0, 20), |x| x <= 37.0);
        assert!(!s.capacity_at_max());
        assert_eq!(s.capacity_text().as_deref(), Some("37"));
        let s = run(conc(2.0, 100.0, 20), |_| false);
        assert_eq!(s.capacity(), None);
        assert_eq!(s.probes.len(), 1);
    }

    #[test]
    fn rate_search_stops_within_five_percent() {
        let spec = SearchSpec {
            over: SearchOver::Rate,
            min: 1.0,
            max: 1000.0,
            max_steps: 30,
        };
        let s = run(spec, |x| x <= 123.0);
        let cap = s.capacity().expect("a capacity").magnitude();
        assert!(cap <= 123.0 && cap > 123.0 * 0.95 - 1e-9, "{cap}");
    }
}
