//! `SCAN`: every live entry of the server, in batches, with what it takes to move it to
//! another server unchanged (value, version, TTL, owner, creation time, absolute deadline).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{malformed, reply_status, reply_u64s, u64_extras, unexpected, CommandError};
use super::{Presence, ReplyError, Shape};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Opcode, Status};

/// `SCAN`: the live entries from `cursor` on, and the cursor to continue from. Needs the
/// `admin` role on a server with users: it reveals every key, and keys are session ids.
///
/// ```text
/// flags   0
/// extras  cursor u64 | max_entries u32   (cursor 0 starts; max_entries 0: as many as fit)
/// key     none
/// value   none
/// ```
///
/// The server walks its hash-table shards in order and answers whole shards only: a reply
/// holds every entry that was live in each shard it covers when that shard was read, so a
/// scan that runs to the end has seen every entry that existed for its whole duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Where to continue: 0 to start, else a reply's `next_cursor`.
    pub cursor: u64,
    /// A hint: the server stops adding shards once the reply holds this many entries (0:
    /// no count limit). Whatever it asks, the server adds no shard that would take the
    /// reply past its `max_value_len` bytes unless the reply is still empty, and answers
    /// `TOO_LARGE` for a shard larger than [`Limits::HARD_MAX_VALUE_LEN`](crate::Limits).
    pub max_entries: u32,
}

const SHAPE: Shape = Shape {
    opcode: Opcode::Scan,
    allowed_flags: 0,
    extras_lens: &[12],
    key: Presence::Forbidden,
    value: Presence::Forbidden,
};

impl Scan {
    /// Parses a `SCAN` frame.
    pub fn parse(frame: RequestFrame) -> Result<Scan, CommandError> {
        SHAPE.check(&frame)?;
        let mut extras = &frame.extras[..];
        Ok(Scan {
            cursor: extras.get_u64(),
            max_entries: extras.get_u32(),
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        let mut extras = BytesMut::with_capacity(12);
        extras.put_u64(self.cursor);
        extras.put_u32(self.max_entries);
        RequestFrame {
            extras: extras.freeze(),
            ..RequestFrame::new(Opcode::Scan, opaque)
        }
    }
}

/// One live entry as `SCAN` reports it.
///
/// ```text
/// key_len u16 | owner_len u16 | value_len u32 | version u64 | ttl_ms u64 | created_ms u64
/// | deadline_ms u64 | key | owner | value                 (40 bytes + the three)
/// ```
///
/// `owner_len` 0 means no owner; `created_ms` 0 a plain entry (written by `SET`, never by a
/// session command); `deadline_ms` 0 no absolute deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    /// The key.
    pub key: Bytes,
    /// The owner it is bound to, if any.
    pub owner: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// The version of its last write.
    pub version: u64,
    /// Milliseconds until it expires unless touched, at least 1.
    pub ttl_ms: u64,
    /// When it was created, Unix ms of the server's clock; 0 for a plain entry.
    pub created_ms: u64,
    /// Its absolute deadline in Unix ms, if it has one.
    pub deadline_ms: Option<u64>,
}

/// Bytes of a [`ScanEntry`] record before its key, owner and value.
const RECORD_FIXED_LEN: usize = 2 + 2 + 4 + 4 * 8;

impl ScanEntry {
    /// The length of this record in a `SCAN` reply.
    pub fn encoded_len(&self) -> usize {
        RECORD_FIXED_LEN
            + self.key.len()
            + self.owner.as_ref().map_or(0, Bytes::len)
            + self.value.len()
    }

    fn encode(&self, dst: &mut BytesMut) {
        let owner = self.owner.as_deref().unwrap_or_default();
        // Keys are at most 65535 bytes, owners 256, values under 4 GiB: the server's limits.
        dst.put_u16(self.key.len() as u16);
        dst.put_u16(owner.len() as u16);
        dst.put_u32(self.value.len() as u32);
        dst.put_u64(self.version);
        dst.put_u64(self.ttl_ms);
        dst.put_u64(self.created_ms);
        dst.put_u64(self.deadline_ms.unwrap_or(0));
        dst.put_slice(&self.key);
        dst.put_slice(owner);
        dst.put_slice(&self.value);
    }

