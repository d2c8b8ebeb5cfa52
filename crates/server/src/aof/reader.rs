//! Reading an append-only file: every valid record in order, and a verdict on any damage.
//!
//! Damage is classified the way fjall's `TolerateCorruptTail` and Redis's
//! `aof-load-truncated` do, with one more check to tell the two cases apart:
//!
//! - A **torn tail**: the file ends inside a record, or the bytes from some offset to the end
//!   hold no valid record at all. That is what a crash in the middle of a write leaves (a
//!   partial last record, or a file extended with zeros). It is safe to drop, and startup
//!   truncates it with a warning.
//! - **Corruption**: a record is invalid but a valid record follows it. Bytes were damaged in
//!   the middle of the file, and dropping everything from there on would silently lose
//!   acknowledged writes; startup refuses unless asked to repair.
//!
//! In format version 2 a record whose salted frame check passes was framed by the writer, so
//! its length is trusted: a record that runs past the end of the file is a torn tail without
//! further search, and the search after a damaged body starts where that body ends. Nothing
//! inside a value is ever taken for a record (`proto/AOF.md` section 6.2).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes, BytesMut};

use super::record::{
    decode_file_header, decode_record, file_header_len, find_record, Decoded, Format, Invalid,
    Record, HEADER_PREFIX_LEN,
};

/// Bytes read from the file at a time.
const CHUNK: usize = 8 * 1024 * 1024;
/// A damaged region longer than this is never taken for a torn tail: no single write batch
/// is that large, and reading it all to look for a valid record would cost too much memory.
const MAX_TORN_TAIL: u64 = 32 * 1024 * 1024;

/// Why a file could not be read to the end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file header is missing or wrong.
    #[error("{path}: {reason}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record in the middle of the file is damaged.
    #[error("{path}: corrupt record at offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// How a read ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// Valid records read.
    pub records: u64,
    /// Length of the valid prefix (header and valid records), where a repair truncates.
    pub valid_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Offset and reason of a torn tail, if the file had one.
    pub torn_tail: Option<(u64, String)>,
}

/// Progress while reading, for logs.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Records read so far.
    pub records: u64,
    /// Bytes read so far.
    pub bytes: u64,
    /// Length of the file.
    pub file_len: u64,
}

/// Reads `path`, calling `on_record` for each valid record in order and `on_progress` after
/// every chunk. Stops at a torn tail (reported in the summary) or fails on corruption.
pub fn read_file(
    path: &Path,
    mut on_record: impl FnMut(Record),
    mut on_progress: impl FnMut(Progress),
) -> Result<ReadSummary, ReadError> {
    let io_error = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    let format = read_header_from(&mut file, path)?;

    let mut summary = ReadSummary {
        valid_len: format.header_len() as u64,
        file_len,
        ..ReadSummary::default()
    };
    // `pending` holds the unread bytes starting at offset `summary.valid_len`.
    let mut pending = BytesMut::new();
    let mut eof = false;
    loop {
        if !eof {
            let before = pending.len();
            pending.resize(before + CHUNK, 0);
            let n = read_up_to(&mut file, &mut pending[before..]).map_err(io_error)?;
            pending.truncate(before + n);
            eof = n < CHUNK;
        }
        let mut view = pending.split().freeze();
        let failure = loop {
            match decode_record(&view, format) {
                Decoded::Record(record, len) => {
                    on_record(record);
                    view.advance(len);
                    summary.records += 1;
                    summary.valid_len += len as u64;
                }
                Decoded::Incomplete if !eof => break None,
                Decoded::Incomplete if view.is_empty() => break None,
                Decoded::Incomplete => {
                    // In version 2 every byte to the end belongs to the torn record (its
                    // frame check passed, or fewer bytes than a frame are left): nothing to
                    // search. Version 1 cannot tell, and searches from the next byte.
                    let resume = match format {
                        Format::V1 => 1,
                        Format::V2(_) => view.len(),
                    };
                    break Some(Invalid {
                        reason: "the file ends inside a record".to_string(),
                        resume,
                    });
                }
                Decoded::Invalid(invalid) => break Some(invalid),
            }
        };
        on_progress(Progress {
            records: summary.records,
            bytes: summary.valid_len,
            file_len,
        });
        if let Some(Invalid { reason, resume }) = failure {
            let tail_len = file_len.saturating_sub(summary.valid_len);
            if (resume as u64) < tail_len {
                let tail = read_tail(&mut file, view, eof, summary.valid_len, tail_len, path)?;
                if let Some(next) = find_record(&tail, resume, format) {
                    return Err(ReadError::Corrupt {
                        path: path.to_path_buf(),
                        offset: summary.valid_len,
                        reason: format!(
                            "{reason}; a valid record follows at offset {}",
                            summary.valid_len + next as u64
                        ),
                    });
                }
            }
            summary.torn_tail = Some((summary.valid_len, reason));
            return Ok(summary);
        }
        if eof && view.is_empty() {
            return Ok(summary);
        }
        pending = BytesMut::from(&view[..]);
    }
}

/// Reads the header of the file at `path`: how its records are framed.
pub fn read_header(path: &Path) -> Result<Format, ReadError> {
    let mut file = File::open(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_header_from(&mut file, path)
}

/// Reads the header from the start of `file`, leaving the file positioned after it.
fn read_header_from(file: &mut File, path: &Path) -> Result<Format, ReadError> {
    let header_error = |reason| ReadError::Header {
        path: path.to_path_buf(),
        reason,
    };
    let io_error = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // The first bytes say which version, and so how long the header is.
    let mut header = vec![0u8; HEADER_PREFIX_LEN];
    let got = read_up_to(file, &mut header).map_err(io_error)?;
    let len = file_header_len(&header[..got]).map_err(header_error)?;
    header.resize(len, 0);
    let got = read_up_to(file, &mut header[HEADER_PREFIX_LEN..]).map_err(io_error)?;
    decode_file_header(&header[..HEADER_PREFIX_LEN + got]).map_err(header_error)
}

/// The rest of the file from `offset`, `tail_len` bytes: what is buffered plus what is left
/// unread.
fn read_tail(
    file: &mut File,
    buffered: Bytes,
    eof: bool,
    offset: u64,
    tail_len: u64,
    path: &Path,
) -> Result<Bytes, ReadError> {
    if tail_len > MAX_TORN_TAIL {
        return Err(ReadError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: format!(
                "invalid record with {tail_len} bytes after it, more than a torn write can leave"
            ),
        });
    }
    let mut tail = BytesMut::from(&buffered[..]);
    if !eof {
        // Everything before the damage has been consumed, so the file position is exactly
        // where `buffered` ends.
        let mut rest = Vec::new();
        file.read_to_end(&mut rest)
            .map_err(|source| ReadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        tail.extend_from_slice(&rest);
    }
    Ok(tail.freeze())
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
