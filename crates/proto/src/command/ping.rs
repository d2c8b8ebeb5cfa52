//! `PING`: liveness check.

use bytes::Bytes;

use super::{reply_status, unexpected, CommandError, Presence, ReplyError, Shape};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// `PING`: the server answers `OK` with the same payload.
///
/// ```text
/// flags   0
/// extras  none
/// key     none
/// value   optional payload, at most 1024 bytes, echoed
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ping {
    /// Bytes to echo.
    pub payload: Bytes,
}

const SHAPE: Shape = Shape {
    opcode: Opcode::Ping,
    allowed_flags: 0,
    extras_lens: &[0],
    key: Presence::Forbidden,
    value: Presence::Optional,
};

impl Ping {
    /// Parses a `PING` frame.
    pub fn parse(frame: RequestFrame) -> Result<Ping, CommandError> {
        SHAPE.check(&frame)?;
        if frame.value.len() > Limits::MAX_AUX_VALUE_LEN as usize {
            return Err(CommandError::InvalidArgument(format!(
                "PING: payload longer than {} bytes",
                Limits::MAX_AUX_VALUE_LEN
            )));
        }
        Ok(Ping {
            payload: frame.value,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame {
            value: self.payload.clone(),
            ..RequestFrame::new(Opcode::Ping, opaque)
        }
    }
}

/// The `PING` reply: `OK` with the echoed payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PingReply {
    /// The echoed bytes.
    pub payload: Bytes,
}

impl PingReply {
    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        ResponseFrame {
            value: self.payload.clone(),
            ..ResponseFrame::new(Opcode::Ping.into(), opaque, Status::Ok)
        }
    }

    /// Reads a `PING` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<PingReply, ReplyError> {
        match reply_status(frame, Opcode::Ping)? {
            Status::Ok => Ok(PingReply {
                payload: frame.value.clone(),
            }),
            other => Err(unexpected(Opcode::Ping, other)),
        }
    }
}