    fn decode(src: &mut Bytes) -> Option<ScanEntry> {
        if src.len() < RECORD_FIXED_LEN {
            return None;
        }
        let key_len = usize::from(src.get_u16());
        let owner_len = usize::from(src.get_u16());
        let value_len = src.get_u32() as usize;
        let version = src.get_u64();
        let ttl_ms = src.get_u64();
        let created_ms = src.get_u64();
        let deadline_ms = src.get_u64();
        if src.len() < key_len + owner_len + value_len {
            return None;
        }
        let key = src.split_to(key_len);
        let owner = src.split_to(owner_len);
        let value = src.split_to(value_len);
        Some(ScanEntry {
            key,
            owner: (!owner.is_empty()).then_some(owner),
            value,
            version,
            ttl_ms,
            created_ms,
            deadline_ms: (deadline_ms != 0).then_some(deadline_ms),
        })
    }
}

/// The `SCAN` reply: a batch of entries and where to continue.
///
/// ```text
/// OK   extras  next_cursor u64 | count u64     value  count records (see ScanEntry)
/// ```
///
/// `next_cursor` 0 means the scan is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReply {
    /// Where the next `SCAN` continues; 0 when there is nothing more.
    pub next_cursor: u64,
    /// The entries of this batch.
    pub entries: Vec<ScanEntry>,
}

impl ScanReply {
    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let len = self.entries.iter().map(ScanEntry::encoded_len).sum();
        let mut value = BytesMut::with_capacity(len);
        for entry in &self.entries {
            entry.encode(&mut value);
        }
        ResponseFrame {
            extras: u64_extras(&[self.next_cursor, self.entries.len() as u64]),
            value: value.freeze(),
            ..ResponseFrame::new(Opcode::Scan.into(), opaque, Status::Ok)
        }
    }

    /// Reads a `SCAN` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<ScanReply, ReplyError> {
        const OP: Opcode = Opcode::Scan;
        match reply_status(frame, OP)? {
            Status::Ok => {}
            other => return Err(unexpected(OP, other)),
        }
        let [next_cursor, count] = reply_u64s::<2>(frame, OP)?;
        let mut rest = frame.value.clone();
        // Each record is at least 40 bytes: a count the value cannot hold is refused before
        // anything is reserved for it.
        if count > (rest.len() / RECORD_FIXED_LEN) as u64 {
            return Err(malformed(
                OP,
                format!("count {count} does not fit the reply"),
            ));
        }
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count {
            let entry = ScanEntry::decode(&mut rest)
                .ok_or_else(|| malformed(OP, format!("entry record {i} is truncated")))?;
            entries.push(entry);
        }
        if !rest.is_empty() {
            return Err(malformed(
                OP,
                format!("{} bytes after the last record", rest.len()),
            ));
        }
        Ok(ScanReply {
            next_cursor,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, owner: Option<&str>) -> ScanEntry {
        ScanEntry {
            key: Bytes::copy_from_slice(key.as_bytes()),
            owner: owner.map(|o| Bytes::copy_from_slice(o.as_bytes())),
            value: Bytes::from_static(b"v"),
            version: 7,
            ttl_ms: 1000,
            created_ms: 1_700_000_000_000,
            deadline_ms: owner.map(|_| 1_700_000_100_000),
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let scan = Scan {
            cursor: 513,
            max_entries: 100,
        };
        assert_eq!(Scan::parse(scan.to_frame(9)).unwrap(), scan);
        let reply = ScanReply {
            next_cursor: 2,
            entries: vec![entry("a", Some("user")), entry("b", None)],
        };
        assert_eq!(ScanReply::from_frame(&reply.to_frame(9)).unwrap(), reply);
    }

    #[test]
    fn truncated_replies_are_malformed() {
        let reply = ScanReply {
            next_cursor: 0,
            entries: vec![entry("key", Some("o"))],
        };
        let frame = reply.to_frame(1);
        for cut in 0..frame.value.len() {
            let mut short = frame.clone();
            short.value = frame.value.slice(..cut);
            assert!(ScanReply::from_frame(&short).is_err(), "cut at {cut}");
        }
        let mut long = frame.clone();
        long.value = Bytes::from([&frame.value[..], b"x"].concat());
        assert!(ScanReply::from_frame(&long).is_err());
    }

    #[test]
    fn a_request_with_a_key_or_short_extras_is_refused() {
        let mut frame = Scan {
            cursor: 0,
            max_entries: 0,
        }
        .to_frame(1);
        frame.key = Bytes::from_static(b"k");
        assert!(Scan::parse(frame.clone()).is_err());
        frame.key = Bytes::new();
        frame.extras = frame.extras.slice(..8);
        assert!(Scan::parse(frame).is_err());
    }
}
