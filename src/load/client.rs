//! One request to an OpenAI-compatible endpoint, streamed or not, turned into a
//! `RequestRecord`: every instant taken where it happens, every failure classified.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

pub use super::conn::Failure;
use super::conn::{self, Endpoint};
use super::{chunk, sse};
use crate::metrics::record::{ErrorClass, RequestRecord, TokenSource};
use hyper::body::Incoming;

/// Per-phase limits of one request. Nothing waits forever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// To establish the TCP connection (set on the shared client).
    pub connect: Duration,
    /// From sending to the first generated output (headers included).
    pub first_token: Duration,
    /// Longest silence between two reads of the response body.
    pub idle: Duration,
    /// The whole request.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        use crate::plan::defaults;
        // The plan's defaults: a request the plan does not limit is limited as a plan's is.
        Timeouts {
            connect: defaults::CONNECT_TIMEOUT,
            first_token: defaults::REQUEST_TIMEOUT,
            idle: defaults::IDLE_TIMEOUT,
            total: defaults::REQUEST_TIMEOUT,
        }
    }
}

/// Whether and how 429 and 503 answers are retried.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryPolicy {
    /// Most retries of one request; 0 records the 429/503 as a failure.
    pub max: u32,
    /// The longest wait before a retry, whatever Retry-After asks.
    pub max_wait: Duration,
}

