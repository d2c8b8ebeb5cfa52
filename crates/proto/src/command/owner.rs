//! What the session commands (`SET_SESSION`, `LIST_SESSIONS`, `END_ALL`, `ROTATE`) share: the
//! owner a session may be bound to, the per-request limit on an owner's sessions, and the
//! reply of the two commands that write a session under that limit.

use bytes::Bytes;

use super::{invalid, reply_status, reply_u64s, u64_extras, unexpected, CommandError, ReplyError};
use crate::frame::ResponseFrame;
use crate::{Opcode, Status};

/// Longest owner id, in bytes. An owner is an opaque id such as a user id; the bound keeps the
/// owner index's memory per owner small and predictable.
pub const MAX_OWNER_LEN: usize = 256;

/// The flag bit that picks [`LimitPolicy::EndLeastRecentlyUsed`] for a per-request owner limit
/// (`SET_SESSION` and `ROTATE`); without it the policy is [`LimitPolicy::Refuse`].
pub const FLAG_END_LRU: u8 = 0x04;

/// A limit on the live sessions of one owner, given with a request instead of the server's
/// configured default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerLimit {
    /// How many live sessions the owner may have, the one being written included (at least 1).
    pub max: u32,
    /// What happens when a new session would take the owner past `max`.
    pub policy: LimitPolicy,
}

/// What happens when binding a session would take its owner past the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitPolicy {
    /// Refuse the write: `OWNER_LIMIT`, nothing changed.
    Refuse,
    /// End the owner's least recently used sessions to make room, in the same step.
    EndLeastRecentlyUsed,
}

impl OwnerLimit {
    /// The limit a request's `owner_limit` field and flags describe: `None` for 0 (the server's
    /// default applies, and the policy flag must be clear).
    pub(super) fn from_wire(
        name: &str,
        max: u32,
        flags: u8,
        has_owner: bool,
    ) -> Result<Option<OwnerLimit>, CommandError> {
        let end_lru = flags & FLAG_END_LRU != 0;
        if max == 0 {
            if end_lru {
                return Err(invalid(format!(
                    "{name}: the END_LRU flag needs an owner_limit above 0"
                )));
            }
            return Ok(None);
        }
        if !has_owner {
            return Err(invalid(format!("{name}: an owner_limit needs an owner")));
        }
        Ok(Some(OwnerLimit {
            max,
            policy: if end_lru {
                LimitPolicy::EndLeastRecentlyUsed
            } else {
                LimitPolicy::Refuse
            },
        }))
    }

    /// The `owner_limit` field and the flag bits for an optional limit.
    pub(super) fn to_wire(limit: Option<OwnerLimit>) -> (u32, u8) {
        match limit {
            None => (0, 0),
            Some(OwnerLimit { max, policy }) => (
                max,
                match policy {
                    LimitPolicy::Refuse => 0,
                    LimitPolicy::EndLeastRecentlyUsed => FLAG_END_LRU,
                },
            ),
        }
    }
}

/// Checks an owner id: 1 to [`MAX_OWNER_LEN`] bytes.
pub(super) fn check_owner(name: &str, owner: &[u8]) -> Result<(), CommandError> {
    if owner.is_empty() {
        return Err(invalid(format!("{name}: the owner must not be empty")));
    }
    if owner.len() > MAX_OWNER_LEN {
        return Err(invalid(format!(
            "{name}: owner of {} bytes exceeds the limit of {MAX_OWNER_LEN} bytes",
            owner.len()
        )));
    }
    Ok(())
}

/// The 16-bit length field for `bytes`, in the frames that carry a second string in the value.
pub(super) fn len_u16(what: &str, bytes: &[u8]) -> u16 {
    match u16::try_from(bytes.len()) {
        Ok(len) => len,
        // A caller bug, like an over-long key in `RequestFrame::encode`.
        Err(_) => panic!(
            "{what} of {} bytes does not fit its length field",
            bytes.len()
        ),
    }
}

/// Splits `bytes` at `at`, or says which part of `name`'s value is too short.
pub(super) fn split_value(
    name: &str,
    what: &str,
    mut bytes: Bytes,
    at: usize,
) -> Result<(Bytes, Bytes), CommandError> {
    if at > bytes.len() {
        return Err(invalid(format!(
            "{name}: {what} of {at} bytes is longer than the {}-byte value",
            bytes.len()
        )));
    }
    let head = bytes.split_to(at);
    Ok((head, bytes))
}

/// The reply of `SET_SESSION` and `ROTATE`: both write one session under its owner's limit.
///
/// ```text
/// OK                extras  new_version u64 | ended u64
/// EXISTS            no extras   (SET_SESSION create-only: the key exists; ROTATE: the new key does)
/// NOT_FOUND         no extras   (the key, or ROTATE's old key, does not exist)
/// VERSION_MISMATCH  extras  current_version u64
/// OWNER_LIMIT       no extras   (the owner is at its limit and the policy is refuse)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionWriteOutcome {
    /// Written (or moved); the session's new version, and how many of the owner's other
    /// sessions the end-least-recently-used policy ended to make room.
    Stored {
        /// The version the session now has.
        version: u64,
        /// Sessions of the same owner ended in the same step (0 unless the policy ended some).
        ended: u64,
    },
    /// The key that would be created exists.
    Exists,
    /// The key that must exist does not.
    NotFound,
    /// If-version, and the session has another version.
    VersionMismatch {
        /// The version the session has.
        current: u64,
    },
    /// The owner has as many live sessions as its limit allows and the policy is refuse;
    /// nothing was changed.
    OwnerLimit,
}

impl SessionWriteOutcome {
    /// The response frame for this outcome, to a request with `opcode`.
    pub fn to_frame(&self, opcode: Opcode, opaque: u32) -> ResponseFrame {
        let op = opcode.into();
        match *self {
            SessionWriteOutcome::Stored { version, ended } => ResponseFrame {
                extras: u64_extras(&[version, ended]),
                ..ResponseFrame::new(op, opaque, Status::Ok)
            },
            SessionWriteOutcome::Exists => ResponseFrame::new(op, opaque, Status::Exists),
            SessionWriteOutcome::NotFound => ResponseFrame::new(op, opaque, Status::NotFound),
            SessionWriteOutcome::VersionMismatch { current } => ResponseFrame {
                extras: u64_extras(&[current]),
                ..ResponseFrame::new(op, opaque, Status::VersionMismatch)
            },
            SessionWriteOutcome::OwnerLimit => ResponseFrame::new(op, opaque, Status::OwnerLimit),
        }
    }

    /// Reads the reply to a request with `opcode`.
    pub fn from_frame(
        frame: &ResponseFrame,
        opcode: Opcode,
    ) -> Result<SessionWriteOutcome, ReplyError> {
        Ok(match reply_status(frame, opcode)? {
            Status::Ok => {
                let [version, ended] = reply_u64s::<2>(frame, opcode)?;
                SessionWriteOutcome::Stored { version, ended }
            }
            Status::Exists => SessionWriteOutcome::Exists,
            Status::NotFound => SessionWriteOutcome::NotFound,
            Status::VersionMismatch => SessionWriteOutcome::VersionMismatch {
                current: reply_u64s::<1>(frame, opcode)?[0],
            },
            Status::OwnerLimit => SessionWriteOutcome::OwnerLimit,
            other => return Err(unexpected(opcode, other)),
        })
    }
}
