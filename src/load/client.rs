//! One request to an OpenAI-compatible endpoint, streamed or not, turned into a
//! `RequestRecord`: every instant taken where it happens, every failure classified.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use super::sse;
use crate::metrics::record::{ErrorClass, RequestRecord, TokenSource};

/// What a request needs besides its body.
#[derive(Debug, Clone)]
pub struct RequestTarget {
    /// Full URL of the API endpoint, e.g. `http://127.0.0.1:8000/v1/chat/completions`.
    pub url: String,
    pub stream: bool,
    pub timeout: Duration,
}

/// Builds the HTTP client every request of a run shares: connections are reused, no proxy
/// (benchmark traffic must go straight to the engine), no overall timeout (each request has
/// its own).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build()
}

/// Microseconds from `origin` to now.
pub fn since(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

/// Sends one request and records it. `origin` is the cell's clock origin; `scheduled_us` is
/// when the request was due (latency is measured from there). If `abort` completes first, the
/// request ends as `cancelled`.
pub async fn send(
    client: &reqwest::Client,
    target: &RequestTarget,
    body: Bytes,
    origin: Instant,
    scheduled_us: u64,
    abort: impl std::future::Future<Output = ()>,
) -> RequestRecord {
    let mut rec = RequestRecord {
        index: 0,
        worker: 0,
        scheduled_us,
        sent_us: since(origin),
        head_us: None,
        first_byte_us: None,
        first_event_us: None,
        content_us: Vec::new(),
        end_us: 0,
        ok: false,
        status: None,
        error_class: None,
        error_message: None,
        finish_reason: None,
        input_tokens: None,
        output_tokens: 0,
        output_tokens_source: TokenSource::Chunks,
        chunks: 0,
    };
    let result = tokio::select! {
        r = tokio::time::timeout(target.timeout, exchange(client, target, body, origin, &mut rec)) => match r {
            Ok(r) => r,
            Err(_) => Err((
                ErrorClass::Timeout,
                format!("no complete response within {}", humantime::format_duration(target.timeout)),
            )),
        },
        () = abort => Err((ErrorClass::Cancelled, "the run was interrupted while this request was in flight".to_string())),
    };
    rec.end_us = since(origin);
    match result {
        Ok(()) => rec.ok = true,
        Err((class, message)) => {
            rec.ok = false;
            rec.error_class = Some(class);
            rec.error_message = Some(message);
        }
    }
    rec
}

type Failure = (ErrorClass, String);

async fn exchange(
    client: &reqwest::Client,
    target: &RequestTarget,
    body: Bytes,
    origin: Instant,
    rec: &mut RequestRecord,
) -> Result<(), Failure> {
    let resp = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            let class = if e.is_connect() {
                ErrorClass::Connect
            } else {
                ErrorClass::Io
            };
            (class, error_chain(&e))
        })?;
    rec.head_us = Some(since(origin));
    let status = resp.status();
    rec.status = Some(status.as_u16());
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let message = server_message(&text).unwrap_or_else(|| truncate(&text, 500));
        return Err((ErrorClass::HttpStatus, format!("HTTP {status}: {message}")));
    }
    if target.stream {
        read_stream(resp, origin, rec).await
    } else {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| (ErrorClass::Io, error_chain(&e)))?;
        let now = since(origin);
        rec.first_byte_us = Some(now);
        read_whole(&bytes, now, rec)
    }
}

async fn read_stream(
    resp: reqwest::Response,
    origin: Instant,
    rec: &mut RequestRecord,
) -> Result<(), Failure> {
    let mut parser = sse::Parser::new();
    let mut body = resp.bytes_stream();
    let mut state = StreamState::default();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| (ErrorClass::Io, error_chain(&e)))?;
        let now = since(origin);
        rec.first_byte_us.get_or_insert(now);
        let mut failure = None;
        parser.feed(&chunk, |ev| {
            if failure.is_none() {
                rec.first_event_us.get_or_insert(now);
                if let Err(f) = state.on_event(&ev, now, rec) {
                    failure = Some(f);
                }
            }
        });
        if let Some(f) = failure {
            return Err(f);
        }
        if state.done {
            break;
        }
    }
    if state.usage.is_none() {
        rec.output_tokens = rec.chunks;
        rec.output_tokens_source = TokenSource::Chunks;
    }
    if state.done || rec.finish_reason.is_some() {
        Ok(())
    } else {
        Err((
            ErrorClass::Truncated,
            format!(
                "the stream ended after {} content chunks without a finish reason or [DONE]",
                rec.chunks
            ),
        ))
    }
}

#[derive(Default)]
struct StreamState {
    done: bool,
    usage: Option<Usage>,
}

impl StreamState {
    fn on_event(
        &mut self,
        ev: &sse::Event,
        now: u64,
        rec: &mut RequestRecord,
    ) -> Result<(), Failure> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if ev.event == "error" {
            let msg = server_message(data).unwrap_or_else(|| truncate(data, 500));
            return Err((ErrorClass::ServerError, msg));
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            (
                ErrorClass::Decode,
                format!(
                    "an SSE event is not a completion chunk ({e}): {}",
                    truncate(data, 200)
                ),
            )
        })?;
        if chunk.error.is_some() || chunk.object.as_deref() == Some("error") {
            let msg = server_message(data).unwrap_or_else(|| truncate(data, 500));
            return Err((ErrorClass::ServerError, msg));
        }
        let mut has_output = false;
        for choice in chunk.choices.iter().flatten() {
            if let Some(d) = &choice.delta {
                has_output |= nonempty(&d.content)
                    || nonempty(&d.reasoning_content)
                    || nonempty(&d.reasoning)
                    || d.tool_calls.as_ref().is_some_and(|t| !t.is_null());
            }
            has_output |= nonempty(&choice.text);
            if let Some(f) = &choice.finish_reason {
                rec.finish_reason = Some(f.to_string());
            }
        }
        if has_output {
            rec.chunks += 1;
            rec.content_us.push(now);
        }
        if let Some(u) = chunk.usage {
            rec.input_tokens = u.prompt_tokens;
            if let Some(c) = u.completion_tokens {
                rec.output_tokens = c;
                rec.output_tokens_source = TokenSource::Usage;
            }
            self.usage = Some(u);
        }
        Ok(())
    }
}

