//! One multiplexed connection, shared by every task that uses it, and its reconnection.
//!
//! A [`Mux`] owns at most one live [`Conn`] at a time. Many tasks send requests on it at once:
//! each request gets a fresh opaque, registers a oneshot channel under it in the connection's
//! pending table, and queues its frame for the writer task. The reader task hands each
//! response to the channel registered under its opaque. The server answers in request order,
//! but matching by opaque rather than by position means a caller that gives up (a timeout, a
//! dropped future) only leaves a stale entry behind, never a shifted queue: its late reply
//! finds no one waiting and is dropped.
//!
//! ```text
//!  task ─┐                ┌──────── writer task ───────┐
//!  task ─┼─ mpsc<frame> ─▶│ feed everything queued,    │──▶ TCP
//!  task ─┘      │         │ then flush once            │
//!   ▲           │         └────────────────────────────┘
//!   │    pending: opaque → oneshot
//!   │           │         ┌──────── reader task ───────┐
//!   └── oneshot ┴─────────│ decode, look up opaque     │◀── TCP
//!                         └────────────────────────────┘
//! ```
//!
//! A connection is opened by `handshake.rs` (TCP or TLS, `HELLO`, and `AUTH` when the client
//! has credentials), so every reconnection authenticates again before any request is sent.
//!
//! Writing and reading run in separate tasks because a pipelining client must keep reading
//! while it writes (PROTOCOL.md 2.2): the server may stop reading a connection whose
//! responses pile up.
//!
//! When the connection fails (the server restarted, the idle timeout closed it, a fatal
//! status), every pending request gets an [`Error::Connection`] at once and the connection is
//! marked closed. A connection on which nothing at all arrives for a whole request timeout
//! is abandoned the same way (its pending requests get [`Error::Timeout`]): a peer that
//! vanished without closing the socket would otherwise stall every request for as long as
//! TCP takes to notice. The next request opens a new one. Reconnection is driven by requests, not
//! by a background loop, so an idle client makes no traffic; attempts after a failed one wait
//! out an exponential backoff, so a server that is down is not hammered by every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sessiond_proto::unsolicited::is_unsolicited;
use sessiond_proto::{ClientCodec, Limits, Request, RequestFrame, ResponseFrame};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::credentials::Credentials;
use crate::handshake::{self, AUTH_OPAQUE};
use crate::transport::{Connector, Stream as ByteStream};
use crate::Error;

/// Frames a connection queues for its writer before senders wait: enough to batch a burst
/// from many tasks into a few writes, small enough to apply backpressure.
const QUEUE_FRAMES: usize = 1024;

/// Connection settings shared by every connection of a client.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Bound on TCP connect plus the `HELLO` exchange.
    pub connect_timeout: Duration,
    /// Bound on a whole request, waiting for a connection included.
    pub request_timeout: Duration,
    /// Wait before the attempt that follows a failed one; doubles per failure.
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Sent in `HELLO`, for the server's logs.
    pub client_name: Bytes,
    /// Plain TCP or TLS.
    pub connector: Connector,
    /// Sent in `AUTH` on every connection, when set.
    pub credentials: Option<Credentials>,
}

type Waiter = oneshot::Sender<Result<ResponseFrame, Error>>;

/// The pending table and the error that closed the connection, if it is closed.
struct Pending {
    waiting: HashMap<u32, Waiter>,
    next_opaque: u32,
    closed: Option<Error>,
}

/// State shared by a connection's handle and its two tasks.
struct Shared {
    addr: Arc<str>,
    pending: Mutex<Pending>,
    /// Mirrors `pending.closed.is_some()` for the lock-free liveness check.
    closed: AtomicBool,
    /// Frames received so far: a request that times out while this stands still shows
    /// that the connection, not just one request, is stuck.
    received: AtomicU64,
    /// Cancelled when the connection closes, to stop whichever task is still running.
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Nothing panics while holding the lock, and the table stays consistent if
        // something did: recover the guard rather than propagate a poison panic.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter under a fresh opaque, or returns the error that closed the
    /// connection.
    fn register(&self, waiter: Waiter) -> Result<u32, Error> {
        let mut pending = self.lock();
        if let Some(error) = &pending.closed {
            return Err(error.clone());
        }
        // Skip 0 (the opaque of unsolicited frames) and any opaque still waiting after the
        // counter wrapped around.
        let mut opaque = pending.next_opaque;
        while opaque == 0 || pending.waiting.contains_key(&opaque) {
            opaque = opaque.wrapping_add(1);
        }
        pending.next_opaque = opaque.wrapping_add(1);
        pending.waiting.insert(opaque, waiter);
        Ok(opaque)
    }

