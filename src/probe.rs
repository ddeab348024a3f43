//! `runner probe URL`: one request through exactly the client code `runner exec` uses, fully
//! explained. Users reach for it to check an endpoint before a long run.

use std::time::Duration;

use serde::Serialize;

use crate::load::body::BodySpec;
use crate::load::client::{self, RequestTarget, RetryPolicy, Timeouts};
use crate::metrics::record::{RequestRecord, TokenSource};
use crate::plan::model::{Api, Prompt};

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
    /// To the first token event (the default TTFT, docs/metrics.md).
    pub ttft_ms: Option<f64>,
    /// To the first visible text.
    pub ttft_text_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: f64,
    /// What the probe changed in the URL given (an API path stripped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
        .map_err(|e| format!("GET {url} failed: {}", crate::error::error_chain(&e)))?
        .json()
        .await
        .map_err(|e| format!("GET {url} did not answer a model list: {e}"))?;
    v.pointer("/data/0/id")
        .and_then(|m| m.as_str())
        .map(String::from)
        .ok_or_else(|| format!("GET {url} lists no model; pass --model"))
}

/// API paths a user may paste with the URL; the probe takes the base URL and adds `--api`'s.
const API_SUFFIXES: [&str; 4] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1",
];

/// The base URL to probe, from what the user typed, and a note when an API path pasted with
/// it was stripped. Anything but an `http://` URL is refused with the fix.
pub fn base_url(input: &str) -> Result<(String, Option<String>), String> {
    let parsed = url::Url::parse(input);
    match &parsed {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some() => {}
        Ok(u) if u.scheme() == "https" => {
            return Err(format!(
                "`{input}`: runner speaks plain HTTP only (no TLS); probe the engine's http:// port"
            ))
        }
        _ => {
            return Err(format!(
                "`{input}` is not an http:// URL; write the engine's base URL, e.g. http://127.0.0.1:8000"
            ))
        }
    }
    let trimmed = input.trim_end_matches('/');
    for suffix in API_SUFFIXES {
        if let Some(base) = trimmed.strip_suffix(suffix) {
            let note = format!(
                "`{input}` ends with the API path `{suffix}`: probing the base URL {base} (the probe adds the path `--api` names)"
            );
            return Ok((base.to_string(), Some(note)));
        }
    }
    Ok((trimmed.to_string(), None))
}

/// Fails at once, saying so, when nothing listens at the URL's host and port.
async fn listening(base: &str, timeout: Duration) -> Result<(), String> {
    let Ok(u) = url::Url::parse(base) else {
        return Ok(());
    };
    let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else {
        return Ok(());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!(
            "connection refused: nothing listens at {host}:{port}; start the engine, or check the host and port"
        )),
        // Other failures are the request's to report, with its classification.
        _ => Ok(()),
    }
}

/// Sends the probe request. An error before the request (not an http:// URL, nothing
/// listening, no model found) is `Err`.
pub async fn run(spec: &ProbeSpec) -> Result<ProbeReport, String> {
    let (base, note) = base_url(&spec.url)?;
    listening(&base, spec.timeout.min(Duration::from_secs(10))).await?;
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
    let mut r = report(&out.record, out.text, target.url, model);
    r.note = note;
    Ok(r)
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
        ttft_text_ms: ms(r.ttft_text_us()),
        tpot_ms: r.tpot_us().map(|v| v / 1000.0),
        e2e_ms: r.e2e_us() as f64 / 1000.0,
        note: None,
    }
}

/// The human-readable form.
pub fn render(p: &ProbeReport) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let mut out = String::new();
    if let Some(n) = &p.note {
        out.push_str(&format!("note: {n}\n"));
    }
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
    if p.ttft_text_ms != p.ttft_ms {
        out.push_str(&format!(
            "  first text:    {} (TTFT counts the first token event, empty text included)\n",
            opt(p.ttft_text_ms)
        ));
    }
    if let Some(t) = &p.output_text {
        out.push_str(&format!("  output text:   {t:?}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_pasted_api_paths_stripped() {
        assert_eq!(
            base_url("http://127.0.0.1:8000/").expect("ok"),
            ("http://127.0.0.1:8000".to_string(), None)
        );
        let (base, note) = base_url("http://h:8000/v1/chat/completions").expect("ok");
        assert_eq!(base, "http://h:8000");
        assert!(note.expect("note").contains("`/v1/chat/completions`"));
        for bad in ["localhost:8000", "127.0.0.1:8000", "ftp://h/", "nonsense"] {
            let e = base_url(bad).expect_err(bad);
            assert!(e.contains("is not an http:// URL"), "{e}");
        }
        assert!(base_url("https://h")
            .expect_err("tls")
            .contains("plain HTTP only"));
    }
}
