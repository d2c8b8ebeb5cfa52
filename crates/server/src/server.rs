//! The accept loop and the per-connection handler.
//!
//! Shaped like mini-redis's `server.rs`: a [`Listener`] accepts connections while a semaphore
//! has permits, each connection runs in its own task as a [`Handler`], a broadcast channel
//! tells every handler to stop, and an mpsc channel whose last sender is dropped tells
//! [`run`] that they all have.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sessiond_proto::{FrameError, Inbound, Limits, ResponseFrame, Status};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::time::{self, Instant};
use tracing::{debug, error, info, warn};

use crate::aof::{Aof, FsyncPolicy};
use crate::cmd;
use crate::connection::{Connection, FLUSH_THRESHOLD};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::store::Store;

/// The opcode of frames the server sends without a request (`BUSY`, `PROTOCOL_ERROR`).
pub const UNSOLICITED_OPCODE: u8 = 0xFF;

/// What every connection handler shares.
pub struct Context {
    /// The session data.
    pub store: Store,
    /// Counters for `STATS`.
    pub stats: Arc<Stats>,
    /// Limits enforced on requests.
    pub limits: Limits,
    /// The append-only file, when persistence is enabled.
    pub aof: Option<Aof>,
}

impl Context {
    /// Whether writes must be refused because they cannot be persisted.
    pub(crate) fn refuse_writes(&self) -> bool {
        self.aof.as_ref().is_some_and(Aof::is_failed)
    }

    /// The AOF, if responses to writes must wait for its fsync.
    fn sync_before_ack(&self) -> Option<&Aof> {
        self.aof
            .as_ref()
            .filter(|aof| aof.policy() == FsyncPolicy::Always)
    }
}

/// Connection-handling settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connections served at once.
    pub max_connections: u32,
    /// Idle connections are closed after this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// How long shutdown waits for handlers to finish.
    pub shutdown_timeout: Duration,
}

/// Serves connections from `listener` until `shutdown` completes, then stops accepting,
/// lets every connection answer what it has received, and returns once they have closed (or
/// `shutdown_timeout` has passed).
pub async fn run(
    listener: TcpListener,
    ctx: Arc<Context>,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) {
    let (notify_shutdown, _) = broadcast::channel(1);
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    let mut server = Listener {
        listener,
        limit_connections: Arc::new(Semaphore::new(settings.max_connections as usize)),
        ctx,
        idle_timeout: settings.idle_timeout,
        notify_shutdown,
        shutdown_complete_tx,
    };

    tokio::select! {
        () = server.run() => {}
        () = shutdown => info!("shutting down: no longer accepting connections"),
    }

    // Dropping the broadcast sender wakes every handler; dropping our completion sender
    // leaves only the handlers' clones, so `recv` returns `None` once the last one exits.
    let Listener {
        notify_shutdown,
        shutdown_complete_tx,
        ctx,
        ..
    } = server;
    drop(notify_shutdown);
    drop(shutdown_complete_tx);
    match time::timeout(settings.shutdown_timeout, shutdown_complete_rx.recv()).await {
        Ok(_) => info!("all connections closed"),
        Err(_) => warn!(
            open = ctx.stats.connections_current.load(Ordering::Relaxed),
            "shutdown timeout passed with connections still open"
        ),
    }
}

struct Listener {
    listener: TcpListener,
    limit_connections: Arc<Semaphore>,
    ctx: Arc<Context>,
    idle_timeout: Option<Duration>,
    notify_shutdown: broadcast::Sender<()>,
    shutdown_complete_tx: mpsc::Sender<()>,
}

