//! The sessiond wire protocol, with no I/O.
//!
//! This crate is the single definition of what travels between a sessiond client and server;
//! `proto/PROTOCOL.md` in the repository is its specification, and the byte sequences printed
//! there are tested in `tests/spec_examples.rs`. Like `quinn-proto`, it performs no I/O and
//! starts no runtime: it turns bytes into frames and frames into bytes, and both the server and
//! the clients are built on it so that no one else re-implements framing.
//!
//! It is layered the way mini-redis is:
//!
//! - [`header`]: the fixed 16-byte request and response headers.
//! - [`frame`]: a whole request or response (header fields, extras, key, value) with no meaning
//!   attached yet. An unknown opcode is still a valid frame.
//! - [`codec`]: tokio-util [`Decoder`](tokio_util::codec::Decoder) /
//!   [`Encoder`](tokio_util::codec::Encoder) pairs for each side of a connection. The server
//!   side enforces [`Limits`] before it buffers a frame, so a declared length can never make it
//!   allocate more than the limits allow.
//! - [`command`]: the typed meaning of each opcode, one file per command, each with its parse
//!   from a frame, its encoding into one, and the typed reply.
//! - [`peek`]: the keys of buffered requests, read ahead without decoding them, so that a
//!   server can warm its caches for a pipelined batch.
//! - [`unsolicited`]: the frames a server sends without a request (`BUSY`, `SHUTTING_DOWN`,
//!   `PROTOCOL_ERROR`), and how a client recognises them.
//!
//! [`Status`] lists the response status codes and [`Opcode`] the operations.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod codec;
pub mod command;
pub mod frame;
pub mod header;
mod limits;
mod opcode;
pub mod peek;
mod status;
pub mod unsolicited;

pub use codec::{ClientCodec, FrameError, Inbound, Rejection, ServerCodec};
pub use command::{CommandError, Request};
pub use frame::{RequestFrame, ResponseFrame};
pub use limits::Limits;
pub use opcode::Opcode;
pub use status::Status;

/// The protocol version this crate speaks, carried in every header.
pub const PROTOCOL_VERSION: u8 = 1;

/// The lowest protocol version this crate can speak (see `HELLO`).
pub const MIN_PROTOCOL_VERSION: u8 = 1;
