//! Engine telemetry: the engine's own Prometheus `/metrics` (vLLM, SGLang, TGI, the HF baseline
//! server, the built-in engine), scraped while each cell runs. Every scrape is appended to
//! `telemetry.jsonl`; each cell's summary keeps the mean and peak of every gauge and the increase
//! of every counter over the cell.
//!
//! What is kept: gauges and counters (histograms and summaries are the engine's own latency views,
//! which the runner measures itself), summed over label sets, without the interpreter's `python_*`
//! and `process_*` series or `*_created` timestamps.
//!
//! The text format is parsed here rather than with the `prometheus-parse` crate: its metric-name
//! pattern (`\w+`) rejects the colons that vLLM and SGLang put in every name (`vllm:...`), so it
//! drops exactly the series wanted. Only `# TYPE` lines and samples are read.

use std::collections::BTreeMap;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What one scrape kept, by metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub gauges: BTreeMap<String, f64>,
    pub counters: BTreeMap<String, f64>,
}

/// Parses Prometheus text; `None` when it holds no gauge or counter (not a metrics page).
pub fn parse(text: &str) -> Option<Scrape> {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = Scrape::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                types.insert(name, kind);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = sample(line) else {
            continue;
        };
        if name.starts_with("python_") || name.starts_with("process_") || name.ends_with("_created")
        {
            continue;
        }
        let map = match types.get(name).copied() {
            Some("counter") => &mut out.counters,
            Some("gauge") => &mut out.gauges,
            // Untyped series, but not the parts of a histogram or summary.
            None if !(name.ends_with("_sum")
                || name.ends_with("_count")
                || name.ends_with("_bucket")) =>
            {
                &mut out.gauges
            }
            _ => continue,
        };
        if value.is_finite() {
            *map.entry(name.to_string()).or_insert(0.0) += value;
        }
    }
    (!out.gauges.is_empty() || !out.counters.is_empty()).then_some(out)
}

/// `name{labels} value [timestamp]` -> (name, value). Label values may hold `}` or spaces
/// inside their quotes.
fn sample(line: &str) -> Option<(&str, f64)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let valid = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if name.is_empty() || !valid {
        return None;
    }
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let mut quoted = false;
        let mut escaped = false;
        let mut close = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[close? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let v = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, v))
}

/// One gauge over a cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaugeStat {
    pub mean: f64,
    pub peak: f64,
}

/// An engine's own metrics over one cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineTelemetry {
    /// Successful scrapes in the cell.
    pub scrapes: u64,
    pub gauges: BTreeMap<String, GaugeStat>,
    /// Increase from the cell's first scrape to its last.
    pub counters: BTreeMap<String, f64>,
}

impl EngineTelemetry {
    /// The gauge whose name ends with one of `suffixes` (engines name the same idea
    /// differently: vLLM `num_requests_running`, SGLang `num_running_reqs`).
    pub fn gauge(&self, suffixes: &[&str]) -> Option<GaugeStat> {
        self.gauges
            .iter()
            .find(|(k, _)| suffixes.iter().any(|s| k.ends_with(s)))
            .map(|(_, v)| *v)
    }

    /// The engine's prefix-cache hit rate over the cell: cached tokens over queried prompt tokens
    /// (vLLM's `prefix_cache_hits_total` / `prefix_cache_queries_total`, both counted in
    /// tokens, or the built-in engine's `sim:` ones with `--prefix-cache`); `None` where the
    /// engine exposes neither or queried nothing.
    pub fn prefix_cache_hit_rate(&self) -> Option<f64> {
        // Exact names: vLLM also has `external_prefix_cache_*` (a KV connector's cache).
        let (hits, queries) = ["vllm", "sim"].iter().find_map(|e| {
            let hits = self.counters.get(&format!("{e}:prefix_cache_hits_total"))?;
            let queries = self
                .counters
                .get(&format!("{e}:prefix_cache_queries_total"))?;
            Some((*hits, *queries))
        })?;
        (queries > 0.0).then(|| hits / queries)
    }

    /// The counter whose name ends with one of `suffixes`.
    pub fn counter(&self, suffixes: &[&str]) -> Option<f64> {
        self.counters
            .iter()
            .find(|(k, _)| suffixes.iter().any(|s| k.ends_with(s)))
            .map(|(_, v)| *v)
    }
}

/// Folds the scrapes of one cell.
#[derive(Debug, Default)]
pub struct Folder {
    n: u64,
    sums: BTreeMap<String, (f64, f64)>,
    first: BTreeMap<String, f64>,
    last: BTreeMap<String, f64>,
}

impl Folder {
    pub fn add(&mut self, s: &Scrape) {
        self.n += 1;
        for (k, &v) in &s.gauges {
            let e = self.sums.entry(k.clone()).or_insert((0.0, f64::MIN));
            e.0 += v;
            e.1 = e.1.max(v);
        }
        for (k, &v) in &s.counters {
            self.first.entry(k.clone()).or_insert(v);
            self.last.insert(k.clone(), v);
        }
    }

    pub fn finish(self) -> Option<EngineTelemetry> {
        (self.n > 0).then(|| EngineTelemetry {
            scrapes: self.n,
            gauges: self
                .sums
                .into_iter()
                .map(|(k, (sum, peak))| {
                    (
                        k,
                        GaugeStat {
                            mean: sum / self.n as f64,
                            peak,
                        },
                    )
                })
                .collect(),
            counters: self
                .last
                .into_iter()
                .map(|(k, v)| {
                    let d = v - self.first.get(&k).copied().unwrap_or(v);
                    (k, d.max(0.0))
                })
                .collect(),
        })
    }
}

