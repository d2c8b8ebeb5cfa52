//! The append-only file's records. No I/O.
//!
//! Specified in `proto/AOF.md`. In short (format version 2; version 1 is still read):
//!
//! ```text
//! file    header ‖ record*                        (the header: see [`super::header`])
//! record  body_len u32 | crc32c(salt ‖ body_len) u32 | crc32c(salt ‖ body) u32 | body
//! body    0x01 SET    version u64 | expires_at_ms u64 | key_len u16 | key | value_len u32 | value
//!         0x02 TOUCH  expires_at_ms u64 | key_len u16 | key
//!         0x03 DEL    key_len u16 | key
//!         0x04 LAST_VERSION  version u64
//!         0x05 CLOCK  now_ms u64
//!         0x06 SESSION_SET    version u64 | expires_at_ms u64 | created_ms u64
//!                             | last_access_ms u64 | absolute_deadline_ms u64 (0: none)
//!                             | owner_len u16 | owner | key_len u16 | key
//!                             | value_len u32 | value
//!         0x07 SESSION_TOUCH  expires_at_ms u64 | last_access_ms u64 | key_len u16 | key
//!         0x08 ROTATE         old_key_len u16 | old_key | the fields of SESSION_SET
//! ```
//!
//! Why a salt: values are chosen by clients, so a value may hold the bytes of a well-formed
//! record. A reader that looks for a valid record after damage (to tell a torn tail from
//! corruption) would find it, and a crash in the middle of appending that value would look
//! like corruption. The salt is random per data directory and never leaves the server, so no
//! client can produce bytes whose frame check passes. The frame check covers only the salt
//! and the length, which makes it O(1) to test at any offset, and a frame that passes it is
//! one the writer wrote: its length can be trusted even when its body is torn.
//!
//! The body's internal lengths must add up to `body_len` exactly, a second line of defence
//! behind the checksums.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes};
use sessiond_proto::Limits;

// Re-exported: a file is read and written through both.
pub use super::header::{
    decode_file_header, encode_file_header, file_header_len, Format, Salt, FILE_HEADER_LEN,
    FILE_MAGIC, FORMAT_VERSION, FORMAT_VERSION_1, HEADER_PREFIX_LEN, V1_FILE_HEADER_LEN,
};
use crate::store::{Mutation, SessionMeta, SessionState, MAX_OWNER_LEN, MAX_TRANSACTION_BYTES};

/// Length of a record's frame (body length, frame check, body checksum) before the body.
pub const RECORD_HEADER_LEN: usize = 12;
/// Length of a version 1 record's frame (body length, body checksum).
pub const V1_RECORD_HEADER_LEN: usize = 8;
/// The longest body a valid record can have: a ROTATE with the longest keys, owner and
/// value the protocol allows. A larger declared length is damage, not a record.
pub const MAX_BODY_LEN: u32 = 1
    + 2
    + Limits::HARD_MAX_KEY_LEN
    + SESSION_FIXED_LEN as u32
    + MAX_OWNER_LEN as u32
    + Limits::HARD_MAX_KEY_LEN
    + Limits::HARD_MAX_VALUE_LEN;

/// Bytes of a SESSION_SET body after its kind, beside the owner, key and value: five `u64`
/// fields and the three lengths.
const SESSION_FIXED_LEN: usize = 5 * 8 + 2 + 2 + 4;

const KIND_SET: u8 = 0x01;
const KIND_TOUCH: u8 = 0x02;
const KIND_DEL: u8 = 0x03;
const KIND_LAST_VERSION: u8 = 0x04;
const KIND_CLOCK: u8 = 0x05;
const KIND_SESSION_SET: u8 = 0x06;
const KIND_SESSION_TOUCH: u8 = 0x07;
const KIND_ROTATE: u8 = 0x08;
const KIND_BATCH: u8 = 0x09;

/// The longest body a BATCH record can have: a transaction's writes are bounded by
/// [`MAX_TRANSACTION_BYTES`] (counted generously), plus the kind and the count. Only format
/// version 2, whose salted frame check makes the length trustworthy, has batches.
pub const MAX_BATCH_BODY_LEN: u32 = 1 + 4 + MAX_TRANSACTION_BYTES as u32;

