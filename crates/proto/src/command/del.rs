//! `DEL`: remove a key.

use bytes::Bytes;

use super::{
    read_u64s, reply_status, reply_u64s, u64_extras, unexpected, CommandError, Presence,
    ReplyError, Shape,
};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Opcode, Status};

/// `DEL`: removes the key, optionally only if it has a given version.
///
/// ```text
/// flags   0x01 IF_VERSION
/// extras  none, or with IF_VERSION: expected_version u64
/// key     required
/// value   none
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Del {
    /// The key to remove.
    pub key: Bytes,
    /// With `Some(v)`, remove only if the entry's version is `v`.
    pub if_version: Option<u64>,
}

/// The `IF_VERSION` flag of `DEL`.
pub const FLAG_IF_VERSION: u8 = 0x01;

const SHAPE: Shape = Shape {
    opcode: Opcode::Del,
    allowed_flags: FLAG_IF_VERSION,
    extras_lens: &[0, 8],
    key: Presence::Required,
    value: Presence::Forbidden,
};

impl Del {
    /// Parses a `DEL` frame.
    pub fn parse(frame: RequestFrame) -> Result<Del, CommandError> {
        SHAPE.check(&frame)?;
        let conditional = frame.flags & FLAG_IF_VERSION != 0;
        let if_version = match (conditional, frame.extras.len()) {
            (false, 0) => None,
            (true, 8) => Some(read_u64s::<1>(&frame.extras)[0]),
            _ => {
                return Err(CommandError::InvalidArgument(
                    "DEL: extras must be 8 bytes with IF_VERSION and empty without".into(),
                ))
            }
        };
        Ok(Del {
            key: frame.key,
            if_version,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        let (flags, extras) = match self.if_version {
            Some(v) => (FLAG_IF_VERSION, u64_extras(&[v])),
            None => (0, Bytes::new()),
        };
        RequestFrame {
            flags,
            extras,
            key: self.key.clone(),
            ..RequestFrame::new(Opcode::Del, opaque)
        }
    }
}

/// The `DEL` reply.
///
/// ```text
/// OK                no extras
/// NOT_FOUND         no extras
/// VERSION_MISMATCH  extras  current_version u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelOutcome {
    /// The key was removed.
    Deleted,
    /// The key did not exist.
    NotFound,
    /// If-version, and the key has another version; nothing was removed.
    VersionMismatch {
        /// The version the entry has.
        current: u64,
    },
}

impl DelOutcome {
    /// The response frame for this outcome.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let op = Opcode::Del.into();
        match *self {
            DelOutcome::Deleted => ResponseFrame::new(op, opaque, Status::Ok),
            DelOutcome::NotFound => ResponseFrame::new(op, opaque, Status::NotFound),
            DelOutcome::VersionMismatch { current } => ResponseFrame {
                extras: u64_extras(&[current]),
                ..ResponseFrame::new(op, opaque, Status::VersionMismatch)
            },
        }
    }

    /// Reads a `DEL` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<DelOutcome, ReplyError> {
        Ok(match reply_status(frame, Opcode::Del)? {
            Status::Ok => DelOutcome::Deleted,
            Status::NotFound => DelOutcome::NotFound,
            Status::VersionMismatch => DelOutcome::VersionMismatch {
                current: reply_u64s::<1>(frame, Opcode::Del)?[0],
            },
            other => return Err(unexpected(Opcode::Del, other)),
        })
    }
}
