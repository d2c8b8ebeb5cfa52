//! The accept loops and the per-connection handler, shared by every wire protocol.
//!
//! Shaped like mini-redis's `server.rs`: a [`Listener`] accepts connections while a semaphore
//! has permits, each connection runs in its own task as a [`Handler`], the connection table
//! tells every handler to stop (`server/interrupt.rs`), and an mpsc channel whose last
//! sender is dropped tells [`run`] that they all have.
//!
//! The server speaks two protocols, each on its own socket: the native binary protocol
//! ([`crate::native`]) and, optionally, RESP for Redis clients ([`crate::resp`]). Everything
//! that is about connections rather than bytes is written once, here: the connection table
//! ([`slots`]: one limit for both listeners, a limit per client address, and displacement of
//! the connection longest without a request when it is full), the idle timeout, the frame
//! deadline, the write timeout, batching of responses into one write,
//! graceful shutdown, and, with `fsync = "always"`, holding the responses to writes until
//! the append-only file has synced them. A protocol plugs in through the [`Protocol`] trait:
//! it turns buffered bytes into answers and answers into bytes.
//!
//! Each protocol may also be served over TLS on a listener of its own (`server.tls_listen`,
//! `resp.tls_listen`). The handshake runs in the connection's task, under the connection
//! limit and a timeout, and then the handler works on plaintext exactly as it does on a plain
//! socket ([`Stream`]).

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sessiond_proto::Limits;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{self, Instant};
use tracing::{debug, error, info, warn};

use crate::access::Access;
use crate::aof::{Aof, FsyncPolicy, PersistenceError};
use crate::auth::Authenticator;
use crate::connection::{
    Connection, OutputBudget, OverBudget, Stream, WriteTimeout, FLUSH_THRESHOLD,
};
use crate::memory::Part;
use crate::metrics::{self, Metrics, Rejection, RequestTag};
use crate::native::Native;
use crate::resp::{self, Resp};
use crate::slowlog::{SlowEntry, SlowLog};
use crate::stats::Stats;
use crate::store::Store;
use crate::tls::Tls;
use slots::{Refusal, Slot, Slots};

mod interrupt;
mod slots;

pub use crate::native::UNSOLICITED_OPCODE;

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
    /// The users connections authenticate as (none: authentication is off).
    pub auth: Arc<Authenticator>,
    /// The last requests slower than `slowlog.threshold`, for `SLOWLOG`.
    pub slowlog: Arc<SlowLog>,
    /// What the metrics listener exports beyond `stats`: per-request counts and latencies
    /// (recorded here, in [`Handler::answer_buffered`]) and connections per listener.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// Whether writes must be refused because they cannot be persisted.
    pub(crate) fn refuse_writes(&self) -> bool {
        self.aof.as_ref().is_some_and(Aof::is_failed)
    }

    /// Whether requests are timed: for the metrics, or for the slow log.
    fn timing(&self) -> bool {
        self.metrics.requests.is_some() || self.slowlog.threshold().is_some()
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
    /// Connections served at once from one client IP address; 0 for no limit.
    pub max_connections_per_address: u32,
    /// Idle connections are closed after this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// A connection that has not completed a request this long after its first byte
    /// arrived is closed; `None` lets a frame take forever.
    pub frame_timeout: Option<Duration>,
    /// A connection whose client does not take its responses within this long is closed;
    /// `None` waits forever.
    pub write_timeout: Option<Duration>,
    /// The bytes that connections waiting for their clients to read may hold together
    /// before those holding the most are closed; 0 for no bound.
    pub max_pending_output: u64,
    /// How long shutdown waits for handlers to finish.
    pub shutdown_timeout: Duration,
}

/// How long a client has to complete the TLS handshake after connecting. Generous for any
/// real client; it only keeps a connection that never finishes from holding a connection
/// slot.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets to serve.
pub struct Listeners {
    /// The native-protocol listener.
    pub native: TcpListener,
    /// The RESP listener and its settings, when `[resp] listen` (or `--resp-listen`) is set.
    pub resp: Option<(TcpListener, resp::Settings)>,
    /// The TLS listeners and their certificates, when `server.tls_listen` or
    /// `resp.tls_listen` is set.
    pub tls: Option<TlsListeners>,
}

