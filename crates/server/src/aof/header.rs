//! The append-only file's header: magic, format version and the data directory's salt. No I/O.
//!
//! Specified in `proto/AOF.md` section 3.2 (and section 12 for version 1):
//!
//! ```text
//! version 2  magic "SESSAOF\0" (8) | version u32 = 2 | reserved u32 = 0 | salt u64
//!            | crc32c(the 24 bytes before) u32                                  (28 bytes)
//! version 1  magic "SESSAOF\0" (8) | version u32 = 1 | reserved u32             (16 bytes)
//! ```
//!
//! The header says how the records after it are framed ([`Format`]); [`super::record`]
//! encodes and decodes them.

use bytes::{Buf, BufMut};

use super::record::{RECORD_HEADER_LEN, V1_RECORD_HEADER_LEN};

/// First bytes of every append-only file.
pub const FILE_MAGIC: [u8; 8] = *b"SESSAOF\0";
/// The format version this code writes.
pub const FORMAT_VERSION: u32 = 2;
/// The first format version, without a salt: still read, so that an upgrade loads the old
/// file (and converts it at once, `proto/AOF.md` section 12).
pub const FORMAT_VERSION_1: u32 = 1;
/// Length of the file header this code writes.
pub const FILE_HEADER_LEN: usize = 28;
/// Length of a version 1 file header.
pub const V1_FILE_HEADER_LEN: usize = 16;
/// Bytes of the header that identify the file and its version, the same in every version.
pub const HEADER_PREFIX_LEN: usize = 12;
/// The secret of a data directory that every record's checks include.
///
/// Chosen at random when the file is created and copied into the file each rewrite writes,
/// so it stays the same for the life of the data directory: records encoded before a
/// rewrite's switch are appended to the new file unchanged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt {
    value: u64,
    /// CRC-32C state after the salt's 8 bytes: every check continues from it, so salting
    /// costs nothing per record.
    crc: u32,
}

impl Salt {
    /// The salt `value`.
    pub fn new(value: u64) -> Salt {
        Salt {
            value,
            crc: crc32c::crc32c(&value.to_be_bytes()),
        }
    }

    /// A salt from the operating system's random source, for a new file.
    pub fn random() -> std::io::Result<Salt> {
        getrandom::u64()
            .map(Salt::new)
            .map_err(|e| std::io::Error::other(format!("no random salt for the file: {e}")))
    }

    /// The salt's value, as stored in the header.
    pub fn value(self) -> u64 {
        self.value
    }

    /// The frame check of a record whose body is `body_len` bytes: CRC-32C of
    /// `salt ‖ body_len`.
    pub(crate) fn frame_check(self, body_len: u32) -> u32 {
        crc32c::crc32c_append(self.crc, &body_len.to_be_bytes())
    }

    /// CRC-32C of `salt ‖ parts...`.
    pub(crate) fn body_crc(self, parts: &[&[u8]]) -> u32 {
        parts
            .iter()
            .fold(self.crc, |crc, part| crc32c::crc32c_append(crc, part))
    }
}

impl std::fmt::Debug for Salt {
    // The salt is what keeps client bytes from passing for records: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(..)")
    }
}

/// How a file's records are framed, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Format version 1: `body_len | crc32c(body) | body`, no salt, no CLOCK records.
    V1,
    /// Format version 2, with the file's salt.
    V2(Salt),
}

impl Format {
    /// Length of the file header.
    pub fn header_len(self) -> usize {
        match self {
            Format::V1 => V1_FILE_HEADER_LEN,
            Format::V2(_) => FILE_HEADER_LEN,
        }
    }

    /// Length of a record's frame.
    pub fn frame_len(self) -> usize {
        match self {
            Format::V1 => V1_RECORD_HEADER_LEN,
            Format::V2(_) => RECORD_HEADER_LEN,
        }
    }
}

/// The file header of a file whose records are salted with `salt`.
pub fn encode_file_header(salt: Salt, dst: &mut impl BufMut) {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..8].copy_from_slice(&FILE_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    // 12..16 reserved, zero.
    header[16..24].copy_from_slice(&salt.value().to_be_bytes());
    let crc = crc32c::crc32c(&header[..24]);
    header[24..].copy_from_slice(&crc.to_be_bytes());
    dst.put_slice(&header);
}

/// How long the header of the file that starts with `prefix` (its first
/// [`HEADER_PREFIX_LEN`] bytes, or fewer if the file is that short) is, or why it is not a
/// header.
pub fn file_header_len(prefix: &[u8]) -> Result<usize, String> {
    if prefix.len() < HEADER_PREFIX_LEN {
        return Err(format!(
            "file is {} bytes, shorter than a header",
            prefix.len()
        ));
    }
    if prefix[..8] != FILE_MAGIC {
        return Err("not a sessiond append-only file (bad magic)".into());
    }
    match (&prefix[8..12]).get_u32() {
        FORMAT_VERSION_1 => Ok(V1_FILE_HEADER_LEN),
        FORMAT_VERSION => Ok(FILE_HEADER_LEN),
        version => Err(format!(
            "format version {version} is not supported (this build reads {FORMAT_VERSION_1} \
             and {FORMAT_VERSION})"
        )),
    }
}

/// Decodes a whole file header, returning how the file's records are framed, or why it is
/// not a header.
pub fn decode_file_header(header: &[u8]) -> Result<Format, String> {
    let len = file_header_len(header)?;
    if header.len() < len {
        return Err(format!(
            "file is {} bytes, shorter than the {len}-byte header",
            header.len()
        ));
    }
    if len == V1_FILE_HEADER_LEN {
        // Version 1's reserved field is ignored, as version 1 specified.
        return Ok(Format::V1);
    }
    let stored = (&header[24..28]).get_u32();
    let actual = crc32c::crc32c(&header[..24]);
    if stored != actual {
        // A damaged salt would make every record look torn; refuse rather than drop them.
        return Err(format!(
            "header checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    Ok(Format::V2(Salt::new((&header[16..24]).get_u64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0x9e37_79b9_7f4a_7c15;

    #[test]
    fn the_header_round_trips_and_names_its_salt() {
        let mut header = Vec::new();
        encode_file_header(Salt::new(SALT), &mut header);
        assert_eq!(header.len(), FILE_HEADER_LEN);
        assert_eq!(
            file_header_len(&header[..HEADER_PREFIX_LEN]),
            Ok(FILE_HEADER_LEN)
        );
        assert_eq!(decode_file_header(&header), Ok(Format::V2(Salt::new(SALT))));
        // The salt's bytes are covered by the header checksum.
        header[20] ^= 1;
        assert!(decode_file_header(&header)
            .unwrap_err()
            .contains("header checksum mismatch"));
    }
}
