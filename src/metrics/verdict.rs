//! Every judgement derived from a measured cell, as pure functions of fixed inputs: its status
//! and reason, its validity (could the client keep up; can its token counts be believed), its
//! SLO verdict, and the means of its repeated runs. The cell measures, this module decides.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client_check::{self, ClientUsage};
use super::slo::{self, SloVerdict};
use super::summary::CellMetrics;
use crate::plan::model::SloRule;

/// How a measured cell ended (the bundle's `CellStatus` has more states: pending, rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Measured to the end, or to an early stop on errors; some requests may have failed.
    Ok,
    /// Every request failed, or none was sent.
    Failed,
    /// A signal stopped the run; the requests measured before are kept.
    Interrupted,
}

/// What a cell's measurement gives the verdict.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    pub metrics: &'a CellMetrics,
    pub usage: &'a ClientUsage,
    /// The workload's `max_dispatch_lag`.
    pub max_dispatch_lag: Duration,
    /// The workload's SLO rules (empty: no SLO).
    pub slo: &'a [SloRule],
    /// Why the level ended before its stop rule (`max_errors`, `max_error_rate`), if it did.
    pub stopped_early: Option<&'a str>,
    /// The run is stopping on a signal.
    pub interrupted: bool,
}

/// A cell's judgement.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub ending: Ending,
    /// Why it ended as it did, when that is not simply "measured to the end".
    pub reason: Option<String>,
    /// Why its numbers are not a result (client bottleneck, untrusted token counts).
    pub invalid_reason: Option<String>,
    pub slo: Option<SloVerdict>,
}

impl Verdict {
    pub fn valid(&self) -> bool {
        self.invalid_reason.is_none()
    }
}

/// Judges a measured cell.
pub fn judge(m: &Measured) -> Verdict {
    let (ending, reason) = ending(m.interrupted, m.metrics, m.stopped_early);
    // A cell in which no request succeeded has no number the client could have distorted: it
    // failed, and its reason says why. The client's CPU share over a burst of refused
    // connections would read as a bottleneck and hide the failure behind `invalid`.
    let invalid_reason = match ending {
        Ending::Failed => None,
        _ => invalid_reason(m.metrics, m.usage, m.max_dispatch_lag),
    };
    let slo = slo_verdict(
        ending,
        invalid_reason.is_none(),
        m.stopped_early.is_some(),
        m.slo,
        m.metrics,
    );
    Verdict {
        ending,
        reason,
        invalid_reason,
        slo,
    }
}