/// The listeners that speak TLS, and the configuration they share.
pub struct TlsListeners {
    /// The certificate, key and client CA, replaceable on reload.
    pub tls: Arc<Tls>,
    /// The native protocol over TLS (`server.tls_listen`).
    pub native: Option<TcpListener>,
    /// RESP over TLS (`resp.tls_listen`) and its settings, which are the `[resp]` section's.
    pub resp: Option<(TcpListener, resp::Settings)>,
}

/// What a protocol made of one request: the response to send (if any), whether the request
/// changed the store (so that with `fsync = "always"` its acknowledgement waits for the AOF),
/// whether the connection must be closed once the response is sent, and how long to wait
/// before answering (a failed `AUTH` from an address that failed too often).
#[derive(Debug)]
pub(crate) struct Answer<R> {
    pub(crate) response: Option<R>,
    pub(crate) mutated: bool,
    pub(crate) close: bool,
    pub(crate) delay: Option<Duration>,
    /// The request's command and outcome, for the metrics and the slow log.
    pub(crate) tag: RequestTag,
}

/// One wire protocol's half of a connection: decoding requests, applying them to the store,
/// encoding responses. One value per connection, so it can hold per-connection state (RESP's
/// protocol version and client name, a decoder's partial request). Everything else a
/// connection needs is done by [`Handler`], the same way for every protocol.
pub(crate) trait Protocol: Send + 'static {
    /// A response, kept as a value until it is queued: with `fsync = "always"` it may be
    /// held back, and replaced by [`Protocol::persistence_failed`].
    type Response: Send;

    /// Decodes the next complete request in `buf`, consuming its bytes, and applies it.
    /// `None` when `buf` holds no complete request (a partial one stays buffered).
    fn next(&mut self, buf: &mut BytesMut, ctx: &Context) -> Option<Answer<Self::Response>>;

    /// Called with the bytes buffered before their requests are answered, so that a protocol
    /// can warm the caches for the keys a pipelined batch will read (see
    /// [`Store::prefetch`]). Purely a hint; the default does nothing.
    fn prefetch(&self, _buf: &[u8], _ctx: &Context) {}

    /// Appends the wire encoding of `response` to `out`.
    fn encode(&self, response: &Self::Response, out: &mut BytesMut);

    /// About how many bytes [`Protocol::encode`] will append: counts towards the flush
    /// threshold while responses are held.
    fn encoded_len(response: &Self::Response) -> usize;

    /// What to send instead of `response` when its write could not be made durable.
    fn persistence_failed(
        &self,
        response: &Self::Response,
        error: &PersistenceError,
    ) -> Self::Response;

    /// When the connection is closed unless it has authenticated by then (see
    /// [`Access::deadline`]); `None` once it has, or if the server requires no
    /// authentication.
    fn auth_deadline(&self) -> Option<Instant>;

    /// Whether a request is partly decoded though none of its bytes may be buffered (the
    /// decoder has taken some of its arguments, or is throwing a rejected body away).
    fn mid_request(&self) -> bool;

    /// The bytes a connection over the connection limit receives before it is closed.
    fn busy_message() -> Vec<u8>;

    /// The bytes sent after the last response at shutdown, to say that no later request
    /// was executed; `None` where the protocol has no way to say it (RESP has no
    /// unsolicited replies: a client would take it for the answer to its next request).
    fn shutting_down_message() -> Option<Vec<u8>>;
}

