//! The quality view of a bundle: one table per `[[quality]]` step (each engine's figures, gates
//! and status), the failed results, and per step a chart of its figure against each engine's
//! best output tokens/s with the Pareto front drawn. Built from the manifest alone.

use super::energy_charts::{scatter_with_front, Point};
use super::pareto::Goal;
use serde::Serialize;

use crate::bundle::format::label;
use crate::bundle::read::LoadedBundle;
use crate::plan::quality::{QualityKind, QualitySpec};
use crate::quality::record::QualityRecord;

/// Every step's table; docs/reports.md lists the fields.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QualityView {
    pub steps: Vec<StepView>,
    /// One line per failed result: the step, the engine and why (the gate that failed).
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub name: String,
    pub kind: String,
    pub baseline: String,
    /// What was run, for the record: prompts and tokens, the text file, the command.
    pub protocol: String,
    pub gates: String,
    pub rows: Vec<QualityRow>,
}

/// One engine's result, formatted.
#[derive(Debug, Clone, Serialize)]
pub struct QualityRow {
    pub engine: String,
    pub status: String,
    /// The step's figure: agreement, perplexity or the metric.
    pub figure: String,
    /// Agreement: common prefix, logprob difference, first divergence.
    pub detail: String,
    /// Each gate: `min_agreement >= 0.9: 0.75 FAIL`.
    pub gates: String,
    pub reason: String,
    /// The engine's highest output tokens/s over its valid cells.
    pub output_tok_per_s: String,
}

const DASH: &str = "-";

fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.4}")
    }
}

fn protocol(step: &QualitySpec, records: &[&QualityRecord]) -> String {
    match &step.kind {
        QualityKind::Agreement {
            source,
            prompts,
            max_tokens,
        } => format!(
            "{} prompts ({source}), temperature 0, at most {max_tokens} tokens, logprobs requested",
            prompts.len()
        ),
        QualityKind::Perplexity {
            file,
            passages,
            sha256,
        } => format!(
            "{} ({} passages, sha256 {}) scored with echo and logprobs on /v1/completions",
            file.display(),
            passages.len(),
            &sha256[..sha256.len().min(12)]
        ),
        QualityKind::Command(c) => {
            let mut s = format!("`{}`", c.argv.join(" "));
            if let Some(v) = records
                .iter()
                .find_map(|r| r.command.as_ref().and_then(|c| c.version.clone()))
            {
                s += &format!("; version: {}", v.lines().next().unwrap_or_default());
            }
            if !c.files.is_empty() {
                let names: Vec<String> = c
                    .files
                    .iter()
                    .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                s += &format!("; task files: {}", names.join(", "));
            }
            s + &format!("; metric `{}` in `{}`", c.metric_pointer, c.metric_file)
        }
    }
}