    fn unregister(&self, opaque: u32) {
        self.lock().waiting.remove(&opaque);
    }

    /// Hands a response to its waiter. Returns the error to close the connection with if the
    /// frame ends it.
    fn deliver(&self, frame: ResponseFrame) -> Option<Error> {
        if is_unsolicited(&frame) {
            // BUSY, SHUTTING_DOWN, PROTOCOL_ERROR: no request's answer, and the server is
            // closing the connection. (Opcode 0xFF with a non-fatal status is an ordinary
            // answer to a request that carried that opcode, matched by its opaque below.)
            return Some(status_error(&frame));
        }
        let fatal = frame.status().is_some_and(|s| s.is_fatal());
        let closing = fatal.then(|| status_error(&frame));
        let waiter = self.lock().waiting.remove(&frame.opaque);
        if let Some(waiter) = waiter {
            // The caller may have given up; its reply is then simply dropped.
            let _ = waiter.send(Ok(frame));
        }
        closing
    }

    /// Marks the connection closed and fails every pending request with `error`.
    fn close(&self, error: Error) {
        let waiting = {
            let mut pending = self.lock();
            if pending.closed.is_none() {
                pending.closed = Some(error);
            }
            std::mem::take(&mut pending.waiting)
        };
        self.closed.store(true, Ordering::Release);
        self.cancel.cancel();
        let error = self.closed_error();
        for waiter in waiting.into_values() {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    fn closed_error(&self) -> Error {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| Error::closed(&self.addr, "the connection was closed"))
    }
}

fn status_error(frame: &ResponseFrame) -> Error {
    match frame.status() {
        Some(status) => Error::from_status(status, frame.message()),
        None => Error::Protocol(format!("unknown status 0x{:04x}", frame.status)),
    }
}

/// Removes a request's pending entry when the caller stops waiting, however it stops.
struct Unregister<'a> {
    shared: &'a Shared,
    opaque: u32,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.shared.unregister(self.opaque);
    }
}

/// One open connection: a handle for queueing requests. Its tasks stop when the connection
/// fails or when the last handle is dropped.
pub(crate) struct Conn {
    outgoing: mpsc::Sender<RequestFrame>,
    shared: Arc<Shared>,
    limits: Limits,
}

impl Conn {
    /// Connects, exchanges `HELLO` (and `AUTH`), and starts the reader and writer tasks.
    async fn open(addr: &Arc<str>, settings: &Settings) -> Result<Conn, Error> {
        let (framed, limits) = handshake::open(addr, settings).await?;
        let shared = Arc::new(Shared {
            addr: addr.clone(),
            pending: Mutex::new(Pending {
                waiting: HashMap::new(),
                next_opaque: AUTH_OPAQUE + 1,
                closed: None,
            }),
            closed: AtomicBool::new(false),
            received: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        });
        let (sink, stream) = framed.split();
        let (outgoing, queue) = mpsc::channel(QUEUE_FRAMES);
        tokio::spawn(write_loop(sink, queue, shared.clone()));
        tokio::spawn(read_loop(stream, shared.clone()));
        Ok(Conn {
            outgoing,
            shared,
            limits,
        })
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Sends `request` and waits for its reply (no timeout: the caller bounds it).
    async fn call(&self, request: &Request) -> Result<ResponseFrame, Error> {
        let (waiter, reply) = oneshot::channel();
        let opaque = self.shared.register(waiter)?;
        let _unregister = Unregister {
            shared: &self.shared,
            opaque,
        };
        let frame = request.to_frame(opaque);
        let opcode = frame.opcode;
        self.outgoing
            .send(frame)
            .await
            .map_err(|_| self.shared.closed_error())?;
        let reply = reply.await.map_err(|_| self.shared.closed_error())??;
        if reply.opcode != opcode {
            let error = Error::Protocol(format!(
                "the reply to opaque {opaque} has opcode 0x{:02x}, not 0x{opcode:02x}",
                reply.opcode
            ));
            // Replies no longer line up with requests: nothing on this connection can be
            // trusted any more.
            self.shared.close(error.clone());
            return Err(error);
        }
        Ok(reply)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The last handle is gone, so no one can be waiting: stop both tasks, which closes
        // the socket.
        self.shared.cancel.cancel();
    }
}

/// Closes the connection when a task ends for any reason, including its runtime shutting
/// down (which drops the task without running it to completion): otherwise requests would
/// be queued on a connection that no task serves any more.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0
            .close(Error::closed(&self.0.addr, "the connection's task stopped"));
    }
}

type Sink = SplitSink<Framed<ByteStream, ClientCodec>, RequestFrame>;
type Stream = SplitStream<Framed<ByteStream, ClientCodec>>;