/// A line of `telemetry.jsonl`.
#[derive(Serialize)]
struct Line<'a> {
    t_s: f64,
    label: &'a str,
    gauges: &'a BTreeMap<String, f64>,
    counters: &'a BTreeMap<String, f64>,
}

/// Where scrapes are appended (the bundle's `telemetry.jsonl` journal), shared by the cells of
/// a run.
pub type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Scrapes one URL every `interval` until told to stop; one scrape at the start and one at
/// the stop bound the cell. Without an interval (`metrics_interval = "off"`) those two are the
/// only ones. Returns the cell's telemetry, `None` when no scrape succeeded.
pub async fn scrape_cell(
    client: reqwest::Client,
    url: String,
    interval: Option<Duration>,
    label: String,
    journal: Option<Sink>,
    origin: Instant,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<EngineTelemetry> {
    let mut folder = Folder::default();
    // Without an interval, a tick far beyond any cell: the first (immediate) tick is the
    // start's scrape, the stop is the end's.
    let period = interval.unwrap_or(Duration::from_secs(24 * 3600));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        if let Some(s) = scrape_once(&client, &url).await {
            if let Some(j) = &journal {
                if let Ok(mut w) = j.lock() {
                    let line = Line {
                        t_s: origin.elapsed().as_secs_f64(),
                        label: &label,
                        gauges: &s.gauges,
                        counters: &s.counters,
                    };
                    if serde_json::to_writer(&mut *w, &line).is_ok() {
                        let _ = w.write_all(b"\n");
                    }
                }
            }
            folder.add(&s);
        }
        if stopping {
            break;
        }
    }
    if let Some(j) = &journal {
        if let Ok(mut w) = j.lock() {
            let _ = w.flush();
        }
    }
    folder.finish()
}

/// One GET of the metrics page, bounded to a second; `None` on any failure.
pub async fn scrape_once(client: &reqwest::Client, url: &str) -> Option<Scrape> {
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    parse(&resp.text().await.ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = include_str!("../../tests/fixtures/vllm_metrics.txt");

    #[test]
    fn keeps_vllm_gauges_and_counters_summed_over_labels() {
        let s = parse(VLLM).expect("a metrics page");
        assert!(s.gauges.contains_key("vllm:num_requests_running"));
        assert!(s.gauges.contains_key("vllm:kv_cache_usage_perc"));
        assert!(s.counters.contains_key("vllm:num_preemptions_total"));
        assert!(s.gauges.keys().all(|k| !k.starts_with("python_")));
        assert!(s.gauges.keys().all(|k| !k.ends_with("_created")));
        assert!(!s
            .gauges
            .contains_key("vllm:e2e_request_latency_seconds_sum"));
    }

    #[test]
    fn sums_series_of_one_name() {
        let text = "# TYPE q gauge\nq{engine=\"0\"} 2\nq{engine=\"1\"} 3\n# TYPE t counter\nt 7\n";
        let s = parse(text).expect("parsed");
        assert_eq!(s.gauges["q"], 5.0);
        assert_eq!(s.counters["t"], 7.0);
        assert_eq!(parse("<html>not metrics</html>"), None);
        let tricky = "# TYPE g gauge\ng{path=\"/a}b c\",x=\"q\\\"}\"} 4 1700000000\n";
        assert_eq!(parse(tricky).expect("parsed").gauges["g"], 4.0);
    }

    #[test]
    fn the_prefix_cache_hit_rate_is_vllm_s_hits_over_queries_over_the_cell() {
        let page = |hits: f64, queries: f64| {
            let text = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/vllm_metrics.txt"
            ))
            .expect("the vLLM fixture")
            .replace(
                "vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"tiny\"} 0.0",
                &format!("vllm:prefix_cache_hits_total{{engine=\"0\",model_name=\"tiny\"}} {hits}"),
            )
            .replace(
                "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"tiny\"} 24.0",
                &format!(
                    "vllm:prefix_cache_queries_total{{engine=\"0\",model_name=\"tiny\"}} {queries}"
                ),
            );
            parse(&text).expect("a metrics page")
        };
        let mut f = Folder::default();
        f.add(&page(0.0, 24.0));
        f.add(&page(30.0, 124.0));
        let t = f.finish().expect("telemetry");
        // 30 of the 100 prompt tokens queried during the cell were cached.
        assert_eq!(t.prefix_cache_hit_rate(), Some(0.3));
        let mut f = Folder::default();
        f.add(&page(0.0, 24.0));
        f.add(&page(0.0, 24.0));
        assert_eq!(
            f.finish().expect("t").prefix_cache_hit_rate(),
            None,
            "nothing queried"
        );
        assert_eq!(EngineTelemetry::default().prefix_cache_hit_rate(), None);
    }

    #[test]
    fn folds_mean_peak_and_counter_increase() {
        let mut f = Folder::default();
        for (g, c) in [(1.0, 10.0), (5.0, 12.0), (3.0, 19.0)] {
            f.add(&Scrape {
                gauges: [("running".to_string(), g)].into(),
                counters: [("tokens_total".to_string(), c)].into(),
            });
        }
        let t = f.finish().expect("three scrapes");
        assert_eq!(t.scrapes, 3);
        assert_eq!(
            t.gauge(&["running"]),
            Some(GaugeStat {
                mean: 3.0,
                peak: 5.0
            })
        );
        assert_eq!(t.counter(&["tokens_total"]), Some(9.0));
        assert_eq!(Folder::default().finish(), None);
    }
}
