//! `GET`: read a value, optionally sliding its expiry.

use bytes::Bytes;

use super::{
    check_ttl, read_u64s, reply_status, reply_u64s, u64_extras, unexpected, CommandError, Presence,
    ReplyError, Shape,
};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// `GET`: returns the value, its version and its remaining TTL. With the `TOUCH` flag the
/// TTL is first set to the given one, so sliding expiry costs no second round trip.
///
/// ```text
/// flags   0x01 TOUCH
/// extras  none, or with TOUCH: ttl_ms u64
/// key     required
/// value   none
/// ```
///
/// A touch does not change the version: a client that read version N with a touch can still
/// write with if-version N.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    /// The key to read.
    pub key: Bytes,
    /// With `Some(ttl_ms)`, reset the TTL to this many milliseconds before reading.
    pub touch_ttl_ms: Option<u64>,
}

/// The `TOUCH` flag of `GET`.
pub const FLAG_TOUCH: u8 = 0x01;

const SHAPE: Shape = Shape {
    opcode: Opcode::Get,
    allowed_flags: FLAG_TOUCH,
    extras_lens: &[0, 8],
    key: Presence::Required,
    value: Presence::Forbidden,
};

impl Get {
    /// Parses a `GET` frame.
    pub fn parse(frame: RequestFrame, limits: &Limits) -> Result<Get, CommandError> {
        SHAPE.check(&frame)?;
        let touch = frame.flags & FLAG_TOUCH != 0;
        let touch_ttl_ms = match (touch, frame.extras.len()) {
            (false, 0) => None,
            (true, 8) => Some(check_ttl("GET", read_u64s::<1>(&frame.extras)[0], limits)?),
            (true, _) => {
                return Err(CommandError::InvalidArgument(
                    "GET: the TOUCH flag needs an 8-byte ttl in the extras".into(),
                ))
            }
            (false, _) => {
                return Err(CommandError::InvalidArgument(
                    "GET: extras are only allowed with the TOUCH flag".into(),
                ))
            }
        };
        Ok(Get {
            key: frame.key,
            touch_ttl_ms,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        let (flags, extras) = match self.touch_ttl_ms {
            Some(ttl) => (FLAG_TOUCH, u64_extras(&[ttl])),
            None => (0, Bytes::new()),
        };
        RequestFrame {
            flags,
            extras,
            key: self.key.clone(),
            ..RequestFrame::new(Opcode::Get, opaque)
        }
    }
}

/// A stored value as `GET` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value bytes.
    pub value: Bytes,
    /// The version of the last write.
    pub version: u64,
    /// Milliseconds until the entry expires (after any touch), at least 1.
    pub ttl_ms: u64,
}

/// The `GET` reply.
///
/// ```text
/// OK         extras  version u64 | ttl_ms u64     value  the value
/// NOT_FOUND  no extras, no value
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetReply {
    /// The key exists.
    Hit(Entry),
    /// The key does not exist or has expired.
    Miss,
}

impl GetReply {
    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        match self {
            GetReply::Hit(entry) => ResponseFrame {
                extras: u64_extras(&[entry.version, entry.ttl_ms]),
                value: entry.value.clone(),
                ..ResponseFrame::new(Opcode::Get.into(), opaque, Status::Ok)
            },
            GetReply::Miss => ResponseFrame::new(Opcode::Get.into(), opaque, Status::NotFound),
        }
    }

    /// Reads a `GET` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<GetReply, ReplyError> {
        match reply_status(frame, Opcode::Get)? {
            Status::Ok => {
                let [version, ttl_ms] = reply_u64s::<2>(frame, Opcode::Get)?;
                Ok(GetReply::Hit(Entry {
                    value: frame.value.clone(),
                    version,
                    ttl_ms,
                }))
            }
            Status::NotFound => Ok(GetReply::Miss),
            other => Err(unexpected(Opcode::Get, other)),
        }
    }
}
