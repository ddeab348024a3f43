//! Per-cell aggregation: records stream in one at a time and are folded into HDR histograms
//! and counters, never kept; `finish` turns the fold into the cell's metrics.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::record::{RequestRecord, TokenSource};
use crate::plan::model::Percentiles;

/// Distribution statistics of one latency metric, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// A latency histogram in microseconds, 3 significant digits, up to one hour; the mean is
/// kept exactly beside it.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
    sum_us: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            // Bounds are constants that hdrhistogram accepts, so this cannot fail.
            #[allow(clippy::unwrap_used)]
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
            sum_us: 0.0,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        self.hist.saturating_record(us.max(1));
        self.sum_us += us as f64;
    }

    pub fn record_f(&mut self, us: f64) {
        self.hist.saturating_record((us.round() as u64).max(1));
        self.sum_us += us;
    }

    pub fn stats(&self) -> Option<Stats> {
        self.stats_by(Percentiles::NearestRank)
    }

    /// The value (µs, the bucket's highest equivalent) of the `k`-th smallest sample, from 0.
    fn at_index(&self, k: u64) -> u64 {
        let mut seen = 0;
        for v in self.hist.iter_recorded() {
            seen += v.count_at_value();
            if seen > k {
                return v.value_iterated_to();
            }
        }
        self.hist.max()
    }

    /// numpy's linear percentile (`stats::interpolated`) over the recorded samples, ms.
    fn interpolated(&self, q: f64) -> f64 {
        let n = self.hist.len();
        let h = q * (n - 1) as f64;
        let (lo, hi) = (h.floor() as u64, h.ceil() as u64);
        let (a, b) = (self.at_index(lo) as f64, self.at_index(hi) as f64);
        (a + (h - lo as f64) * (b - a)) / 1000.0
    }

    /// The distribution's statistics with percentiles by `estimator`.
    pub fn stats_by(&self, estimator: Percentiles) -> Option<Stats> {
        let n = self.hist.len();
        if n == 0 {
            return None;
        }
        let q = |q: f64| match estimator {
            Percentiles::NearestRank => self.hist.value_at_quantile(q) as f64 / 1000.0,
            Percentiles::Interpolated => self.interpolated(q),
        };
        Some(Stats {
            count: n,
            mean: self.sum_us / n as f64 / 1000.0,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            max: self.hist.max() as f64 / 1000.0,
        })
    }
}

