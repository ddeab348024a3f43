//! `runner engine replay FILE`: an endpoint that answers every completion request with the
//! bytes of a recorded response, byte for byte, optionally in small writes. It lets anyone
//! check how `runner` reads a stream a real server produced (`runner probe` against it), and
//! it is how the transcript tests drive the real client over real sockets.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;

/// Settings of the replay engine (`runner engine replay --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The recorded response body to send (e.g. an SSE transcript).
    pub file: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
    /// HTTP status to answer with.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Content type of the answer.
    #[arg(long, default_value = "text/event-stream")]
    pub content_type: String,
    /// Send the body in writes of this many bytes (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub chunk_bytes: usize,
    /// Pause between writes, e.g. "5ms".
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub chunk_delay: Duration,
}

struct Shared {
    args: ReplayArgs,
    body: Bytes,
}

/// Serves until the process is signalled.
pub fn serve(args: ReplayArgs) -> std::io::Result<()> {
    let body = Bytes::from(std::fs::read(&args.file).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", args.file.display()),
        )
    })?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        println!(
            "runner replay engine: {} ({} bytes) on http://{}",
            args.file.display(),
            body.len(),
            listener.local_addr()?
        );
        let app = router(args, body);
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await
    })
}

/// The replay routes.
pub fn router(args: ReplayArgs, body: Bytes) -> Router {
    let shared = Arc::new(Shared { args, body });
    let answer = {
        let s = shared.clone();
        move || {
            let s = s.clone();
            async move { replay(&s) }
        }
    };
    Router::new()
        .route("/health", get(|| async { StatusCode::OK }))
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(serde_json::json!({
                    "object": "list",
                    "data": [{"id": "replay", "object": "model", "owned_by": "runner-replay"}]
                }))
            }),
        )
        .route("/v1/completions", post(answer.clone()))
        .route("/v1/chat/completions", post(answer))
}

fn replay(s: &Shared) -> Response {
    let status = StatusCode::from_u16(s.args.status).unwrap_or(StatusCode::OK);
    let size = s.args.chunk_bytes;
    let body = if size == 0 {
        Body::from(s.body.clone())
    } else {
        let chunks: Vec<Bytes> = (0..s.body.len())
            .step_by(size)
            .map(|i| s.body.slice(i..(i + size).min(s.body.len())))
            .collect();
        let delay = s.args.chunk_delay;
        let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
            let next = it.next()?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, std::convert::Infallible>(next), it))
        });
        Body::from_stream(stream)
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, s.args.content_type.as_str())
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