/// A session as SESSION_SET and ROTATE records carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Absolute deadline, Unix milliseconds.
    pub expires_at_ms: u64,
    /// The session's version.
    pub version: u64,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Last write or touch, Unix milliseconds.
    pub last_access_ms: u64,
    /// The deadline no touch passes, Unix milliseconds (0 in the file: none).
    pub absolute_deadline_ms: Option<u64>,
    /// The owner (empty in the file: none).
    pub owner: Option<Bytes>,
}

impl SessionRecord {
    /// The session as the store restores it.
    pub fn state(&self) -> SessionState<'_> {
        SessionState {
            key: &self.key,
            value: &self.value,
            expires_at_ms: self.expires_at_ms,
            version: self.version,
            meta: SessionMeta {
                owner: self.owner.as_deref(),
                created_ms: self.created_ms,
                last_access_ms: self.last_access_ms,
                absolute_deadline_ms: self.absolute_deadline_ms,
            },
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The key holds `value` at `version` until `expires_at_ms`.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Absolute deadline, Unix milliseconds.
        expires_at_ms: u64,
        /// The entry's version.
        version: u64,
    },
    /// The key's deadline moved.
    Touch {
        /// The key.
        key: Bytes,
        /// Absolute deadline, Unix milliseconds.
        expires_at_ms: u64,
    },
    /// The key was removed.
    Del {
        /// The key.
        key: Bytes,
    },
    /// The key holds this session: a SET with owner, timestamps and absolute deadline.
    SessionSet(SessionRecord),
    /// A session's deadline moved at an access.
    SessionTouch {
        /// The key.
        key: Bytes,
        /// Absolute deadline, Unix milliseconds.
        expires_at_ms: u64,
        /// The time of the access, Unix milliseconds.
        last_access_ms: u64,
    },
    /// The session at `old_key` moved to `new.key`: the old key is gone, in the same record.
    Rotate {
        /// The key the session had.
        old_key: Bytes,
        /// The session at its new key.
        new: SessionRecord,
    },
    /// Every version up to `version` may have been handed out, whether or not a SET in the
    /// file still carries it. A rewrite writes one after its snapshot: it drops the SETs of
    /// deleted and expired entries, and without this record a restart could hand their
    /// versions out again. It may appear anywhere, any number of times.
    LastVersion {
        /// The highest version that may have been handed out.
        version: u64,
    },
    /// The writer's clock had reached `now_ms` (Unix milliseconds) when the record was
    /// written. Replay never lets "now" be earlier, so a restart with the system clock set
    /// back does not bring back entries that had expired.
    Clock {
        /// The time, Unix milliseconds.
        now_ms: u64,
    },
    /// The writes of one transaction (`MULTI`/`EXEC`, a script), on distinct keys: each is
    /// a SET, TOUCH, DEL, SESSION_SET, SESSION_TOUCH or ROTATE. Applied together; a torn or
    /// damaged batch is dropped whole, like any record.
    Batch(Vec<Record>),
}