/// Serves connections from `listeners` until `shutdown` completes, then stops accepting,
/// lets every connection answer what it has received, and returns once they have closed (or
/// `shutdown_timeout` has passed).
pub async fn run(
    listeners: Listeners,
    ctx: Arc<Context>,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) {
    // Calibrates the clock requests are timed with now, not during the first request.
    let _ = quanta::Instant::now();
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    let server = Listener {
        slots: Slots::new(
            settings.max_connections,
            settings.max_connections_per_address,
        ),
        ctx,
        idle_timeout: settings.idle_timeout,
        frame_timeout: settings.frame_timeout,
        write_timeout: settings.write_timeout,
        output: OutputBudget::new(settings.max_pending_output),
        shutdown_timeout: settings.shutdown_timeout,
        shutdown_complete_tx,
    };

    let limits = server.ctx.limits;
    let Listeners { native, resp, tls } = listeners;
    let (tls, native_tls, resp_tls) = match tls {
        Some(t) => (Some(t.tls), t.native, t.resp),
        None => (None, None, None),
    };
    let native_plain = server.accept(native, None, metrics::Listener::Native, move |access| {
        Native::new(limits, access)
    });
    let native_tls = async {
        let Some(listener) = native_tls else {
            return std::future::pending().await;
        };
        server
            .accept(
                listener,
                tls.clone(),
                metrics::Listener::NativeTls,
                move |access| Native::new(limits, access),
            )
            .await
    };
    let serve_resp = |listener: Option<(TcpListener, resp::Settings)>, tls: Option<Arc<Tls>>| {
        let which = metrics::Listener::of(metrics::Protocol::Resp, tls.is_some());
        let server = &server;
        async move {
            let Some((listener, resp_settings)) = listener else {
                return std::future::pending().await;
            };
            let port = listener.local_addr().map_or(0, |a| a.port());
            let shared = resp::Shared::new(resp_settings, limits, port, settings.max_connections);
            server
                .accept(listener, tls, which, move |access| {
                    Resp::new(shared.clone(), access)
                })
                .await
        }
    };
    let resp_plain = serve_resp(resp, None);
    let resp_tls = serve_resp(resp_tls, tls.clone());
    tokio::select! {
        // The accept loops never return; `join!` only runs them side by side.
        _ = async { tokio::join!(native_plain, native_tls, resp_plain, resp_tls) } => {}
        () = shutdown => info!("shutting down: no longer accepting connections"),
    }

    // Interrupting every slot wakes every handler; dropping our completion sender leaves
    // only the handlers' clones, so `recv` returns `None` once the last one exits.
    let Listener {
        slots,
        shutdown_complete_tx,
        ctx,
        ..
    } = server;
    slots.shut_down();
    drop(shutdown_complete_tx);
    match time::timeout(settings.shutdown_timeout, shutdown_complete_rx.recv()).await {
        Ok(_) => info!("all connections closed"),
        Err(_) => warn!(
            open = ctx.stats.connections_current.load(Ordering::Relaxed),
            "shutdown timeout passed with connections still open"
        ),
    }
}

/// What every accept loop shares.
struct Listener {
    slots: Arc<Slots>,
    ctx: Arc<Context>,
    idle_timeout: Option<Duration>,
    frame_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    output: Arc<OutputBudget>,
    shutdown_timeout: Duration,
    shutdown_complete_tx: mpsc::Sender<()>,
}