fn read_whole(bytes: &[u8], now: u64, rec: &mut RequestRecord) -> Result<(), Failure> {
    let resp: Whole = serde_json::from_slice(bytes).map_err(|e| {
        (
            ErrorClass::Decode,
            format!(
                "the response is not a completion ({e}): {}",
                truncate(&String::from_utf8_lossy(bytes), 200)
            ),
        )
    })?;
    if resp.error.is_some() || resp.object.as_deref() == Some("error") {
        let text = String::from_utf8_lossy(bytes);
        return Err((
            ErrorClass::ServerError,
            server_message(&text).unwrap_or_else(|| truncate(&text, 500)),
        ));
    }
    let mut has_output = false;
    for c in resp.choices.iter().flatten() {
        if let Some(m) = &c.message {
            has_output |= nonempty(&m.content)
                || nonempty(&m.reasoning_content)
                || m.tool_calls.as_ref().is_some_and(|t| !t.is_null());
        }
        has_output |= nonempty(&c.text);
        if let Some(f) = &c.finish_reason {
            rec.finish_reason = Some(f.to_string());
        }
    }
    if has_output {
        rec.content_us.push(now);
    }
    match resp
        .usage
        .and_then(|u| u.completion_tokens.map(|c| (u.prompt_tokens, c)))
    {
        Some((input, output)) => {
            rec.input_tokens = input;
            rec.output_tokens = output;
            rec.output_tokens_source = TokenSource::Usage;
        }
        None => {
            rec.output_tokens = u64::from(has_output);
            rec.output_tokens_source = TokenSource::Chunks;
        }
    }
    Ok(())
}

fn nonempty(s: &Option<Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<StreamChoice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct StreamChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Whole<'a> {
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<WholeChoice<'a>>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct WholeChoice<'a> {
    #[serde(borrow, default)]
    message: Option<WholeMessage<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WholeMessage<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde_json::Value>,
}

/// The human-readable message of an error body, in the shapes servers use:
/// `{"error": {"message": ...}}` (OpenAI, vLLM), `{"error": "..."}` (TGI, llama.cpp),
/// `{"message": ...}` (vLLM's older `object: "error"`), `{"detail": ...}` (FastAPI).
pub fn server_message(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let msg = v
        .pointer("/error/message")
        .or_else(|| v.get("error").filter(|e| e.is_string()))
        .or_else(|| v.get("message"))
        .or_else(|| v.get("detail"))?;
    Some(match msg {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// An error and its causes on one line: reqwest's top-level message alone rarely says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> RequestRecord {
        RequestRecord {
            index: 0,
            worker: 0,
            scheduled_us: 0,
            sent_us: 0,
            head_us: None,
            first_byte_us: None,
            first_event_us: None,
            content_us: vec![],
            end_us: 0,
            ok: false,
            status: None,
            error_class: None,
            error_message: None,
            finish_reason: None,
            input_tokens: None,
            output_tokens: 0,
            output_tokens_source: TokenSource::Chunks,
            chunks: 0,
        }
    }

    fn event(data: &str) -> sse::Event {
        sse::Event {
            event: String::new(),
            data: data.into(),
        }
    }

    #[test]
    fn role_only_chunk_is_not_a_token_and_usage_wins() {
        let mut r = rec();
        let mut s = StreamState::default();
        let evs = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}"#,
        ];
        for (i, e) in evs.iter().enumerate() {
            s.on_event(&event(e), i as u64 * 10, &mut r)
                .expect("valid chunk");
        }
        s.on_event(&event("[DONE]"), 60, &mut r).expect("done");
        assert_eq!(r.content_us, [10, 20, 30]);
        assert_eq!(r.chunks, 3);
        assert_eq!((r.input_tokens, r.output_tokens), (Some(7), 4));
        assert_eq!(r.output_tokens_source, TokenSource::Usage);
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        assert!(s.done);
    }

    #[test]
    fn error_objects_in_a_stream_fail_with_the_server_message() {
        for body in [
            r#"{"error":{"message":"out of KV cache","type":"InternalServerError","code":500}}"#,
            r#"{"object":"error","message":"out of KV cache","type":"x","code":500}"#,
            r#"{"error":"out of KV cache","error_type":"generation"}"#,
        ] {
            let mut r = rec();
            let err = StreamState::default()
                .on_event(&event(body), 0, &mut r)
                .expect_err("error payload");
            assert_eq!(
                err,
                (ErrorClass::ServerError, "out of KV cache".to_string()),
                "{body}"
            );
        }
    }

    #[test]
    fn non_streamed_completion_is_read_with_usage() {
        let mut r = rec();
        let body = br#"{"choices":[{"index":0,"text":"abc","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":9}}"#;
        read_whole(body, 42, &mut r).expect("valid");
        assert_eq!(r.content_us, [42]);
        assert_eq!((r.input_tokens, r.output_tokens), (Some(3), 9));
    }
}