/// The wait a 429/503 answer asks for: `retry-after-ms` (milliseconds), or `Retry-After` as
/// seconds or an HTTP date.
pub fn retry_after(headers: &::http::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let v = headers
        .get(::http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.max(0.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// What a request needs besides its body.
#[derive(Debug, Clone)]
pub struct RequestTarget {
    /// Full URL of the API endpoint, e.g. `http://127.0.0.1:8000/v1/chat/completions`.
    pub url: String,
    pub stream: bool,
    pub timeouts: Timeouts,
    /// Keep the generated text (for `runner probe`); a load run does not.
    pub keep_text: bool,
    pub retry: RetryPolicy,
    /// Sent as `Authorization: Bearer ...` when set.
    pub api_key: Option<String>,
    /// How many content events to expect (the request's `max_tokens`), so the record's
    /// instants are allocated once rather than grown; 0 when unknown.
    pub expect_tokens: u32,
    /// A 2xx response that generated nothing counts as a success (`allow_empty_output`);
    /// otherwise it fails as `empty_output`.
    pub allow_empty_output: bool,
}

/// Builds the HTTP client for everything but the load's requests (health and model checks,
/// metric scrapes): no proxy (benchmark traffic must go straight to the engine), no redirects
/// (a redirect is an answer, not a new target), no overall timeout (callers set their own).
pub fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build()
}

/// The endpoint (connections) a target's requests go to.
pub fn endpoint(target: &RequestTarget) -> Result<Endpoint, String> {
    Endpoint::new(
        &target.url,
        target.timeouts.connect,
        target.api_key.as_deref(),
    )
}

/// One request on a connection of its own (readiness and dialect checks, `runner probe`).
pub async fn send_alone(
    target: &RequestTarget,
    body: Bytes,
    abort: impl std::future::Future<Output = ()>,
) -> Outcome {
    match endpoint(target) {
        Ok(e) => send(&e, target, body, None, Instant::now(), 0, abort).await,
        Err(why) => {
            let mut record = blank_record(0);
            record.error_class = Some(ErrorClass::Connect);
            record.error_message = Some(why);
            Outcome { record, text: None }
        }
    }
}

/// Microseconds from `origin` to now.
pub fn since(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

/// A request's record and, when asked for, its generated text.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub record: RequestRecord,
    pub text: Option<String>,
}

/// An empty record for a request due at `scheduled_us`.
pub fn blank_record(scheduled_us: u64) -> RequestRecord {
    RequestRecord {
        index: 0,
        worker: 0,
        run: 0,
        scheduled_us,
        sent_us: scheduled_us,
        queued_us: 0,
        retries: 0,
        retry_wait_us: 0,
        head_us: None,
        first_byte_us: None,
        first_event_us: None,
        content_us: Vec::new(),
        token_us: Vec::new(),
        end_us: 0,
        ok: false,
        status: None,
        error_class: None,
        error_message: None,
        finish_reason: None,
        input_tokens: None,
        client_prompt_tokens: None,
        cached_tokens: None,
        session: None,
        turn: None,
        output_tokens: 0,
        output_tokens_source: TokenSource::Chunks,
        chunks: 0,
    }
}

/// Sends one request and records it. `session` is sent as `X-Session-ID` (a multi-turn
/// session's requests share it). `origin` is the cell's clock origin; `scheduled_us` is
/// when the request was due (latency is measured from there). If `abort` completes first, the
/// request ends as `cancelled`.
pub async fn send(
    endpoint: &Endpoint,
    target: &RequestTarget,
    body: Bytes,
    session: Option<&::http::HeaderValue>,
    origin: Instant,
    scheduled_us: u64,
    abort: impl std::future::Future<Output = ()>,
) -> Outcome {
    let mut rec = blank_record(scheduled_us);
    rec.sent_us = since(origin);
    rec.content_us
        .reserve(target.expect_tokens.min(65_536) as usize + 1);
    rec.token_us
        .reserve(target.expect_tokens.min(65_536) as usize + 2);
    let mut text = target.keep_text.then(String::new);
    let total = target.timeouts.total;
    let attempts = async {
        loop {
            let mut wait = None;
            let r = exchange(
                endpoint,
                target,
                body.clone(),
                session,
                origin,
                &mut rec,
                text.as_mut(),
                &mut wait,
            )
            .await;
            let retryable = matches!(&r, Err((ErrorClass::HttpStatus, _)))
                && matches!(rec.status, Some(429 | 503));
            if !retryable || rec.retries >= target.retry.max {
                return r;
            }
            // Back off as asked (or exponentially from 100 ms), never past the cap.
            let backoff = Duration::from_millis(100u64 << rec.retries.min(10));
            let wait = wait.unwrap_or(backoff).min(target.retry.max_wait);
            rec.retries += 1;
            rec.retry_wait_us += wait.as_micros() as u64;
            tokio::time::sleep(wait).await;
            // Instants of the failed attempt are dropped; latency still counts from the schedule.
            rec.head_us = None;
            rec.first_byte_us = None;
            rec.first_event_us = None;
            rec.content_us.clear();
            rec.token_us.clear();
            rec.status = None;
            if let Some(t) = text.as_mut() {
                t.clear();
            }
        }
    };
    let result = tokio::select! {
        r = tokio::time::timeout(total, attempts) => match r {
            Ok(r) => r,
            Err(_) => Err((
                ErrorClass::TimeoutTotal,
                format!("no complete response within {}", humantime::format_duration(total)),
            )),
        },
        () = abort => Err((ErrorClass::Cancelled, "the run was interrupted while this request was in flight".to_string())),
    };
    rec.end_us = since(origin);
    let leftover = match result {
        Ok(leftover) => {
            rec.ok = true;
            leftover
        }
        Err((class, message)) => {
            rec.ok = false;
            rec.error_class = Some(class);
            rec.error_message = Some(message);
            None
        }
    };
    // After `[DONE]`, the end of the body (usually already here) is read outside the measured
    // time, so the connection can serve the next request.
    if let Some((mut rest, connection)) = leftover {
        let drain = async {
            while let Some(chunk) = conn::next_chunk(&mut rest).await {
                chunk.ok()?;
            }
            Some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(target.timeouts.idle, drain).await {
            endpoint.put(connection);
        }
    }
    Outcome { record: rec, text }
}

/// A finished response's unread end (after `[DONE]`) and its connection; `None` when the
/// response was read to its end (the connection is back in the pool already).
type Leftover = Option<(Incoming, conn::Conn)>;

#[allow(clippy::too_many_arguments)]
async fn exchange(
    endpoint: &Endpoint,
    target: &RequestTarget,
    body: Bytes,
    session: Option<&::http::HeaderValue>,
    origin: Instant,
    rec: &mut RequestRecord,
    text: Option<&mut String>,
    retry_wait: &mut Option<Duration>,
) -> Result<Leftover, Failure> {
    let t = target.timeouts;
    let first_token_deadline = tokio::time::Instant::now() + t.first_token;
    let request = async {
        let conn = endpoint.take().await?;
        endpoint.post(conn, body, session).await
    };
    let (resp, connection) = match tokio::time::timeout_at(first_token_deadline, request).await {
        Err(_) => return Err(first_token_timeout(t.first_token)),
        Ok(r) => r?,
    };
    rec.head_us = Some(since(origin));
    let (head, mut body) = resp.into_parts();
    let status = head.status;
    rec.status = Some(status.as_u16());
    if !status.is_success() {
        *retry_wait = retry_after(&head.headers);
        let asked = retry_wait.map_or(String::new(), |w| {
            format!(" (Retry-After {})", humantime::format_duration(w))
        });
        let mut bytes = Vec::new();
        while let Some(Ok(chunk)) = conn::next_chunk(&mut body).await {
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes);
        let message = server_message(&text).unwrap_or_else(|| truncate(&text, 500));
        return Err((
            ErrorClass::HttpStatus,
            format!("HTTP {status}: {message}{asked}"),
        ));
    }
    let mut reader = StreamReader::new(target.stream, text).allow_empty(target.allow_empty_output);
    loop {
        // Until the first token only the first-token deadline applies (a server may send its
        // headers and a role chunk at once and think for long after); the idle clock starts
        // at the first token.
        let deadline = if rec.content_us.is_empty() {
            first_token_deadline
        } else {
            tokio::time::Instant::now() + t.idle
        };
        let next = match tokio::time::timeout_at(deadline, conn::next_chunk(&mut body)).await {
            Ok(n) => n,
            Err(_) if rec.content_us.is_empty() => {
                return Err(first_token_timeout(t.first_token));
            }
            Err(_) => {
                return Err((
                    ErrorClass::TimeoutIdle,
                    format!(
                        "the server sent nothing for {} in the middle of the response",
                        humantime::format_duration(t.idle)
                    ),
                ))
            }
        };
        let Some(chunk) = next else {
            reader.finish(since(origin), rec)?;
            endpoint.put(connection);
            return Ok(None);
        };
        reader.feed(&chunk?, since(origin), rec)?;
        if reader.is_done() {
            reader.finish(since(origin), rec)?;
            return Ok(Some((body, connection)));
        }
    }
}

fn first_token_timeout(limit: Duration) -> Failure {
    (
        ErrorClass::TimeoutFirstToken,
        format!(
            "no generated output within {} of sending",
            humantime::format_duration(limit)
        ),
    )
}

/// Turns response-body bytes, as they arrive, into the record's instants, counts and verdict:
/// an SSE stream of completion chunks, or (not streamed) one JSON body. Pure: the byte-split
/// tests drive it directly.
#[derive(Debug)]
pub struct StreamReader<'t> {
    stream: bool,
    parser: sse::Parser,
    chunks: chunk::Reader,
    /// A non-streamed body, gathered until the end.
    whole: Vec<u8>,
    done: bool,
    usage: bool,
    failure: Option<Failure>,
    text: Option<&'t mut String>,
    /// An answer without generated output is a success.
    allow_empty: bool,
}

impl<'t> StreamReader<'t> {
    pub fn new(stream: bool, text: Option<&'t mut String>) -> StreamReader<'t> {
        StreamReader {
            stream,
            parser: sse::Parser::new(),
            chunks: chunk::Reader::new(),
            whole: Vec::new(),
            done: false,
            usage: false,
            failure: None,
            text,
            allow_empty: false,
        }
    }

    /// Whether an answer that generated nothing is a success (the workload's
    /// `allow_empty_output`); by default it fails as `empty_output`.
    pub fn allow_empty(mut self, allow: bool) -> StreamReader<'t> {
        self.allow_empty = allow;
        self
    }

    /// `[DONE]` was seen: nothing more needs to be read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Consumes one read of the body, which arrived at `now`.
    pub fn feed(&mut self, bytes: &[u8], now: u64, rec: &mut RequestRecord) -> Result<(), Failure> {
        if bytes.is_empty() {
            return Ok(());
        }
        rec.first_byte_us.get_or_insert(now);
        if !self.stream {
            self.whole.extend_from_slice(bytes);
            return Ok(());
        }
        let Self {
            parser,
            chunks,
            failure,
            done,
            usage,
            text,
            ..
        } = self;
        parser.feed(bytes, |ev| {
            if failure.is_none() && !*done {
                rec.first_event_us.get_or_insert(now);
                if let Err(f) = on_event(&ev, chunks, now, rec, done, usage, text.as_deref_mut()) {
                    *failure = Some(f);
                }
            }
        });
        match &self.failure {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    /// The body ended at `now`: settles token counts and the verdict.
    pub fn finish(mut self, now: u64, rec: &mut RequestRecord) -> Result<(), Failure> {
        if !self.stream {
            read_whole(&self.whole, now, rec, self.text.as_deref_mut())?;
            return judge(rec, self.allow_empty);
        }
        if let Some(f) = self.failure {
            return Err(f);
        }
        if !self.usage {
            rec.output_tokens = rec.chunks;
            rec.output_tokens_source = TokenSource::Chunks;
        }
        if rec.finish_reason.is_none() {
            if let Some(e) = self.parser.stray_error() {
                let e = String::from_utf8_lossy(e);
                let msg = server_message(&e).unwrap_or_else(|| truncate(&e, 500));
                return Err((
                    ErrorClass::StreamError,
                    format!(
                        "the stream carried an `error:` field ({msg}) and ended after {} content chunks without a finish reason",
                        rec.chunks
                    ),
                ));
            }
            if !self.done {
                return Err((
                    ErrorClass::Truncated,
                    format!(
                        "the stream ended after {} content chunks without a finish reason or [DONE]",
                        rec.chunks
                    ),
                ));
            }
        }
        judge(rec, self.allow_empty)
    }
}

/// The verdict on a response that arrived whole and well-formed: a finish reason that says
/// generation failed, or no generated output at all, is not a success.
fn judge(rec: &RequestRecord, allow_empty: bool) -> Result<(), Failure> {
    if let Some(reason @ ("abort" | "error")) = rec.finish_reason.as_deref() {
        return Err((
            ErrorClass::Aborted,
            format!(
                "the server ended the response with finish_reason \"{reason}\" after {} content chunks",
                rec.chunks
            ),
        ));
    }
    // Token events whose text was all empty, with usage counting the tokens, are generated
    // output without visible text (a byte-level tokenizer's partial characters): a success,
    // counted apart as "without text" (docs/metrics.md).
    let tokens_without_text = !rec.token_us.is_empty()
        && rec.output_tokens_source == TokenSource::Usage
        && rec.output_tokens > 0;
    if rec.content_us.is_empty() && !tokens_without_text && !allow_empty {
        let usage = match rec.output_tokens_source {
            TokenSource::Usage => format!("usage completion_tokens {}", rec.output_tokens),
            TokenSource::Chunks => "no usage".to_string(),
        };
        let finish = rec.finish_reason.as_deref().unwrap_or("none");
        return Err((
            ErrorClass::EmptyOutput,
            format!(
                "the server answered but generated nothing (no content, {usage}, finish_reason {finish}); set `allow_empty_output = true` in the workload if empty outputs are expected"
            ),
        ));
    }
    Ok(())
}

fn on_event(
    ev: &sse::Event,
    chunks: &mut chunk::Reader,
    now: u64,
    rec: &mut RequestRecord,
    done: &mut bool,
    usage_seen: &mut bool,
    text: Option<&mut String>,
) -> Result<(), Failure> {
    let data = ev.data.trim_ascii();
    if data == b"[DONE]" {
        *done = true;
        return Ok(());
    }
    if ev.event == b"error" {
        let data = String::from_utf8_lossy(data);
        let msg = server_message(&data).unwrap_or_else(|| truncate(&data, 500));
        return Err((ErrorClass::ServerError, msg));
    }
    let chunk = chunks.read(data, text).map_err(|e| {
        (
            ErrorClass::Decode,
            format!(
                "an SSE event is not a completion chunk ({e}): {}",
                truncate(&String::from_utf8_lossy(data), 200)
            ),
        )
    })?;
    if chunk.error {
        let data = String::from_utf8_lossy(data);
        let msg = server_message(&data).unwrap_or_else(|| truncate(&data, 500));
        return Err((ErrorClass::ServerError, msg));
    }
    if chunk.finish_reason.is_some() {
        rec.finish_reason = chunk.finish_reason;
    }
    if chunk.token {
        rec.token_us.push(now);
    }
    if chunk.output {
        rec.chunks += 1;
        rec.content_us.push(now);
    }
    if chunk.prompt_tokens.is_some() {
        rec.input_tokens = chunk.prompt_tokens;
    }
    if chunk.cached_tokens.is_some() {
        rec.cached_tokens = chunk.cached_tokens;
    }
    if let Some(c) = chunk.completion_tokens {
        rec.output_tokens = c;
        rec.output_tokens_source = TokenSource::Usage;
        *usage_seen = true;
    }
    Ok(())
}

fn read_whole(
    bytes: &[u8],
    now: u64,
    rec: &mut RequestRecord,
    text: Option<&mut String>,
) -> Result<(), Failure> {
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
    let mut text = text;
    for c in resp.choices.iter().flatten() {
        if let Some(m) = &c.message {
            has_output |= nonempty(&m.content)
                || nonempty(&m.reasoning_content)
                || m.tool_calls.as_ref().is_some_and(|t| !t.is_null());
            if let (Some(t), Some(s)) = (text.as_deref_mut(), &m.content) {
                t.push_str(s);
            }
        }
        has_output |= nonempty(&c.text);
        if let (Some(t), Some(s)) = (text.as_deref_mut(), &c.text) {
            t.push_str(s);
        }
        if let Some(f) = &c.finish_reason {
            rec.finish_reason = Some(f.to_string());
        }
    }
    if has_output {
        rec.content_us.push(now);
    }
    match resp.usage.and_then(|u| {
        let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens);
        u.completion_tokens.map(|c| (u.prompt_tokens, c, cached))
    }) {
        Some((input, output, cached)) => {
            rec.input_tokens = input;
            rec.cached_tokens = cached;
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
struct Whole<'a> {
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<WholeChoice<'a>>>,
    #[serde(default)]
    usage: Option<chunk::Usage>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_events(events: &[&str]) -> (RequestRecord, Result<(), Failure>) {
        let mut r = blank_record(0);
        let mut reader = StreamReader::new(true, None);
        for (i, e) in events.iter().enumerate() {
            if let Err(f) = reader.feed(format!("data: {e}\n\n").as_bytes(), i as u64 * 10, &mut r)
            {
                return (r, Err(f));
            }
        }
        let res = reader.finish(1000, &mut r);
        (r, res)
    }

    #[test]
    fn role_only_chunk_is_a_token_event_without_text_and_usage_wins() {
        let (r, res) = feed_events(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hmm"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4,"total_tokens":11}}"#,
            "[DONE]",
        ]);
        res.expect("a complete stream");
        assert_eq!(r.content_us, [10, 20, 30]);
        // The role chunk carries the first token (vLLM sends it with the first token); the
        // usage chunk carries none.
        assert_eq!(r.token_us, [0, 10, 20, 30]);
        assert_eq!(r.chunks, 3);
        assert_eq!((r.input_tokens, r.output_tokens), (Some(7), 4));
        assert_eq!(r.output_tokens_source, TokenSource::Usage);
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
    }

    #[test]
    fn error_objects_in_a_stream_fail_with_the_server_message() {
        for body in [
            r#"{"error":{"message":"out of KV cache","type":"InternalServerError","code":500}}"#,
            r#"{"object":"error","message":"out of KV cache","type":"x","code":500}"#,
            r#"{"error":"out of KV cache","error_type":"generation"}"#,
        ] {
            let (_, res) = feed_events(&[body]);
            assert_eq!(
                res,
                Err((ErrorClass::ServerError, "out of KV cache".to_string())),
                "{body}"
            );
        }
    }

    #[test]
    fn a_stream_without_finish_or_done_is_truncated_and_without_usage_counts_chunks() {
        let (r, res) = feed_events(&[r#"{"choices":[{"index":0,"delta":{"content":"a"}}]}"#]);
        assert_eq!(res.map_err(|f| f.0), Err(ErrorClass::Truncated));
        assert_eq!(
            (r.output_tokens, r.output_tokens_source),
            (1, TokenSource::Chunks)
        );
    }

    #[test]
    fn nothing_generated_fails_unless_the_workload_allows_it() {
        let events = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":0}}"#,
            "[DONE]",
        ];
        let (_, res) = feed_events(&events);
        assert_eq!(res.map_err(|f| f.0), Err(ErrorClass::EmptyOutput));
        let mut r = blank_record(0);
        let mut reader = StreamReader::new(true, None).allow_empty(true);
        for e in events {
            reader
                .feed(format!("data: {e}\n\n").as_bytes(), 1, &mut r)
                .expect("feed");
        }
        reader.finish(2, &mut r).expect("allowed");
        assert_eq!((r.output_tokens, r.chunks), (0, 0));
    }

    #[test]
    fn a_non_streamed_answer_that_aborted_or_is_empty_fails() {
        for (body, class) in [
            (
                &br#"{"choices":[{"index":0,"text":"ab","finish_reason":"abort"}]}"#[..],
                ErrorClass::Aborted,
            ),
            (
                br#"{"choices":[{"index":0,"text":"","finish_reason":"stop"}],"usage":{"completion_tokens":0}}"#,
                ErrorClass::EmptyOutput,
            ),
        ] {
            let mut r = blank_record(0);
            let mut reader = StreamReader::new(false, None);
            reader.feed(body, 1, &mut r).expect("feed");
            assert_eq!(reader.finish(2, &mut r).map_err(|f| f.0), Err(class));
        }
    }

    #[test]
    fn non_streamed_completion_is_read_with_usage() {
        let mut r = blank_record(0);
        let mut text = String::new();
        let mut reader = StreamReader::new(false, Some(&mut text));
        let body = br#"{"choices":[{"index":0,"text":"abc","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":9}}"#;
        reader.feed(&body[..10], 40, &mut r).expect("feed");
        reader.feed(&body[10..], 41, &mut r).expect("feed");
        reader.finish(42, &mut r).expect("valid");
        assert_eq!(r.content_us, [42]);
        assert_eq!(r.first_byte_us, Some(40));
        assert_eq!((r.input_tokens, r.output_tokens), (Some(3), 9));
        assert_eq!(text, "abc");
    }
}
