//! `TOUCH`: set a new TTL.

use bytes::Bytes;

use super::{
    check_ttl, read_u64s, reply_status, reply_u64s, u64_extras, unexpected, CommandError, Presence,
    ReplyError, Shape,
};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// `TOUCH`: resets the key's TTL without changing its value or version.
///
/// ```text
/// flags   0
/// extras  ttl_ms u64
/// key     required
/// value   none
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The key to touch.
    pub key: Bytes,
    /// The new TTL in milliseconds, from when the server applies it.
    pub ttl_ms: u64,
}

const SHAPE: Shape = Shape {
    opcode: Opcode::Touch,
    allowed_flags: 0,
    extras_lens: &[8],
    key: Presence::Required,
    value: Presence::Forbidden,
};

impl Touch {
    /// Parses a `TOUCH` frame.
    pub fn parse(frame: RequestFrame, limits: &Limits) -> Result<Touch, CommandError> {
        SHAPE.check(&frame)?;
        Ok(Touch {
            ttl_ms: check_ttl("TOUCH", read_u64s::<1>(&frame.extras)[0], limits)?,
            key: frame.key,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame {
            extras: u64_extras(&[self.ttl_ms]),
            key: self.key.clone(),
            ..RequestFrame::new(Opcode::Touch, opaque)
        }
    }
}

/// The `TOUCH` reply.
///
/// ```text
/// OK         extras  version u64 (unchanged by the touch)
/// NOT_FOUND  no extras
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchReply {
    /// The TTL was reset; the entry has this version.
    Touched {
        /// The entry's (unchanged) version.
        version: u64,
    },
    /// The key does not exist or has expired.
    NotFound,
}

impl TouchReply {
    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let op = Opcode::Touch.into();
        match *self {
            TouchReply::Touched { version } => ResponseFrame {
                extras: u64_extras(&[version]),
                ..ResponseFrame::new(op, opaque, Status::Ok)
            },
            TouchReply::NotFound => ResponseFrame::new(op, opaque, Status::NotFound),
        }
    }

    /// Reads a `TOUCH` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<TouchReply, ReplyError> {
        Ok(match reply_status(frame, Opcode::Touch)? {
            Status::Ok => TouchReply::Touched {
                version: reply_u64s::<1>(frame, Opcode::Touch)?[0],
            },
            Status::NotFound => TouchReply::NotFound,
            other => return Err(unexpected(Opcode::Touch, other)),
        })
    }
}
