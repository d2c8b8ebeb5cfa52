//! The native binary protocol's half of a connection (see `proto/PROTOCOL.md`).
//!
//! Framing is the protocol crate's [`ServerCodec`]; what each command does is in [`crate::cmd`].
//! This file only connects the two to the protocol-independent [`Handler`](crate::server)
//! and says what the native protocol sends when the stream itself is unreadable.

use bytes::BytesMut;
use sessiond_proto::{
    unsolicited, FrameError, Inbound, Limits, Opcode, ResponseFrame, ServerCodec, Status,
};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tracing::debug;

use crate::access::Access;
use crate::aof::PersistenceError;
use crate::cmd;
use crate::metrics::{Outcome, RequestTag};
use crate::server::{Answer, Context, Protocol};
use crate::stats::Stats;

pub use sessiond_proto::unsolicited::UNSOLICITED_OPCODE;

/// Per-connection state of the native protocol: the codec's (a rejected frame's body may
/// still be arriving, to be thrown away) and who the connection is authenticated as.
pub(crate) struct Native {
    codec: ServerCodec,
    access: Access,
}

impl Native {
    pub(crate) fn new(limits: Limits, access: Access) -> Native {
        let mut codec = ServerCodec::new(limits);
        codec.set_unauthenticated(!access.is_authenticated());
        Native { codec, access }
    }
}

impl Protocol for Native {
    type Response = ResponseFrame;

    fn next(&mut self, buf: &mut BytesMut, ctx: &Context) -> Option<Answer<ResponseFrame>> {
        let item = match self.codec.decode(buf) {
            Ok(Some(item)) => item,
            Ok(None) => return None,
            Err(error) => {
                Stats::bump(&ctx.stats.protocol_errors);
                debug!(%error, "unreadable stream; closing");
                return Some(Answer {
                    response: fatal_response(&error),
                    mutated: false,
                    close: true,
                    delay: None,
                    tag: RequestTag::native(u8::MAX, "unknown", Outcome::Error, 0),
                });
            }
        };
        Stats::bump(&ctx.stats.requests_total);
        Some(match item {
            Inbound::Request(frame) => {
                let (opcode, key_len) = (frame.opcode, frame.key.len());
                let outcome = cmd::execute(frame, ctx, &mut self.access);
                let tag = tag(opcode, key_len, outcome.response.status);
                // `AUTH` may have just lifted the unauthenticated limit.
                self.codec
                    .set_unauthenticated(!self.access.is_authenticated());
                Answer {
                    response: Some(outcome.response),
                    mutated: outcome.mutated,
                    close: outcome.close,
                    delay: outcome.delay,
                    tag,
                }
            }
            Inbound::Rejected(rejection) => {
                Stats::bump(&ctx.stats.protocol_errors);
                // Before authentication an oversized frame ends the connection: a client
                // that has not shown credentials gets no second try at making us read.
                let close = rejection.status == Status::TooLarge && !self.access.is_authenticated();
                if close {
                    debug!("oversized frame before authentication; closing");
                }
                let response = rejection.to_response();
                Answer {
                    tag: tag(response.opcode, 0, response.status),
                    response: Some(response),
                    mutated: false,
                    close,
                    delay: None,
                }
            }
        })
    }

    fn auth_deadline(&self) -> Option<Instant> {
        self.access.deadline()
    }

    fn mid_request(&self) -> bool {
        self.codec.is_discarding()
    }

    fn prefetch(&self, buf: &[u8], ctx: &Context) {
        // Before authentication the keys are an unknown peer's: nothing to warm for it.
        if self.access.is_authenticated() {
            ctx.store.prefetch(self.codec.buffered_keys(buf));
        }
    }

    fn encode(&self, response: &ResponseFrame, out: &mut BytesMut) {
        out.reserve(response.encoded_len());
        response.encode(out);
    }

    fn encoded_len(response: &ResponseFrame) -> usize {
        response.encoded_len()
    }

    fn persistence_failed(
        &self,
        response: &ResponseFrame,
        error: &PersistenceError,
    ) -> ResponseFrame {
        ResponseFrame::error(
            response.opcode,
            response.opaque,
            Status::PersistenceFailed,
            format!("{error}; the write may not survive a restart"),
        )
    }