fn gates_text(step: &QualitySpec) -> String {
    let g = &step.gates;
    let mut v = Vec::new();
    if let Some(x) = g.min_agreement {
        v.push(format!("agreement >= {x}"));
    }
    if let Some(x) = g.max_perplexity_increase {
        v.push(format!("perplexity increase <= {x}"));
    }
    if let Some(x) = g.min {
        v.push(format!("metric >= {x}"));
    }
    if let Some(x) = g.max {
        v.push(format!("metric <= {x}"));
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The best output tokens/s of every engine over its valid cells.
fn best_tok_per_s(b: &LoadedBundle, engine: &str) -> Option<f64> {
    b.cells
        .iter()
        .filter(|c| c.engine == engine && c.valid)
        .filter_map(|c| c.metrics.as_ref())
        .filter(|m| m.requests_ok > 0)
        .map(|m| m.output_tok_per_s)
        .max_by(f64::total_cmp)
}

fn row(b: &LoadedBundle, r: &QualityRecord) -> QualityRow {
    let figure = if let Some(a) = &r.agreement {
        format!(
            "{} ({} of {} identical)",
            num(a.agreement),
            a.prompts_identical,
            a.prompts
        )
    } else if let Some(p) = &r.perplexity {
        match p.increase {
            Some(i) => format!("{} ({:+.2} %)", num(p.perplexity), i * 100.0),
            None => num(p.perplexity),
        }
    } else if let Some(x) = r.command.as_ref().and_then(|c| c.metric) {
        num(x)
    } else if r.kind == "agreement" && r.engine == r.baseline && r.measured {
        "baseline".into()
    } else {
        DASH.into()
    };
    let detail = match &r.agreement {
        Some(a) => {
            let mut d = format!("common prefix {:.1} {}", a.mean_common_prefix, a.unit);
            if let Some(l) = a.mean_abs_logprob_diff {
                d += &format!(", mean |logprob diff| {}", num(l));
            }
            if let Some(f) = &a.first_divergence {
                d += &format!(
                    ", first divergence: prompt {} at {} {} ({:?} vs {:?})",
                    f.prompt,
                    a.unit.trim_end_matches('s'),
                    f.position,
                    f.baseline.as_deref().unwrap_or("<end>"),
                    f.engine.as_deref().unwrap_or("<end>")
                );
            }
            d
        }
        None => match &r.perplexity {
            Some(p) => format!(
                "{} tokens scored, mean NLL {}",
                p.tokens_scored,
                num(p.mean_nll)
            ),
            None => String::new(),
        },
    };
    let gates = r
        .gates
        .iter()
        .map(|g| {
            let verdict = match g.passed {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "not evaluated",
            };
            match g.actual {
                Some(a) => format!("{} {}: {} {verdict}", g.gate, g.threshold, num(a)),
                None => format!("{} {}: {verdict}", g.gate, g.threshold),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    QualityRow {
        engine: r.engine.clone(),
        status: label(&r.status),
        figure,
        detail,
        gates: if gates.is_empty() { DASH.into() } else { gates },
        reason: r.reason.clone().unwrap_or_default(),
        output_tok_per_s: best_tok_per_s(b, &r.engine).map_or(DASH.into(), |x| format!("{x:.1}")),
    }
}

/// The quality view of a bundle (empty without `[[quality]]`).
pub fn build(b: &LoadedBundle) -> QualityView {
    let records = &b.manifest.quality;
    let steps = b
        .plan
        .quality
        .iter()
        .map(|step| {
            let mine: Vec<&QualityRecord> = step
                .engines
                .iter()
                .filter_map(|e| {
                    records
                        .iter()
                        .find(|r| r.step == step.name && &r.engine == e)
                })
                .collect();
            StepView {
                name: step.name.clone(),
                kind: step.kind.label().into(),
                baseline: step.baseline.clone(),
                protocol: protocol(step, &mine),
                gates: gates_text(step),
                rows: mine.iter().map(|r| row(b, r)).collect(),
            }
        })
        .collect();
    QualityView {
        steps,
        failed: records
            .iter()
            .filter(|r| r.is_failure())
            .map(|r| {
                format!(
                    "`{}` on `{}`: {}",
                    r.step,
                    r.engine,
                    r.reason.as_deref().unwrap_or("failed")
                )
            })
            .collect(),
    }
}

/// One point per engine: its best output tokens/s and the step's figure (the baseline of an
/// agreement step at 1, by definition).
pub fn points(b: &LoadedBundle, step: &QualitySpec) -> Vec<(String, f64, f64)> {
    step.engines
        .iter()
        .filter_map(|e| {
            let r = b
                .manifest
                .quality
                .iter()
                .find(|r| r.step == step.name && &r.engine == e)?;
            let y = match r.headline() {
                Some(y) => y,
                None if r.kind == "agreement" && r.engine == r.baseline && r.measured => 1.0,
                None => return None,
            };
            Some((e.clone(), best_tok_per_s(b, e)?, y))
        })
        .collect()
}

/// The points no other point beats on both axes (more tokens/s, better figure), by tokens/s:
/// `report::pareto::front`, the one front every chart draws.
pub fn pareto_front(points: &[(String, f64, f64)], higher_is_better: bool) -> Vec<(f64, f64)> {
    use super::pareto::{front, Goal};
    let xy: Vec<(f64, f64)> = points.iter().map(|(_, x, y)| (*x, *y)).collect();
    let y = if higher_is_better {
        Goal::Higher
    } else {
        Goal::Lower
    };
    front(&xy, Goal::Higher, y)
        .into_iter()
        .map(|i| xy[i])
        .collect()
}

/// Each step's figure against output tokens/s, one point per engine, the Pareto front drawn
/// (`energy_charts::scatter_with_front`, as the memory chart).
pub fn charts(b: &LoadedBundle) -> Vec<(String, String, Result<String, String>)> {
    b.plan
        .quality
        .iter()
        .filter_map(|step| {
            let pts = points(b, step);
            if pts.is_empty() {
                return None;
            }
            let (what, higher) = match step.kind {
                QualityKind::Agreement { .. } => ("agreement with the baseline", true),
                QualityKind::Perplexity { .. } => ("perplexity (lower is better)", false),
                // Accuracy-like by default: a metric with only a `max` gate is lower-is-better.
                QualityKind::Command(_) => {
                    let lower = step.gates.max.is_some() && step.gates.min.is_none();
                    ("metric", !lower)
                }
            };
            let title = format!("{}: {what} vs output tokens/s", step.name);
            let points: Vec<Point> = pts
                .iter()
                .map(|(label, x, y)| Point {
                    label: label.clone(),
                    x: *x,
                    y: *y,
                })
                .collect();
            let goal = if higher { Goal::Higher } else { Goal::Lower };
            let svg = scatter_with_front(
                &title,
                "best output tokens/s (valid cells)",
                what,
                &points,
                (Goal::Higher, goal),
            )
            .map_err(|e| e.to_string());
            Some((format!("quality_{}", step.name), title, svg))
        })
        .collect()
}

/// `runner compare`'s quality rows: per step and engine in both bundles, each figure's ratio
/// other/base, `better` or `worse` when it moved by more than `threshold` (relative) in the
/// figure's direction. The figures are deterministic at temperature 0 (agreement, perplexity),
/// so there is no noise model; a command's metric is taken as the evaluator reports it.
pub fn compare_rows(
    base: &LoadedBundle,
    other: &LoadedBundle,
    threshold: f64,
) -> Vec<super::compare::Row> {
    let mut rows = Vec::new();
    for a in &base.manifest.quality {
        let Some(b) = other
            .manifest
            .quality
            .iter()
            .find(|b| b.step == a.step && b.engine == a.engine)
        else {
            continue;
        };
        // (figure, its value in each, whether higher is better)
        let mut figures: Vec<(&str, Option<f64>, Option<f64>, bool)> = Vec::new();
        if let (Some(x), Some(y)) = (&a.agreement, &b.agreement) {
            figures.push(("agreement", Some(x.agreement), Some(y.agreement), true));
            figures.push((
                "mean_common_prefix",
                Some(x.mean_common_prefix),
                Some(y.mean_common_prefix),
                true,
            ));
            figures.push((
                "mean_abs_logprob_diff",
                x.mean_abs_logprob_diff,
                y.mean_abs_logprob_diff,
                false,
            ));
        }
        if let (Some(x), Some(y)) = (&a.perplexity, &b.perplexity) {
            figures.push(("perplexity", Some(x.perplexity), Some(y.perplexity), false));
        }
        if let (Some(x), Some(y)) = (&a.command, &b.command) {
            let lower = base
                .plan
                .quality
                .iter()
                .find(|s| s.name == a.step)
                .is_some_and(|s| s.gates.max.is_some() && s.gates.min.is_none());
            figures.push(("metric", x.metric, y.metric, !lower));
        }
        for (metric, va, vb, higher) in figures {
            let (Some(va), Some(vb)) = (va, vb) else {
                continue;
            };
            if va <= 0.0 {
                continue;
            }
            let ratio = vb / va;
            let improved = if higher { ratio > 1.0 } else { ratio < 1.0 };
            let verdict = match ((ratio - 1.0).abs() > threshold, improved) {
                (false, _) => "no significant difference",
                (true, true) => "better",
                (true, false) => "worse",
            };
            rows.push(super::compare::Row {
                engine: a.engine.clone(),
                workload: format!("quality {}", a.step),
                level: "-".into(),
                metric: metric.into(),
                base: va,
                other: vb,
                ratio,
                verdict: verdict.into(),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::pareto_front;

    #[test]
    fn the_front_keeps_only_undominated_points() {
        let pts = vec![
            ("bf16".to_string(), 100.0, 0.9),
            ("awq".to_string(), 200.0, 0.6),
            ("slow-and-worse".to_string(), 50.0, 0.5),
            ("base".to_string(), 10.0, 1.0),
        ];
        assert_eq!(
            pareto_front(&pts, true),
            vec![(10.0, 1.0), (100.0, 0.9), (200.0, 0.6)]
        );
        // Lower is better (perplexity): the slow-and-worse point now wins on its axis.
        assert_eq!(pareto_front(&pts, false), vec![(50.0, 0.5), (200.0, 0.6)]);
    }
}
