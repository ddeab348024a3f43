//! The built-in engine: an OpenAI-compatible HTTP server whose timing follows a simple model
//! of LLM serving, so that sweeps look like real ones and tests have known timings.
//!
//! The model: a scheduler runs steps back to back while any sequence is running. A step costs
//! `step_ms + step_ms_per_seq x running + prefill_ms_per_token x prompt tokens admitted in this
//! step`, and every running sequence emits one token at the end of each step. At most
//! `max_batch` sequences run at once; the rest wait in arrival order. `max_batch = 1` is a
//! server that handles one request at a time (the naive HF baseline); a large `max_batch` is
//! continuous batching (vLLM). A prompt's token count is its number of whitespace-separated
//! words; a sequence always generates `max_tokens` tokens (as with `ignore_eos`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::prefix_cache::{Msg, PrefixCache, Units};
use super::text::TextMode;
use crate::workload::tokenizer::Tokenizer;

/// Settings of the built-in engine (`runner engine sim --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
    /// The model id this engine serves; requests for another model get HTTP 404.
    #[arg(long, default_value = "sim")]
    pub model: String,
    /// Most sequences decoded at once; 1 serves one request at a time.
    #[arg(long, alias = "batch", default_value_t = 64)]
    pub max_batch: usize,
    /// Fixed cost of one decode step, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    pub step_ms: f64,
    /// Added cost of one decode step per running sequence, in milliseconds.
    #[arg(long, default_value_t = 0.1)]
    pub step_ms_per_seq: f64,
    /// Prefill cost per prompt token, in milliseconds, paid in the step that admits it.
    #[arg(long, default_value_t = 0.02)]
    pub prefill_ms_per_token: f64,
    /// Fixed-timing mode: every request gets its first token this many milliseconds after it
    /// arrives, whatever the load (no batching model); with --itl-ms.
    #[arg(long, requires = "itl_ms")]
    pub ttft_ms: Option<f64>,
    /// Fixed-timing mode: token i is due at arrival + ttft + (i - 1) x itl, with no drift.
    #[arg(long, requires = "ttft_ms")]
    pub itl_ms: Option<f64>,
    /// How long /health answers 503 ("loading") after start, e.g. "2s".
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub load_time: Duration,
    /// Answer HTTP 422 to any request carrying one of these fields (comma-separated), as an
    /// engine with a strict request schema does (e.g. `transformers serve` with `ignore_eos`).
    #[arg(long, value_delimiter = ',')]
    pub refuse_fields: Vec<String>,
    /// Count prompt tokens with this tokenizer (a `tokenizer.json`, or a folder holding one)
    /// instead of words. Completions: the prompt's tokens, with the tokenizer's own specials (a
    /// BOS), as the client counts a prompt. Chat: the sim's template is the tokenizer's specials
    /// once, then per message [`CHAT_TOKENS_PER_MESSAGE`] marker tokens and its content.
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Deterministic text mode: each output token is chosen by a hash of the prompt and its
    /// position, so different prompts get different outputs and the same prompt always the same
    /// (as a real model at temperature 0). Without it every output is the same word cycle.
    #[arg(long)]
    pub text: bool,
    /// Change this share of output tokens (0 to 1), chosen deterministically per prompt and
    /// position, and lower every logprob by it: a stand-in for a lossy quantization.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub perturb: f64,
    /// Ignore `echo` (no logprobs of the prompt's own tokens), as llama.cpp's server does.
    #[arg(long)]
    pub no_prompt_logprobs: bool,
    /// For tests: append every completion request received to this file, one JSON line
    /// (`session_id`: its X-Session-ID header, `body`, and the `answer` it is given); each
    /// answer then starts with the request's number (`r7-the ...`), so no two are alike.
    #[arg(long, hide = true)]
    pub log_requests: Option<std::path::PathBuf>,
    /// Model a prefix cache: the part of a prompt that an earlier request's prompt and answer
    /// already hold (whole messages, then common words) is reported as
    /// `usage.prompt_tokens_details.cached_tokens`, costs no prefill, and is counted in
    /// `sim:prefix_cache_queries_total` / `sim:prefix_cache_hits_total` on /metrics.
    #[arg(long)]
    pub prefix_cache: bool,
    #[command(flatten)]
    pub faults: Faults,
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

impl SimArgs {
    fn text_mode(&self) -> TextMode {
        TextMode {
            text: self.text,
            perturb: self.perturb,
            no_prompt_logprobs: self.no_prompt_logprobs,
        }
    }
}

