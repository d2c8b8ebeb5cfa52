//! `SET`: write a value in one of four modes.

use bytes::Bytes;

use super::{
    check_ttl, read_u64s, reply_status, reply_u64s, u64_extras, unexpected, CommandError, Presence,
    ReplyError, Shape,
};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// `SET`: stores the value with a TTL and returns the new version.
///
/// ```text
/// flags   mode in bits 0-1: 0 upsert, 1 create-only, 2 update-only, 3 if-version
/// extras  ttl_ms u64 | expected_version u64   (expected_version is 0 unless if-version)
/// key     required
/// value   the value (may be empty)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// The key to write.
    pub key: Bytes,
    /// The new value.
    pub value: Bytes,
    /// Time to live in milliseconds, from when the server applies the write.
    pub ttl_ms: u64,
    /// The condition the write is under.
    pub mode: SetMode,
}

/// The condition a `SET` is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Write whether or not the key exists.
    Upsert,
    /// Write only if the key does not exist (`EXISTS` otherwise): safe creation of new ids.
    CreateOnly,
    /// Write only if the key exists (`NOT_FOUND` otherwise): a late request cannot resurrect a
    /// deleted session.
    UpdateOnly,
    /// Write only if the key exists with this version (`VERSION_MISMATCH` or `NOT_FOUND`
    /// otherwise): concurrent writers cannot silently overwrite each other.
    IfVersion(u64),
}

impl SetMode {
    /// The mode bits (0-1) of the flags.
    pub(super) fn flags(self) -> u8 {
        match self {
            SetMode::Upsert => 0,
            SetMode::CreateOnly => 1,
            SetMode::UpdateOnly => 2,
            SetMode::IfVersion(_) => 3,
        }
    }

    /// The `expected_version` field: the version for if-version, otherwise 0.
    pub(super) fn expected_version(self) -> u64 {
        match self {
            SetMode::IfVersion(v) => v,
            _ => 0,
        }
    }

    /// The mode in bits 0-1 of `flags` (the caller has rejected undefined bits), checking
    /// that `expected` is 0 unless the mode is if-version. Shared by `SET` and `SET_SESSION`.
    pub(super) fn from_wire(name: &str, flags: u8, expected: u64) -> Result<SetMode, CommandError> {
        let mode = match flags & 0x03 {
            0 => SetMode::Upsert,
            1 => SetMode::CreateOnly,
            2 => SetMode::UpdateOnly,
            _ => SetMode::IfVersion(expected),
        };
        if expected != 0 && !matches!(mode, SetMode::IfVersion(_)) {
            return Err(CommandError::InvalidArgument(format!(
                "{name}: expected_version must be 0 unless the mode is if-version"
            )));
        }
        Ok(mode)
    }
}

const SHAPE: Shape = Shape {
    opcode: Opcode::Set,
    allowed_flags: 0x03,
    extras_lens: &[16],
    key: Presence::Required,
    value: Presence::Optional,
};

impl Set {
    /// Parses a `SET` frame.
    pub fn parse(frame: RequestFrame, limits: &Limits) -> Result<Set, CommandError> {
        SHAPE.check(&frame)?;
        let [ttl_ms, expected] = read_u64s::<2>(&frame.extras);
        Ok(Set {
            mode: SetMode::from_wire("SET", frame.flags, expected)?,
            key: frame.key,
            value: frame.value,
            ttl_ms: check_ttl("SET", ttl_ms, limits)?,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame {
            flags: self.mode.flags(),
            extras: u64_extras(&[self.ttl_ms, self.mode.expected_version()]),
            key: self.key.clone(),
            value: self.value.clone(),
            ..RequestFrame::new(Opcode::Set, opaque)
        }
    }
}

/// The `SET` reply.
///
/// ```text
/// OK                extras  new_version u64
/// EXISTS            (create-only, key present) no extras
/// NOT_FOUND         (update-only or if-version, key absent) no extras
/// VERSION_MISMATCH  (if-version) extras  current_version u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// Written; this is the new version.
    Stored {
        /// The version the entry now has.
        version: u64,
    },
    /// Create-only, and the key exists.
    Exists,
    /// Update-only or if-version, and the key does not exist.
    NotFound,
    /// If-version, and the key has another version.
    VersionMismatch {
        /// The version the entry has.
        current: u64,
    },
}

impl SetOutcome {
    /// The response frame for this outcome.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let op = Opcode::Set.into();
        match *self {
            SetOutcome::Stored { version } => ResponseFrame {
                extras: u64_extras(&[version]),
                ..ResponseFrame::new(op, opaque, Status::Ok)
            },
            SetOutcome::Exists => ResponseFrame::new(op, opaque, Status::Exists),
            SetOutcome::NotFound => ResponseFrame::new(op, opaque, Status::NotFound),
            SetOutcome::VersionMismatch { current } => ResponseFrame {
                extras: u64_extras(&[current]),
                ..ResponseFrame::new(op, opaque, Status::VersionMismatch)
            },
        }
    }

    /// Reads a `SET` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<SetOutcome, ReplyError> {
        Ok(match reply_status(frame, Opcode::Set)? {
            Status::Ok => SetOutcome::Stored {
                version: reply_u64s::<1>(frame, Opcode::Set)?[0],
            },
            Status::Exists => SetOutcome::Exists,
            Status::NotFound => SetOutcome::NotFound,
            Status::VersionMismatch => SetOutcome::VersionMismatch {
                current: reply_u64s::<1>(frame, Opcode::Set)?[0],
            },
            other => return Err(unexpected(Opcode::Set, other)),
        })
    }
}
