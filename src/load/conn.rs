//! The HTTP/1.1 connections a load run sends its requests on: keep-alive connections to one
//! endpoint, opened ahead of the load and reused, driven by hyper's connection API directly.
//!
//! Why not reqwest here (it stays for everything else: health checks, model checks, metric
//! scrapes): on the request hot path reqwest parsed the URL several times per request, ran a
//! redirect-policy layer and a pool keyed by host, and this was about a fifth of the client's
//! CPU at its ceiling (docs/performance.md). One endpoint per level needs none of it: the
//! target is parsed once, the request is the body plus four headers, and the pool is a list.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::error::error_chain;
use crate::metrics::record::ErrorClass;

/// The header a multi-turn session's requests carry (routers use it for affinity).
pub const SESSION_ID: http::header::HeaderName =
    http::header::HeaderName::from_static("x-session-id");

/// A failed request: its class and the message to keep.
pub type Failure = (ErrorClass, String);

/// One API endpoint and its idle connections.
#[derive(Debug)]
pub struct Endpoint {
    /// Host and port to connect to (an IPv6 address without brackets).
    host: String,
    port: u16,
    /// The request target, origin-form (`/v1/chat/completions`).
    path: http::Uri,
    /// The `Host` header.
    authority: HeaderValue,
    authorization: Option<HeaderValue>,
    connect_timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A connection taken from the endpoint, and whether it came from the idle list (opened ahead
/// or used before): the server may have closed such a connection meanwhile, so a request that
/// fails on it before any answer is sent again on a new one.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    reused: bool,
}

impl Endpoint {
    /// An endpoint for `url` (`http://host:port/path`); `api_key` is sent as a bearer token.
    pub fn new(
        url: &str,
        connect_timeout: Duration,
        api_key: Option<&str>,
    ) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "`{url}`: only http:// endpoints are supported (no TLS in this build); put a \
                 TLS-terminating proxy in front, or use the engine's plain HTTP port"
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(format!("`{url}` has no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        let mut path = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path = format!("{path}?{q}");
        }
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        let authorization = api_key
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| "the API key is not a valid header value".to_string())?;
                v.set_sensitive(true);
                Ok::<_, String>(v)
            })
            .transpose()?;
        Ok(Endpoint {
            host,
            port,
            path: path
                .parse()
                .map_err(|e| format!("`{url}`: bad path: {e}"))?,
            authority: HeaderValue::from_str(&authority)
                .map_err(|e| format!("`{url}`: bad host: {e}"))?,
            authorization,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Opens `n` connections at once and keeps them idle, so the load does not pay connection
    /// setup inside its measured latency. Failures are left for the requests to report.
    pub async fn preconnect(&self, n: usize) {
        let opened = futures_util::future::join_all((0..n).map(|_| self.connect())).await;
        for c in opened.into_iter().flatten() {
            self.put(Conn {
                sender: c,
                reused: true,
            });
        }
    }

    /// An idle connection ready for a request, or a new one.
    pub async fn take(&self) -> Result<Conn, Failure> {
        loop {
            let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
            let Some(mut sender) = idle else { break };
            if sender.ready().await.is_ok() {
                return Ok(Conn {
                    sender,
                    reused: true,
                });
            }
        }
        Ok(Conn {
            sender: self.connect().await?,
            reused: false,
        })
    }

    /// Gives back a connection whose response was read to the end.
    pub fn put(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        if let Ok(mut v) = self.idle.lock() {
            v.push(conn.sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let tcp = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err((
                    ErrorClass::TimeoutConnect,
                    format!(
                        "could not connect to {}:{} within {}",
                        self.host,
                        self.port,
                        humantime::format_duration(self.connect_timeout)
                    ),
                ))
            }
            Ok(Err(e)) => {
                return Err((
                    ErrorClass::Connect,
                    format!("could not connect to {}:{}: {e}", self.host, self.port),
                ))
            }
            Ok(Ok(t)) => t,
        };
        // Small writes (a request, a token) must leave at once, not wait for an ACK.
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| (ErrorClass::Connect, error_chain(&e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one POST with `body` on `conn` (with `X-Session-ID: session` when given); a reused
    /// connection the server had closed is replaced by a new one once. Returns the response and
    /// the connection it came on.
    pub async fn post(
        &self,
        mut conn: Conn,
        body: Bytes,
        session: Option<&HeaderValue>,
    ) -> Result<(http::Response<Incoming>, Conn), Failure> {
        loop {
            let mut req = http::Request::new(Full::new(body.clone()));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = self.path.clone();
            let h = req.headers_mut();
            h.insert(HOST, self.authority.clone());
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(a) = &self.authorization {
                h.insert(AUTHORIZATION, a.clone());
            }
            if let Some(id) = session {
                h.insert(SESSION_ID, id.clone());
            }
            match conn.sender.send_request(req).await {
                Ok(resp) => return Ok((resp, conn)),
                Err(e)
                    if conn.reused
                        && (e.is_canceled() || e.is_closed() || e.is_incomplete_message()) =>
                {
                    conn = Conn {
                        sender: self.connect().await?,
                        reused: false,
                    };
                }
                Err(e) => return Err((ErrorClass::Io, error_chain(&e))),
            }
        }
    }
}

/// The next chunk of a response body: `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Option<Result<Bytes, Failure>> {
    loop {
        match body.frame().await? {
            Err(e) => return Some(Err((ErrorClass::Io, error_chain(&e)))),
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    return Some(Ok(data));
                }
                // Trailers carry nothing a benchmark records.
            }
        }
    }
}