impl Listener {
    /// Accepts on `listener` forever, serving each connection with a fresh protocol state
    /// from `new_protocol` (given the connection's access state: who it is authenticated
    /// as, which is nobody yet when the server requires authentication), over TLS if `tls`
    /// is set; `which` names the listener in the metrics. Accept errors (e.g. out of file
    /// descriptors) are logged and retried with a backoff instead of ending the server.
    async fn accept<P: Protocol>(
        &self,
        listener: TcpListener,
        tls: Option<Arc<Tls>>,
        which: metrics::Listener,
        new_protocol: impl Fn(Access) -> P,
    ) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (socket, peer) = match listener.accept().await {
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
            self.ctx.metrics.connections.accepted(which);
            // Responses are batched by the handler, so Nagle's algorithm would only add delay.
            let _ = socket.set_nodelay(true);
            // Taken now, so that a reload after this accept does not change the certificate
            // this connection is offered.
            let acceptor = tls.as_ref().map(|tls| tls.acceptor());
            let protocol = new_protocol(Access::new(&self.ctx.auth, peer.ip()));
            let ctx = self.ctx.clone();
            let slots = self.slots.clone();
            let idle_timeout = self.idle_timeout;
            let frame_timeout = self.frame_timeout;
            let write_timeout = self.write_timeout;
            let output = self.output.clone();
            let shutdown_timeout = self.shutdown_timeout;
            let shutdown_complete = self.shutdown_complete_tx.clone();
            // In the connection's task, not here: taking a slot may wait for a displaced
            // connection to give its own back, and the accept loop must not wait.
            tokio::spawn(async move {
                let slot = match slots.take(peer.ip()).await {
                    Ok((slot, displaced)) => {
                        if displaced {
                            Stats::bump(&ctx.stats.connections_displaced);
                        }
                        slot
                    }
                    Err(refusal) => {
                        let (counter, reason) = match refusal {
                            Refusal::Full => (&ctx.stats.connections_rejected, Rejection::Limit),
                            Refusal::PerAddress => (
                                &ctx.stats.connections_rejected_per_address,
                                Rejection::PerAddress,
                            ),
                        };
                        Stats::bump(counter);
                        ctx.metrics.connections.rejected(which, reason);
                        warn!(%peer, ?refusal, "connection limit reached; refusing connection");
                        // A TLS client could not read a plaintext message, and a handshake
                        // only to say "busy" would spend the CPU an overloaded server lacks:
                        // it is just closed.
                        if acceptor.is_none() {
                            refuse_busy(socket, &P::busy_message());
                        }
                        return;
                    }
                };
                ctx.stats
                    .connections_current
                    .fetch_add(1, Ordering::Relaxed);
                ctx.metrics.connections.open(which, true);
                let stream = match acceptor {
                    None => Some(Stream::Plain(socket)),
                    Some(acceptor) => handshake(acceptor, socket, peer, &slot).await,
                };
                if let Some(stream) = stream {
                    let mut handler = Handler {
                        connection: Connection::new(
                            stream,
                            write_timeout,
                            output,
                            ctx.store.memory().charge(Part::Connections),
                        ),
                        protocol,
                        ctx: ctx.clone(),
                        slot,
                        peer,
                        listener: which,
                        last_read: Instant::now(),
                        idle_timeout,
                        frame_timeout,
                        shutdown_timeout,
                        held: Vec::new(),
                        held_bytes: 0,
                        held_mutations: false,
                        _shutdown_complete: shutdown_complete,
                    };
                    debug!(%peer, "connection opened");
                    if let Err(e) = handler.run().await {
                        // Cut off by the output budget is a slow reader too, only sooner
                        // because of what the others hold: counted with the write timeouts.
                        if WriteTimeout::is(&e) || OverBudget::is(&e) {
                            Stats::bump(&ctx.stats.write_timeouts);
                            ctx.metrics
                                .connections
                                .rejected(which, Rejection::SlowReader);
                            info!(%peer, error = %e, "closing a connection that does not read");
                        } else {
                            debug!(%peer, error = %e, "connection error");
                        }
                    }
                    debug!(%peer, "connection closed");
                } else if slot.is_displaced() {
                    debug!(%peer, "displaced during the TLS handshake; connection closed");
                    ctx.metrics
                        .connections
                        .rejected(which, Rejection::Displaced);
                } else {
                    debug!(%peer, "TLS handshake did not complete; connection closed");
                    ctx.metrics
                        .connections
                        .rejected(which, Rejection::TlsHandshake);
                }
                ctx.stats
                    .connections_current
                    .fetch_sub(1, Ordering::Relaxed);
                ctx.metrics.connections.open(which, false);
            });
        }
    }
}

/// Runs the server side of a TLS handshake on a new connection: the stream once it
/// completes, `None` if it fails (logged: a client without our CA, one that only speaks
/// TLS 1.1, a client certificate that does not verify), takes longer than
/// [`TLS_HANDSHAKE_TIMEOUT`], or shutdown or a displacement comes first.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
    slot: &Slot,
) -> Option<Stream> {
    tokio::select! {
        result = time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)) => match result {
            Ok(Ok(stream)) => Some(Stream::Tls(Box::new(stream))),
            Ok(Err(e)) => {
                info!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                info!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                None
            }
        },
        _ = poll_fn(|cx| slot.poll_interrupted(cx)) => None,
    }
}

