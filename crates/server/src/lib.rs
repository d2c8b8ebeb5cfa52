//! sessiond: a session-store daemon.
//!
//! sessiond keeps web sessions in memory, sharded, with a deadline and a version per entry,
//! and serves them over the binary protocol defined in the `sessiond-proto` crate (and
//! specified in `proto/PROTOCOL.md`). What it adds over a general-purpose cache is session
//! semantics: create-only writes for new session ids, update-only writes so a late request
//! cannot resurrect a logged-out session, versioned writes so concurrent requests cannot
//! silently overwrite each other, and sliding expiry in the same round trip as a read.
//!
//! How the parts fit:
//!
//! - [`config`]: the TOML configuration and its validation.
//! - [`store`]: the sharded map, lazy expiry on access, the background sweep, and the
//!   [`store::MutationSink`] seam through which a persistence layer sees every write in
//!   per-key order.
//! - [`server`]: the accept loops and one task per connection. Each task decodes every request
//!   a read brought in, applies them in order, and writes all the responses with one write.
//!   The protocol-specific half of a connection is a [`server`] `Protocol`: `native` for the
//!   binary protocol, [`resp`] for Redis clients.
//! - `cmd`: one file per native command, applying a parsed request to the store.
//! - [`resp`]: the optional Redis-protocol (RESP2/RESP3) listener over the same store.
//! - [`stats`]: counters for `STATS`; [`slowlog`]: the ring of the last slow requests.
//! - [`memory`]: the accounting of what the server's memory holds (entries, table, AOF and
//!   connection buffers) and the `limits.max_memory` cap it is held to.
//! - [`auth`]: the configured users and the verification of their passwords; [`access`]:
//!   each connection's authentication state and the one table of what each role may run,
//!   checked by both protocols before they dispatch a command.
//! - [`metrics`]: the Prometheus metrics (one list of them, recorded where their events
//!   happen) and the HTTP listener that serves them with the health endpoints;
//!   [`histogram`]: the lock-free latency buckets they record into.
//! - [`tls`]: certificates and the rustls configuration of the TLS listeners, and their
//!   reload; the handshake is the connection layer's ([`server`]), commands never see TLS.
//!
//! The `sessiond` binary only wires these together: parse arguments, load the configuration,
//! bind, and call [`server::run`] with a future that completes on SIGINT or SIGTERM.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod aof;
pub mod auth;
pub mod clock;
mod cmd;
pub mod config;
mod connection;
#[doc(hidden)]
pub mod fuzzing;
pub mod histogram;
pub mod logging;
pub mod memory;
pub mod metrics;
mod native;
pub mod resp;
pub mod server;
pub mod slowlog;
pub mod stats;
pub mod store;
pub mod tls;

pub use config::Config;
pub use store::Store;

/// Server software name and version, as `HELLO` and `STATS` report it.
pub const SERVER_VERSION: &str = concat!("sessiond/", env!("CARGO_PKG_VERSION"));