impl Record {
    /// The mutation a record of one write stands for (`None` for LAST_VERSION, CLOCK and
    /// BATCH).
    pub fn as_mutation(&self) -> Option<Mutation<'_>> {
        Some(match self {
            Record::Set {
                key,
                value,
                expires_at_ms,
                version,
            } => Mutation::Set {
                key,
                value,
                expires_at_ms: *expires_at_ms,
                version: *version,
            },
            Record::Touch { key, expires_at_ms } => Mutation::Touch {
                key,
                expires_at_ms: *expires_at_ms,
            },
            Record::Del { key } => Mutation::Del { key },
            Record::SessionSet(session) => Mutation::SessionSet(session.state()),
            Record::SessionTouch {
                key,
                expires_at_ms,
                last_access_ms,
            } => Mutation::SessionTouch {
                key,
                expires_at_ms: *expires_at_ms,
                last_access_ms: *last_access_ms,
            },
            Record::Rotate { old_key, new } => Mutation::Rotate {
                old_key,
                new: new.state(),
            },
            Record::LastVersion { .. } | Record::Clock { .. } | Record::Batch(_) => return None,
        })
    }

    /// Appends the record's bytes, salted with `salt`, to `dst`: the inverse of
    /// [`decode_record`], through the same encoders the writer and the rewrite use.
    pub fn encode(&self, salt: Salt, dst: &mut impl BufMut) {
        match self {
            Record::Set {
                key,
                value,
                expires_at_ms,
                version,
            } => encode_set(key, value, *expires_at_ms, *version, salt, dst),
            Record::Touch { key, expires_at_ms } => encode_mutation(
                &Mutation::Touch {
                    key,
                    expires_at_ms: *expires_at_ms,
                },
                salt,
                dst,
            ),
            Record::Del { key } => encode_mutation(&Mutation::Del { key }, salt, dst),
            Record::SessionSet(session) => encode_session(None, &session.state(), salt, dst),
            Record::SessionTouch {
                key,
                expires_at_ms,
                last_access_ms,
            } => encode_mutation(
                &Mutation::SessionTouch {
                    key,
                    expires_at_ms: *expires_at_ms,
                    last_access_ms: *last_access_ms,
                },
                salt,
                dst,
            ),
            Record::Rotate { old_key, new } => {
                encode_session(Some(old_key), &new.state(), salt, dst)
            }
            Record::LastVersion { version } => encode_last_version(*version, salt, dst),
            Record::Clock { now_ms } => encode_clock(*now_ms, salt, dst),
            Record::Batch(records) => {
                let mutations: Vec<Mutation<'_>> =
                    records.iter().filter_map(Record::as_mutation).collect();
                encode_batch(&mutations, salt, dst);
            }
        }
    }
}

/// Appends the record for `mutation` to `dst`.
pub fn encode_mutation(mutation: &Mutation<'_>, salt: Salt, dst: &mut impl BufMut) {
    match *mutation {
        Mutation::Set {
            key,
            value,
            expires_at_ms,
            version,
        } => encode_set(key, value, expires_at_ms, version, salt, dst),
        Mutation::Touch { key, expires_at_ms } => {
            let mut body = Vec::with_capacity(1 + 8 + 2 + key.len());
            body.put_u8(KIND_TOUCH);
            body.put_u64(expires_at_ms);
            put_key(&mut body, key);
            frame(&body, salt, dst);
        }
        Mutation::Del { key } => {
            let mut body = Vec::with_capacity(1 + 2 + key.len());
            body.put_u8(KIND_DEL);
            put_key(&mut body, key);
            frame(&body, salt, dst);
        }
        Mutation::SessionSet(session) => encode_session(None, &session, salt, dst),
        Mutation::SessionTouch {
            key,
            expires_at_ms,
            last_access_ms,
        } => {
            let mut body = Vec::with_capacity(1 + 8 + 8 + 2 + key.len());
            body.put_u8(KIND_SESSION_TOUCH);
            body.put_u64(expires_at_ms);
            body.put_u64(last_access_ms);
            put_key(&mut body, key);
            frame(&body, salt, dst);
        }
        Mutation::Rotate { old_key, new } => encode_session(Some(old_key), &new, salt, dst),
    }
}

