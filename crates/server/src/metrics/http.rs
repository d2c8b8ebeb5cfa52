//! The metrics listener: `/metrics`, `/health/live` and `/health/ready` over HTTP/1.1.
//!
//! A listener of its own (`[metrics] listen`), so that scrapes and probes never take a slot
//! of the connection table the session listeners share, and a firewall can treat it apart.
//! It is bound before the append-only file is replayed: `/health/live` answers at once and
//! `/health/ready` says 503 until the replay is over, which is what a Kubernetes startup or
//! readiness probe needs to tell a long replay from a hung process.
//!
//! With `metrics.tls = true` it speaks TLS with the `[tls]` certificate (and client CA) of
//! the other listeners. With `metrics.token_file`, `/metrics` wants
//! `Authorization: Bearer <token>`; the health endpoints never do, since they say nothing
//! but whether the server is up, and probes are simplest without credentials.
//!
//! hyper serves the connections: HTTP parsing is not something to write again. Each
//! connection is bounded (a header timeout, a cap on connections at once), and at shutdown
//! open connections finish the response they are writing and close.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::export::{Exporter, Source};
use crate::tls::Tls;

/// Connections served at once; more are closed at accept. A scraper and a few probes need a
/// handful; the bound keeps a flood from costing more than a few file descriptors.
const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's headers (and to finish a TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The text format Prometheus asks for by default, and the OpenMetrics one it prefers.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the listener needs besides its socket.
#[derive(Debug)]
pub struct Settings {
    /// The certificate to serve TLS with; `None` for plain HTTP.
    pub tls: Option<Arc<Tls>>,
    /// The bearer token `/metrics` requires; `None` for none.
    pub token: Option<String>,
}

/// A running metrics listener.
#[derive(Debug)]
pub struct Running {
    /// The address it is bound to (the port may have been chosen by the OS).
    pub addr: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets open connections finish their response, and returns once
    /// they have (or after a few seconds).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves the metrics of `source` on it until [`Running::stop`].
pub async fn start(
    addr: std::net::SocketAddr,
    settings: Settings,
    source: Arc<Source>,
) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, settings, source, stop.clone()));
    Ok(Running { addr, stop, task })
}

/// Asks `addr` for `path` over plain HTTP/1.0 and returns the status code and body: the
/// client behind `sessiond health`, which container health checks run (the image has no
/// curl). Blocking, bounded by `timeout` per step; the body is capped at 64 KiB.
pub fn probe(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// Reads the bearer token from `path`: its first line, which must not be empty.
pub fn read_token(path: &std::path::Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(TokenError::Empty(path.to_path_buf()));
    }
    Ok(token.to_string())
}

/// Why `metrics.token_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("cannot read metrics.token_file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its first line is empty.
    #[error("metrics.token_file {0} is empty: put the token on its first line")]
    Empty(std::path::PathBuf),
}

/// Serves `listener` until `stop` is cancelled, then lets open connections finish their
/// current response.
async fn serve(
    listener: TcpListener,
    settings: Settings,
    source: Arc<Source>,
    stop: CancellationToken,
) {
    let app = Arc::new(App {
        exporter: Exporter::new(source.clone()),
        source,
        token: settings.token,
    });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "metrics listener: too many connections; closing");
            continue;
        };
        let acceptor = settings.tls.as_ref().map(|tls| tls.acceptor());
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_connection(socket, app, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => serve_connection(stream, app, stop).await,
                        Ok(Err(e)) => {
                            info!(%peer, error = %e, "metrics listener: TLS handshake failed")
                        }
                        Err(_) => info!(%peer, "metrics listener: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Every connection holds a permit until it ends: having them all back means they have
    // ended. Open connections were told to stop; a client that never reads cannot hold this.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(all)).await;
}

/// Serves HTTP/1.1 on one connection until the client closes it or `stop` is cancelled.
async fn serve_connection<S>(stream: S, app: Arc<App>, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.respond(&request)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "metrics listener: connection error");
            }
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

struct App {
    exporter: Exporter,
    source: Arc<Source>,
    token: Option<String>,
}

impl App {
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match request.uri().path() {
            "/health/live" => text(StatusCode::OK, "live\n"),
            "/health/ready" => match self.source.ready() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why.message()),
            },
            "/metrics" => self.metrics(request),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /health/live or /health/ready\n",
            ),
        }
    }

    fn metrics(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(request) {
            let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sessiond metrics\""),
            );
            return response;
        }
        // Prometheus lists OpenMetrics first in its Accept header when it can parse it.
        let openmetrics = request
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("application/openmetrics-text"));
        match self.exporter.render(openmetrics) {
            Ok(body) => {
                let format = if openmetrics {
                    OPENMETRICS_FORMAT
                } else {
                    TEXT_FORMAT
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(format));
                response
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be encoded\n",
            ),
        }
    }

    /// Whether the request carries the bearer token, if one is required. Compared in
    /// constant time, so that response timing does not tell how much of a guess was right.
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        given.trim().as_bytes().ct_eq(token.as_bytes()).into()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