/// Misbehaviours on demand, for the fault tests (hidden from `--help`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Faults {
    /// Exit with status 3 when request number N + 1 arrives.
    #[arg(long, hide = true)]
    pub crash_after: Option<u64>,
    /// Exit with status 3 when more than N sequences are in flight (running or queued in the
    /// scheduler): an engine that fails at a given concurrency, like one out of KV cache.
    /// Counted by the scheduler, which drops a finished sequence before its client can send
    /// the next request, so a closed loop at concurrency N never trips it. Its last words are
    /// a CUDA out-of-memory line, as a GPU engine past its capacity would write.
    #[arg(long, hide = true)]
    pub max_seqs_before_crash: Option<u64>,
    /// Never answer a completion request (no status line, no headers).
    #[arg(long, hide = true)]
    pub hang_before_headers: bool,
    /// Stream this many tokens, then go silent without closing.
    #[arg(long, hide = true)]
    pub hang_after_tokens: Option<u64>,
    /// Stream this many tokens, then break the connection.
    #[arg(long, hide = true)]
    pub reset_after_tokens: Option<u64>,
    /// Ignore SIGTERM (only SIGKILL stops the engine).
    #[arg(long, hide = true)]
    pub ignore_sigterm: bool,
    /// Start this many child processes (in the engine's process group) that ignore SIGTERM.
    #[arg(long, hide = true, default_value_t = 0)]
    pub fork_children: u32,
    /// Answer every Nth completion request with HTTP 429.
    #[arg(long, hide = true)]
    pub reject_every: Option<u64>,
    /// The Retry-After header sent with those 429s.
    #[arg(long, hide = true)]
    pub retry_after: Option<String>,
    /// Generate nothing: every token's text is empty and usage says 0 completion tokens.
    #[arg(long, hide = true)]
    pub empty_output: bool,
    /// The finish reason of every response (default `length`), e.g. `abort` or `error`.
    #[arg(long, hide = true)]
    pub finish_reason: Option<String>,
    /// Report this many completion tokens in `usage`, whatever was generated.
    #[arg(long, hide = true)]
    pub lie_usage: Option<u64>,
    /// Kill the parent process (SIGKILL) when request number N + 1 arrives and keep serving:
    /// launched as `sh -c 'runner engine sim ...; exit'`, the engine's leader dies while the
    /// requests in flight stay open.
    #[arg(long, hide = true)]
    pub kill_parent_after: Option<u64>,
    /// Stream every response whole: hold its events until the last token is due, then send
    /// them in one write (a buffering proxy, or what a starved client sees).
    #[arg(long, hide = true)]
    pub burst: bool,
    /// On request number N + 1, close the listening port, then answer HTTP 500 with
    /// `Connection: close` (and so every request after it on an open connection) and stay
    /// alive, accepting nothing: a server that stopped listening (vllm-awq on CPU did once).
    #[arg(long, hide = true)]
    pub close_port_after: Option<u64>,
}

/// `--close-port-after`: told by the request that trips it, heard by the server's accept loop.
static CLOSE_PORT: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Set once the listening socket is closed: the tripping request is answered only then, so a
/// client that reconnects after its answer is always refused.
static PORT_CLOSED: std::sync::LazyLock<tokio::sync::watch::Sender<bool>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(false).0);

/// The sim's listening socket, which `--close-port-after` closes while the process lives on.
struct Closable(Option<tokio::net::TcpListener>);

impl axum::serve::Listener for Closable {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(l) = self.0.as_mut() else {
                return std::future::pending().await;
            };
            tokio::select! {
                conn = axum::serve::Listener::accept(l) => return conn,
                () = CLOSE_PORT.notified() => {
                    self.0 = None;
                    PORT_CLOSED.send_replace(true);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.0 {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::other("the port was closed")),
        }
    }
}

impl Faults {
    /// Whether a fault acts on the token stream (then the zero-cost shortcut is not taken).
    fn any_stream_fault(&self) -> bool {
        self.hang_after_tokens.is_some()
            || self.reset_after_tokens.is_some()
            || self.empty_output
            || self.finish_reason.is_some()
            || self.lie_usage.is_some()
            || self.burst
    }

    /// The finish reason as a JSON string literal.
    fn finish_json(&self) -> String {
        Value::from(self.finish_reason.as_deref().unwrap_or("length")).to_string()
    }

    /// The completion tokens `usage` reports for `generated` tokens.
    fn usage_tokens(&self, generated: u64) -> u64 {
        match (self.lie_usage, self.empty_output) {
            (Some(n), _) => n,
            (None, true) => 0,
            (None, false) => generated,
        }
    }

    /// A token's text and logprob, for prompt `key` in text mode `mode`.
    fn word(&self, mode: &TextMode, key: &str, i: u64) -> (&'static str, f64) {
        let (w, lp) = mode.token(key, i, WORDS[(i as usize - 1) % WORDS.len()]);
        if self.empty_output {
            ("", lp)
        } else {
            (w, lp)
        }
    }
}

struct Sequence {
    prompt_tokens: u64,
    max_tokens: u64,
    tx: mpsc::UnboundedSender<u64>,
}

struct Shared {
    args: SimArgs,
    queue: mpsc::UnboundedSender<Sequence>,
    started: Instant,
    ids: AtomicU64,
    /// Completion requests received.
    received: AtomicU64,
    gauges: Arc<Gauges>,
    stats: Arc<Emitted>,
    /// `--tokenizer`: prompt tokens are counted with it, else in words.
    tokenizer: Option<Arc<Tokenizer>>,
    /// `--log-requests`: the file every request is logged to.
    log: Option<std::sync::Mutex<std::fs::File>>,
    /// `--prefix-cache`.
    cache: Option<std::sync::Mutex<PrefixCache>>,
    /// Zero-cost mode: one pre-rendered response per request shape.
    rendered: std::sync::Mutex<std::collections::HashMap<(bool, u64, u64, bool), Bytes>>,
}