/// Appends a BATCH record holding `mutations` to `dst`. Each is encoded as its own record
/// would be, and its body (without the frame) goes into the batch after its length.
pub fn encode_batch(mutations: &[Mutation<'_>], salt: Salt, dst: &mut impl BufMut) {
    let mut body = Vec::new();
    body.put_u8(KIND_BATCH);
    body.put_u32(mutations.len() as u32);
    let mut one = Vec::new();
    for mutation in mutations {
        one.clear();
        encode_mutation(mutation, salt, &mut one);
        let inner = &one[RECORD_HEADER_LEN..];
        body.put_u32(inner.len() as u32);
        body.put_slice(inner);
    }
    frame(&body, salt, dst);
}

/// Appends a SESSION_SET record (`old_key` absent) or a ROTATE record to `dst` (also what a
/// rewrite writes for each live session with an owner or an absolute deadline).
pub fn encode_session(
    old_key: Option<&[u8]>,
    session: &SessionState<'_>,
    salt: Salt,
    dst: &mut impl BufMut,
) {
    let meta = &session.meta;
    let owner = meta.owner.unwrap_or_default();
    let old_len = old_key.map_or(0, |key| 2 + key.len());
    // Everything before the value, so that the value is copied once (into `dst`) and the
    // checksum is computed over the two parts.
    let mut head =
        Vec::with_capacity(1 + old_len + SESSION_FIXED_LEN + owner.len() + session.key.len());
    match old_key {
        Some(old_key) => {
            head.put_u8(KIND_ROTATE);
            put_key(&mut head, old_key);
        }
        None => head.put_u8(KIND_SESSION_SET),
    }
    head.put_u64(session.version);
    head.put_u64(session.expires_at_ms);
    head.put_u64(meta.created_ms);
    head.put_u64(meta.last_access_ms);
    head.put_u64(meta.absolute_deadline_ms.unwrap_or(0));
    put_key(&mut head, owner);
    put_key(&mut head, session.key);
    head.put_u32(session.value.len() as u32);
    let body_len = (head.len() + session.value.len()) as u32;
    dst.put_u32(body_len);
    dst.put_u32(salt.frame_check(body_len));
    dst.put_u32(salt.body_crc(&[&head, session.value]));
    dst.put_slice(&head);
    dst.put_slice(session.value);
}

/// Appends a SET record to `dst` (also what a rewrite writes for each live entry).
pub fn encode_set(
    key: &[u8],
    value: &[u8],
    expires_at_ms: u64,
    version: u64,
    salt: Salt,
    dst: &mut impl BufMut,
) {
    // The checksum is computed incrementally over the parts, so a large value is copied once
    // (into `dst`) rather than first into a temporary body.
    let body_len = (1 + 8 + 8 + 2 + key.len() + 4 + value.len()) as u32;
    let mut head = [0u8; 1 + 8 + 8 + 2];
    head[0] = KIND_SET;
    head[1..9].copy_from_slice(&version.to_be_bytes());
    head[9..17].copy_from_slice(&expires_at_ms.to_be_bytes());
    head[17..19].copy_from_slice(&(key.len() as u16).to_be_bytes());
    let value_len = (value.len() as u32).to_be_bytes();
    dst.put_u32(body_len);
    dst.put_u32(salt.frame_check(body_len));
    dst.put_u32(salt.body_crc(&[&head, key, &value_len, value]));
    dst.put_slice(&head);
    dst.put_slice(key);
    dst.put_slice(&value_len);
    dst.put_slice(value);
}

/// Appends a LAST_VERSION record to `dst`.
pub fn encode_last_version(version: u64, salt: Salt, dst: &mut impl BufMut) {
    encode_u64_record(KIND_LAST_VERSION, version, salt, dst);
}

/// Appends a CLOCK record to `dst`: the writer's clock had reached `now_ms`.
pub fn encode_clock(now_ms: u64, salt: Salt, dst: &mut impl BufMut) {
    encode_u64_record(KIND_CLOCK, now_ms, salt, dst);
}

fn encode_u64_record(kind: u8, field: u64, salt: Salt, dst: &mut impl BufMut) {
    let mut body = [0u8; 1 + 8];
    body[0] = kind;
    body[1..].copy_from_slice(&field.to_be_bytes());
    frame(&body, salt, dst);
}

fn put_key(body: &mut Vec<u8>, key: &[u8]) {
    body.put_u16(key.len() as u16);
    body.put_slice(key);
}

fn frame(body: &[u8], salt: Salt, dst: &mut impl BufMut) {
    let body_len = body.len() as u32;
    dst.put_u32(body_len);
    dst.put_u32(salt.frame_check(body_len));
    dst.put_u32(salt.body_crc(&[body]));
    dst.put_slice(body);
}

/// What [`decode_record`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record and the bytes it occupied.
    Record(Record, usize),
    /// The buffer ends inside the record: more bytes are needed (or, at end of file, the
    /// record is torn). In format version 2, a buffer of a whole frame is only incomplete
    /// when the frame check passed: the length is the writer's, and every byte up to the end
    /// of the buffer belongs to this record.
    Incomplete,
    /// The bytes are not a valid record.
    Invalid(Invalid),
}

/// Why bytes are not a valid record, and where a record could start after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What is wrong.
    pub reason: String,
    /// The first offset, from the start of these bytes, where another record could start: 1,
    /// or in format version 2 the end of the body when the frame check passed (the body is
    /// damaged but its extent is the writer's, so nothing inside it is a record).
    pub resume: usize,
}