/// A timer with nothing to wait for is armed this far ahead (tokio's own "far future").
const NEVER: Duration = Duration::from_secs(86400 * 365 * 30);

/// `timeout` after `start`, or `None` if that is past what an `Instant` can hold: the
/// configuration does not bound timeouts, and a deadline that far off is never reached.
fn after(start: Instant, timeout: Duration) -> Option<Instant> {
    start.checked_add(timeout)
}

/// Tells a connection over the limit why it is being closed. The socket is new, so its send
/// buffer is empty and a non-blocking write of one small message cannot stall the accept loop.
fn refuse_busy(socket: TcpStream, message: &[u8]) {
    let _ = socket.try_write(message);
}

/// Serves one connection.
struct Handler<P: Protocol> {
    connection: Connection,
    protocol: P,
    ctx: Arc<Context>,
    /// This connection's place in the connection table, given back when the handler is
    /// dropped.
    slot: Slot,
    /// The client's address, for the slow log.
    peer: SocketAddr,
    /// The listener it came in on, for the metrics.
    listener: metrics::Listener,
    /// When the last read brought bytes: the start of the idle period, of a partial
    /// request, and the time of the requests answered next.
    last_read: Instant,
    idle_timeout: Option<Duration>,
    frame_timeout: Option<Duration>,
    /// How long the connection may take to finish once it has seen the shutdown signal.
    shutdown_timeout: Duration,
    /// With `fsync = "always"`: responses of this batch, held until its writes are durable,
    /// each with whether its request changed the store.
    held: Vec<(P::Response, bool)>,
    held_bytes: usize,
    held_mutations: bool,
    /// Dropped with the handler; see [`run`].
    _shutdown_complete: mpsc::Sender<()>,
}

impl<P: Protocol> Handler<P> {
    async fn run(&mut self) -> io::Result<()> {
        // Between requests the handler waits for three things: its client, an interruption
        // (shutdown, displacement) and one timer. The timer serves the idle timeout, the frame
        // deadline and the authentication deadline together, armed for the earliest check any
        // of them needs and moved only when it fires (re-arming a timer takes the runtime's
        // timer lock), not per request: when it fires, each deadline is checked against what
        // has happened since (the last read, the start of the current partial request) and it
        // is armed for the next check. The frame deadline is checked every `frame_timeout`,
        // so a stream of requests each split over two reads does not re-arm it per request.
        self.last_read = Instant::now();
        let mut frame_started: Option<Instant> = None;
        let timer = time::sleep_until(self.next_check(frame_started, self.last_read));
        tokio::pin!(timer);
        loop {
            let (answered, close) = self.answer_buffered().await?;
            self.connection.flush().await?;
            if close {
                self.connection.close_after_reply().await;
                return Ok(());
            }
            if self.slot.is_displaced() {
                debug!("displaced by a new connection while the table is full; closing");
                self.rejected(Rejection::Displaced);
                return Ok(());
            }
            if self.slot.is_shut_down() {
                return self.finish().await;
            }
            self.connection.shrink();
            let mid_request = self.connection.has_partial_frame() || self.protocol.mid_request();
            if answered {
                frame_started = mid_request.then_some(self.last_read);
            } else if mid_request {
                frame_started = frame_started.or(Some(self.last_read));
            } else {
                frame_started = None;
            }
            // Biased to the read, which is what is ready almost every time: once it is, the
            // others are not polled at all. They cannot be starved by it: an interruption is
            // looked at above on every turn, and the timer below after every read.
            let timer_due = tokio::select! {
                biased;
                read = self.connection.read_more() => {
                    if !read? {
                        if self.connection.has_partial_frame() {
                            debug!("peer closed the connection in the middle of a frame");
                        }
                        return Ok(());
                    }
                    // One clock read per read syscall: the idle timeout, the frame deadline
                    // and the connection table's choice of whom to displace all need it.
                    self.last_read = Instant::now();
                    self.last_read >= timer.deadline()
                }
                // Both are looked at on the next turn.
                _ = poll_fn(|cx| self.slot.poll_interrupted(cx)) => false,
                () = &mut timer => true,
            };
            if timer_due {
                let now = Instant::now();
                if self.deadline_passed(frame_started, now) {
                    return Ok(());
                }
                timer.as_mut().reset(self.next_check(frame_started, now));
            }
        }
    }