impl Listener {
    /// Accepts forever. Accept errors (e.g. out of file descriptors) are logged and retried
    /// with a backoff instead of ending the server.
    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (socket, peer) = match self.listener.accept().await {
                Ok(accepted) => {
                    backoff = Duration::from_millis(10);
                    accepted
                }
                Err(e) => {
                    error!(error = %e, retry_in = ?backoff, "accept failed");
                    time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            Stats::bump(&self.ctx.stats.connections_total);
            let Ok(permit) = self.limit_connections.clone().try_acquire_owned() else {
                Stats::bump(&self.ctx.stats.connections_rejected);
                warn!(%peer, "connection limit reached; refusing connection");
                refuse_busy(socket);
                continue;
            };
            // Responses are batched by the handler, so Nagle's algorithm would only add delay.
            let _ = socket.set_nodelay(true);
            let mut handler = Handler {
                connection: Connection::new(socket, self.ctx.limits),
                ctx: self.ctx.clone(),
                idle_timeout: self.idle_timeout,
                shutdown: Shutdown::new(self.notify_shutdown.subscribe()),
                held: Vec::new(),
                held_bytes: 0,
                held_mutations: false,
                _shutdown_complete: self.shutdown_complete_tx.clone(),
            };
            tokio::spawn(async move {
                handler
                    .ctx
                    .stats
                    .connections_current
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "connection opened");
                if let Err(e) = handler.run().await {
                    debug!(%peer, error = %e, "connection error");
                }
                debug!(%peer, "connection closed");
                handler
                    .ctx
                    .stats
                    .connections_current
                    .fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    }
}

/// Tells a connection over the limit why it is being closed. The socket is new, so its send
/// buffer is empty and a non-blocking write of one small frame cannot stall the accept loop.
fn refuse_busy(socket: TcpStream) {
    let mut buf = Vec::new();
    ResponseFrame::error(
        UNSOLICITED_OPCODE,
        0,
        Status::Busy,
        "connection limit reached; try again later",
    )
    .encode(&mut buf);
    let _ = socket.try_write(&buf);
}

/// Serves one connection.
struct Handler {
    connection: Connection,
    ctx: Arc<Context>,
    idle_timeout: Option<Duration>,
    shutdown: Shutdown,
    /// With `fsync = "always"`: responses of this batch, held until its writes are durable,
    /// each with whether its request changed the store.
    held: Vec<(ResponseFrame, bool)>,
    held_bytes: usize,
    held_mutations: bool,
    /// Dropped with the handler; see [`run`].
    _shutdown_complete: mpsc::Sender<()>,
}

impl Handler {
    async fn run(&mut self) -> Result<(), FrameError> {
        let idle = time::sleep(self.idle_timeout.unwrap_or(Duration::MAX));
        tokio::pin!(idle);
        loop {
            let close = self.answer_buffered().await?;
            self.connection.flush().await?;
            if close {
                return Ok(());
            }
            if self.shutdown.is_shutdown() {
                // Answer what the client sent before the shutdown and is already in our
                // socket buffer; then close.
                if self.connection.read_ready()? {
                    continue;
                }
                return Ok(());
            }
            if let Some(timeout) = self.idle_timeout {
                idle.as_mut().reset(Instant::now() + timeout);
            }
            tokio::select! {
                read = self.connection.read_more() => {
                    if !read? {
                        if self.connection.has_partial_frame() {
                            debug!("peer closed the connection in the middle of a frame");
                        }
                        return Ok(());
                    }
                }
                () = self.shutdown.recv() => {}
                () = &mut idle => {
                    debug!("closing idle connection");
                    return Ok(());
                }
            }
        }
    }

    /// Answers every complete frame in the read buffer. Returns whether the connection must
    /// be closed after the queued responses are sent.
    async fn answer_buffered(&mut self) -> Result<bool, FrameError> {
        let mut close = false;
        loop {
            let item = match self.connection.next_buffered() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(error) => {
                    Stats::bump(&self.ctx.stats.protocol_errors);
                    debug!(%error, "unreadable stream; closing");
                    let Some(response) = fatal_response(&error) else {
                        return Err(error);
                    };
                    self.respond(response, false);
                    close = true;
                    break;
                }
            };
            Stats::bump(&self.ctx.stats.requests_total);
            match item {
                Inbound::Request(frame) => {
                    let outcome = cmd::execute(frame, &self.ctx);
                    self.respond(outcome.response, outcome.mutated);
                    if outcome.close {
                        close = true;
                        break;
                    }
                }
                Inbound::Rejected(rejection) => {
                    Stats::bump(&self.ctx.stats.protocol_errors);
                    self.respond(rejection.to_response(), false);
                }
            }
            if self.connection.queued() + self.held_bytes >= FLUSH_THRESHOLD {
                self.release_held().await;
                self.connection.flush().await?;
            }
        }
        self.release_held().await;
        Ok(close)
    }

    /// Queues a response, or holds it back until the AOF has synced the batch when the
    /// fsync policy requires that before a write is acknowledged.
    fn respond(&mut self, response: ResponseFrame, mutated: bool) {
        if self.ctx.sync_before_ack().is_none() {
            self.connection.queue(&response);
            return;
        }
        self.held_bytes += response.encoded_len();
        self.held_mutations |= mutated;
        self.held.push((response, mutated));
    }

    /// Queues the held responses once the records of their writes are durable. If the AOF
    /// cannot make them durable, the responses to writes become `PERSISTENCE_FAILED`.
    async fn release_held(&mut self) {
        let failure = match self.ctx.sync_before_ack() {
            Some(aof) if self.held_mutations => {
                // Every record this handler produced was appended before this point, so
                // waiting for the current sequence number covers them all.
                aof.wait_synced(aof.appended()).await.err()
            }
            _ => None,
        };
        for (response, mutated) in self.held.drain(..) {
            match &failure {
                Some(error) if mutated => self.connection.queue(&ResponseFrame::error(
                    response.opcode,
                    response.opaque,
                    Status::PersistenceFailed,
                    format!("{error}; the write may not survive a restart"),
                )),
                _ => self.connection.queue(&response),
            }
        }
        self.held_bytes = 0;
        self.held_mutations = false;
    }
}

/// The last frame sent on a stream that can no longer be read.
fn fatal_response(error: &FrameError) -> Option<ResponseFrame> {
    match error {
        FrameError::BadMagic { .. } => Some(ResponseFrame::error(
            UNSOLICITED_OPCODE,
            0,
            Status::ProtocolError,
            error.to_string(),
        )),
        FrameError::UnsupportedVersion { opcode, opaque, .. } => Some(ResponseFrame::error(
            *opcode,
            *opaque,
            Status::UnsupportedVersion,
            error.to_string(),
        )),
        FrameError::ResponseTooLarge { .. } | FrameError::Io(_) => None,
    }
}
