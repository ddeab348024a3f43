//! `runner probe URL`: one request through exactly the client code `runner exec` uses, fully
//! explained. Users reach for it to check an endpoint before a long run.

use std::time::Duration;

use serde::Serialize;

use crate::load::client::{self, RequestTarget, RetryPolicy, Timeouts};
use crate::load::workload::BodySpec;
use crate::metrics::record::{RequestRecord, TokenSource};
use crate::plan::{Api, Prompt};

/// What to send.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub url: String,
    pub api: Api,
    pub model: Option<String>,
    pub prompt: String,
    pub max_tokens: u32,
    pub stream: bool,
    pub timeout: Duration,
    /// The environment variable holding an API key to send.
    pub api_key_env: Option<String>,
}

/// The probe's result, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub ok: bool,
    pub url: String,
    pub model: String,
    pub status: Option<u16>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub output_text: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: u64,
    pub output_tokens_source: String,
    pub chunks: u64,
    pub finish_reason: Option<String>,
    pub ttfb_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: f64,
}

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| v as f64 / 1000.0)
}

/// The first model an endpoint lists at `/v1/models`.
async fn first_model(client: &reqwest::Client, base: &str) -> Result<String, String> {
    let url = format!("{base}/v1/models");
    let v: serde_json::Value = client
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("GET {url} failed: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url} did not answer a model list: {e}"))?;
    v.pointer("/data/0/id")
        .and_then(|m| m.as_str())
        .map(String::from)
        .ok_or_else(|| format!("GET {url} lists no model; pass --model"))
}

/// Sends the probe request. An error before the request (no model found) is `Err`.
pub async fn run(spec: &ProbeSpec) -> Result<ProbeReport, String> {
    let base = spec.url.trim_end_matches('/').to_string();
    let client = client::http_client(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let model = match &spec.model {
        Some(m) => m.clone(),
        None => first_model(&client, &base).await?,
    };
    let body = BodySpec {
        api: spec.api,
        model: &model,
        max_tokens: spec.max_tokens,
        min_tokens: None,
        temperature: 0.0,
        stream: spec.stream,
        ignore_eos: false,
        extra: None,
    }
    .render(&Prompt::Text(spec.prompt.clone()));
    let target = RequestTarget {
        url: format!("{base}{}", spec.api.path()),
        stream: spec.stream,
        timeouts: Timeouts {
            total: spec.timeout,
            first_token: spec.timeout,
            idle: spec.timeout,
            ..Timeouts::default()
        },
        keep_text: true,
        retry: RetryPolicy::default(),
        api_key: spec
            .api_key_env
            .as_deref()
            .and_then(|k| std::env::var(k).ok()),
        expect_tokens: spec.max_tokens,
        allow_empty_output: false,
    };
    let out = client::send_alone(&target, body.to_string().into(), std::future::pending()).await;
    Ok(report(&out.record, out.text, target.url, model))
}

fn report(r: &RequestRecord, text: Option<String>, url: String, model: String) -> ProbeReport {
    ProbeReport {
        ok: r.ok,
        url,
        model,
        status: r.status,
        error_class: r.error_class.map(|c| c.as_str().to_string()),
        error_message: r.error_message.clone(),
        output_text: text,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        output_tokens_source: match r.output_tokens_source {
            TokenSource::Usage => "usage",
            TokenSource::Chunks => "chunks",
        }
        .to_string(),
        chunks: r.chunks,
        finish_reason: r.finish_reason.clone(),
        ttfb_ms: ms(r.ttfb_us()),
        ttft_ms: ms(r.ttft_us()),
        tpot_ms: r.tpot_us().map(|v| v / 1000.0),
        e2e_ms: r.e2e_us() as f64 / 1000.0,
    }
}

/// The human-readable form.
pub fn render(p: &ProbeReport) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let mut out = String::new();
    out.push_str(&format!(
        "{} {} (model {})\n",
        if p.ok { "OK" } else { "FAILED" },
        p.url,
        p.model
    ));
    if let Some(c) = &p.error_class {
        out.push_str(&format!(
            "  error:         {c}: {}\n",
            p.error_message.as_deref().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "  status:        {}\n",
        p.status.map_or("-".into(), |s| s.to_string())
    ));
    out.push_str(&format!(
        "  output tokens: {} (from {}), {} content chunks, finish reason {}\n",
        p.output_tokens,
        p.output_tokens_source,
        p.chunks,
        p.finish_reason.as_deref().unwrap_or("-")
    ));
    if p.output_tokens_source == "usage" && p.chunks > 0 && p.chunks != p.output_tokens {
        out.push_str("  note:          usage and chunk counts differ: the server packs several tokens per chunk\n");
    }
    out.push_str(&format!(
        "  input tokens:  {}\n",
        p.input_tokens
            .map_or("- (no usage)".into(), |t| t.to_string())
    ));
    out.push_str(&format!(
        "  TTFB {}  TTFT {}  TPOT {}  end-to-end {:.1} ms\n",
        opt(p.ttfb_ms),
        opt(p.ttft_ms),
        opt(p.tpot_ms),
        p.e2e_ms
    ));
    if let Some(t) = &p.output_text {
        out.push_str(&format!("  output text:   {t:?}\n"));
    }
    out
}
