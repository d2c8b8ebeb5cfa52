//! How each target spells the workload's operations, and how its replies are read.
//!
//! A [`Protocol`] appends requests to a write buffer and takes replies off the front of a
//! read buffer; it does no I/O, so the connection driver in [`crate::run`] is the same for
//! every target and the comparison measures the servers, not three different clients.
//! Replies come back in request order on all three protocols, so the driver tells the
//! protocol which kind of request the next reply answers.
//!
//! | operation | native (`sessiond-proto`) | RESP2 (Redis)         | Memcached meta    |
//! |-----------|---------------------------|-----------------------|-------------------|
//! | get       | `GET` + `TOUCH` flag      | `GETEX key PX ttl`    | `mg key v t T<s>` |
//! | read      | `GET`                     | `GET key`             | `mg key v t`      |
//! | set       | `SET` upsert with TTL     | `SET key val PX ttl`  | `ms key len T<s>` |
//! | del       | `DEL`                     | `DEL key`             | `md key`          |
//! | touch     | `TOUCH`                   | `PEXPIRE key ttl`     | `mg key T<s>`     |
//! | login     | `SET_SESSION` with owner  | (none)                | (none)            |
//! | devices   | `LIST_SESSIONS`           | (none)                | (none)            |
//! | end_all   | `END_ALL`                 | (none)                | (none)            |
//!
//! The last three are what sessiond has and a cache does not; the configuration refuses them
//! for the other targets.

mod memcached;
mod native;
mod resp;

pub use memcached::{ttl_secs as memcached_ttl_secs, Memcached};
pub use native::Native;
pub(crate) use resp::put_command as put_resp_command;
pub use resp::Resp;

use bytes::{Bytes, BytesMut};

use crate::workload::OpKind;

/// The servers the load generator can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// sessiond's native binary protocol.
    Native,
    /// Any server speaking RESP2 (Redis, Valkey, KeyDB, Dragonfly).
    Resp,
    /// Memcached, through its meta protocol (1.6 or later).
    Memcached,
}

impl Target {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Native => "native",
            Target::Resp => "resp",
            Target::Memcached => "memcached",
        }
    }
}

/// What a reply said about its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The key was there (a read found it, a delete removed it, a touch extended it) or the
    /// write was stored.
    Hit,
    /// The key was not there, or a conditional write was refused. Not an error: a read of a
    /// session that was never written or has been deleted is a miss.
    Miss,
    /// The server answered with an error; the stream is still in step, so the connection
    /// goes on.
    Error(String),
}

/// A reply the stream cannot be read past: the connection is given up.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The native codec could not read the stream.
    #[error(transparent)]
    Frame(#[from] sessiond_proto::FrameError),
    /// The server sent something the protocol does not allow here.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

/// One target's request encoding and reply decoding.
pub trait Protocol: Send + 'static {
    /// Appends the request for `kind` on `key` to `buf`.
    fn encode(&mut self, kind: OpKind, key: &Bytes, buf: &mut BytesMut);

    /// Takes the reply to a request of `kind` off the front of `buf`: `Ok(None)` while it is
    /// incomplete.
    fn decode(&mut self, kind: OpKind, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError>;
}

/// Appends `n` in decimal without allocating.
fn put_decimal(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// The first line of `buf` without its `\r\n`, or `None` if no whole line has arrived.
pub(crate) fn line(buf: &[u8]) -> Option<&[u8]> {
    buf.windows(2)
        .position(|w| w == b"\r\n")
        .map(|end| &buf[..end])
}

/// A parsed decimal, for lengths and integers in text protocols.
fn parse_decimal(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A hit when the operation found what it was about, a miss otherwise.
fn hit(found: bool) -> Reply {
    if found {
        Reply::Hit
    } else {
        Reply::Miss
    }
}

/// Up to 200 bytes of `bytes` for an error message.
fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(200)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trips() {
        for n in [0u64, 7, 10, 1800, u64::MAX] {
            let mut buf = BytesMut::new();
            put_decimal(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn line_needs_crlf() {
        assert_eq!(line(b"HD\r\nrest"), Some(&b"HD"[..]));
        assert_eq!(line(b"HD\r"), None);
        assert_eq!(line(b""), None);
    }
}