/// `None` for a valid cell, else every reason it is not, joined.
pub fn invalid_reason(
    metrics: &CellMetrics,
    usage: &ClientUsage,
    max_dispatch_lag: Duration,
) -> Option<String> {
    let reasons: Vec<String> = [
        client_check::verdict(metrics, usage, max_dispatch_lag),
        metrics.counts_verdict(),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// How the cell ended and why: a signal wins, then "every request failed", else measured.
pub fn ending(
    interrupted: bool,
    metrics: &CellMetrics,
    stopped_early: Option<&str>,
) -> (Ending, Option<String>) {
    if interrupted {
        (
            Ending::Interrupted,
            Some("interrupted by a signal; the requests measured before are kept".to_string()),
        )
    } else if metrics.requests_ok == 0 {
        let why = metrics
            .failure_examples
            .iter()
            .next()
            .map(|(k, m)| format!("{k}: {m}"))
            .unwrap_or_else(|| "no request was sent".into());
        (
            Ending::Failed,
            Some(format!("every request failed ({why})")),
        )
    } else {
        (Ending::Ok, stopped_early.map(str::to_string))
    }
}

/// Only a valid cell measured to the end can pass or fail an SLO; a level ended early on errors
/// failed its SLO by definition.
pub fn slo_verdict(
    ending: Ending,
    valid: bool,
    stopped_early: bool,
    rules: &[SloRule],
    metrics: &CellMetrics,
) -> Option<SloVerdict> {
    if ending == Ending::Ok && valid && !stopped_early {
        slo::evaluate(rules, metrics)
    } else if stopped_early && !rules.is_empty() {
        slo::evaluate(rules, metrics).map(|mut v| {
            v.passed = false;
            v
        })
    } else {
        None
    }
}

/// The rates of a repeated cell: the mean over its runs (records of different runs have
/// different clock origins, so a rate over all of them would mean nothing); its duration is the
/// sum. Latency figures stay those of all the records together. No-op for fewer than 2 runs.
pub fn repeat_means(metrics: &mut CellMetrics, repeats: &[CellMetrics]) {
    if repeats.is_empty() {
        return;
    }
    let n = repeats.len() as f64;
    let mean = |f: fn(&CellMetrics) -> f64| repeats.iter().map(f).sum::<f64>() / n;
    metrics.request_per_s = mean(|m| m.request_per_s);
    metrics.output_tok_per_s = mean(|m| m.output_tok_per_s);
    metrics.total_tok_per_s = mean(|m| m.total_tok_per_s);
    metrics.duration_s = repeats.iter().map(|m| m.duration_s).sum();
    metrics.goodput_req_per_s = metrics
        .goodput_req_per_s
        .map(|_| mean(|m| m.goodput_req_per_s.unwrap_or(0.0)));
    metrics.offered_req_per_s = metrics
        .offered_req_per_s
        .map(|_| mean(|m| m.offered_req_per_s.unwrap_or(0.0)));
    metrics.sent_req_per_s = metrics
        .sent_req_per_s
        .map(|_| mean(|m| m.sent_req_per_s.unwrap_or(0.0)));
}

/// One run of a repeated cell, judged on its own: a mean over runs is a result only when
/// every run is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunVerdict {
    pub run: u32,
    /// Measured to the end with at least one request answered.
    pub ok: bool,
    pub valid: bool,
    /// Why it is not ok or not valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Judges each run of a repeated cell (its metrics, the cell's client usage) and says why the
/// cell's means are not a result when some run is failed, invalid or missing: an invalid or
/// failed run is never hidden inside a mean.
pub fn judge_runs(
    runs: &[CellMetrics],
    planned: u32,
    usage: &ClientUsage,
    max_dispatch_lag: Duration,
    interrupted: bool,
) -> (Vec<RunVerdict>, Option<String>) {
    let verdicts: Vec<RunVerdict> = runs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (ending, failed) = ending(false, m, None);
            let invalid = invalid_reason(m, usage, max_dispatch_lag);
            RunVerdict {
                run: i as u32,
                ok: ending == Ending::Ok,
                valid: invalid.is_none(),
                reason: failed.or(invalid),
            }
        })
        .collect();
    let mut bad: Vec<String> = verdicts
        .iter()
        .filter(|v| !(v.ok && v.valid))
        .map(|v| {
            format!(
                "run {} of {planned} {}: {}",
                v.run + 1,
                if v.ok { "is invalid" } else { "failed" },
                v.reason.as_deref().unwrap_or("")
            )
        })
        .collect();
    if (runs.len() as u32) < planned && !interrupted && planned > 1 {
        bad.push(format!(
            "only {} of {planned} runs were measured",
            runs.len()
        ));
    }
    let why = (!bad.is_empty())
        .then(|| format!("{}; the mean over runs is not a result", bad.join("; ")));
    (verdicts, why)
}