/// The timings the engine actually emitted (`GET /stats`, reset by `POST /stats/reset`), so the
/// client's bias can be measured against the truth: each streamed token is stamped when its
/// chunk is handed to the HTTP layer. `POST /stats/reset?skip=N` leaves the next N requests out
/// (a client's warmup and its other requests before the measured ones).
#[derive(Default)]
struct Emitted {
    /// Requests still to leave out.
    skip: AtomicU64,
    requests: AtomicU64,
    ttft_ns: AtomicU64,
    ttft_n: AtomicU64,
    itl_ns: AtomicU64,
    itl_n: AtomicU64,
    tpot_ns: AtomicU64,
    tpot_n: AtomicU64,
}

impl Emitted {
    fn json(&self) -> Value {
        let mean = |sum: &AtomicU64, n: &AtomicU64| {
            let n = n.load(Ordering::Relaxed);
            (n > 0).then(|| sum.load(Ordering::Relaxed) as f64 / n as f64 / 1e6)
        };
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "ttft_ms_mean": mean(&self.ttft_ns, &self.ttft_n),
            "itl_ms_mean": mean(&self.itl_ns, &self.itl_n),
            "tpot_ms_mean": mean(&self.tpot_ns, &self.tpot_n),
            "itl_n": self.itl_n.load(Ordering::Relaxed),
        })
    }

    /// A request arrived: whether its timings count.
    fn admit(&self) -> bool {
        let skipped = self
            .skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !skipped {
            self.requests.fetch_add(1, Ordering::Relaxed);
        }
        !skipped
    }

    fn reset(&self, skip: u64) {
        self.skip.store(skip, Ordering::Relaxed);
        for a in [
            &self.requests,
            &self.ttft_ns,
            &self.ttft_n,
            &self.itl_ns,
            &self.itl_n,
            &self.tpot_ns,
            &self.tpot_n,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// What `/metrics` reports, in Prometheus text, named like vLLM's.
#[derive(Default)]
struct Gauges {
    running: AtomicU64,
    waiting: AtomicU64,
    generated: AtomicU64,
    /// Decode steps run, and their modelled cost: the engine's own clock, which no load on the
    /// machine changes, so tests can judge batching by it (tokens per modelled second).
    steps: AtomicU64,
    model_ns: AtomicU64,
    /// `--prefix-cache`: prompt tokens looked up, and those found cached.
    cache_queries: AtomicU64,
    cache_hits: AtomicU64,
}

/// Serves until the process is signalled. Prints one line when listening.
pub fn serve(args: SimArgs) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if args.faults.ignore_sigterm {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::spawn(async move { while term.recv().await.is_some() {} });
        }
        for _ in 0..args.faults.fork_children {
            // Children in the engine's process group that survive SIGTERM, like stray workers.
            std::process::Command::new("sh")
                .args(["-c", "trap '' TERM; while :; do sleep 1; done"])
                .stdin(std::process::Stdio::null())
                .spawn()?;
        }
        let tokenizer = match &args.tokenizer {
            None => None,
            Some(p) => Some(Arc::new(
                Tokenizer::load(p).map_err(|e| std::io::Error::other(e.to_string()))?,
            )),
        };
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        let app = with_tokenizer(args.clone(), tokenizer);
        let timing = match (args.ttft_ms, args.itl_ms) {
            (Some(t), Some(i)) => {
                format!("fixed timing: first token {t} ms, then one every {i} ms")
            }
            _ => format!(
                "max_batch {}, step {} ms + {} ms/seq, prefill {} ms/token",
                args.max_batch, args.step_ms, args.step_ms_per_seq, args.prefill_ms_per_token
            ),
        };
        println!(
            "runner sim engine: model {} on http://{} ({timing})",
            args.model,
            listener.local_addr()?,
        );
        // Without TCP_NODELAY, Nagle's algorithm holds each small SSE chunk until the client's
        // delayed ACK (~40 ms): the sim's timings would be the kernel's, not the model's.
        let listener = Closable(Some(listener)).tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await
    })
}

/// The engine's routes, with its scheduler started; prompts counted in words.
pub fn router(args: SimArgs) -> Router {
    with_tokenizer(args, None)
}

/// The engine's routes, counting prompt tokens with `tokenizer` where given.
pub fn with_tokenizer(args: SimArgs, tokenizer: Option<Arc<Tokenizer>>) -> Router {
    let (tx, rx) = mpsc::unbounded_channel();
    let gauges = Arc::new(Gauges::default());
    tokio::spawn(scheduler(rx, args.clone(), gauges.clone()));
    let shared = Arc::new(Shared {
        queue: tx,
        started: Instant::now(),
        ids: AtomicU64::new(0),
        received: AtomicU64::new(0),
        gauges,
        stats: Arc::new(Emitted::default()),
        log: args.log_requests.as_ref().and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| eprintln!("sim engine: cannot open {}: {e}", p.display()))
                .ok()
                .map(std::sync::Mutex::new)
        }),
        cache: args
            .prefix_cache
            .then(|| std::sync::Mutex::new(PrefixCache::default())),
        args,
        tokenizer,
        rendered: std::sync::Mutex::new(std::collections::HashMap::new()),
    });
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .route("/stats/reset", post(stats_reset))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .with_state(shared)
}

