//! Prometheus metrics and health endpoints: what an operator's monitoring stack watches.
//!
//! Every metric sessiond exports is named once, in [`defs`]: name, type, unit, help text and
//! labels, the way redis_exporter keeps its metric map. `docs/METRICS.md` is the same table
//! for people.
//!
//! How the parts fit:
//!
//! - Most numbers already exist as counters where their events happen (`crate::stats`, the
//!   store, the memory accounting, the AOF): the exporter ([`export`]) reads them at scrape
//!   time instead of counting twice. Reading them is a fixed number of atomic loads, so a
//!   scrape costs the same with ten sessions or ten million (nothing walks the map).
//! - What did not exist is recorded here: per request, its protocol, command, outcome and
//!   latency ([`requests`], on per-thread shards so that the hot path takes no lock and
//!   shares no cache line); per listener, connections accepted and turned away
//!   ([`Connections`]); the replay's duration and the start time.
//! - [`http`] serves `/metrics`, `/health/live` and `/health/ready` on a listener of its own
//!   (`[metrics] listen`), bound before the AOF replay so that readiness can be watched
//!   during a long one; [`Health`] is what `/health/ready` answers from.
//!
//! The crate behind the text format is `prometheus-client`, the Prometheus project's own
//! Rust client: it has no global registry (tests can run several servers in one process),
//! it encodes both the classic text format and OpenMetrics, and its collector interface lets
//! us encode values we read at scrape time. Its histogram type takes a lock per observation,
//! so request latencies go through our own lock-free buckets ([`crate::histogram`]) and only
//! the encoding is the library's. (`metrics-exporter-prometheus` was the alternative: its
//! histograms keep every raw sample until the next scrape, which is memory a server that is
//! never scraped would not give back.)
//!
//! This module's recording half ([`requests`], [`Connections`], [`Health`]) depends only on
//! `std` and [`crate::histogram`], so the connection handler, below it, can record into it;
//! the exporting half ([`export`], [`http`]) reads every layer and is wired by `main`.

pub mod defs;
pub mod export;
pub mod http;
pub mod requests;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

pub use requests::{Outcome, Protocol, RequestTag, Requests};

/// The listeners connections arrive on, the `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `server.listen`.
    Native,
    /// `server.tls_listen`.
    NativeTls,
    /// `resp.listen`.
    Resp,
    /// `resp.tls_listen`.
    RespTls,
}

impl Listener {
    /// Every listener, in label order.
    pub const ALL: [Listener; 4] = [
        Listener::Native,
        Listener::NativeTls,
        Listener::Resp,
        Listener::RespTls,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Native => "native",
            Listener::NativeTls => "native_tls",
            Listener::Resp => "resp",
            Listener::RespTls => "resp_tls",
        }
    }

    /// The listener of `protocol`, over TLS or not.
    pub fn of(protocol: Protocol, tls: bool) -> Listener {
        match (protocol, tls) {
            (Protocol::Native, false) => Listener::Native,
            (Protocol::Native, true) => Listener::NativeTls,
            (Protocol::Resp, false) => Listener::Resp,
            (Protocol::Resp, true) => Listener::RespTls,
        }
    }
}

/// Why a connection was turned away or closed by the server, the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The connection table was full (`server.max_connections`).
    Limit,
    /// Its address already held `server.max_connections_per_address`.
    PerAddress,
    /// It had not authenticated by `auth.timeout`.
    Auth,
    /// Its TLS handshake failed or timed out.
    TlsHandshake,
    /// It did not read its responses within `server.write_timeout`.
    SlowReader,
    /// A request did not arrive whole within `server.frame_timeout`.
    FrameTimeout,
    /// It was closed to make room for a new connection while the table was full.
    Displaced,
}

impl Rejection {
    /// Every reason, in label order.
    pub const ALL: [Rejection; 7] = [
        Rejection::Limit,
        Rejection::PerAddress,
        Rejection::Auth,
        Rejection::TlsHandshake,
        Rejection::SlowReader,
        Rejection::FrameTimeout,
        Rejection::Displaced,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::Limit => "limit",
            Rejection::PerAddress => "per_address",
            Rejection::Auth => "auth",
            Rejection::TlsHandshake => "tls_handshake",
            Rejection::SlowReader => "slow_reader",
            Rejection::FrameTimeout => "frame_timeout",
            Rejection::Displaced => "displaced",
        }
    }
}

