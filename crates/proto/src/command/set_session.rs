//! `SET_SESSION`: `SET` with the session options: an owner, an absolute lifetime and a
//! per-request limit on the owner's sessions.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::owner::{
    check_owner, len_u16, split_value, OwnerLimit, SessionWriteOutcome, FLAG_END_LRU,
};
use super::set::SetMode;
use super::{check_ttl, invalid, CommandError, Presence, ReplyError, Shape};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode};

/// `SET_SESSION`: stores the value like `SET` does, in the same four modes, and binds the
/// session to an owner and/or gives it an absolute deadline.
///
/// ```text
/// flags   mode in bits 0-1 (as SET) | 0x04 END_LRU
/// extras  ttl_ms u64 | expected_version u64 | lifetime_ms u64 | owner_limit u32
///         | owner_len u16 | reserved u16                                 (32 bytes)
/// key     required
/// value   owner (owner_len bytes) ‖ the session's value
/// ```
///
/// `lifetime_ms` 0 means none given; `owner_len` 0 means no owner; `owner_limit` 0 means the
/// server's configured limit (and then `END_LRU` must be clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSession {
    /// The key to write.
    pub key: Bytes,
    /// The new value (without the owner).
    pub value: Bytes,
    /// Time to live in milliseconds, from when the server applies the write; never past the
    /// absolute deadline.
    pub ttl_ms: u64,
    /// The condition the write is under.
    pub mode: SetMode,
    /// The owner to bind the session to.
    pub owner: Option<Bytes>,
    /// The absolute lifetime in milliseconds, from when the server applies the write: the
    /// session ends then at the latest, however often it is touched.
    pub lifetime_ms: Option<u64>,
    /// A limit on the owner's live sessions for this write, instead of the server's default.
    pub owner_limit: Option<OwnerLimit>,
}

const NAME: &str = "SET_SESSION";

const SHAPE: Shape = Shape {
    opcode: Opcode::SetSession,
    allowed_flags: 0x03 | FLAG_END_LRU,
    extras_lens: &[32],
    key: Presence::Required,
    value: Presence::Optional,
};

impl SetSession {
    /// Parses a `SET_SESSION` frame.
    pub fn parse(frame: RequestFrame, limits: &Limits) -> Result<SetSession, CommandError> {
        SHAPE.check(&frame)?;
        let mut extras = &frame.extras[..];
        let (ttl_ms, expected, lifetime_ms) =
            (extras.get_u64(), extras.get_u64(), extras.get_u64());
        let (owner_limit, owner_len, reserved) =
            (extras.get_u32(), extras.get_u16(), extras.get_u16());
        if reserved != 0 {
            return Err(invalid(format!("{NAME}: the reserved extras must be 0")));
        }
        let mode = SetMode::from_wire(NAME, frame.flags, expected)?;
        let (owner, value) = split_value(NAME, "owner", frame.value, usize::from(owner_len))?;
        let owner = if owner.is_empty() {
            None
        } else {
            check_owner(NAME, &owner)?;
            Some(owner)
        };
        let lifetime_ms = match lifetime_ms {
            0 => None,
            ms if ms > Limits::HARD_MAX_TTL_MS => {
                return Err(invalid(format!(
                    "{NAME}: lifetime of {ms} ms exceeds the limit of {} ms",
                    Limits::HARD_MAX_TTL_MS
                )))
            }
            ms => Some(ms),
        };
        Ok(SetSession {
            key: frame.key,
            value,
            ttl_ms: check_ttl(NAME, ttl_ms, limits)?,
            mode,
            owner_limit: OwnerLimit::from_wire(NAME, owner_limit, frame.flags, owner.is_some())?,
            owner,
            lifetime_ms,
        })
    }

    /// The frame for this request.
    ///
    /// # Panics
    ///
    /// If the owner is longer than 65 535 bytes (the field is 16 bits wide); owners longer
    /// than [`MAX_OWNER_LEN`](super::MAX_OWNER_LEN) are refused by servers anyway.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        let owner = self.owner.as_deref().unwrap_or_default();
        let (limit, policy_flag) = OwnerLimit::to_wire(self.owner_limit);
        let mut extras = BytesMut::with_capacity(32);
        extras.put_u64(self.ttl_ms);
        extras.put_u64(self.mode.expected_version());
        extras.put_u64(self.lifetime_ms.unwrap_or(0));
        extras.put_u32(limit);
        extras.put_u16(len_u16("owner", owner));
        extras.put_u16(0);
        let mut value = BytesMut::with_capacity(owner.len() + self.value.len());
        value.put_slice(owner);
        value.put_slice(&self.value);
        RequestFrame {
            flags: self.mode.flags() | policy_flag,
            extras: extras.freeze(),
            key: self.key.clone(),
            value: value.freeze(),
            ..RequestFrame::new(Opcode::SetSession, opaque)
        }
    }
}

/// The `SET_SESSION` reply: see [`SessionWriteOutcome`].
pub type SetSessionOutcome = SessionWriteOutcome;

impl SetSession {
    /// Reads a `SET_SESSION` reply.
    pub fn reply(frame: &ResponseFrame) -> Result<SetSessionOutcome, ReplyError> {
        SessionWriteOutcome::from_frame(frame, Opcode::SetSession)
    }
}
