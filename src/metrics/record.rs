//! One request as a record of instants, and every per-request metric derived from it, in one
//! place. docs/metrics.md defines each; the functions here are those definitions.
//!
//! Instants are microseconds since the cell's start (a monotonic clock), so records are small,
//! exact and comparable within a cell.

use serde::{Deserialize, Serialize};

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The TCP connection could not be made.
    Connect,
    /// The server answered with a non-2xx status.
    HttpStatus,
    /// The stream or body carried an error object.
    ServerError,
    /// The stream ended before a finish reason or `[DONE]`.
    Truncated,
    /// The body could not be read (reset connection, broken chunking).
    Io,
    /// A response event or body was not the JSON the API defines.
    Decode,
    /// The connection was not made within `connect_timeout`.
    #[serde(rename = "timeout:connect")]
    TimeoutConnect,
    /// No generated output within `first_token_timeout` of sending.
    #[serde(rename = "timeout:first_token")]
    TimeoutFirstToken,
    /// The server went silent for `idle_timeout` in the middle of a response.
    #[serde(rename = "timeout:idle")]
    TimeoutIdle,
    /// The whole request ran past `request_timeout`.
    #[serde(rename = "timeout:total")]
    TimeoutTotal,
    /// The run was interrupted while the request was in flight.
    Cancelled,
    /// A 2xx response that generated nothing: no content, reasoning or tool-call output, and
    /// no token events counted by `usage` (unless the workload sets `allow_empty_output`).
    EmptyOutput,
    /// The server ended the response with `finish_reason` `abort` or `error`.
    Aborted,
    /// The stream carried a non-standard SSE `error:` field and ended without a finish reason.
    StreamError,
    /// The engine process exited while the request was in flight.
    EngineDied,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Truncated => "truncated",
            ErrorClass::Io => "io",
            ErrorClass::Decode => "decode",
            ErrorClass::TimeoutConnect => "timeout:connect",
            ErrorClass::TimeoutFirstToken => "timeout:first_token",
            ErrorClass::TimeoutIdle => "timeout:idle",
            ErrorClass::TimeoutTotal => "timeout:total",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::EmptyOutput => "empty_output",
            ErrorClass::Aborted => "aborted",
            ErrorClass::StreamError => "stream_error",
            ErrorClass::EngineDied => "engine_died",
        }
    }
}

/// Where a token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage` object.
    Usage,
    /// Counted content chunks (one token assumed per chunk): used when no usage came back.
    Chunks,
}

/// Everything observed about one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the cell's request sequence (prompt `index % prompts`).
    pub index: u64,
    /// The worker (closed loop) that sent it.
    pub worker: u32,
    /// Which run of the cell (plan `repeat`), from 0.
    #[serde(default)]
    pub run: u32,
    /// When the request was due to be sent.
    pub scheduled_us: u64,
    /// When the client started sending it.
    pub sent_us: u64,
    /// Open loop with `max_in_flight`: how long it waited for a free slot (server backpressure,
    /// not client lag).
    #[serde(default)]
    pub queued_us: u64,
    /// Retries after 429/503 answers (`retries` in the plan); the instants are the last
    /// attempt's, and latency still counts from `scheduled_us`.
    #[serde(default)]
    pub retries: u32,
    /// Time spent waiting before retries.
    #[serde(default)]
    pub retry_wait_us: u64,
    /// When the response status and headers arrived.
    pub head_us: Option<u64>,
    /// When the first byte of the response body arrived.
    pub first_byte_us: Option<u64>,
    /// When the first complete SSE event arrived (streaming only).
    pub first_event_us: Option<u64>,
    /// Each event that carried generated output (content, reasoning or tool calls): visible
    /// text.
    pub content_us: Vec<u64>,
    /// Each streamed event that carried a token (a non-empty `choices` array), visible text or
    /// not: a role chunk, an empty-text delta. Empty for a non-streamed request, and in records
    /// written before it existed: then [`RequestRecord::token_events`] falls back to
    /// `content_us`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_us: Vec<u64>,
    /// When the response was complete, or the failure was seen.
    pub end_us: u64,
    pub ok: bool,
    pub status: Option<u16>,
    pub error_class: Option<ErrorClass>,
    pub error_message: Option<String>,
    pub finish_reason: Option<String>,
    /// The server's `usage.prompt_tokens`.
    pub input_tokens: Option<u64>,
    /// The client's count of the prompt it sent, in the workload's unit (tokens with its
    /// tokenizer, else words; docs/workloads.md "Token counts").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_prompt_tokens: Option<u64>,
    /// The server's `usage.prompt_tokens_details.cached_tokens`: prompt tokens served from its
    /// prefix cache, where usage reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Multi-turn workloads: the session (the workload's conversation) this request was a turn
    /// of, and the turn's index in it, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
    pub output_tokens: u64,
    pub output_tokens_source: TokenSource,
    /// Content-bearing chunks (events) received.
    pub chunks: u64,
}