/// The measured side of a cell's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellMetrics {
    /// How the percentiles of every distribution were read (`[report] percentiles`).
    #[serde(default, skip_serializing_if = "Percentiles::is_default")]
    pub percentiles: Percentiles,
    pub requests_total: u64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Failures by error class, and for `http_status` by code (e.g. `http_status:503`).
    pub failures: BTreeMap<String, u64>,
    /// The first error message seen for each failure key.
    pub failure_examples: BTreeMap<String, String>,
    /// First scheduled send to the last response end, seconds.
    pub duration_s: f64,
    pub request_per_s: f64,
    pub output_tok_per_s: f64,
    pub total_tok_per_s: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt lengths of the successful requests (docs/metrics.md "Prompt token counts"): the
    /// client's mean count (in the workload's unit), the server's mean `usage.prompt_tokens`,
    /// and the mean of server minus client over requests that have both (the chat template's
    /// cost, where the client counts with the model's tokenizer).
    #[serde(default)]
    pub client_prompt_tokens_mean: Option<f64>,
    #[serde(default)]
    pub server_prompt_tokens_mean: Option<f64>,
    #[serde(default)]
    pub prompt_tokens_diff_mean: Option<f64>,
    /// `usage.prompt_tokens_details.cached_tokens` of the successful requests that report it:
    /// their total, and the mean per such request.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    #[serde(default)]
    pub cached_tokens_mean: Option<f64>,
    /// Where output token counts came from: `usage`, `chunks`, or `mixed`.
    pub output_tokens_source: String,
    /// Successful requests whose usage count differs from their content-chunk count.
    pub token_count_mismatches: u64,
    /// Retries after 429/503 answers, and the requests that needed any.
    pub retries: u64,
    pub requests_retried: u64,
    /// Successful requests that returned fewer output tokens than `max_tokens` asked for.
    pub short_outputs: u64,
    /// Successful requests whose `usage` count was impossible (above `max_tokens`, or far above
    /// the chunks received): their tokens are counted from chunks, and the cell is invalid.
    #[serde(default)]
    pub usage_untrusted: u64,
    /// Why, for the first of them.
    #[serde(default)]
    pub usage_untrusted_example: Option<String>,
    /// Requests per second that met every per-request SLO bound (docs/metrics.md); absent
    /// when the workload has no SLO on TTFT, TPOT or end-to-end latency.
    pub goodput_req_per_s: Option<f64>,
    /// Time to first token: the first streamed event carrying a token, empty text included
    /// (the default; vLLM bench's definition).
    pub ttft_ms: Option<Stats>,
    pub tpot_ms: Option<Stats>,
    /// Gaps between successive token events (the default; vLLM bench's definition).
    pub itl_ms: Option<Stats>,
    /// Time to first visible text, over the successful requests that had any.
    #[serde(default)]
    pub ttft_text_ms: Option<Stats>,
    /// Gaps between successive events with visible text.
    #[serde(default)]
    pub itl_text_ms: Option<Stats>,
    /// Successful requests whose output had no visible text (all deltas empty): in `ttft_ms`,
    /// not in `ttft_text_ms`.
    #[serde(default)]
    pub requests_without_text: u64,
    /// Successful streamed responses with enough token events to judge whether they arrived
    /// as they were generated, and those that arrived in one burst (`client_check`).
    #[serde(default)]
    pub burst_checked: u64,
    #[serde(default)]
    pub burst_responses: u64,
    pub e2e_ms: Option<Stats>,
    /// Time to the first byte of the response body.
    pub ttfb_ms: Option<Stats>,
    /// Client dispatch lag of every request, successful or not.
    pub dispatch_lag_ms: Option<Stats>,
    /// Open loop: requests scheduled per second of schedule, and actually sent per second.
    pub offered_req_per_s: Option<f64>,
    pub sent_req_per_s: Option<f64>,
    /// Multi-turn workloads: the requests of each turn index (docs/metrics.md "Per turn"), in
    /// turn order; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_turn: Vec<TurnMetrics>,
}

/// The requests of one turn index of a multi-turn cell: turn `k` of every session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnMetrics {
    /// From 0.
    pub turn: u32,
    pub requests_total: u64,
    pub requests_ok: u64,
    /// The client's mean count of the whole prompt sent (history included), successful ones.
    pub client_prompt_tokens_mean: Option<f64>,
    /// The server's mean `usage.prompt_tokens`, successful ones.
    pub server_prompt_tokens_mean: Option<f64>,
    pub ttft_ms: Option<Stats>,
    pub e2e_ms: Option<Stats>,
}

/// One turn index's fold.
#[derive(Debug, Default, Clone)]
struct TurnAcc {
    total: u64,
    ok: u64,
    client_prompt: Mean,
    server_prompt: Mean,
    ttft: LatencyHistogram,
    e2e: LatencyHistogram,
}

impl CellMetrics {
    /// "3 of 6 requests failed (mostly http_status:500: CUDA out of memory)" when any failed:
    /// the most frequent failure and the first message the server gave for it.
    pub fn failed_requests_line(&self) -> Option<String> {
        if self.requests_failed == 0 {
            return None;
        }
        let example = self
            .failures
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, _)| match self.failure_examples.get(k) {
                Some(msg) => format!(" (mostly {k}: {msg})"),
                None => format!(" (mostly {k})"),
            })
            .unwrap_or_default();
        Some(format!(
            "{} of {} requests failed{example}",
            self.requests_failed, self.requests_total
        ))
    }

    /// `None` when the cell's token counts can be believed, else why not: a server whose
    /// `usage` is impossible makes every throughput figure of the cell a fiction.
    pub fn counts_verdict(&self) -> Option<String> {
        (self.usage_untrusted > 0).then(|| {
            format!(
                "token counts cannot be trusted: {} of {} successful requests reported impossible usage ({}); output tokens are counted from chunks and the cell is not compared",
                self.usage_untrusted,
                self.requests_ok,
                self.usage_untrusted_example.as_deref().unwrap_or("no example kept")
            )
        })
    }
}

