//! The append-only file's byte format: the file header and the records. No I/O.
//!
//! Specified in `proto/AOF.md`. In short:
//!
//! ```text
//! file    header ‖ record*
//! header  magic "SESSAOF\0" (8) | format version u32 = 1 | reserved u32 = 0      (16 bytes)
//! record  body_len u32 | crc32c(body) u32 | body                              (big-endian)
//! body    0x01 SET    version u64 | expires_at_ms u64 | key_len u16 | key | value_len u32 | value
//!         0x02 TOUCH  expires_at_ms u64 | key_len u16 | key
//!         0x03 DEL    key_len u16 | key
//!         0x04 LAST_VERSION  version u64
//! ```
//!
//! The checksum covers the body; the body's internal lengths must add up to `body_len`
//! exactly, so a damaged length is caught even in the unlikely case the checksum matches.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes};
use sessiond_proto::Limits;

use crate::store::Mutation;

/// First bytes of every append-only file.
pub const FILE_MAGIC: [u8; 8] = *b"SESSAOF\0";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the file header.
pub const FILE_HEADER_LEN: usize = 16;
/// Length of a record's frame (body length and checksum) before the body.
pub const RECORD_HEADER_LEN: usize = 8;
/// The longest body a valid record can have: a SET with the longest key and value the
/// protocol allows. A larger declared length is damage, not a record.
pub const MAX_BODY_LEN: u32 =
    1 + 8 + 8 + 2 + Limits::HARD_MAX_KEY_LEN + 4 + Limits::HARD_MAX_VALUE_LEN;

const KIND_SET: u8 = 0x01;
const KIND_TOUCH: u8 = 0x02;
const KIND_DEL: u8 = 0x03;
const KIND_LAST_VERSION: u8 = 0x04;

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
    /// Every version up to `version` has been handed out, whether or not a SET in the file
    /// still carries it. A rewrite writes one first: it drops the SETs of deleted and expired
    /// entries, and without this record a restart would hand their versions out again.
    LastVersion {
        /// The highest version handed out when the record was written.
        version: u64,
    },
}

impl Record {
    /// Appends the record's bytes to `dst`: the inverse of [`decode_record`], through the same
    /// encoders the writer and the rewrite use.
    pub fn encode(&self, dst: &mut impl BufMut) {
        match self {
            Record::Set {
                key,
                value,
                expires_at_ms,
                version,
            } => encode_set(key, value, *expires_at_ms, *version, dst),
            Record::Touch { key, expires_at_ms } => encode_mutation(
                &Mutation::Touch {
                    key,
                    expires_at_ms: *expires_at_ms,
                },
                dst,
            ),
            Record::Del { key } => encode_mutation(&Mutation::Del { key }, dst),
            Record::LastVersion { version } => encode_last_version(*version, dst),
        }
    }
}

/// The file header.
pub fn encode_file_header(dst: &mut impl BufMut) {
    dst.put_slice(&FILE_MAGIC);
    dst.put_u32(FORMAT_VERSION);
    dst.put_u32(0);
}

/// Checks a file header, returning why it is not one.
pub fn check_file_header(header: &[u8]) -> Result<(), String> {
    if header.len() < FILE_HEADER_LEN {
        return Err(format!(
            "file is {} bytes, shorter than the {FILE_HEADER_LEN}-byte header",
            header.len()
        ));
    }
    if header[..8] != FILE_MAGIC {
        return Err("not a sessiond append-only file (bad magic)".into());
    }
    let version = (&header[8..12]).get_u32();
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (this build reads {FORMAT_VERSION})"
        ));
    }
    Ok(())
}

/// Appends the record for `mutation` to `dst`.
pub fn encode_mutation(mutation: &Mutation<'_>, dst: &mut impl BufMut) {
    match *mutation {
        Mutation::Set {
            key,
            value,
            expires_at_ms,
            version,
        } => encode_set(key, value, expires_at_ms, version, dst),
        Mutation::Touch { key, expires_at_ms } => {
            let body_len = 1 + 8 + 2 + key.len();
            let mut body = Vec::with_capacity(body_len);
            body.put_u8(KIND_TOUCH);
            body.put_u64(expires_at_ms);
            put_key(&mut body, key);
            frame(&body, dst);
        }
        Mutation::Del { key } => {
            let mut body = Vec::with_capacity(1 + 2 + key.len());
            body.put_u8(KIND_DEL);
            put_key(&mut body, key);
            frame(&body, dst);
        }
    }
}

