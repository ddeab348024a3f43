//! Once every engine ran: each measured result compared with its step's baseline (agreement
//! from the two engines' outputs, the perplexity increase from the two perplexities), then
//! gated. Reads the raw outputs from the bundle, so it gives the same verdicts every time it is
//! run (after a resume or a merge too).

use std::path::Path;

use super::agreement::{self, Output};
use super::gate;
use super::record::{QualityRecord, QualityStatus};
use crate::bundle::layout;
use crate::plan::quality::{QualityKind, QualitySpec};

/// Reads an engine's agreement outputs from the bundle.
pub fn outputs(dir: &Path, step: &str, engine: &str) -> Option<Vec<Output>> {
    let text = std::fs::read_to_string(dir.join(layout::quality_outputs(step, engine))).ok()?;
    Some(
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}

/// Judges every record of the bundle at `dir` against the plan's steps.
pub fn judge(dir: &Path, steps: &[QualitySpec], records: &mut [QualityRecord]) {
    let snapshot: Vec<QualityRecord> = records.to_vec();
    for rec in records.iter_mut() {
        let Some(step) = steps.iter().find(|s| s.name == rec.step) else {
            continue;
        };
        if !rec.measured {
            gate::evaluate(&step.gates, rec);
            continue;
        }
        rec.status = QualityStatus::Ok;
        rec.reason = None;
        let is_baseline = rec.engine == step.baseline;
        let base = snapshot
            .iter()
            .find(|r| r.step == rec.step && r.engine == step.baseline)
            .filter(|r| r.measured);
        let no_baseline = || {
            format!(
                "no result of the baseline `{}` to compare with",
                step.baseline
            )
        };
        match &step.kind {
            QualityKind::Agreement { .. } if !is_baseline => {
                let mine = outputs(dir, &rec.step, &rec.engine);
                let theirs = base.and_then(|_| outputs(dir, &rec.step, &step.baseline));
                match (mine, theirs) {
                    (Some(m), Some(b)) => rec.agreement = Some(agreement::compare(&b, &m)),
                    _ => {
                        rec.agreement = None;
                        rec.status = QualityStatus::NoBaseline;
                        rec.reason = Some(no_baseline());
                    }
                }
            }
            QualityKind::Agreement { .. } => rec.agreement = None,
            QualityKind::Perplexity { .. } => {
                let theirs = base
                    .and_then(|b| b.perplexity.as_ref())
                    .map(|p| p.perplexity);
                if let Some(p) = rec.perplexity.as_mut() {
                    p.increase = theirs.map(|b| p.perplexity / b - 1.0);
                    if p.increase.is_none() {
                        rec.status = QualityStatus::NoBaseline;
                        rec.reason = Some(no_baseline());
                    }
                }
            }
            QualityKind::Command(_) => {}
        }
        gate::evaluate(&step.gates, rec);
    }
}