fn invalid(reason: String, resume: usize) -> Decoded {
    Decoded::Invalid(Invalid { reason, resume })
}

/// Decodes the record at the start of `buf`, framed as `format` says. Copies nothing: key
/// and value are slices of `buf`.
///
/// The checks are ordered so that bytes which are not a record are rejected in O(1) at any
/// offset (a length out of range, then the salted frame check) before anything proportional
/// to the body is done; that keeps the search for a valid record after damage linear.
pub fn decode_record(buf: &Bytes, format: Format) -> Decoded {
    let frame_len = format.frame_len();
    if buf.len() < frame_len {
        return Decoded::Incomplete;
    }
    let mut header = &buf[..frame_len];
    let body_len = header.get_u32();
    let max_body_len = match format {
        Format::V1 => MAX_BODY_LEN,
        Format::V2(_) => MAX_BODY_LEN.max(MAX_BATCH_BODY_LEN),
    };
    if body_len == 0 || body_len > max_body_len {
        return invalid(format!("record length {body_len} is out of range"), 1);
    }
    if let Format::V2(salt) = format {
        let stored = header.get_u32();
        let actual = salt.frame_check(body_len);
        if stored != actual {
            return invalid(
                format!("frame check mismatch (stored {stored:08x}, computed {actual:08x})"),
                1,
            );
        }
    }
    let crc = header.get_u32();
    // Only a batch may be longer than one write's record: a longer body of another kind is
    // damage, found before the reader waits for (or holds) up to a batch's length of bytes.
    if body_len > MAX_BODY_LEN {
        match buf.get(frame_len) {
            None => return Decoded::Incomplete,
            Some(&KIND_BATCH) => {}
            Some(_) => return invalid(format!("record length {body_len} is out of range"), 1),
        }
    }
    let total = frame_len + body_len as usize;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    // Past the frame check the record's extent is the writer's; a damaged body is skipped
    // whole by the search that follows.
    let resume = match format {
        Format::V1 => 1,
        Format::V2(_) => total,
    };
    // Structure first, checksum second: the structural checks are cheap.
    let record = match decode_body(buf, frame_len..total, format) {
        Ok(record) => record,
        Err(reason) => return invalid(reason, resume),
    };
    let body = &buf[frame_len..total];
    let actual = match format {
        Format::V1 => crc32c::crc32c(body),
        Format::V2(salt) => salt.body_crc(&[body]),
    };
    if actual != crc {
        return invalid(
            format!("checksum mismatch (stored {crc:08x}, computed {actual:08x})"),
            resume,
        );
    }
    Decoded::Record(record, total)
}

/// The first offset at or after `from` where a valid record starts in `buf`, if any.
///
/// In format version 2 most offsets are rejected by the length range or the frame check
/// alone; a body is checksummed only where the frame check passed, which for bytes the
/// writer did not frame happens with probability 2^-32. The search is linear.
pub fn find_record(buf: &Bytes, from: usize, format: Format) -> Option<usize> {
    (from..buf.len()).find(|&start| {
        if let Format::V2(salt) = format {
            let rest = &buf[start..];
            if rest.len() < RECORD_HEADER_LEN {
                return false;
            }
            let body_len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let check = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if salt.frame_check(body_len) != check {
                return false;
            }
        }
        matches!(
            decode_record(&buf.slice(start..), format),
            Decoded::Record(..)
        )
    })
}