    /// When the handler's timer must next fire: the earliest of the moment the connection
    /// becomes idle, the moment the current partial request (or, with none, one starting
    /// now) passes the frame deadline, and the authentication deadline.
    fn next_check(&self, frame_started: Option<Instant>, now: Instant) -> Instant {
        let idle = self
            .idle_timeout
            .and_then(|timeout| after(self.last_read, timeout));
        let frame = self
            .frame_timeout
            .and_then(|timeout| after(frame_started.unwrap_or(now), timeout));
        [idle, frame, self.protocol.auth_deadline()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + NEVER)
    }

    /// Whether one of the connection's deadlines has passed at `now`, in which case it has
    /// been counted and the connection must be closed.
    fn deadline_passed(&self, frame_started: Option<Instant>, now: Instant) -> bool {
        if let (Some(timeout), Some(started)) = (self.frame_timeout, frame_started) {
            if after(started, timeout).is_some_and(|deadline| now >= deadline) {
                debug!("request not completed within frame_timeout; closing");
                Stats::bump(&self.ctx.stats.frame_timeouts);
                self.rejected(Rejection::FrameTimeout);
                return true;
            }
        }
        if self
            .protocol
            .auth_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            // Closed without a frame: the client learns nothing it could use, and a peer
            // that never speaks gets nothing at all.
            debug!("not authenticated by auth.timeout; closing");
            Stats::bump(&self.ctx.stats.auth_timeouts);
            self.rejected(Rejection::Auth);
            return true;
        }
        if self
            .idle_timeout
            .and_then(|timeout| after(self.last_read, timeout))
            .is_some_and(|deadline| now >= deadline)
        {
            debug!("closing idle connection");
            return true;
        }
        false
    }

    /// Ends the connection at shutdown, as PROTOCOL.md 2.1 says: answers the complete
    /// requests that had arrived when this connection saw the signal (the read buffer is
    /// already answered; the rest are in the socket), and no others, so that a client that
    /// keeps pipelining cannot hold the server; says that nothing after them was executed,
    /// where the protocol can; then half-closes and drains instead of closing outright,
    /// since closing a socket with unread input makes the kernel reset the connection and
    /// throw away responses the client has not read yet. Bounded by the shutdown timeout,
    /// after which the connection is simply dropped.
    async fn finish(&mut self) -> io::Result<()> {
        // Counted from the moment this connection saw the signal, a few milliseconds after the
        // server did: the server's own wait for its connections ends first, and the process
        // exits then.
        let deadline =
            after(Instant::now(), self.shutdown_timeout).unwrap_or_else(|| Instant::now() + NEVER);
        let finish = async {
            let mut arrived = self.connection.arrived()?;
            while arrived > 0 {
                let read = self.connection.read_arrived(arrived)?;
                if read == 0 {
                    break;
                }
                self.last_read = Instant::now();
                arrived -= read;
                if self.answer_buffered().await?.1 {
                    self.connection.flush().await?;
                    self.connection.close_after_reply().await;
                    return Ok(());
                }
            }
            if self.connection.has_partial_frame() {
                debug!("shutdown: discarding a request that had not fully arrived");
            }
            if let Some(message) = P::shutting_down_message() {
                self.connection.write_buf().extend_from_slice(&message);
            }
            self.connection.flush().await?;
            self.connection.close_at_shutdown(deadline).await;
            Ok(())
        };
        match time::timeout_at(deadline, finish).await {
            Ok(result) => result,
            Err(_) => {
                debug!("shutdown timeout passed before the connection finished; dropping it");
                Ok(())
            }
        }
    }

    fn rejected(&self, reason: Rejection) {
        self.ctx.metrics.connections.rejected(self.listener, reason);
    }

    /// Answers every complete request in the read buffer. Returns whether any request was
    /// answered, and whether the connection must be closed after the queued responses are
    /// sent.
    ///
    /// This is where every request is timed, for the metrics and the slow log: one clock
    /// reading as each answer is ready, the request's time being the time since the one
    /// before it (or since the batch began, for the first). That is one reading per request
    /// and one per batch, and none at all when neither wants them.
    async fn answer_buffered(&mut self) -> io::Result<(bool, bool)> {
        let mut answered = false;
        let mut close = false;
        // The TSC through quanta rather than `Instant::now()`: a vDSO clock_gettime costs
        // about three times as much, and this runs once per request (benches/metrics.rs).
        let mut started = self.ctx.timing().then(quanta::Instant::now);
        self.protocol
            .prefetch(self.connection.read_buf(), &self.ctx);
        while let Some(answer) = self.protocol.next(self.connection.read_buf(), &self.ctx) {
            if let Some(started) = started.as_mut() {
                let now = quanta::Instant::now();
                self.timed(answer.tag, now.saturating_duration_since(*started));
                *started = now;
            }
            if !answered {
                // Before any response can reach the client: a client that has seen an answer
                // and opens another connection must find this one counted as served, or a
                // full table could displace it (server/slots.rs).
                self.slot.progressed(self.last_read);
                answered = true;
            }
            if let Some(delay) = answer.delay {
                // Only this connection waits; its earlier answers go out first.
                self.release_held().await;
                self.connection.flush().await?;
                time::sleep(delay).await;
                if let Some(started) = started.as_mut() {
                    *started = quanta::Instant::now();
                }
            }
            if let Some(response) = answer.response {
                self.respond(response, answer.mutated);
            }
            if answer.close {
                close = true;
                break;
            }
            if self.connection.queued() + self.held_bytes >= FLUSH_THRESHOLD {
                self.release_held().await;
                self.connection.flush().await?;
                if let Some(started) = started.as_mut() {
                    // Not the next request's time: waiting for the client to read.
                    *started = quanta::Instant::now();
                }
            }
        }
        self.release_held().await;
        Ok((answered, close))
    }

    /// Records a request that took `took`.
    fn timed(&self, tag: RequestTag, took: Duration) {
        if let Some(requests) = &self.ctx.metrics.requests {
            requests.record(tag, crate::histogram::nanos(took));
        }
        if self.ctx.slowlog.threshold().is_some_and(|t| took >= t) {
            self.ctx.slowlog.record(SlowEntry {
                command: tag.command,
                protocol: tag.protocol.name(),
                key_len: tag.key_len,
                duration: took,
                client: self.peer,
                unix_ms: self.ctx.store.clock().now_ms(),
            });
        }
    }

    /// Queues a response, or holds it back until the AOF has synced the batch when the
    /// fsync policy requires that before a write is acknowledged.
    fn respond(&mut self, response: P::Response, mutated: bool) {
        if self.ctx.sync_before_ack().is_none() {
            self.protocol.encode(&response, self.connection.write_buf());
            return;
        }
        self.held_bytes += P::encoded_len(&response);
        self.held_mutations |= mutated;
        self.held.push((response, mutated));
    }

    /// Queues the held responses once the records of their writes are durable. If the AOF
    /// cannot make them durable, the responses to writes become the protocol's persistence
    /// error (`PERSISTENCE_FAILED` in the native protocol).
    async fn release_held(&mut self) {
        if let Some(aof) = &self.ctx.aof {
            // Writes faster than the disk: stop here until the AOF writer catches up.
            aof.relieve_backlog().await;
        }
        let failure = match self.ctx.sync_before_ack() {
            Some(aof) if self.held_mutations => {
                // Every record this handler produced was appended before this point, so
                // waiting for the current sequence number covers them all.
                aof.wait_synced(aof.appended()).await.err()
            }
            _ => None,
        };
        for (response, mutated) in self.held.drain(..) {
            let out = self.connection.write_buf();
            match &failure {
                Some(error) if mutated => self
                    .protocol
                    .encode(&self.protocol.persistence_failed(&response, error), out),
                _ => self.protocol.encode(&response, out),
            }
        }
        self.held_bytes = 0;
        self.held_mutations = false;
    }
}
