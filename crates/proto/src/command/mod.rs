//! The typed meaning of each opcode: one file per command.
//!
//! Each file holds the request struct with its `parse` (from a [`RequestFrame`]) and
//! `to_frame`, and the reply type with its `to_frame` (used by the server) and `from_frame`
//! (used by clients). The wire grammar is in each request's doc comment and, with worked
//! examples, in `proto/PROTOCOL.md`.

mod auth;
mod del;
mod end_all;
mod get;
mod hello;
mod list_sessions;
mod owner;
mod ping;
mod rotate;
mod scan;
mod set;
mod set_session;
mod slowlog;
mod stats;
mod touch;

pub use auth::{Auth, AuthReply};
pub use del::{Del, DelOutcome, FLAG_IF_VERSION};
pub use end_all::{EndAll, EndAllReply};
pub use get::{Entry, Get, GetReply, FLAG_TOUCH};
pub use hello::{Hello, HelloReply, HELLO_FLAG_AUTH_REQUIRED};
pub use list_sessions::{ListSessions, SessionInfo, SessionList};
pub use owner::{LimitPolicy, OwnerLimit, SessionWriteOutcome, FLAG_END_LRU, MAX_OWNER_LEN};
pub use ping::{Ping, PingReply};
pub use rotate::{Bind, Rotate, RotateOutcome, ROTATE_FLAG_BIND, ROTATE_FLAG_IF_VERSION};
pub use scan::{Scan, ScanEntry, ScanReply};
pub use set::{Set, SetMode, SetOutcome};
pub use set_session::{SetSession, SetSessionOutcome};
pub use slowlog::{
    Slowlog, SlowlogEntry, SlowlogLen, SlowlogReply, SLOWLOG_GET, SLOWLOG_LEN, SLOWLOG_RESET,
};
pub use stats::{Stats, StatsReply};
pub use touch::{Touch, TouchReply};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// A request whose frame was not a valid instance of its opcode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The opcode byte is not defined.
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// The frame's flags, extras, key or value do not fit the opcode.
    #[error("{0}")]
    InvalidArgument(String),
}

impl CommandError {
    /// The status that answers this error.
    pub fn status(&self) -> Status {
        match self {
            CommandError::UnknownOpcode(_) => Status::UnknownOpcode,
            CommandError::InvalidArgument(_) => Status::InvalidArgument,
        }
    }
}

/// A reply that was not what the request allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The server answered with an error status.
    #[error("server error {status}: {message}")]
    Server {
        /// The error status.
        status: Status,
        /// The server's message.
        message: String,
    },
    /// The status or layout is not one this request can receive.
    #[error("malformed {opcode} reply: {reason}")]
    Malformed {
        /// The opcode whose reply it was.
        opcode: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Any request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `HELLO`
    Hello(Hello),
    /// `PING`
    Ping(Ping),
    /// `GET`
    Get(Get),
    /// `SET`
    Set(Set),
    /// `TOUCH`
    Touch(Touch),
    /// `DEL`
    Del(Del),
    /// `STATS`
    Stats(Stats),
    /// `AUTH`
    Auth(Auth),
    /// `SLOWLOG`
    Slowlog(Slowlog),
    /// `SET_SESSION`
    SetSession(SetSession),
    /// `LIST_SESSIONS`
    ListSessions(ListSessions),
    /// `END_ALL`
    EndAll(EndAll),
    /// `ROTATE`
    Rotate(Rotate),
    /// `SCAN`
    Scan(Scan),
}

impl Request {
    /// Parses a frame, checking its arguments against `limits` (TTL range, non-empty keys;
    /// the codec has already enforced lengths).
    pub fn parse(frame: RequestFrame, limits: &Limits) -> Result<Request, CommandError> {
        let opcode =
            Opcode::from_u8(frame.opcode).ok_or(CommandError::UnknownOpcode(frame.opcode))?;
        Ok(match opcode {
            Opcode::Hello => Request::Hello(Hello::parse(frame)?),
            Opcode::Ping => Request::Ping(Ping::parse(frame)?),
            Opcode::Get => Request::Get(Get::parse(frame, limits)?),
            Opcode::Set => Request::Set(Set::parse(frame, limits)?),
            Opcode::Touch => Request::Touch(Touch::parse(frame, limits)?),
            Opcode::Del => Request::Del(Del::parse(frame)?),
            Opcode::Stats => Request::Stats(Stats::parse(frame)?),
            Opcode::Auth => Request::Auth(Auth::parse(frame)?),
            Opcode::Slowlog => Request::Slowlog(Slowlog::parse(frame)?),
            Opcode::SetSession => Request::SetSession(SetSession::parse(frame, limits)?),
            Opcode::ListSessions => Request::ListSessions(ListSessions::parse(frame)?),
            Opcode::EndAll => Request::EndAll(EndAll::parse(frame)?),
            Opcode::Rotate => Request::Rotate(Rotate::parse(frame, limits)?),
            Opcode::Scan => Request::Scan(Scan::parse(frame)?),
        })
    }

    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello(_) => Opcode::Hello,
            Request::Ping(_) => Opcode::Ping,
            Request::Get(_) => Opcode::Get,
            Request::Set(_) => Opcode::Set,
            Request::Touch(_) => Opcode::Touch,
            Request::Del(_) => Opcode::Del,
            Request::Stats(_) => Opcode::Stats,
            Request::Auth(_) => Opcode::Auth,
            Request::Slowlog(_) => Opcode::Slowlog,
            Request::SetSession(_) => Opcode::SetSession,
            Request::ListSessions(_) => Opcode::ListSessions,
            Request::EndAll(_) => Opcode::EndAll,
            Request::Rotate(_) => Opcode::Rotate,
            Request::Scan(_) => Opcode::Scan,
        }
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        match self {
            Request::Hello(r) => r.to_frame(opaque),
            Request::Ping(r) => r.to_frame(opaque),
            Request::Get(r) => r.to_frame(opaque),
            Request::Set(r) => r.to_frame(opaque),
            Request::Touch(r) => r.to_frame(opaque),
            Request::Del(r) => r.to_frame(opaque),
            Request::Stats(r) => r.to_frame(opaque),
            Request::Auth(r) => r.to_frame(opaque),
            Request::Slowlog(r) => r.to_frame(opaque),
            Request::SetSession(r) => r.to_frame(opaque),
            Request::ListSessions(r) => r.to_frame(opaque),
            Request::EndAll(r) => r.to_frame(opaque),
            Request::Rotate(r) => r.to_frame(opaque),
            Request::Scan(r) => r.to_frame(opaque),
        }
    }
}