/// Appends a SET record to `dst` (also what a rewrite writes for each live entry).
pub fn encode_set(
    key: &[u8],
    value: &[u8],
    expires_at_ms: u64,
    version: u64,
    dst: &mut impl BufMut,
) {
    // The checksum is computed incrementally over the parts, so a large value is copied once
    // (into `dst`) rather than first into a temporary body.
    let body_len = 1 + 8 + 8 + 2 + key.len() + 4 + value.len();
    let mut head = [0u8; 1 + 8 + 8 + 2];
    head[0] = KIND_SET;
    head[1..9].copy_from_slice(&version.to_be_bytes());
    head[9..17].copy_from_slice(&expires_at_ms.to_be_bytes());
    head[17..19].copy_from_slice(&(key.len() as u16).to_be_bytes());
    let value_len = (value.len() as u32).to_be_bytes();
    let mut crc = crc32c::crc32c(&head);
    crc = crc32c::crc32c_append(crc, key);
    crc = crc32c::crc32c_append(crc, &value_len);
    crc = crc32c::crc32c_append(crc, value);
    dst.put_u32(body_len as u32);
    dst.put_u32(crc);
    dst.put_slice(&head);
    dst.put_slice(key);
    dst.put_slice(&value_len);
    dst.put_slice(value);
}

/// Appends a LAST_VERSION record to `dst`.
pub fn encode_last_version(version: u64, dst: &mut impl BufMut) {
    let mut body = [0u8; 1 + 8];
    body[0] = KIND_LAST_VERSION;
    body[1..].copy_from_slice(&version.to_be_bytes());
    frame(&body, dst);
}

fn put_key(body: &mut Vec<u8>, key: &[u8]) {
    body.put_u16(key.len() as u16);
    body.put_slice(key);
}

fn frame(body: &[u8], dst: &mut impl BufMut) {
    dst.put_u32(body.len() as u32);
    dst.put_u32(crc32c::crc32c(body));
    dst.put_slice(body);
}

/// What [`decode_record`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record and the bytes it occupied.
    Record(Record, usize),
    /// The buffer ends inside the record: more bytes are needed (or, at end of file, the
    /// record is torn).
    Incomplete,
    /// The bytes are not a valid record.
    Invalid(String),
}

/// Decodes the record at the start of `buf`. Copies nothing: key and value are slices of
/// `buf`.
pub fn decode_record(buf: &Bytes) -> Decoded {
    if buf.len() < RECORD_HEADER_LEN {
        return Decoded::Incomplete;
    }
    let mut header = &buf[..RECORD_HEADER_LEN];
    let body_len = header.get_u32();
    let crc = header.get_u32();
    if body_len == 0 || body_len > MAX_BODY_LEN {
        return Decoded::Invalid(format!("record length {body_len} is out of range"));
    }
    let total = RECORD_HEADER_LEN + body_len as usize;
    if buf.len() < total {
        return Decoded::Incomplete;
    }
    // Structure first, checksum second: the structural checks are cheap and reject almost
    // every wrong offset, which keeps the search for a valid record after damage fast.
    let record = match decode_body(buf, RECORD_HEADER_LEN..total) {
        Ok(record) => record,
        Err(reason) => return Decoded::Invalid(reason),
    };
    let actual = crc32c::crc32c(&buf[RECORD_HEADER_LEN..total]);
    if actual != crc {
        return Decoded::Invalid(format!(
            "checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        ));
    }
    Decoded::Record(record, total)
}

/// Decodes the record body at `body` in `buf`. Key and value are sliced from `buf` itself
/// (one reference count each; replay decodes a million records a second, and every slice of
/// a shared buffer is an atomic increment and decrement).
fn decode_body(buf: &Bytes, body: Range<usize>) -> Result<Record, String> {
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
    let record = match kind {
        KIND_SET => {
            need(rest, 16, "version and deadline")?;
            let version = rest.get_u64();
            let expires_at_ms = rest.get_u64();
            let key = take_key(&mut rest)?;
            need(rest, 4, "value length")?;
            let len = rest.get_u32() as usize;
            if rest.len() != len {
                return Err(format!(
                    "value length {len} does not match the {} bytes left in the record",
                    rest.len()
                ));
            }
            let start = body.end - rest.len();
            rest = &[];
            Record::Set {
                key,
                value: buf.slice(start..start + len),
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

    fn roundtrip(mutation: Mutation<'_>) -> Record {
        let mut buf = Vec::new();
        encode_mutation(&mutation, &mut buf);
        match decode_record(&Bytes::from(buf.clone())) {
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
    }

    #[test]
    fn the_literal_example_in_the_spec_decodes() {
        // The TOUCH example from proto/AOF.md.
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x0e, // body_len 14
            0x53, 0x92, 0xbb, 0x86, // crc32c of the 14 body bytes
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
            &mut encoded,
        );
        assert_eq!(encoded, bytes, "encoded: {encoded:02x?}");
    }

    #[test]
    fn damage_is_reported_not_decoded() {
        let mut buf = Vec::new();
        encode_mutation(&Mutation::Del { key: b"key" }, &mut buf);
        for i in 0..buf.len() {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x40;
            match decode_record(&Bytes::from(damaged)) {
                Decoded::Record(record, _) => panic!("flip at {i} decoded as {record:?}"),
                Decoded::Incomplete | Decoded::Invalid(_) => {}
            }
        }
        for cut in 0..buf.len() {
            assert_eq!(
                decode_record(&Bytes::copy_from_slice(&buf[..cut])),
                Decoded::Incomplete
            );
        }
    }
}