/// A streamed response whose `usage` claims more than this many tokens per content chunk
/// received is not believed. Servers do pack tokens into chunks (speculative decoding, a stream
/// interval), but by a few, not by an order of magnitude.
pub const MAX_TOKENS_PER_CHUNK: u64 = 16;

impl RequestRecord {
    /// Why the server's `usage` count of a successful request cannot be true, if it cannot:
    /// more completion tokens than `max_tokens` allows, or (streamed) more than
    /// [`MAX_TOKENS_PER_CHUNK`] per content chunk received.
    pub fn usage_problem(&self, max_tokens: Option<u64>) -> Option<String> {
        if self.output_tokens_source != TokenSource::Usage {
            return None;
        }
        let n = self.output_tokens;
        if let Some(max) = max_tokens.filter(|&m| m > 0 && n > m) {
            return Some(format!(
                "usage says {n} completion tokens, above the request's max_tokens {max}"
            ));
        }
        // A streamed response (it had SSE events) is cross-checked against its chunks.
        let streamed = self.first_event_us.is_some();
        if streamed && n > MAX_TOKENS_PER_CHUNK * self.chunks.max(1) {
            return Some(format!(
                "usage says {n} completion tokens for {} content chunks received (more than {MAX_TOKENS_PER_CHUNK} per chunk)",
                self.chunks
            ));
        }
        None
    }

    /// The output tokens to count: the server's `usage` when it is believable, else the
    /// content events received.
    pub fn trusted_output_tokens(&self, max_tokens: Option<u64>) -> u64 {
        if self.usage_problem(max_tokens).is_some() {
            self.chunks.max(self.content_us.len() as u64)
        } else {
            self.output_tokens
        }
    }

    /// End-to-end latency: scheduled send to the end of the response.
    pub fn e2e_us(&self) -> u64 {
        self.end_us.saturating_sub(self.scheduled_us)
    }

    /// The instants of the events that carried a token: `token_us`, or `content_us` where
    /// none were recorded (non-streamed, older records).
    pub fn token_events(&self) -> &[u64] {
        if self.token_us.is_empty() {
            &self.content_us
        } else {
            &self.token_us
        }
    }

    /// Time to first token (the default TTFT, vLLM bench's and the server's): scheduled send
    /// to the first streamed event carrying a token, an empty-text delta or the role chunk
    /// included. For a non-streamed request this is the end of the response.
    pub fn ttft_us(&self) -> Option<u64> {
        self.token_events()
            .first()
            .map(|t| t.saturating_sub(self.scheduled_us))
    }

    /// Time to first visible text: scheduled send to the first event carrying non-empty
    /// generated output. `None` for a request without visible text.
    pub fn ttft_text_us(&self) -> Option<u64> {
        self.content_us
            .first()
            .map(|t| t.saturating_sub(self.scheduled_us))
    }

    /// A successful request whose output had no visible text (every delta empty): counted and
    /// shown, with no `ttft_text`.
    pub fn without_text(&self) -> bool {
        self.ok && self.content_us.is_empty()
    }

    /// Time per output token after the first: (e2e - ttft) / (output_tokens - 1), with the
    /// default (token) TTFT. Defined only for streamed requests with at least two output
    /// tokens.
    pub fn tpot_us(&self) -> Option<f64> {
        let ttft = self.ttft_us()?;
        if self.output_tokens < 2 {
            return None;
        }
        Some((self.e2e_us().saturating_sub(ttft)) as f64 / (self.output_tokens - 1) as f64)
    }

    /// Time to the first byte of the response body.
    pub fn ttfb_us(&self) -> Option<u64> {
        self.first_byte_us
            .map(|t| t.saturating_sub(self.scheduled_us))
    }

    /// How late the client sent the request: `sent - scheduled - queued`.
    pub fn dispatch_lag_us(&self) -> u64 {
        self.sent_us
            .saturating_sub(self.scheduled_us)
            .saturating_sub(self.queued_us)
    }