/// Checks the parts every command constrains: which flags may be set, how long the extras
/// are, and whether a key and value may be present.
struct Shape {
    opcode: Opcode,
    allowed_flags: u8,
    extras_lens: &'static [usize],
    key: Presence,
    value: Presence,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Required,
    Forbidden,
    Optional,
}

impl Shape {
    fn check(&self, frame: &RequestFrame) -> Result<(), CommandError> {
        let name = self.opcode.name();
        let extra_flags = frame.flags & !self.allowed_flags;
        if extra_flags != 0 {
            return Err(invalid(format!(
                "{name}: undefined flag bits 0x{extra_flags:02x}"
            )));
        }
        if !self.extras_lens.contains(&frame.extras.len()) {
            return Err(invalid(format!(
                "{name}: extras must be {:?} bytes, got {}",
                self.extras_lens,
                frame.extras.len()
            )));
        }
        check_presence(name, "key", self.key, frame.key.len())?;
        check_presence(name, "value", self.value, frame.value.len())
    }
}

fn check_presence(name: &str, part: &str, rule: Presence, len: usize) -> Result<(), CommandError> {
    match (rule, len) {
        (Presence::Required, 0) => Err(invalid(format!("{name}: a {part} is required"))),
        (Presence::Forbidden, 1..) => Err(invalid(format!("{name}: no {part} is allowed"))),
        _ => Ok(()),
    }
}

fn invalid(message: String) -> CommandError {
    CommandError::InvalidArgument(message)
}

/// Checks a TTL against the protocol rule (at least 1 ms) and the server's maximum.
fn check_ttl(name: &str, ttl_ms: u64, limits: &Limits) -> Result<u64, CommandError> {
    if ttl_ms == 0 {
        return Err(invalid(format!("{name}: ttl must be at least 1 ms")));
    }
    if ttl_ms > limits.max_ttl_ms {
        return Err(invalid(format!(
            "{name}: ttl of {ttl_ms} ms exceeds the limit of {} ms",
            limits.max_ttl_ms
        )));
    }
    Ok(ttl_ms)
}

/// Reads big-endian `u64`s from extras whose length the caller has already checked.
fn read_u64s<const N: usize>(mut extras: &[u8]) -> [u64; N] {
    let mut out = [0u64; N];
    for slot in out.iter_mut() {
        *slot = extras.get_u64();
    }
    out
}

/// Encodes `u64`s as big-endian extras, sized up front and written in place: every `GET`
/// hit's reply goes through here.
fn u64_extras(values: &[u64]) -> Bytes {
    let mut extras = BytesMut::with_capacity(values.len() * 8);
    for &value in values {
        extras.put_u64(value);
    }
    extras.freeze()
}

/// Splits a reply into its status, turning error statuses into [`ReplyError::Server`].
fn reply_status(frame: &ResponseFrame, opcode: Opcode) -> Result<Status, ReplyError> {
    let Some(status) = frame.status() else {
        return Err(malformed(
            opcode,
            format!("unknown status 0x{:04x}", frame.status),
        ));
    };
    if status.is_error() {
        return Err(ReplyError::Server {
            status,
            message: frame.message(),
        });
    }
    Ok(status)
}

/// Reads `N` big-endian `u64` extras from a reply, or says the reply is malformed.
fn reply_u64s<const N: usize>(
    frame: &ResponseFrame,
    opcode: Opcode,
) -> Result<[u64; N], ReplyError> {
    if frame.extras.len() != N * 8 {
        return Err(malformed(
            opcode,
            format!("extras must be {} bytes, got {}", N * 8, frame.extras.len()),
        ));
    }
    Ok(read_u64s::<N>(&frame.extras))
}

fn malformed(opcode: Opcode, reason: String) -> ReplyError {
    ReplyError::Malformed {
        opcode: opcode.name(),
        reason,
    }
}

fn unexpected(opcode: Opcode, status: Status) -> ReplyError {
    malformed(opcode, format!("status {status} is not a possible outcome"))
}
