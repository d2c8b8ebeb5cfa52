//! sessiond-bench: one session-shaped workload, driven against sessiond, a RESP server
//! (Redis) or memcached, so that their numbers can be compared.
//!
//! A fair comparison needs the same workload and the same client for every server: the same
//! connections, pipeline depth, key and value sizes, key distribution, operation mix and
//! TTLs, and the same code measuring them. Only the request encoding and reply decoding
//! differ per target, and they do no I/O.
//!
//! How the parts fit:
//!
//! - [`config`]: the command-line flags and the validated [`Config`].
//! - [`workload`]: operation kinds, the mix, the key space, the random generator.
//! - [`protocol`]: one [`protocol::Protocol`] per target (native through `sessiond-proto`'s
//!   typed commands and client codec, RESP2, memcached's meta protocol).
//! - [`connect`]: opening a connection, plain or TLS, and the target's `AUTH`.
//! - [`nodes`]: several sessiond nodes (`--addr a,b,c`), keys placed on them as the client
//!   places them.
//! - [`pace`]: the open-loop schedule of `--rate`, and sending on it precisely.
//! - [`run`]: connections, one pipelined task per connection, the warm-up and measuring
//!   phases, progress.
//! - [`report`]: per-connection counters and latency histograms, merged into a
//!   [`Report`] printed as a table or as JSON.
//!
//! The `sessiond-bench` binary only parses the flags, builds the runtime and prints the
//! report.
//!
//! [`floor`] is the other side: `sessiond-floor`, a server that answers with canned replies
//! and stores nothing, to measure what the I/O alone costs a server per request.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod connect;
pub mod floor;
pub mod nodes;
pub mod pace;
pub mod protocol;
pub mod report;
pub mod run;
pub mod workload;

pub use config::{Args, Config};
pub use report::Report;
pub use run::{run, RunError};
