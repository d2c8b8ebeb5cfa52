//! An async client for sessiond, and the session layer web applications build on it.
//!
//! sessiond is a session store; this crate is how an application uses it. It has three
//! layers, each usable on its own:
//!
//! 1. [`Client`]: the protocol's commands (`get`, `get_and_touch`, `set` in its four modes,
//!    `touch`, `del`, `ping`, `stats`, and the session commands `set_session`,
//!    `sessions_of`, `end_all`, `rotate`) with typed results and [`Error`]s. All framing is the
//!    `sessiond-proto` crate's. Many tasks share one multiplexed connection (requests are
//!    pipelined and matched to responses by their opaque id), optionally a small pool of
//!    them; connections are reopened after the server restarts, with a backoff; every
//!    request has a timeout. Nothing panics on anything the server sends.
//!    [`Client::cluster`] spreads keys over many servers instead (docs/SCALING.md): each
//!    key on the node that [`placement`] names, a node that is down failing only its own
//!    keys, at once ([`Error::Unavailable`]).
//! 2. [`Sessions`]: server-side web sessions, what Flask-Session gives a Flask app: 256-bit
//!    ids, a key prefix, cookie settings, optional signing, MessagePack data, and saves that
//!    detect concurrent updates instead of overwriting them; logins that bind the session to
//!    its user and move it to a new id in one step, the user's list of devices, "log out
//!    everywhere", and an absolute lifetime the server enforces. Independent of any web
//!    framework.
//! 3. Stores for the session middleware of web frameworks, each behind a cargo feature so
//!    that the plain client stays small:
//!    - `tower-sessions`: `tower::SessiondStore`, a `tower_sessions_core::SessionStore` for
//!      tower-sessions 0.15 (axum and other tower-based servers);
//!    - `actix-session`: `actix::SessiondStore`, an `actix_session::storage::SessionStore`
//!      for actix-session 0.11 (actix-web 4).
//!
//! The parts, one concept per module: [`Client`] (`client.rs`) is the typed commands
//! (`session_commands.rs` those about owners, absolute lifetimes and rotation),
//! `pool.rs` the connections it spreads requests over, `mux.rs` one multiplexed connection
//! and its reconnection, `handshake.rs` how each connection is opened (`HELLO`, then
//! `AUTH` with the client's [`Credentials`]), [`transport`] the TCP or TLS byte stream under
//! it, [`TlsOptions`] (`tls.rs`) how the server is verified, [`Error`] (`error.rs`) what can
//! go wrong; [`session`] the session
//! layer, [`SessionId`] (`id.rs`) and [`Signer`] (`signer.rs`) its ids and cookie signing.
//! For many servers: [`placement`] decides which node holds a key (rendezvous hashing on
//! node names, routing tags in session ids), `cluster.rs` is the multi-node client with a
//! circuit breaker per node, [`discovery`] reads node lists, and [`migration`] moves
//! sessions after a topology change (`sessiond-cli rebalance`).
//!
//! ```no_run
//! use std::time::Duration;
//! use sessiond_client::{Client, Error, SetMode};
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::builder("127.0.0.1:7878")
//!     .request_timeout(Duration::from_millis(500))
//!     .connect()
//!     .await?;
//! let ttl = Duration::from_secs(30 * 60);
//! let v1 = client.set("session:abc", b"hello", ttl, SetMode::CreateOnly).await?;
//! // A second create-only write of the same key is refused, not applied.
//! assert!(matches!(
//!     client.set("session:abc", b"other", ttl, SetMode::CreateOnly).await,
//!     Err(Error::Exists)
//! ));
//! // A write conditional on the version read succeeds only if no one wrote in between.
//! let v2 = client.set("session:abc", b"hello again", ttl, SetMode::IfVersion(v1)).await?;
//! assert!(v2 > v1);
//! client.del("session:abc").await?;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod cluster;
mod credentials;
pub mod discovery;
mod error;
mod handshake;
mod id;
pub mod migration;
mod mux;
pub mod placement;
mod pool;
pub mod session;
mod session_commands;
mod signer;
mod tls;
pub mod transport;

#[cfg(feature = "actix-session")]
pub mod actix;
#[cfg(feature = "tower-sessions")]
pub mod tower;

pub use client::{Client, ClientBuilder};
pub use credentials::Credentials;
pub use error::Error;
pub use id::{RandomError, SessionId};
pub use session::{
    Device, SameSite, Session, SessionConfig, SessionError, Sessions, SetCookie, OWNER_KEY,
};
pub use session_commands::{SessionOptions, SessionWrite};
pub use signer::{KeyTooShort, Signer};
pub use tls::TlsOptions;

/// Types from the protocol crate that appear in this crate's API.
pub use sessiond_proto::command::{
    Entry, LimitPolicy, OwnerLimit, ScanEntry, ScanReply, SessionInfo, SessionList, SetMode,
    StatsReply,
};
pub use sessiond_proto::command::{SlowlogEntry, SlowlogLen};
pub use sessiond_proto::{Limits, Status};