async fn scheduler(mut rx: mpsc::UnboundedReceiver<Sequence>, args: SimArgs, g: Arc<Gauges>) {
    let mut waiting: VecDeque<Sequence> = VecDeque::new();
    let mut running: Vec<(Sequence, u64)> = Vec::new();
    let mut deadline = Instant::now();
    loop {
        if running.is_empty() && waiting.is_empty() {
            match rx.recv().await {
                Some(s) => waiting.push_back(s),
                None => return,
            }
            // Idle until now: the next step starts from the arrival, not the last deadline.
            deadline = Instant::now();
        }
        while let Ok(s) = rx.try_recv() {
            waiting.push_back(s);
        }
        let mut prefill_tokens = 0u64;
        while running.len() < args.max_batch.max(1) {
            let Some(s) = waiting.pop_front() else { break };
            if s.tx.is_closed() {
                continue;
            }
            prefill_tokens += s.prompt_tokens;
            running.push((s, 0));
        }
        let in_flight = (running.len() + waiting.len()) as u64;
        if let Some(n) = args.faults.max_seqs_before_crash.filter(|&n| in_flight > n) {
            eprintln!(
                "sim engine: torch.OutOfMemoryError: CUDA out of memory (simulated: {in_flight} sequences in flight, more than {n}, --max-seqs-before-crash)"
            );
            std::process::exit(3);
        }
        g.running.store(running.len() as u64, Ordering::Relaxed);
        g.waiting.store(waiting.len() as u64, Ordering::Relaxed);
        let step_ms = args.step_ms
            + args.step_ms_per_seq * running.len() as f64
            + args.prefill_ms_per_token * prefill_tokens as f64;
        let step = Duration::from_secs_f64(step_ms.max(0.0) / 1000.0);
        deadline += step;
        tokio::time::sleep_until(deadline).await;
        g.steps.fetch_add(1, Ordering::Relaxed);
        g.model_ns.fetch_add(ns(step), Ordering::Relaxed);
        g.generated
            .fetch_add(running.len() as u64, Ordering::Relaxed);
        running.retain_mut(|(s, emitted)| {
            *emitted += 1;
            s.tx.send(*emitted).is_ok() && *emitted < s.max_tokens
        });
        if running.is_empty() && waiting.is_empty() {
            g.running.store(0, Ordering::Relaxed);
        }
    }
}

/// Emits token i at arrival + ttft + (i - 1) x itl: deadlines from the arrival, so lateness
/// of one token never shifts the next.
async fn fixed_timing(
    tx: mpsc::UnboundedSender<u64>,
    max_tokens: u64,
    ttft_ms: f64,
    itl_ms: f64,
    g: Arc<Gauges>,
) {
    let start = Instant::now();
    g.running.fetch_add(1, Ordering::Relaxed);
    for i in 1..=max_tokens {
        let due = ttft_ms + (i - 1) as f64 * itl_ms;
        tokio::time::sleep_until(start + Duration::from_secs_f64(due.max(0.0) / 1000.0)).await;
        if tx.send(i).is_err() {
            break;
        }
        g.generated.fetch_add(1, Ordering::Relaxed);
    }
    g.running.fetch_sub(1, Ordering::Relaxed);
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.stats.json()).into_response()
}

async fn stats_reset(State(s): State<Arc<Shared>>, uri: axum::http::Uri) -> Response {
    let skip = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("skip="));
    let skip = match skip.map(str::parse::<u64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`skip` must be a request count".into(),
            )
        }
    };
    s.stats.reset(skip);
    StatusCode::NO_CONTENT.into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let g = &s.gauges;
    let m = &s.args.model;
    let body = format!(
        "# HELP sim:num_requests_running Sequences in the running batch.\n\
         # TYPE sim:num_requests_running gauge\n\
         sim:num_requests_running{{model_name=\"{m}\"}} {}\n\
         # HELP sim:num_requests_waiting Sequences queued for the batch.\n\
         # TYPE sim:num_requests_waiting gauge\n\
         sim:num_requests_waiting{{model_name=\"{m}\"}} {}\n\
         # HELP sim:generation_tokens_total Tokens generated.\n\
         # TYPE sim:generation_tokens_total counter\n\
         sim:generation_tokens_total{{model_name=\"{m}\"}} {}\n\
         # HELP sim:steps_total Decode steps run by the batching model.\n\
         # TYPE sim:steps_total counter\n\
         sim:steps_total{{model_name=\"{m}\"}} {}\n\
         # HELP sim:model_busy_seconds_total Modelled cost of those steps (the engine's own clock).\n\
         # TYPE sim:model_busy_seconds_total counter\n\
         sim:model_busy_seconds_total{{model_name=\"{m}\"}} {}\n",
        g.running.load(Ordering::Relaxed),
        g.waiting.load(Ordering::Relaxed),
        g.generated.load(Ordering::Relaxed),
        g.steps.load(Ordering::Relaxed),
        g.model_ns.load(Ordering::Relaxed) as f64 / 1e9,
    );
    let mut body = body;
    if s.cache.is_some() {
        body.push_str(&format!(
            "# HELP sim:prefix_cache_queries_total Prompt tokens looked up in the prefix cache.\n\
             # TYPE sim:prefix_cache_queries_total counter\n\
             sim:prefix_cache_queries_total{{model_name=\"{m}\"}} {}\n\
             # HELP sim:prefix_cache_hits_total Prompt tokens found in the prefix cache.\n\
             # TYPE sim:prefix_cache_hits_total counter\n\
             sim:prefix_cache_hits_total{{model_name=\"{m}\"}} {}\n",
            g.cache_queries.load(Ordering::Relaxed),
            g.cache_hits.load(Ordering::Relaxed),
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    if s.started.elapsed() < s.args.load_time {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "loading"})),
        )
            .into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": s.args.model, "object": "model", "created": 0, "owned_by": "runner-sim"}]
    }))
    .into_response()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn chat(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, Kind::Chat, &headers, body).await
}