/// Decodes the record body at `body` in `buf`. Key and value are sliced from `buf` itself
/// (one reference count each; replay decodes a million records a second, and every slice of
/// a shared buffer is an atomic increment and decrement).
fn decode_body(buf: &Bytes, body: Range<usize>, format: Format) -> Result<Record, String> {
    let mut rest = &buf[body.clone()];
    let kind = rest.get_u8();
    let need = |rest: &[u8], n: usize, what: &str| {
        if rest.len() < n {
            Err(format!("record body too short for its {what}"))
        } else {
            Ok(())
        }
    };
    let take_key = |rest: &mut &[u8]| -> Result<Bytes, String> {
        need(rest, 2, "key length")?;
        let len = rest.get_u16() as usize;
        need(rest, len, "key")?;
        let start = body.end - rest.len();
        rest.advance(len);
        Ok(buf.slice(start..start + len))
    };
    // A value, the last field of a SET or a session record: its u32 length must be exactly
    // what is left of the body.
    let take_value = |rest: &mut &[u8]| -> Result<Bytes, String> {
        need(rest, 4, "value length")?;
        let len = rest.get_u32() as usize;
        if rest.len() != len {
            return Err(format!(
                "value length {len} does not match the {} bytes left in the record",
                rest.len()
            ));
        }
        let start = body.end - rest.len();
        *rest = &[];
        Ok(buf.slice(start..start + len))
    };
    // A session's fields after the kind (and, in a ROTATE, the old key): fills the rest of
    // the body exactly.
    let take_session = |rest: &mut &[u8]| -> Result<SessionRecord, String> {
        need(rest, 40, "version, deadlines and times")?;
        let version = rest.get_u64();
        let expires_at_ms = rest.get_u64();
        let created_ms = rest.get_u64();
        let last_access_ms = rest.get_u64();
        let absolute = rest.get_u64();
        let owner = take_key(rest)?;
        if owner.len() > MAX_OWNER_LEN {
            return Err(format!(
                "owner length {} is over the {MAX_OWNER_LEN}-byte limit",
                owner.len()
            ));
        }
        let key = take_key(rest)?;
        let value = take_value(rest)?;
        Ok(SessionRecord {
            key,
            value,
            expires_at_ms,
            version,
            created_ms,
            last_access_ms,
            absolute_deadline_ms: (absolute > 0).then_some(absolute),
            owner: (!owner.is_empty()).then_some(owner),
        })
    };
    let record = match kind {
        // Version 1 did not define the session records either.
        KIND_SESSION_SET if format != Format::V1 => Record::SessionSet(take_session(&mut rest)?),
        KIND_SESSION_TOUCH if format != Format::V1 => {
            need(rest, 16, "deadline and access time")?;
            let expires_at_ms = rest.get_u64();
            let last_access_ms = rest.get_u64();
            Record::SessionTouch {
                key: take_key(&mut rest)?,
                expires_at_ms,
                last_access_ms,
            }
        }
        KIND_ROTATE if format != Format::V1 => {
            let old_key = take_key(&mut rest)?;
            Record::Rotate {
                old_key,
                new: take_session(&mut rest)?,
            }
        }
        KIND_BATCH if format != Format::V1 => {
            need(rest, 4, "count")?;
            let count = rest.get_u32();
            if count == 0 {
                return Err("empty batch".to_string());
            }
            // Grows as records are decoded, never from the count alone.
            let mut records = Vec::new();
            for _ in 0..count {
                need(rest, 4, "batch entry length")?;
                let len = rest.get_u32() as usize;
                if len == 0 {
                    return Err("an empty batch entry".to_string());
                }
                need(rest, len, "batch entry")?;
                let start = body.end - rest.len();
                if rest[..len].first() == Some(&KIND_BATCH) {
                    return Err("a batch inside a batch".to_string());
                }
                let record = decode_body(buf, start..start + len, format)?;
                if record.as_mutation().is_none() {
                    return Err("a batch holds a record that is not a write".to_string());
                }
                records.push(record);
                rest.advance(len);
            }
            Record::Batch(records)
        }
        KIND_SET => {
            need(rest, 16, "version and deadline")?;
            let version = rest.get_u64();
            let expires_at_ms = rest.get_u64();
            let key = take_key(&mut rest)?;
            let value = take_value(&mut rest)?;
            Record::Set {
                key,
                value,
                expires_at_ms,
                version,
            }
        }
        KIND_TOUCH => {
            need(rest, 8, "deadline")?;
            let expires_at_ms = rest.get_u64();
            Record::Touch {
                key: take_key(&mut rest)?,
                expires_at_ms,
            }
        }
        KIND_DEL => Record::Del {
            key: take_key(&mut rest)?,
        },
        KIND_LAST_VERSION => {
            need(rest, 8, "version")?;
            Record::LastVersion {
                version: rest.get_u64(),
            }
        }
        // Version 1 did not define CLOCK; a version 1 reader would call it invalid, and so
        // does this one in a version 1 file.
        KIND_CLOCK if format != Format::V1 => {
            need(rest, 8, "time")?;
            Record::Clock {
                now_ms: rest.get_u64(),
            }
        }
        other => return Err(format!("unknown record kind 0x{other:02x}")),
    };
    if !rest.is_empty() {
        return Err(format!(
            "{} unexpected bytes after the record's fields",
            rest.len()
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0x9e37_79b9_7f4a_7c15;

    fn roundtrip(mutation: Mutation<'_>) -> Record {
        let salt = Salt::new(SALT);
        let mut buf = Vec::new();
        encode_mutation(&mutation, salt, &mut buf);
        match decode_record(&Bytes::from(buf.clone()), Format::V2(salt)) {
            Decoded::Record(record, len) => {
                assert_eq!(len, buf.len());
                record
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let value = Bytes::from_static(b"payload");
        assert_eq!(
            roundtrip(Mutation::Set {
                key: b"k",
                value: &value,
                expires_at_ms: 5,
                version: 9
            }),
            Record::Set {
                key: Bytes::from_static(b"k"),
                value,
                expires_at_ms: 5,
                version: 9
            }
        );
        assert_eq!(
            roundtrip(Mutation::Touch {
                key: b"kk",
                expires_at_ms: 7
            }),
            Record::Touch {
                key: Bytes::from_static(b"kk"),
                expires_at_ms: 7
            }
        );
        assert_eq!(
            roundtrip(Mutation::Del { key: b"k3" }),
            Record::Del {
                key: Bytes::from_static(b"k3")
            }
        );
        let salt = Salt::new(SALT);
        for record in [
            Record::LastVersion { version: 3 },
            Record::Clock {
                now_ms: 1_700_000_000_000,
            },
        ] {
            let mut buf = Vec::new();
            record.encode(salt, &mut buf);
            assert_eq!(
                decode_record(&Bytes::from(buf.clone()), Format::V2(salt)),
                Decoded::Record(record, buf.len())
            );
        }
    }

    #[test]
    fn the_literal_example_in_the_spec_decodes() {
        // The TOUCH example from proto/AOF.md, salt 0x0123456789abcdef.
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x0e, // body_len 14
            0x99, 0x29, 0xec, 0x54, // crc32c(salt ‖ body_len)
            0x36, 0xc0, 0xb6, 0x9d, // crc32c(salt ‖ body)
            0x02, // TOUCH
            0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // expires_at_ms 1700000000000
            0x00, 0x03, b'a', b'b', b'c',
        ];
        let mut encoded = Vec::new();
        encode_mutation(
            &Mutation::Touch {
                key: b"abc",
                expires_at_ms: 1_700_000_000_000,
            },
            Salt::new(0x0123_4567_89ab_cdef),
            &mut encoded,
        );
        assert_eq!(encoded, bytes, "encoded: {encoded:02x?}");
    }

    #[test]
    fn a_record_of_another_salt_is_not_a_record() {
        let mut buf = Vec::new();
        encode_mutation(&Mutation::Del { key: b"key" }, Salt::new(1), &mut buf);
        match decode_record(&Bytes::from(buf), Format::V2(Salt::new(2))) {
            Decoded::Invalid(Invalid { reason, resume: 1 }) => {
                assert!(reason.contains("frame check mismatch"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn clock_is_not_a_version_1_kind() {
        let body = [KIND_CLOCK, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend(crc32c::crc32c(&body).to_be_bytes());
        buf.extend(body);
        assert!(matches!(
            decode_record(&Bytes::from(buf), Format::V1),
            Decoded::Invalid(_)
        ));
    }

    #[test]
    fn damage_is_reported_not_decoded() {
        let salt = Salt::new(SALT);
        let mut buf = Vec::new();
        encode_mutation(&Mutation::Del { key: b"key" }, salt, &mut buf);
        for i in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x40;
            match decode_record(&Bytes::from(damaged), Format::V2(salt)) {
                Decoded::Record(record, _) => panic!("flip at {i} decoded as {record:?}"),
                Decoded::Incomplete | Decoded::Invalid(_) => {}
            }
        }
        for cut in 0..buf.len() {
            assert_eq!(
                decode_record(&Bytes::copy_from_slice(&buf[..cut]), Format::V2(salt)),
                Decoded::Incomplete
            );
        }
    }
}
