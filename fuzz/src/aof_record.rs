//! The append-only file's record layer in memory: the file header, the record decoder, and
//! the search for the next valid record after damage (`aof::record`), without the file I/O
//! of `aof_replay` (so that it runs orders of magnitude more inputs per second).
//!
//! Input: a whole file, header included (the committed seeds are real files, so a mutated
//! one keeps its salt and its records keep passing the salted frame check).
//!
//! Properties:
//! - nothing panics, whatever the bytes;
//! - a decoded version 2 record encodes, with the file's salt, to exactly the bytes it was
//!   decoded from (so replay and the writer agree on every byte);
//! - after an invalid record, the search resumes at or after the offset the decoder gave,
//!   and any offset it finds holds a valid record.

use bytes::{Buf, Bytes};
use sessiond::aof::record::{
    decode_file_header, decode_record, file_header_len, find_record, Decoded, Format,
    HEADER_PREFIX_LEN,
};

/// Checks the properties above on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let prefix = &data[..data.len().min(HEADER_PREFIX_LEN)];
    let Ok(header_len) = file_header_len(prefix) else {
        return;
    };
    let Ok(format) = decode_file_header(&data[..data.len().min(header_len)]) else {
        return;
    };
    let mut rest = Bytes::copy_from_slice(&data[format.header_len()..]);
    // Each turn consumes at least one byte or stops, so this ends.
    while !rest.is_empty() {
        match decode_record(&rest, format) {
            Decoded::Record(record, len) => {
                assert!(len > 0 && len <= rest.len());
                if let Format::V2(salt) = format {
                    let mut encoded = Vec::new();
                    record.encode(salt, &mut encoded);
                    assert_eq!(encoded, rest[..len], "record round trip: {record:?}");
                }
                rest.advance(len);
            }
            Decoded::Incomplete => break,
            Decoded::Invalid(invalid) => {
                assert!(invalid.resume >= 1, "no progress after {invalid:?}");
                // Carry on where the reader would report the next valid record.
                let Some(next) = find_record(&rest, invalid.resume, format) else {
                    break;
                };
                assert!(next >= invalid.resume);
                let found = decode_record(&rest.slice(next..), format);
                assert!(
                    matches!(found, Decoded::Record(..)),
                    "find_record chose offset {next}, which holds {found:?}"
                );
                rest.advance(next);
            }
        }
    }
}