/// Connection counters by listener. Events per connection, not per request: plain shared
/// atomics are cheap enough. (`crate::stats::Stats` keeps the server-wide totals `STATS`
/// reports; these are the same events split by listener, which `STATS` has no room for.)
#[derive(Debug, Default)]
pub struct Connections {
    accepted: [AtomicU64; 4],
    current: [AtomicU64; 4],
    rejected: [[AtomicU64; 7]; 4],
}

impl Connections {
    /// A connection accepted on `listener` (before the connection limit is checked).
    pub fn accepted(&self, listener: Listener) {
        self.accepted[listener as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection on `listener` opened (`true`) or closed (`false`).
    pub fn open(&self, listener: Listener, open: bool) {
        let current = &self.current[listener as usize];
        if open {
            current.fetch_add(1, Ordering::Relaxed);
        } else {
            current.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A connection on `listener` turned away or closed for `reason`.
    pub fn rejected(&self, listener: Listener, reason: Rejection) {
        self.rejected[listener as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What `/health/ready` answers from.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
}

const REPLAYING: u8 = 0;
const SERVING: u8 = 1;
const SHUTTING_DOWN: u8 = 2;

/// Why the server is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The append-only file is still being loaded.
    Replaying,
    /// The append-only file cannot be written: writes are refused.
    AofFailed,
    /// Shutdown has begun.
    ShuttingDown,
}

impl NotReady {
    /// What `/health/ready` says.
    pub fn message(self) -> &'static str {
        match self {
            NotReady::Replaying => "not ready: replaying the append-only file\n",
            NotReady::AofFailed => {
                "not ready: the append-only file cannot be written; writes are refused\n"
            }
            NotReady::ShuttingDown => "not ready: shutting down\n",
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: AtomicU8::new(REPLAYING),
        }
    }
}

impl Health {
    /// The replay is over: connections are about to be served.
    pub fn serving(&self) {
        // Never back from shutting down.
        let _ =
            self.state
                .compare_exchange(REPLAYING, SERVING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Shutdown has begun.
    pub fn shutting_down(&self) {
        self.state.store(SHUTTING_DOWN, Ordering::Relaxed);
    }

    /// Whether the server has begun to shut down.
    pub fn is_shutting_down(&self) -> bool {
        self.state.load(Ordering::Relaxed) == SHUTTING_DOWN
    }

    /// `Ok` if ready; `aof_failed` says whether the AOF refuses writes now.
    pub fn ready(&self, aof_failed: bool) -> Result<(), NotReady> {
        match self.state.load(Ordering::Relaxed) {
            REPLAYING => Err(NotReady::Replaying),
            SHUTTING_DOWN => Err(NotReady::ShuttingDown),
            _ if aof_failed => Err(NotReady::AofFailed),
            _ => Ok(()),
        }
    }
}

/// The metrics recorded outside the places that already count (see the module docs).
#[derive(Debug)]
pub struct Metrics {
    /// Per-request counters and latencies; `None` when no metrics listener is configured,
    /// so that a server nobody scrapes does not pay for them.
    pub requests: Option<Requests>,
    /// Connections by listener.
    pub connections: Connections,
    /// Readiness.
    pub health: Health,
    /// When the process started serving (the start of `main`).
    pub started: SystemTime,
    /// How long the AOF replay took, nanoseconds (0 without an AOF, or before it ends).
    replay_ns: AtomicU64,
}

impl Metrics {
    /// Metrics that record requests if `record_requests` is set.
    pub fn new(record_requests: bool) -> Metrics {
        Metrics {
            requests: record_requests.then(Requests::new),
            connections: Connections::default(),
            health: Health::default(),
            started: SystemTime::now(),
            replay_ns: AtomicU64::new(0),
        }
    }

    /// Notes how long the AOF replay took.
    pub fn replayed(&self, took: Duration) {
        self.replay_ns
            .store(crate::histogram::nanos(took), Ordering::Relaxed);
    }

    /// How long the AOF replay took.
    pub fn replay_duration(&self) -> Duration {
        Duration::from_nanos(self.replay_ns.load(Ordering::Relaxed))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}
