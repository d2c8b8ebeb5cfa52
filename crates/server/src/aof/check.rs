//! `sessiond check-aof FILE [--repair]`: verify an append-only file, and optionally cut it
//! at the first damage (like `redis-check-aof --fix`).

use std::path::Path;

use super::reader::{read_file, ReadError};
use super::replay::{truncate, LoadError};

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every byte belongs to a valid record.
    Valid {
        /// Records in the file.
        records: u64,
        /// File length.
        bytes: u64,
    },
    /// Valid up to `offset`; the rest is damaged (`torn` tells whether it is a torn tail,
    /// which startup truncates by itself, or corruption in the middle, which it refuses).
    Damaged {
        /// Valid records before the damage.
        records: u64,
        /// Where the damage starts; a repair truncates here.
        offset: u64,
        /// Bytes from `offset` to the end of the file.
        dropped: u64,
        /// Whether it is a torn tail.
        torn: bool,
        /// What is wrong.
        reason: String,
        /// Whether the file was truncated at `offset`.
        repaired: bool,
    },
}

/// Checks `path`; with `repair`, truncates it at the first damage.
pub fn check(path: &Path, repair: bool) -> Result<Verdict, LoadError> {
    let file_len = std::fs::metadata(path)
        .map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let mut records = 0;
    let (offset, torn, reason) = match read_file(path, |_| records += 1, |_| {}) {
        Ok(summary) => match summary.torn_tail {
            None => {
                return Ok(Verdict::Valid {
                    records,
                    bytes: file_len,
                })
            }
            Some((offset, reason)) => (offset, true, reason),
        },
        Err(ReadError::Corrupt { offset, reason, .. }) => (offset, false, reason),
        Err(e) => return Err(e.into()),
    };
    if repair {
        truncate(path, offset)?;
    }
    Ok(Verdict::Damaged {
        records,
        offset,
        dropped: file_len - offset,
        torn,
        reason,
        repaired: repair,
    })
}