async fn completions(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    generate(s, Kind::Completion, &headers, body).await
}

/// Token `i`'s text (from 1); with `--log-requests` the first names the request (`r7-`).
/// Output token `i` and its logprob: the text mode's word, with `--log-requests`' request number
/// in front of the first one.
fn token_text(
    f: &Faults,
    mode: &TextMode,
    key: &str,
    tag: Option<u64>,
    i: u64,
) -> (std::borrow::Cow<'static, str>, f64) {
    let (w, lp) = f.word(mode, key, i);
    match tag {
        Some(id) if i == 1 && !f.empty_output => (format!("r{id}-{w}").into(), lp),
        _ => (w.into(), lp),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    let kind = if status == StatusCode::NOT_FOUND {
        "NotFoundError"
    } else {
        "BadRequestError"
    };
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": kind, "code": status.as_u16()}})),
    )
        .into_response()
}

/// What text mode chooses a request's tokens by: the prompt (completions) or every message's
/// role and content (chat).
fn prompt_key(req: &Value, kind: Kind) -> String {
    match kind {
        Kind::Completion => match &req["prompt"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        },
        Kind::Chat => req["messages"].as_array().map_or_else(String::new, |m| {
            m.iter()
                .map(|m| {
                    format!(
                        "{}: {}\n",
                        m["role"].as_str().unwrap_or_default(),
                        m["content"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        }),
    }
}

/// The prompt tokens of a request: with `--tokenizer`, its tokens (see `SimArgs::tokenizer`),
/// else its whitespace-separated words.
fn count_tokens(req: &Value, kind: Kind, tokenizer: Option<&Tokenizer>) -> u64 {
    if let Some(t) = tokenizer {
        return count_with(t, req, kind).max(1) as u64;
    }
    let words = |v: &Value| v.as_str().map_or(0, |s| s.split_whitespace().count());
    let n = match kind {
        Kind::Completion => match &req["prompt"] {
            Value::Array(a) => a.iter().map(words).sum(),
            v => words(v),
        },
        Kind::Chat => req["messages"]
            .as_array()
            .map_or(0, |m| m.iter().map(|m| words(&m["content"])).sum()),
    };
    n.max(1) as u64
}

/// A request as the prefix cache sees it: its messages (a completions prompt as one), and what
/// the cache holds after it: those messages and the answer (chat: a message after them;
/// completions: the text continued).
fn cache_view(req: &Value, kind: Kind, answer: String) -> (Vec<Msg>, Vec<Msg>) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match kind {
        Kind::Chat => {
            let prompt = req["messages"].as_array().map_or(Vec::new(), |m| {
                m.iter()
                    .map(|m| Msg {
                        role: text(&m["role"]),
                        content: text(&m["content"]),
                    })
                    .collect()
            });
            let mut then = prompt.clone();
            then.push(Msg {
                role: "assistant".into(),
                content: answer,
            });
            (prompt, then)
        }
        Kind::Completion => {
            let prompt = match &req["prompt"] {
                Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(""),
                v => text(v),
            };
            // The answer continues the prompt's text.
            let whole = Msg {
                role: String::new(),
                content: format!("{prompt}{answer}"),
            };
            let prompt = Msg {
                role: String::new(),
                content: prompt,
            };
            (vec![prompt], vec![whole])
        }
    }
}

/// The sim's chat template, per message: a start marker, the role and an end marker, as in
/// ChatML-style templates (`<|im_start|>user\n ... <|im_end|>`).
pub const CHAT_TOKENS_PER_MESSAGE: usize = 3;

/// A count the sim cannot make (an encoding error) is 0: usage then shows the mismatch.
fn count_with(t: &Tokenizer, req: &Value, kind: Kind) -> usize {
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_default();
    match kind {
        Kind::Completion => match &req["prompt"] {
            Value::Array(a) => a.iter().map(|p| t.count(&text(p)).unwrap_or(0)).sum(),
            v => t.count(&text(v)).unwrap_or(0),
        },
        Kind::Chat => {
            let contents: usize = req["messages"].as_array().map_or(0, |m| {
                m.iter()
                    .map(|m| {
                        CHAT_TOKENS_PER_MESSAGE + t.count_plain(&text(&m["content"])).unwrap_or(0)
                    })
                    .sum()
            });
            t.added_specials().unwrap_or(0) + contents
        }
    }
}

const WORDS: &[&str] = &[
    "the ",
    "model ",
    "is ",
    "a ",
    "simulation ",
    "of ",
    "serving ",
    "tokens ",
    "at ",
    "a ",
    "steady ",
    "pace ",
];

async fn generate(s: Arc<Shared>, kind: Kind, headers: &HeaderMap, body: Bytes) -> Response {
    let n = s.received.fetch_add(1, Ordering::Relaxed) + 1;
    let f = &s.args.faults;
    if f.crash_after.is_some_and(|c| n > c) {
        eprintln!("sim engine: crashing on request {n} (--crash-after)");
        std::process::exit(3);
    }
    if f.close_port_after.is_some_and(|c| n > c) {
        eprintln!("sim engine: closing its port on request {n} (--close-port-after)");
        CLOSE_PORT.notify_one();
        let _ = PORT_CLOSED.subscribe().wait_for(|closed| *closed).await;
        let mut r = error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "EngineCore encountered an issue (--close-port-after)".into(),
        );
        // Nor is this connection used again: the next request must connect, and is refused.
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return r;
    }
    if f.kill_parent_after.is_some_and(|c| n == c + 1) {
        let parent = nix::unistd::getppid();
        eprintln!("sim engine: killing parent {parent} on request {n} (--kill-parent-after)");
        let _ = nix::sys::signal::kill(parent, nix::sys::signal::Signal::SIGKILL);
    }
    if s.started.elapsed() < s.args.load_time {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the model is still loading".into(),
        );
    }
    if f.hang_before_headers {
        std::future::pending::<()>().await;
    }
    if f.reject_every.is_some_and(|k| k > 0 && n % k == 0) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "The server is busy; retry later.".into(),
        );
        if let Some(v) = f.retry_after.as_deref().and_then(|v| v.parse().ok()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let model = req["model"].as_str().unwrap_or_default();
    if model != s.args.model {
        return error(
            StatusCode::NOT_FOUND,
            format!("The model `{model}` does not exist."),
        );
    }
    if let Some(f) = s
        .args
        .refuse_fields
        .iter()
        .find(|f| req.get(f.as_str()).is_some())
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("body.{f}: Extra inputs are not permitted"),
        );
    }
    if kind == Kind::Chat && !req["messages"].is_array() {
        return error(StatusCode::BAD_REQUEST, "`messages` is required".into());
    }
    if kind == Kind::Completion && req["prompt"].is_null() {
        return error(StatusCode::BAD_REQUEST, "`prompt` is required".into());
    }
    let max_tokens = req["max_tokens"]
        .as_u64()
        .or_else(|| req["max_completion_tokens"].as_u64())
        .unwrap_or(16)
        .max(1);
    let prompt_tokens = count_tokens(&req, kind, s.tokenizer.as_deref());
    let stream = req["stream"].as_bool().unwrap_or(false);
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let arrived = Instant::now();
    let counted = s.stats.admit();
    let mode = s.args.text_mode();
    let key: Arc<str> = prompt_key(&req, kind).into();
    let id = s.ids.fetch_add(1, Ordering::Relaxed);
    let tag = s.log.as_ref().map(|log| {
        let answer: String = (1..=max_tokens)
            .map(|i| token_text(f, &mode, &key, Some(id), i).0)
            .collect();
        let session = headers.get("x-session-id").and_then(|v| v.to_str().ok());
        let line = json!({"id": id, "session_id": session, "body": req, "answer": answer});
        if let Ok(mut file) = log.lock() {
            use std::io::Write;
            let _ = writeln!(file, "{line}");
        }
        id
    });
    let cached = s.cache.as_ref().map(|cache| {
        let answer = (1..=max_tokens)
            .map(|i| token_text(f, &mode, &key, tag, i).0)
            .collect::<String>();
        let (prompt, then) = cache_view(&req, kind, answer);
        let t = s.tokenizer.as_deref();
        let count = |text: &str| match t {
            Some(t) => t.count_plain(text).unwrap_or(0),
            None => text.split_whitespace().count(),
        };
        let units = match (t, kind) {
            (Some(t), Kind::Chat) => Units {
                count: &count,
                specials: t.added_specials().unwrap_or(0),
                per_message: CHAT_TOKENS_PER_MESSAGE,
            },
            (Some(t), Kind::Completion) => Units {
                count: &count,
                specials: t.added_specials().unwrap_or(0),
                per_message: 0,
            },
            (None, _) => Units {
                count: &count,
                specials: 0,
                per_message: 0,
            },
        };
        let n = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lookup_and_insert(&prompt, then, prompt_tokens as usize, &units)
            as u64;
        s.gauges
            .cache_queries
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        s.gauges.cache_hits.fetch_add(n, Ordering::Relaxed);
        n
    });
    if stream
        && s.args.ttft_ms == Some(0.0)
        && s.args.itl_ms == Some(0.0)
        && !f.any_stream_fault()
        && mode.is_default()
        && tag.is_none()
        && cached.is_none()
    {
        return zero_cost(&s, kind, max_tokens, prompt_tokens, include_usage);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    if let (Some(ttft), Some(itl)) = (s.args.ttft_ms, s.args.itl_ms) {
        tokio::spawn(fixed_timing(tx, max_tokens, ttft, itl, s.gauges.clone()));
    } else if s
        .queue
        .send(Sequence {
            // Cached tokens cost no prefill.
            prompt_tokens: prompt_tokens - cached.unwrap_or(0),
            max_tokens,
            tx,
        })
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler stopped".into(),
        );
    }
    if stream {
        // Quoted once here, so chunks can be formatted without a JSON serializer.
        let model = Value::from(s.args.model.as_str()).to_string();
        let chunks = Chunks {
            kind,
            id,
            model,
            rx,
            max_tokens,
            prompt_tokens,
            include_usage,
            stage: Stage::Role,
            tokens_sent: 0,
            arrived,
            first: None,
            last: None,
            stats: if counted {
                s.stats.clone()
            } else {
                Arc::new(Emitted::default())
            },
            faults: s.args.faults.clone(),
            mode,
            key,
            tag,
            cached,
        };
        if s.args.faults.burst {
            let whole = futures_util::stream::once(async move {
                let mut c = chunks;
                let mut all = Vec::new();
                while let Some(b) = c.next().await {
                    all.extend_from_slice(&b);
                }
                Ok::<_, std::io::Error>(Bytes::from(all))
            });
            return Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Body::from_stream(whole))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
        let (hang, reset) = (
            s.args.faults.hang_after_tokens,
            s.args.faults.reset_after_tokens,
        );
        let body = futures_util::stream::unfold((chunks, 0u64), move |(mut c, sent)| async move {
            if hang.is_some_and(|h| sent >= h) {
                std::future::pending::<()>().await;
            }
            if reset.is_some_and(|r| sent >= r) {
                let e = std::io::Error::other("connection reset (--reset-after-tokens)");
                return Some((Err(e), (c, sent)));
            }
            let before = c.tokens_sent;
            c.next().await.map(|b| {
                let sent = sent + (c.tokens_sent - before);
                (Ok::<_, std::io::Error>(b), (c, sent))
            })
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Body::from_stream(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    } else {
        let model = s.args.model.clone();
        let mut rx = rx;
        let mut text = String::new();
        let mut n = 0;
        let f = &s.args.faults;
        let mut generated: Vec<(std::borrow::Cow<'static, str>, f64)> = Vec::new();
        while let Some(i) = rx.recv().await {
            let (w, lp) = token_text(f, &mode, &key, tag, i);
            text.push_str(&w);
            generated.push((w, lp));
            n = i;
            if i >= max_tokens {
                break;
            }
        }
        let n = f.usage_tokens(n);
        let finish = f.finish_reason.as_deref().unwrap_or("length");
        let mut usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n});
        if let Some(c) = cached {
            usage["prompt_tokens_details"] = json!({ "cached_tokens": c });
        }
        let v = match kind {
            Kind::Chat => {
                let logprobs = req["logprobs"].as_bool().unwrap_or(false).then(|| {
                    let content: Vec<Value> = generated
                        .iter()
                        .map(|(w, lp)| json!({"token": w, "logprob": lp, "bytes": w.as_bytes(), "top_logprobs": []}))
                        .collect();
                    json!({ "content": content })
                });
                json!({
                    "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs, "finish_reason": finish}],
                    "usage": usage,
                })
            }
            Kind::Completion => {
                let echo = req["echo"].as_bool().unwrap_or(false) && !mode.no_prompt_logprobs;
                let mut tokens: Vec<Value> = Vec::new();
                let mut lps: Vec<Value> = Vec::new();
                if echo {
                    let prompt = req["prompt"].as_str().unwrap_or_default();
                    for (t, lp) in mode.prompt_logprobs(prompt) {
                        tokens.push(t.into());
                        lps.push(lp.map_or(Value::Null, Value::from));
                    }
                    text = format!("{prompt}{text}");
                }
                for (w, lp) in &generated {
                    tokens.push(w.as_ref().into());
                    lps.push((*lp).into());
                }
                let logprobs = req["logprobs"]
                    .as_u64()
                    .is_some()
                    .then(|| json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": null, "text_offset": null}));
                json!({
                    "id": format!("cmpl-{id}"), "object": "text_completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
                    "usage": usage,
                })
            }
        };
        axum::Json(v).into_response()
    }
}

enum Stage {
    Role,
    Tokens,
    Usage,
    Done,
    End,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Zero-cost mode (`--ttft-ms 0 --itl-ms 0`, streamed): the whole response at once, rendered once
/// per request shape and shared, so the engine costs next to nothing and a client benchmark
/// measures the client. Every response of a shape carries the same id.
fn zero_cost(
    s: &Shared,
    kind: Kind,
    max_tokens: u64,
    prompt_tokens: u64,
    include_usage: bool,
) -> Response {
    let key = (kind == Kind::Chat, max_tokens, prompt_tokens, include_usage);
    let body = {
        let mut cache = s.rendered.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| {
                let (_tx, rx) = mpsc::unbounded_channel();
                let mut c = Chunks {
                    kind,
                    id: 0,
                    model: Value::from(s.args.model.as_str()).to_string(),
                    rx,
                    max_tokens,
                    prompt_tokens,
                    include_usage,
                    stage: Stage::Role,
                    tokens_sent: 0,
                    arrived: Instant::now(),
                    first: None,
                    last: None,
                    stats: Arc::new(Emitted::default()),
                    faults: Faults::default(),
                    mode: TextMode::default(),
                    key: "".into(),
                    tag: None,
                    cached: None,
                };
                c.render_all()
            })
            .clone()
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The SSE body of one streamed response, in vLLM's chunk format.
struct Chunks {
    kind: Kind,
    id: u64,
    /// The model id as a JSON string literal, quotes included.
    model: String,
    rx: mpsc::UnboundedReceiver<u64>,
    max_tokens: u64,
    prompt_tokens: u64,
    include_usage: bool,
    stage: Stage,
    tokens_sent: u64,
    arrived: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    stats: Arc<Emitted>,
    faults: Faults,
    mode: TextMode,
    /// The prompt the tokens are chosen for (text mode).
    key: Arc<str>,
    /// `--log-requests`: the request's number, named by its first token.
    tag: Option<u64>,
    /// `--prefix-cache`: the prompt tokens found cached.
    cached: Option<u64>,
}

impl Chunks {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.stage {
                // As vLLM does, the role chunk goes out with the first token (its first
                // iteration), not when the request arrives: a client timing its first token to
                // the first chunk with choices (vLLM's bench) sees the first token.
                Stage::Role | Stage::Tokens => match self.rx.recv().await {
                    Some(i) => {
                        let role = matches!(self.stage, Stage::Role) && self.kind == Kind::Chat;
                        self.stage = Stage::Tokens;
                        self.tokens_sent += 1;
                        self.stamp();
                        let (word, _) =
                            token_text(&self.faults, &self.mode, &self.key, self.tag, i);
                        let finish = if i >= self.max_tokens {
                            self.stage = Stage::Usage;
                            self.faults.finish_json()
                        } else {
                            "null".to_string()
                        };
                        let delta = format!(r#"{{"content":"{word}"}}"#);
                        let text = format!("\"{word}\"");
                        let part = if self.kind == Kind::Chat { delta } else { text };
                        let token = self.chunk(&part, &finish);
                        if !role {
                            return Some(token);
                        }
                        let mut both = self
                            .chunk(r#"{"role":"assistant","content":""}"#, "null")
                            .to_vec();
                        both.extend_from_slice(&token);
                        return Some(Bytes::from(both));
                    }
                    None => self.stage = Stage::End,
                },
                Stage::Usage => {
                    self.stage = Stage::Done;
                    if self.include_usage {
                        let (object, prefix) = self.names();
                        let p = self.prompt_tokens;
                        let c = self.faults.usage_tokens(self.max_tokens);
                        let details = self.cached.map_or(String::new(), |n| {
                            format!(",\"prompt_tokens_details\":{{\"cached_tokens\":{n}}}")
                        });
                        return Some(Bytes::from(format!(
                            "data: {{\"id\":\"{prefix}-{}\",\"object\":\"{object}\",\"created\":0,\"model\":{},\"choices\":[],\"usage\":{{\"prompt_tokens\":{p},\"total_tokens\":{},\"completion_tokens\":{c}{details}}}}}\n\n",
                            self.id, self.model, p + c
                        )));
                    }
                }
                Stage::Done => {
                    self.stage = Stage::End;
                    return Some(Bytes::from_static(b"data: [DONE]\n\n"));
                }
                Stage::End => return None,
            }
        }
    }

    /// Records when this token's chunk leaves the engine.
    fn stamp(&mut self) {
        let now = Instant::now();
        let st = &self.stats;
        match self.last {
            None => {
                st.ttft_ns
                    .fetch_add(ns(now - self.arrived), Ordering::Relaxed);
                st.ttft_n.fetch_add(1, Ordering::Relaxed);
                self.first = Some(now);
            }
            Some(prev) => {
                st.itl_ns.fetch_add(ns(now - prev), Ordering::Relaxed);
                st.itl_n.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.last = Some(now);
        if self.tokens_sent >= self.max_tokens && self.tokens_sent > 1 {
            if let Some(first) = self.first {
                let per = ns(now - first) / (self.tokens_sent - 1);
                st.tpot_ns.fetch_add(per, Ordering::Relaxed);
                st.tpot_n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn names(&self) -> (&'static str, &'static str) {
        match self.kind {
            Kind::Chat => ("chat.completion.chunk", "chatcmpl"),
            Kind::Completion => ("text_completion", "cmpl"),
        }
    }

    /// Every event of the response, with all tokens due at once (zero-cost mode).
    fn render_all(&mut self) -> Bytes {
        let mut out = Vec::new();
        if self.kind == Kind::Chat {
            out.extend_from_slice(&self.chunk(r#"{"role":"assistant","content":""}"#, "null"));
        }
        for i in 1..=self.max_tokens {
            let word = WORDS[(i as usize - 1) % WORDS.len()];
            let finish = if i >= self.max_tokens {
                "\"length\""
            } else {
                "null"
            };
            let part = match self.kind {
                Kind::Chat => format!(r#"{{"content":"{word}"}}"#),
                Kind::Completion => format!("\"{word}\""),
            };
            out.extend_from_slice(&self.chunk(&part, finish));
        }
        self.stage = Stage::Usage;
        self.tokens_sent = self.max_tokens;
        while let Some(b) = futures_util::FutureExt::now_or_never(self.next()).flatten() {
            out.extend_from_slice(&b);
        }
        Bytes::from(out)
    }

    /// One event; `part` is the delta object (chat) or the quoted text (completions).
    fn chunk(&self, part: &str, finish: &str) -> Bytes {
        let (object, prefix) = self.names();
        let choice = match self.kind {
            Kind::Chat => {
                format!(r#"{{"index":0,"delta":{part},"logprobs":null,"finish_reason":{finish}}}"#)
            }
            Kind::Completion => format!(
                r#"{{"index":0,"text":{part},"logprobs":null,"finish_reason":{finish},"stop_reason":null}}"#
            ),
        };
        Bytes::from(format!(
            "data: {{\"id\":\"{prefix}-{}\",\"object\":\"{object}\",\"created\":0,\"model\":{},\"choices\":[{choice}]}}\n\n",
            self.id, self.model
        ))
    }
}