    /// Inter-token latencies (the default, vLLM bench's): the gaps between successive token
    /// events.
    pub fn itl_us(&self) -> impl Iterator<Item = u64> + '_ {
        self.token_events()
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
    }

    /// Inter-text latencies: the gaps between successive events with visible text.
    pub fn itl_text_us(&self) -> impl Iterator<Item = u64> + '_ {
        self.content_us
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A successful streamed record with content events at the given instants.
    pub fn record(scheduled: u64, content: &[u64], end: u64, tokens: u64) -> RequestRecord {
        RequestRecord {
            index: 0,
            worker: 0,
            run: 0,
            scheduled_us: scheduled,
            sent_us: scheduled,
            queued_us: 0,
            retries: 0,
            retry_wait_us: 0,
            head_us: Some(scheduled + 10),
            first_byte_us: Some(scheduled + 10),
            first_event_us: Some(scheduled + 10),
            content_us: content.to_vec(),
            token_us: Vec::new(),
            end_us: end,
            ok: true,
            status: Some(200),
            error_class: None,
            error_message: None,
            finish_reason: Some("length".into()),
            input_tokens: Some(5),
            client_prompt_tokens: None,
            cached_tokens: None,
            session: None,
            turn: None,
            output_tokens: tokens,
            output_tokens_source: TokenSource::Usage,
            chunks: content.len() as u64,
        }
    }

    #[test]
    fn derived_metrics_follow_their_definitions() {
        // Scheduled at 1 ms, tokens at 51, 61, 71, 81 ms, end at 82 ms.
        let r = record(1_000, &[51_000, 61_000, 71_000, 81_000], 82_000, 4);
        assert_eq!(r.ttft_us(), Some(50_000));
        assert_eq!(r.e2e_us(), 81_000);
        // (81 - 50) / 3 ms
        assert_eq!(r.tpot_us(), Some(31_000.0 / 3.0));
        assert_eq!(r.itl_us().collect::<Vec<_>>(), [10_000, 10_000, 10_000]);
    }

    #[test]
    fn impossible_usage_is_not_believed() {
        // 4 chunks, usage within max_tokens: believed.
        let r = record(0, &[1, 2, 3, 4], 5, 4);
        assert_eq!(r.usage_problem(Some(4)), None);
        assert_eq!(r.trusted_output_tokens(Some(4)), 4);
        // Above max_tokens.
        let r = record(0, &[1, 2, 3, 4], 5, 5);
        let why = r.usage_problem(Some(4)).expect("above max_tokens");
        assert!(why.contains("above the request's max_tokens 4"), "{why}");
        assert_eq!(r.trusted_output_tokens(Some(4)), 4);
        // Far above the chunks received, with no max_tokens to compare.
        let r = record(0, &[1, 2], 5, 500);
        assert!(r
            .usage_problem(None)
            .expect("far above")
            .contains("2 content chunks"));
        assert_eq!(r.trusted_output_tokens(None), 2);
        // Packed, but plausibly (8 per chunk): believed.
        assert_eq!(record(0, &[1, 2], 5, 16).usage_problem(None), None);
        // Counted from chunks: nothing to disbelieve.
        let mut r = record(0, &[1], 5, 500);
        r.output_tokens_source = TokenSource::Chunks;
        assert_eq!(r.usage_problem(Some(4)), None);
    }

    #[test]
    fn first_token_and_first_text_are_two_definitions() {
        // A role chunk at 10 ms, an empty-text delta at 20 ms, text at 30 and 45 ms.
        let mut r = record(0, &[30_000, 45_000], 50_000, 4);
        r.token_us = vec![10_000, 20_000, 30_000, 45_000];
        assert_eq!(r.ttft_us(), Some(10_000));
        assert_eq!(r.ttft_text_us(), Some(30_000));
        assert_eq!(r.itl_us().collect::<Vec<_>>(), [10_000, 10_000, 15_000]);
        assert_eq!(r.itl_text_us().collect::<Vec<_>>(), [15_000]);
        // TPOT counts from the first token: (50 - 10) / 3 ms.
        assert_eq!(r.tpot_us(), Some(40_000.0 / 3.0));
        assert!(!r.without_text());
        // Without token events recorded (non-streamed, older records) both agree.
        r.token_us.clear();
        assert_eq!(r.ttft_us(), r.ttft_text_us());
        // Tokens but no visible text.
        r.token_us = vec![10_000, 20_000];
        r.content_us.clear();
        assert_eq!((r.ttft_us(), r.ttft_text_us()), (Some(10_000), None));
        assert!(r.without_text());
    }

    #[test]
    fn tpot_needs_two_tokens() {
        let r = record(0, &[5], 6, 1);
        assert_eq!(r.tpot_us(), None);
        assert_eq!(r.itl_us().count(), 0);
    }
}