/// Per-request bounds for goodput, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GoodputBounds {
    pub ttft_us: Option<f64>,
    pub tpot_us: Option<f64>,
    pub e2e_us: Option<f64>,
}

impl GoodputBounds {
    /// From a workload's SLO: per metric, the bound of its highest percentile (the loosest
    /// per-request reading of the objective). ITL bounds apply to cells only.
    pub fn from_slo(rules: &[crate::plan::model::SloRule]) -> Option<GoodputBounds> {
        use crate::plan::model::SloMetric;
        let pick = |m: SloMetric| {
            rules
                .iter()
                .filter(|r| r.metric == m)
                .max_by_key(|r| r.percentile as u8)
                .map(|r| r.max_ms * 1000.0)
        };
        let b = GoodputBounds {
            ttft_us: pick(SloMetric::Ttft),
            tpot_us: pick(SloMetric::Tpot),
            e2e_us: pick(SloMetric::E2e),
        };
        (b != GoodputBounds::default()).then_some(b)
    }

    fn met_by(&self, r: &RequestRecord) -> bool {
        let within = |bound: Option<f64>, v: Option<f64>| match (bound, v) {
            (None, _) => true,
            (Some(b), Some(v)) => v <= b,
            (Some(_), None) => false,
        };
        r.ok && within(self.ttft_us, r.ttft_us().map(|v| v as f64))
            && (self.tpot_us.is_none() || r.output_tokens < 2 || within(self.tpot_us, r.tpot_us()))
            && within(self.e2e_us, Some(r.e2e_us() as f64))
    }
}

/// A running sum and count.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    fn get(self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// Folds records into a cell's metrics.
#[derive(Debug, Default, Clone)]
pub struct Accumulator {
    open_loop: bool,
    percentiles: Percentiles,
    retries: u64,
    retried: u64,
    max_tokens: Option<u64>,
    goodput: Option<GoodputBounds>,
    good: u64,
    short: u64,
    ttfb: LatencyHistogram,
    lag: LatencyHistogram,
    last_scheduled_us: u64,
    last_sent_us: u64,
    total: u64,
    ok: u64,
    failures: BTreeMap<String, u64>,
    failure_examples: BTreeMap<String, String>,
    first_scheduled_us: Option<u64>,
    last_end_us: u64,
    input_tokens: u64,
    output_tokens: u64,
    /// Each prompt's own `max_tokens` (request `i` uses entry `i mod len`); empty: all
    /// `max_tokens`.
    own_max_tokens: Vec<Option<u32>>,
    /// Multi-turn: each turn's own `max_tokens`, by (session, turn) (the records say which).
    turn_max_tokens: std::collections::HashMap<(u64, u32), u32>,
    by_turn: BTreeMap<u32, TurnAcc>,
    client_prompt: Mean,
    server_prompt: Mean,
    prompt_diff: Mean,
    cached: Mean,
    from_usage: u64,
    from_chunks: u64,
    mismatches: u64,
    untrusted: u64,
    untrusted_example: Option<String>,
    ttft: LatencyHistogram,
    tpot: LatencyHistogram,
    itl: LatencyHistogram,
    ttft_text: LatencyHistogram,
    itl_text: LatencyHistogram,
    without_text: u64,
    burst_checked: u64,
    burst_responses: u64,
    e2e: LatencyHistogram,
}

impl Accumulator {
    /// Open loop: requests per second over the span from the first schedule to `last_us`.
    fn span_rate(&self, last_us: u64) -> Option<f64> {
        let first = self.first_scheduled_us?;
        let span = last_us.saturating_sub(first);
        (self.open_loop && self.total > 1 && span > 0)
            .then(|| (self.total - 1) as f64 / (span as f64 / 1e6))
    }

    /// An accumulator that counts outputs shorter than `max_tokens` and goodput.
    pub fn new(max_tokens: Option<u64>, goodput: Option<GoodputBounds>) -> Accumulator {
        Accumulator {
            max_tokens,
            goodput,
            ..Accumulator::default()
        }
    }