    fn busy_message() -> Vec<u8> {
        encoded(&unsolicited::busy())
    }

    fn shutting_down_message() -> Option<Vec<u8>> {
        Some(encoded(&unsolicited::shutting_down()))
    }
}

/// What the metrics and the slow log record of a request: its command and what its status
/// says about it (PROTOCOL.md's status codes map one to one onto outcomes).
fn tag(opcode: u8, key_len: usize, status: u16) -> RequestTag {
    let op = Opcode::from_u8(opcode);
    let outcome = match (Status::from_u16(status), op) {
        (Some(Status::Ok), Some(Opcode::Get | Opcode::Touch)) => Outcome::Hit,
        (Some(Status::Ok), Some(Opcode::Set | Opcode::SetSession)) => Outcome::Stored,
        (Some(Status::Ok), Some(Opcode::Del)) => Outcome::Deleted,
        (Some(Status::Ok), _) => Outcome::Ok,
        (Some(Status::NotFound), _) => Outcome::Miss,
        (Some(Status::Exists), _) => Outcome::Exists,
        (Some(Status::VersionMismatch), _) => Outcome::VersionMismatch,
        (Some(Status::OwnerLimit), _) => Outcome::OwnerLimit,
        (Some(Status::AuthRequired | Status::AuthFailed | Status::NoPermission), _) => {
            Outcome::Denied
        }
        (
            Some(
                Status::OutOfMemory
                | Status::PersistenceFailed
                | Status::Busy
                | Status::ShuttingDown,
            ),
            _,
        ) => Outcome::Refused,
        _ => Outcome::Error,
    };
    RequestTag::native(opcode, op.map_or("unknown", Opcode::name), outcome, key_len)
}

fn encoded(frame: &ResponseFrame) -> Vec<u8> {
    let mut buf = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut buf);
    buf
}

/// The last frame sent on a stream that can no longer be read.
fn fatal_response(error: &FrameError) -> Option<ResponseFrame> {
    match error {
        FrameError::BadMagic { .. } => Some(unsolicited::protocol_error(error)),
        FrameError::UnsupportedVersion { opcode, opaque, .. } => Some(ResponseFrame::error(
            *opcode,
            *opaque,
            Status::UnsupportedVersion,
            error.to_string(),
        )),
        FrameError::ResponseTooLarge { .. } | FrameError::Io(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_onto_the_metrics_outcomes() {
        let outcome = |op: Opcode, status: Status| tag(op.into(), 5, status as u16).outcome;
        assert_eq!(outcome(Opcode::Get, Status::Ok), Outcome::Hit);
        assert_eq!(outcome(Opcode::Get, Status::NotFound), Outcome::Miss);
        assert_eq!(outcome(Opcode::Set, Status::Ok), Outcome::Stored);
        assert_eq!(outcome(Opcode::SetSession, Status::Ok), Outcome::Stored);
        assert_eq!(outcome(Opcode::Set, Status::Exists), Outcome::Exists);
        assert_eq!(
            outcome(Opcode::Set, Status::VersionMismatch),
            Outcome::VersionMismatch
        );
        assert_eq!(outcome(Opcode::Del, Status::Ok), Outcome::Deleted);
        assert_eq!(
            outcome(Opcode::SetSession, Status::OwnerLimit),
            Outcome::OwnerLimit
        );
        assert_eq!(outcome(Opcode::Set, Status::OutOfMemory), Outcome::Refused);
        assert_eq!(outcome(Opcode::Get, Status::AuthRequired), Outcome::Denied);
        assert_eq!(outcome(Opcode::Ping, Status::Ok), Outcome::Ok);
        assert_eq!(
            outcome(Opcode::Get, Status::InvalidArgument),
            Outcome::Error
        );
        let unknown = tag(0xee, 0, Status::UnknownOpcode as u16);
        assert_eq!(
            (unknown.command, unknown.outcome),
            ("unknown", Outcome::Error)
        );
    }
}
