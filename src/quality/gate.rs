//! Gates: thresholds on a step's result (`min_agreement`, `max_perplexity_increase`, `min` /
//! `max` on a command's metric). Pure: a record in, its verdicts and status out.

use super::record::{GateResult, QualityRecord, QualityStatus};
use crate::plan::quality::Gates;

/// Evaluates every gate of `gates` that applies to `rec`'s kind; a failed one marks the record
/// failed, with the gate named in its reason. A gate with no figure to judge (not supported, no
/// baseline, the baseline itself for agreement) is listed, not evaluated.
pub fn evaluate(gates: &Gates, rec: &mut QualityRecord) {
    let agreement = rec.agreement.as_ref().map(|a| a.agreement);
    let increase = rec.perplexity.as_ref().and_then(|p| p.increase);
    let metric = rec.command.as_ref().and_then(|c| c.metric);
    // (gate, threshold, figure, its name for people, whether the figure must be at least it)
    let list = [
        (
            "min_agreement",
            gates.min_agreement,
            agreement,
            "agreement",
            true,
        ),
        (
            "max_perplexity_increase",
            gates.max_perplexity_increase,
            increase,
            "perplexity increase",
            false,
        ),
        ("min", gates.min, metric, "metric", true),
        ("max", gates.max, metric, "metric", false),
    ];
    rec.gates.clear();
    let mut failed = Vec::new();
    for (gate, threshold, actual, what, at_least) in list {
        let Some(threshold) = threshold else {
            continue;
        };
        let passed = actual.map(|a| {
            if at_least {
                a >= threshold
            } else {
                a <= threshold
            }
        });
        if passed == Some(false) {
            let a = actual.unwrap_or_default();
            let rel = if at_least { "below" } else { "above" };
            failed.push(format!(
                "gate `{gate}` failed: {what} {} is {rel} {}",
                fmt(a),
                fmt(threshold)
            ));
        }
        rec.gates.push(GateResult {
            gate: gate.into(),
            threshold,
            actual,
            passed,
        });
    }
    if !failed.is_empty() {
        rec.status = QualityStatus::Failed;
        rec.reason = Some(failed.join("; "));
    }
}

fn fmt(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::record::CommandResult;

    fn command(metric: Option<f64>) -> QualityRecord {
        QualityRecord {
            step: "s".into(),
            kind: "command".into(),
            engine: "e".into(),
            baseline: "e".into(),
            status: QualityStatus::Ok,
            measured: true,
            reason: None,
            agreement: None,
            perplexity: None,
            command: Some(CommandResult {
                argv: vec![],
                version: None,
                version_error: None,
                exit_code: Some(0),
                timed_out: false,
                took_s: 0.0,
                metric,
                metric_file: None,
                metric_pointer: "/x".into(),
                stdout: String::new(),
                stderr: String::new(),
                out: String::new(),
                task_files: vec![],
            }),
            gates: vec![],
            files: vec![],
        }
    }

    #[test]
    fn min_and_max_on_a_metric() {
        let gates = Gates {
            min: Some(0.5),
            max: Some(0.9),
            ..Gates::default()
        };
        let mut ok = command(Some(0.75));
        evaluate(&gates, &mut ok);
        assert_eq!(ok.status, QualityStatus::Ok);
        assert!(ok.gates.iter().all(|g| g.passed == Some(true)));
        let mut low = command(Some(0.25));
        evaluate(&gates, &mut low);
        assert_eq!(low.status, QualityStatus::Failed);
        assert_eq!(
            low.reason.as_deref(),
            Some("gate `min` failed: metric 0.25 is below 0.5")
        );
        let mut none = command(None);
        evaluate(&gates, &mut none);
        assert_eq!(none.gates[0].passed, None);
        assert_eq!(none.status, QualityStatus::Ok);
    }
}
