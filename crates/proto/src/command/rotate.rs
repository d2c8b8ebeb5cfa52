//! `ROTATE`: move a session to a new key in one step, optionally binding it to an owner.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::owner::{
    check_owner, len_u16, split_value, OwnerLimit, SessionWriteOutcome, FLAG_END_LRU,
};
use super::{invalid, CommandError, Presence, ReplyError, Shape};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode};

/// `ROTATE`: moves the session at the old key to the new key, keeping its value, owner,
/// timestamps, TTL and deadline and giving it a new version; the old key is gone in the same
/// step, and the new key must not exist. With `BIND` it also binds the session to an owner
/// under the owner's limit: a login in one request (session-fixation defence).
///
/// ```text
/// flags   0x01 IF_VERSION | 0x02 BIND | 0x04 END_LRU
/// extras  expected_version u64 | owner_limit u32 | new_key_len u16 | reserved u16  (16 bytes)
/// key     the old key
/// value   the new key (new_key_len bytes) ‖ the owner (with BIND; none without)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotate {
    /// The session's current key.
    pub old_key: Bytes,
    /// The key it moves to; must not exist.
    pub new_key: Bytes,
    /// With `Some(v)`, move only if the session's version is `v`.
    pub if_version: Option<u64>,
    /// With `Some`, bind the moved session to this owner.
    pub bind: Option<Bind>,
}

/// The owner `ROTATE` binds the session to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The owner.
    pub owner: Bytes,
    /// A limit on the owner's live sessions for this request, instead of the server's default.
    pub limit: Option<OwnerLimit>,
}

/// The `IF_VERSION` flag of `ROTATE`.
pub const ROTATE_FLAG_IF_VERSION: u8 = 0x01;
/// The `BIND` flag of `ROTATE`.
pub const ROTATE_FLAG_BIND: u8 = 0x02;

const NAME: &str = "ROTATE";

const SHAPE: Shape = Shape {
    opcode: Opcode::Rotate,
    allowed_flags: ROTATE_FLAG_IF_VERSION | ROTATE_FLAG_BIND | FLAG_END_LRU,
    extras_lens: &[16],
    key: Presence::Required,
    value: Presence::Required,
};

impl Rotate {
    /// Parses a `ROTATE` frame; the new key is held to `limits.max_key_len`.
    pub fn parse(frame: RequestFrame, limits: &Limits) -> Result<Rotate, CommandError> {
        SHAPE.check(&frame)?;
        let mut extras = &frame.extras[..];
        let (expected, owner_limit, new_key_len, reserved) = (
            extras.get_u64(),
            extras.get_u32(),
            extras.get_u16(),
            extras.get_u16(),
        );
        if reserved != 0 {
            return Err(invalid(format!("{NAME}: the reserved extras must be 0")));
        }
        let if_version = if frame.flags & ROTATE_FLAG_IF_VERSION != 0 {
            Some(expected)
        } else if expected != 0 {
            return Err(invalid(format!(
                "{NAME}: expected_version must be 0 without IF_VERSION"
            )));
        } else {
            None
        };
        let (new_key, owner) = split_value(NAME, "new_key", frame.value, usize::from(new_key_len))?;
        if new_key.is_empty() {
            return Err(invalid(format!("{NAME}: a new key is required")));
        }
        if new_key.len() > limits.max_key_len as usize {
            return Err(invalid(format!(
                "{NAME}: new key of {} bytes exceeds the limit of {} bytes",
                new_key.len(),
                limits.max_key_len
            )));
        }
        if new_key == frame.key {
            return Err(invalid(format!(
                "{NAME}: the new key must differ from the old one"
            )));
        }
        let binds = frame.flags & ROTATE_FLAG_BIND != 0;
        let limit = OwnerLimit::from_wire(NAME, owner_limit, frame.flags, binds)?;
        let bind = match binds {
            true => {
                check_owner(NAME, &owner)?;
                Some(Bind { owner, limit })
            }
            false if !owner.is_empty() => {
                return Err(invalid(format!(
                    "{NAME}: an owner after the new key needs the BIND flag"
                )))
            }
            false => None,
        };
        Ok(Rotate {
            old_key: frame.key,
            new_key,
            if_version,
            bind,
        })
    }

    /// The frame for this request.
    ///
    /// # Panics
    ///
    /// If the new key or the owner is longer than 65 535 bytes.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        let owner = self.bind.as_ref().map(|b| &b.owner[..]).unwrap_or_default();
        let (limit, policy_flag) = OwnerLimit::to_wire(self.bind.as_ref().and_then(|b| b.limit));
        let mut flags = policy_flag;
        if self.if_version.is_some() {
            flags |= ROTATE_FLAG_IF_VERSION;
        }
        if self.bind.is_some() {
            flags |= ROTATE_FLAG_BIND;
        }
        let mut extras = BytesMut::with_capacity(16);
        extras.put_u64(self.if_version.unwrap_or(0));
        extras.put_u32(limit);
        extras.put_u16(len_u16("new key", &self.new_key));
        extras.put_u16(0);
        let mut value = BytesMut::with_capacity(self.new_key.len() + owner.len());
        value.put_slice(&self.new_key);
        value.put_slice(owner);
        RequestFrame {
            flags,
            extras: extras.freeze(),
            key: self.old_key.clone(),
            value: value.freeze(),
            ..RequestFrame::new(Opcode::Rotate, opaque)
        }
    }

    /// Reads a `ROTATE` reply: see [`SessionWriteOutcome`]; `EXISTS` means the new key is
    /// taken, `NOT_FOUND` that the old one does not exist.
    pub fn reply(frame: &ResponseFrame) -> Result<RotateOutcome, ReplyError> {
        SessionWriteOutcome::from_frame(frame, Opcode::Rotate)
    }
}

/// The `ROTATE` reply: see [`SessionWriteOutcome`].
pub type RotateOutcome = SessionWriteOutcome;