async fn write_loop(mut sink: Sink, mut queue: mpsc::Receiver<RequestFrame>, shared: Arc<Shared>) {
    let _close = CloseOnDrop(shared.clone());
    let write = async {
        while let Some(frame) = queue.recv().await {
            sink.feed(frame).await?;
            // Everything queued meanwhile goes out in the same write: under load, many
            // tasks' requests share one syscall.
            while let Ok(frame) = queue.try_recv() {
                sink.feed(frame).await?;
            }
            sink.flush().await?;
        }
        Ok(())
    };
    tokio::select! {
        result = write => {
            if let Err(e) = result {
                shared.close(Error::from_frame(&shared.addr, e));
            }
        }
        () = shared.cancel.cancelled() => {}
    }
}

async fn read_loop(mut stream: Stream, shared: Arc<Shared>) {
    let _close = CloseOnDrop(shared.clone());
    let read = async {
        loop {
            match stream.next().await {
                Some(Ok(frame)) => {
                    shared.received.fetch_add(1, Ordering::Relaxed);
                    if let Some(error) = shared.deliver(frame) {
                        return error;
                    }
                }
                Some(Err(e)) => return Error::from_frame(&shared.addr, e),
                None => return Error::closed(&shared.addr, "the server closed the connection"),
            }
        }
    };
    tokio::select! {
        error = read => shared.close(error),
        () = shared.cancel.cancelled() => {}
    }
}

/// When the next connection attempt may start, after failed ones.
#[derive(Debug, Default)]
struct Backoff {
    delay: Duration,
    not_before: Option<Instant>,
}

/// A multiplexed connection that reopens itself when it fails.
pub(crate) struct Mux {
    addr: Arc<str>,
    settings: Arc<Settings>,
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so that one attempt runs at a time and the requests that need
    /// a connection meanwhile wait for its outcome instead of each dialling.
    reconnect: tokio::sync::Mutex<Backoff>,
}

impl Mux {
    pub(crate) fn new(addr: Arc<str>, settings: Arc<Settings>) -> Mux {
        Mux {
            addr,
            settings,
            current: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(Backoff::default()),
        }
    }

    /// The open connection, if there is one that has not failed.
    fn live(&self) -> Option<Arc<Conn>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|conn| !conn.is_closed()).cloned()
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live().is_some()
    }

    /// The open connection, opening one if needed (after the backoff, if the last attempt
    /// failed).
    async fn connection(&self) -> Result<Arc<Conn>, Error> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let mut backoff = self.reconnect.lock().await;
        // Another request may have connected while this one waited for the lock.
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        if let Some(at) = backoff.not_before {
            tokio::time::sleep_until(at).await;
        }
        match Conn::open(&self.addr, &self.settings).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *backoff = Backoff::default();
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                backoff.delay = if backoff.delay.is_zero() {
                    self.settings.backoff_min
                } else {
                    (backoff.delay * 2).min(self.settings.backoff_max)
                };
                backoff.not_before = Some(Instant::now() + backoff.delay);
                Err(e)
            }
        }
    }

    /// Opens the connection now if it is not open (for eager connection at startup). Only
    /// the connect timeout applies: there is no request to bound.
    pub(crate) async fn ensure_connected(&self) -> Result<(), Error> {
        self.connection().await.map(drop)
    }

    /// The limits the server reported in `HELLO` on the current connection.
    pub(crate) async fn limits(&self) -> Result<Limits, Error> {
        self.bounded(async { self.connection().await.map(|conn| conn.limits) })
            .await
    }

    /// Sends `request` and returns its reply, within the request timeout.
    ///
    /// If the timeout passes without a single frame arriving on the connection, the
    /// connection itself is presumed dead (a server host that vanished without closing it,
    /// a dropped NAT entry: TCP would take many minutes to notice) and is abandoned, so the
    /// next request opens a new one. Its other pending requests fail with the same timeout.
    pub(crate) async fn call(&self, request: &Request) -> Result<ResponseFrame, Error> {
        let after = self.settings.request_timeout;
        let deadline = Instant::now() + after;
        let conn = tokio::time::timeout_at(deadline, self.connection())
            .await
            .unwrap_or(Err(Error::Timeout { after }))?;
        let received = conn.shared.received.load(Ordering::Relaxed);
        match tokio::time::timeout_at(deadline, conn.call(request)).await {
            Ok(result) => result,
            Err(_) => {
                if conn.shared.received.load(Ordering::Relaxed) == received {
                    conn.shared.close(Error::Timeout { after });
                }
                Err(Error::Timeout { after })
            }
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let after = self.settings.request_timeout;
        tokio::time::timeout(after, fut)
            .await
            .unwrap_or(Err(Error::Timeout { after }))
    }
}
