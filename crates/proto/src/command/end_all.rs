//! `END_ALL`: end every session of an owner, or all but one.

use bytes::Bytes;

use super::owner::check_owner;
use super::{
    reply_status, reply_u64s, u64_extras, unexpected, CommandError, Presence, ReplyError, Shape,
};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Opcode, Status};

/// `END_ALL`: deletes every live session of the owner in one atomic step ("log out
/// everywhere"), except the one whose key is given in the value (the current device), and
/// returns how many it ended.
///
/// ```text
/// flags   0
/// extras  none
/// key     the owner
/// value   the key of the session to keep, or none
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndAll {
    /// The owner whose sessions to end.
    pub owner: Bytes,
    /// The key of one session to keep, if it belongs to the owner.
    pub except: Option<Bytes>,
}

const SHAPE: Shape = Shape {
    opcode: Opcode::EndAll,
    allowed_flags: 0,
    extras_lens: &[0],
    key: Presence::Required,
    value: Presence::Optional,
};

impl EndAll {
    /// Parses an `END_ALL` frame.
    pub fn parse(frame: RequestFrame) -> Result<EndAll, CommandError> {
        SHAPE.check(&frame)?;
        check_owner("END_ALL", &frame.key)?;
        Ok(EndAll {
            owner: frame.key,
            except: (!frame.value.is_empty()).then_some(frame.value),
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame {
            key: self.owner.clone(),
            value: self.except.clone().unwrap_or_default(),
            ..RequestFrame::new(Opcode::EndAll, opaque)
        }
    }
}

/// The `END_ALL` reply.
///
/// ```text
/// OK  extras  ended u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndAllReply {
    /// How many sessions were ended (0 if the owner had none).
    pub ended: u64,
}

impl EndAllReply {
    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        ResponseFrame {
            extras: u64_extras(&[self.ended]),
            ..ResponseFrame::new(Opcode::EndAll.into(), opaque, Status::Ok)
        }
    }

    /// Reads an `END_ALL` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<EndAllReply, ReplyError> {
        match reply_status(frame, Opcode::EndAll)? {
            Status::Ok => Ok(EndAllReply {
                ended: reply_u64s::<1>(frame, Opcode::EndAll)?[0],
            }),
            other => Err(unexpected(Opcode::EndAll, other)),
        }
    }
}