    /// The accumulator of one cell of `workload` at `level`: the one the cell measures with and
    /// the one `runner recover` rebuilds a cut-off cell with, so both derive the same metrics
    /// (an open-loop level reports its offered and sent rates).
    pub fn for_cell(
        workload: &crate::plan::model::WorkloadSpec,
        level: crate::plan::model::LoadLevel,
    ) -> Accumulator {
        let mut acc = Accumulator::new(
            Some(u64::from(workload.max_tokens)),
            GoodputBounds::from_slo(&workload.slo),
        );
        if workload.shapes.iter().any(|s| s.max_tokens.is_some()) {
            acc.own_max_tokens = workload.shapes.iter().map(|s| s.max_tokens).collect();
        }
        acc.turn_max_tokens = workload
            .shapes
            .iter()
            .filter_map(|s| Some(((s.session?, s.turn?), s.max_tokens?)))
            .collect();
        match level {
            crate::plan::model::LoadLevel::Rate(_) => acc.open_loop(),
            crate::plan::model::LoadLevel::Concurrency(_) => acc,
        }
    }

    /// Reads percentiles with `estimator` (`[report] percentiles`).
    pub fn percentiles(mut self, estimator: Percentiles) -> Accumulator {
        self.percentiles = estimator;
        self
    }

    /// Marks the cell as open loop, so offered and sent rates are reported.
    pub fn open_loop(mut self) -> Accumulator {
        self.open_loop = true;
        self
    }

    pub fn add(&mut self, r: &RequestRecord) {
        self.total += 1;
        self.retries += u64::from(r.retries);
        self.retried += u64::from(r.retries > 0);
        self.lag.record(r.dispatch_lag_us());
        self.last_scheduled_us = self.last_scheduled_us.max(r.scheduled_us);
        self.last_sent_us = self.last_sent_us.max(r.sent_us.saturating_sub(r.queued_us));
        if let Some(g) = &self.goodput {
            if g.met_by(r) {
                self.good += 1;
            }
        }
        self.first_scheduled_us = Some(
            self.first_scheduled_us
                .map_or(r.scheduled_us, |t| t.min(r.scheduled_us)),
        );
        self.last_end_us = self.last_end_us.max(r.end_us);
        let mut turn = r.turn.map(|t| self.by_turn.entry(t).or_default());
        if let Some(t) = turn.as_mut() {
            t.total += 1;
            if r.ok {
                t.ok += 1;
                t.e2e.record(r.e2e_us());
                if let Some(v) = r.ttft_us() {
                    t.ttft.record(v);
                }
                if let Some(c) = r.client_prompt_tokens {
                    t.client_prompt.add(c as f64);
                }
                if let Some(v) = r.input_tokens {
                    t.server_prompt.add(v as f64);
                }
            }
        }
        if !r.ok {
            let class = r.error_class.map_or("unknown", |c| c.as_str());
            let key = match (class, r.status) {
                ("http_status", Some(code)) => format!("http_status:{code}"),
                _ => class.to_string(),
            };
            if let Some(msg) = &r.error_message {
                self.failure_examples
                    .entry(key.clone())
                    .or_insert_with(|| msg.clone());
            }
            *self.failures.entry(key).or_default() += 1;
            return;
        }
        self.ok += 1;
        let own_turn = match (r.session, r.turn) {
            (Some(s), Some(t)) => self.turn_max_tokens.get(&(s, t)).copied(),
            _ => None,
        };
        let max_tokens = match self.own_max_tokens.len() {
            _ if own_turn.is_some() => own_turn.map(u64::from),
            0 => self.max_tokens,
            n => self.own_max_tokens[(r.index % n as u64) as usize]
                .map(u64::from)
                .or(self.max_tokens),
        };
        let output_tokens = match r.usage_problem(max_tokens) {
            Some(why) => {
                self.untrusted += 1;
                self.untrusted_example.get_or_insert(why);
                r.trusted_output_tokens(max_tokens)
            }
            None => r.output_tokens,
        };
        if let Some(c) = r.client_prompt_tokens {
            self.client_prompt.add(c as f64);
        }
        if let Some(s) = r.input_tokens {
            self.server_prompt.add(s as f64);
        }
        if let (Some(c), Some(s)) = (r.client_prompt_tokens, r.input_tokens) {
            self.prompt_diff.add(s as f64 - c as f64);
        }
        if let Some(c) = r.cached_tokens {
            self.cached.add(c as f64);
        }
        if max_tokens.is_some_and(|m| output_tokens < m) {
            self.short += 1;
        }
        if let Some(t) = r.ttfb_us() {
            self.ttfb.record(t);
        }
        self.input_tokens += r.input_tokens.unwrap_or(0);
        self.output_tokens += output_tokens;
        match r.output_tokens_source {
            TokenSource::Usage => {
                self.from_usage += 1;
                if r.chunks > 0 && r.chunks != r.output_tokens {
                    self.mismatches += 1;
                }
            }
            TokenSource::Chunks => self.from_chunks += 1,
        }
        self.e2e.record(r.e2e_us());
        if let Some(t) = r.ttft_us() {
            self.ttft.record(t);
        }
        if let Some(t) = r.tpot_us() {
            self.tpot.record_f(t);
        }
        for gap in r.itl_us() {
            self.itl.record(gap);
        }
        match r.ttft_text_us() {
            Some(t) => self.ttft_text.record(t),
            None => self.without_text += 1,
        }
        for gap in r.itl_text_us() {
            self.itl_text.record(gap);
        }
        let tokens = r.token_events();
        if r.first_event_us.is_some() && tokens.len() >= super::client_check::BURST_MIN_EVENTS {
            self.burst_checked += 1;
            if r.end_us.saturating_sub(tokens[0]) < super::client_check::BURST_SPAN_US {
                self.burst_responses += 1;
            }
        }
    }