/// What the runner used over a cell of `wall_s` seconds: `cpu_s` CPU-seconds on `cores` cores.
pub fn client_usage(cpu_s: f64, wall_s: f64, cores: usize) -> ClientUsage {
    ClientUsage {
        cpu_s,
        cpu_pct: if wall_s > 0.0 {
            100.0 * cpu_s / wall_s
        } else {
            0.0
        },
        cores,
        timer_late_ms: None,
        run_queue_wait_s: None,
        run_queue_wait_pct: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::summary::{Accumulator, Stats};
    use crate::plan::model::{Percentile, SloMetric};

    fn metrics(ok: u64, failed: u64) -> CellMetrics {
        let mut m = Accumulator::default().finish();
        m.requests_ok = ok;
        m.requests_failed = failed;
        m.requests_total = ok + failed;
        m.ttft_ms = (ok > 0).then_some(Stats {
            count: ok,
            mean: 100.0,
            p50: 100.0,
            p90: 100.0,
            p95: 100.0,
            p99: 100.0,
            max: 100.0,
        });
        m
    }

    fn usage(cpu_pct: f64) -> ClientUsage {
        ClientUsage {
            timer_late_ms: None,
            run_queue_wait_s: None,
            run_queue_wait_pct: None,
            cpu_s: 1.0,
            cpu_pct,
            cores: 2,
        }
    }

    fn ttft_p95(max_ms: f64) -> Vec<SloRule> {
        vec![SloRule {
            metric: SloMetric::Ttft,
            percentile: Percentile::P95,
            max_ms,
        }]
    }

    fn measured<'a>(m: &'a CellMetrics, u: &'a ClientUsage, slo: &'a [SloRule]) -> Measured<'a> {
        Measured {
            metrics: m,
            usage: u,
            max_dispatch_lag: Duration::from_secs(1),
            slo,
            stopped_early: None,
            interrupted: false,
        }
    }

    #[test]
    fn a_valid_cell_measured_to_the_end_is_ok_and_judged_against_its_slo() {
        let (m, u) = (metrics(10, 0), usage(10.0));
        let rules = ttft_p95(200.0);
        let v = judge(&measured(&m, &u, &rules));
        assert_eq!(v.ending, Ending::Ok);
        assert_eq!(v.reason, None);
        assert!(v.valid());
        assert!(v.slo.as_ref().is_some_and(|s| s.passed), "{v:?}");
        let rules = ttft_p95(50.0);
        let v = judge(&measured(&m, &u, &rules));
        assert!(v.slo.as_ref().is_some_and(|s| !s.passed), "{v:?}");
        assert_eq!(judge(&measured(&m, &u, &[])).slo, None);
    }

    #[test]
    fn a_signal_wins_over_every_other_ending_and_leaves_no_slo_verdict() {
        let (m, u) = (metrics(0, 3), usage(10.0));
        let rules = ttft_p95(200.0);
        let v = judge(&Measured {
            interrupted: true,
            ..measured(&m, &u, &rules)
        });
        assert_eq!(v.ending, Ending::Interrupted);
        assert!(v.reason.as_deref().is_some_and(|r| r.contains("signal")));
        assert_eq!(v.slo, None);
    }

    #[test]
    fn every_request_failed_names_the_first_failure_or_says_none_was_sent() {
        let mut m = metrics(0, 2);
        m.failures.insert("http_status:500".into(), 2);
        m.failure_examples
            .insert("http_status:500".into(), "out of memory".into());
        let (ending, reason) = ending(false, &m, None);
        assert_eq!(ending, Ending::Failed);
        assert_eq!(
            reason.as_deref(),
            Some("every request failed (http_status:500: out of memory)")
        );
        let (_, reason) = super::ending(false, &metrics(0, 0), None);
        assert_eq!(
            reason.as_deref(),
            Some("every request failed (no request was sent)")
        );
    }

    #[test]
    fn a_cell_where_every_request_failed_is_failed_not_invalid_whatever_the_client_used() {
        let mut m = metrics(0, 32);
        m.failures.insert("connect".into(), 32);
        m.failure_examples
            .insert("connect".into(), "Connection refused (os error 111)".into());
        let u = usage(195.0);
        let v = judge(&measured(&m, &u, &ttft_p95(200.0)));
        assert_eq!(v.ending, Ending::Failed);
        assert!(v.valid(), "{v:?}");
        assert!(v
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("every request failed (connect: Connection refused")));
        assert_eq!(v.slo, None);
        // One success, and the same CPU share is the client's bottleneck again.
        let mut m = metrics(1, 31);
        m.failures.insert("connect".into(), 31);
        assert!(!judge(&measured(&m, &u, &[])).valid());
    }

    #[test]
    fn a_failed_or_missing_run_makes_the_repeated_cell_no_result() {
        let good = metrics(10, 0);
        let (v, why) = judge_runs(
            &[good.clone(), good.clone()],
            2,
            &usage(10.0),
            Duration::from_secs(10),
            false,
        );
        assert!(v.iter().all(|r| r.ok && r.valid), "{v:?}");
        assert_eq!(why, None);

        let (v, why) = judge_runs(
            &[good.clone(), metrics(0, 10), good.clone()],
            3,
            &usage(10.0),
            Duration::from_secs(10),
            false,
        );
        assert!(!v[1].ok && v[0].ok && v[2].ok, "{v:?}");
        let why = why.expect("a failed run is named");
        assert!(
            why.starts_with("run 2 of 3 failed: every request failed"),
            "{why}"
        );
        assert!(why.ends_with("the mean over runs is not a result"), "{why}");

        let (_, why) = judge_runs(
            std::slice::from_ref(&good),
            3,
            &usage(10.0),
            Duration::from_secs(10),
            false,
        );
        assert!(
            why.is_some_and(|w| w.contains("only 1 of 3 runs were measured")),
            "a run cut short is not averaged over"
        );
        // Interrupted: the missing runs are the signal's, said by the cell's status.
        let (_, why) = judge_runs(
            std::slice::from_ref(&good),
            3,
            &usage(10.0),
            Duration::from_secs(10),
            true,
        );
        assert_eq!(why, None);
    }

    #[test]
    fn a_level_stopped_early_on_errors_is_ok_with_its_reason_and_fails_its_slo() {
        let (m, u) = (metrics(8, 12), usage(10.0));
        let rules = ttft_p95(200.0);
        let v = judge(&Measured {
            stopped_early: Some("stopped early: 12 requests failed (`max_errors` = 12)"),
            ..measured(&m, &u, &rules)
        });
        assert_eq!(v.ending, Ending::Ok);
        assert!(v
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("max_errors")));
        let slo = v.slo.expect("a verdict");
        assert!(!slo.passed);
        // Its thresholds alone would have passed: the early stop is what fails it.
        assert!(slo.checks.values().all(|c| c.passed));
    }

    #[test]
    fn an_invalid_cell_gives_every_reason_and_no_slo_verdict() {
        let mut m = metrics(10, 0);
        m.usage_untrusted = 2;
        m.usage_untrusted_example = Some("usage 900 above max_tokens 16".into());
        let u = usage(195.0);
        let rules = ttft_p95(200.0);
        let v = judge(&measured(&m, &u, &rules));
        assert!(!v.valid());
        let why = v.invalid_reason.as_deref().unwrap_or_default();
        assert!(why.contains("client bottleneck"), "{why}");
        assert!(why.contains("token counts cannot be trusted"), "{why}");
        assert!(why.contains("; "), "{why}");
        assert_eq!(v.ending, Ending::Ok);
        assert_eq!(v.slo, None);
    }

    #[test]
    fn repeated_runs_report_the_mean_of_their_rates_and_the_sum_of_their_durations() {
        let run = |rps: f64, offered: f64, secs: f64| {
            let mut m = metrics(10, 0);
            m.request_per_s = rps;
            m.output_tok_per_s = rps * 10.0;
            m.total_tok_per_s = rps * 20.0;
            m.offered_req_per_s = Some(offered);
            m.sent_req_per_s = Some(offered - 1.0);
            m.duration_s = secs;
            m
        };
        let repeats = [run(10.0, 20.0, 2.0), run(20.0, 40.0, 3.0)];
        let mut all = run(99.0, 99.0, 99.0);
        repeat_means(&mut all, &repeats);
        assert_eq!(all.request_per_s, 15.0);
        assert_eq!(all.output_tok_per_s, 150.0);
        assert_eq!(all.total_tok_per_s, 300.0);
        assert_eq!(all.offered_req_per_s, Some(30.0));
        assert_eq!(all.sent_req_per_s, Some(29.0));
        assert_eq!(all.duration_s, 5.0);
        // A closed-loop cell keeps no offered rate, and one run changes nothing.
        let mut closed = metrics(10, 0);
        repeat_means(&mut closed, &repeats);
        assert_eq!(closed.offered_req_per_s, None);
        let mut one = run(7.0, 7.0, 7.0);
        repeat_means(&mut one, &[]);
        assert_eq!(one.request_per_s, 7.0);
    }

    #[test]
    fn client_usage_is_cpu_over_wall_in_percent_of_one_core() {
        let u = client_usage(1.5, 3.0, 4);
        assert_eq!(u.cpu_pct, 50.0);
        assert_eq!(u.cores, 4);
        assert_eq!(client_usage(1.0, 0.0, 1).cpu_pct, 0.0);
    }

    #[test]
    fn the_cell_accumulator_of_an_open_loop_level_reports_its_offered_rate() {
        let src = "schema = 1\nname = \"t\"\n[[engine]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\nmodel = \"m\"\n[[workload]]\nname = \"w\"\nprompts = [\"hi\"]\nmax_tokens = 1\n[workload.load]\nrate = [10]\n";
        let ctx = crate::plan::resolve::ResolveContext {
            runner_exe: "runner".into(),
        };
        let plan = match crate::plan::resolve::resolve_source(
            std::path::Path::new("t.toml"),
            src,
            "0".into(),
            &ctx,
        ) {
            Ok((plan, _)) => plan,
            Err(d) => panic!("the test plan is invalid:\n{d}"),
        };
        let w = &plan.workloads[0];
        let mut open = Accumulator::for_cell(w, crate::plan::model::LoadLevel::Rate(10.0));
        let mut closed = Accumulator::for_cell(w, crate::plan::model::LoadLevel::Concurrency(1));
        for i in 0..10u64 {
            let r = crate::metrics::record::tests::record(
                i * 100_000,
                &[i * 100_000 + 500],
                i * 100_000 + 900,
                1,
            );
            open.add(&r);
            closed.add(&r);
        }
        let offered = open.finish().offered_req_per_s.expect("an offered rate");
        assert!((offered - 10.0).abs() < 1e-9, "{offered}");
        assert_eq!(closed.finish().offered_req_per_s, None);
    }
}