    pub fn finish(&self) -> CellMetrics {
        let duration_s = self
            .first_scheduled_us
            .map_or(0.0, |s| self.last_end_us.saturating_sub(s) as f64 / 1e6);
        let rate = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        let p = self.percentiles;
        CellMetrics {
            percentiles: p,
            requests_total: self.total,
            requests_ok: self.ok,
            requests_failed: self.total - self.ok,
            failures: self.failures.clone(),
            failure_examples: self.failure_examples.clone(),
            duration_s,
            request_per_s: rate(self.ok),
            output_tok_per_s: rate(self.output_tokens),
            total_tok_per_s: rate(self.output_tokens + self.input_tokens),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            client_prompt_tokens_mean: self.client_prompt.get(),
            server_prompt_tokens_mean: self.server_prompt.get(),
            prompt_tokens_diff_mean: self.prompt_diff.get(),
            cached_tokens: (self.cached.n > 0).then_some(self.cached.sum as u64),
            cached_tokens_mean: self.cached.get(),
            output_tokens_source: match (self.from_usage, self.from_chunks) {
                (0, 0) => "none",
                (_, 0) => "usage",
                (0, _) => "chunks",
                _ => "mixed",
            }
            .to_string(),
            token_count_mismatches: self.mismatches,
            short_outputs: self.short,
            usage_untrusted: self.untrusted,
            usage_untrusted_example: self.untrusted_example.clone(),
            retries: self.retries,
            requests_retried: self.retried,
            goodput_req_per_s: self.goodput.map(|_| rate(self.good)),
            ttft_ms: self.ttft.stats_by(p),
            tpot_ms: self.tpot.stats_by(p),
            itl_ms: self.itl.stats_by(p),
            ttft_text_ms: self.ttft_text.stats_by(p),
            itl_text_ms: self.itl_text.stats_by(p),
            requests_without_text: self.without_text,
            burst_checked: self.burst_checked,
            burst_responses: self.burst_responses,
            e2e_ms: self.e2e.stats_by(p),
            ttfb_ms: self.ttfb.stats_by(p),
            dispatch_lag_ms: self.lag.stats_by(p),
            offered_req_per_s: self.span_rate(self.last_scheduled_us),
            sent_req_per_s: self.span_rate(self.last_sent_us),
            by_turn: self
                .by_turn
                .iter()
                .map(|(turn, t)| TurnMetrics {
                    turn: *turn,
                    requests_total: t.total,
                    requests_ok: t.ok,
                    client_prompt_tokens_mean: t.client_prompt.get(),
                    server_prompt_tokens_mean: t.server_prompt.get(),
                    ttft_ms: t.ttft.stats(),
                    e2e_ms: t.e2e.stats(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::record::tests::record;
    use crate::metrics::record::ErrorClass;

    #[test]
    fn throughput_and_percentiles_from_known_instants() {
        let mut acc = Accumulator::default();
        // Ten requests, each scheduled at i*100 ms, first token 20 ms later, then 9 tokens
        // 5 ms apart, ending 1 ms after the last: e2e 66 ms, 10 output tokens.
        for i in 0..10u64 {
            let s = i * 100_000;
            let content: Vec<u64> = (0..10).map(|k| s + 20_000 + k * 5_000).collect();
            acc.add(&record(s, &content, s + 66_000, 10));
        }
        let m = acc.finish();
        assert_eq!((m.requests_ok, m.requests_failed), (10, 0));
        // From 0 to the last end at 966 ms.
        assert!((m.duration_s - 0.966).abs() < 1e-9);
        assert!((m.request_per_s - 10.0 / 0.966).abs() < 1e-9);
        assert!((m.output_tok_per_s - 100.0 / 0.966).abs() < 1e-9);
        assert!((m.total_tok_per_s - 150.0 / 0.966).abs() < 1e-9);
        let ttft = m.ttft_ms.expect("ttft");
        assert!((ttft.p50 - 20.0).abs() < 0.05 && (ttft.mean - 20.0).abs() < 1e-9);
        let tpot = m.tpot_ms.expect("tpot");
        // (66 - 20) / 9 ms
        assert!((tpot.mean - 46.0 / 9.0).abs() < 1e-6, "{tpot:?}");
        let itl = m.itl_ms.expect("itl");
        assert_eq!(itl.count, 90);
        assert!((itl.p99 - 5.0).abs() < 0.01);
        let e2e = m.e2e_ms.expect("e2e");
        assert!((e2e.max - 66.0).abs() < 0.1);
        assert_eq!(m.output_tokens_source, "usage");
    }

    #[test]
    fn turns_are_summarized_apart_and_a_turn_s_own_max_tokens_applies() {
        let mut acc = Accumulator::new(Some(100), None);
        acc.turn_max_tokens.insert((0, 1), 3);
        for (session, turn, ttft) in [(0u64, 0u32, 1_000u64), (1, 0, 3_000), (0, 1, 20_000)] {
            let mut r = record(0, &[ttft, ttft + 100, ttft + 200], ttft + 300, 3);
            r.session = Some(session);
            r.turn = Some(turn);
            r.client_prompt_tokens = Some(10 * (u64::from(turn) + 1));
            acc.add(&r);
        }
        let mut failed = record(0, &[], 50, 0);
        failed.ok = false;
        failed.turn = Some(1);
        acc.add(&failed);
        let m = acc.finish();
        assert_eq!(m.by_turn.len(), 2);
        let (t0, t1) = (&m.by_turn[0], &m.by_turn[1]);
        assert_eq!((t0.turn, t0.requests_total, t0.requests_ok), (0, 2, 2));
        assert_eq!((t1.turn, t1.requests_total, t1.requests_ok), (1, 2, 1));
        // HDR values are within 0.1% (3 significant digits).
        let near = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() <= want * 1e-3);
        assert!(near(t0.ttft_ms.as_ref().map(|s| s.max), 3.0), "{t0:?}");
        assert!(near(t1.ttft_ms.as_ref().map(|s| s.p50), 20.0), "{t1:?}");
        assert_eq!(t1.client_prompt_tokens_mean, Some(20.0));
        // Turn (0, 1) asked for 3 tokens and got them; the others asked for 100.
        assert_eq!(m.short_outputs, 2);
        // Without turns there is no per-turn table.
        let mut plain = Accumulator::new(Some(3), None);
        plain.add(&record(0, &[10], 20, 1));
        assert!(plain.finish().by_turn.is_empty());
    }

    #[test]
    fn failures_are_counted_by_class_and_excluded_from_latency() {
        let mut acc = Accumulator::default();
        acc.add(&record(0, &[10_000], 20_000, 1));
        let mut bad = record(0, &[], 5_000, 0);
        bad.ok = false;
        bad.error_class = Some(ErrorClass::HttpStatus);
        bad.status = Some(503);
        acc.add(&bad);
        let m = acc.finish();
        assert_eq!(m.requests_failed, 1);
        assert_eq!(m.failures.get("http_status:503"), Some(&1));
        assert_eq!(m.e2e_ms.expect("e2e").count, 1);
    }

    #[test]
    fn impossible_usage_is_counted_apart_and_never_becomes_throughput() {
        let mut acc = Accumulator::new(Some(4), None);
        // Four chunks each, but usage claims 400 tokens for one of the two.
        acc.add(&record(0, &[10, 20, 30, 40], 1_000_000, 4));
        acc.add(&record(0, &[10, 20, 30, 40], 1_000_000, 400));
        let m = acc.finish();
        assert_eq!(m.usage_untrusted, 1);
        assert!(m
            .usage_untrusted_example
            .as_deref()
            .is_some_and(|w| w.contains("400 completion tokens")));
        // 4 + 4 tokens over 1 s, not 404.
        assert_eq!(m.output_tokens, 8);
        assert!((m.output_tok_per_s - 8.0).abs() < 1e-9);
    }

    #[test]
    fn a_request_without_visible_text_is_counted_and_timed_to_its_first_token() {
        let mut acc = Accumulator::default();
        let mut text = record(0, &[30_000, 40_000], 50_000, 3);
        text.token_us = vec![10_000, 30_000, 40_000];
        acc.add(&text);
        let mut empty = record(0, &[], 50_000, 2);
        empty.token_us = vec![20_000, 40_000];
        acc.add(&empty);
        let m = acc.finish();
        assert_eq!(m.requests_ok, 2);
        assert_eq!(m.requests_without_text, 1);
        let (ttft, text) = (m.ttft_ms.expect("ttft"), m.ttft_text_ms.expect("text"));
        assert_eq!((ttft.count, text.count), (2, 1));
        assert!((ttft.mean - 15.0).abs() < 1e-9 && (text.mean - 30.0).abs() < 1e-9);
        // Token gaps: 20, 10 and 20 ms; text gaps: 10 ms.
        assert_eq!(m.itl_ms.expect("itl").count, 3);
        assert_eq!(m.itl_text_ms.expect("itl_text").count, 1);
    }

    #[test]
    fn interpolated_percentiles_are_numpy_s_over_the_histogram() {
        // TTFTs of 1..=10 ms: nearest rank p90 is 9 ms, numpy's 9.1 ms; the median 5 vs 5.5.
        let cell = |p: Percentiles| {
            let mut acc = Accumulator::default().percentiles(p);
            for i in 1..=10u64 {
                acc.add(&record(0, &[i * 1000], 20_000, 1));
            }
            acc.finish()
        };
        // Within the histogram's 3 significant digits (a bucket's highest equivalent value).
        let near = |a: f64, b: f64| (a - b).abs() <= b * 1e-3 + 1e-9;
        let t = cell(Percentiles::NearestRank).ttft_ms.expect("ttft");
        assert!(
            near(t.p50, 5.0) && near(t.p90, 9.0) && near(t.p99, 10.0),
            "{t:?}"
        );
        let interp = cell(Percentiles::Interpolated);
        assert_eq!(interp.percentiles, Percentiles::Interpolated);
        let t = interp.ttft_ms.expect("ttft");
        assert!(
            near(t.p50, 5.5) && near(t.p90, 9.1) && near(t.p99, 9.91),
            "{t:?}"
        );
        assert_eq!((t.mean, t.count), (5.5, 10));
    }

    #[test]
    fn usage_and_chunk_disagreement_is_flagged() {
        let mut acc = Accumulator::default();
        // Two chunks but usage says 4 tokens: a server packing tokens into chunks.
        acc.add(&record(0, &[10, 20], 30, 4));
        assert_eq!(acc.finish().token_count_mismatches, 1);
    }
}
