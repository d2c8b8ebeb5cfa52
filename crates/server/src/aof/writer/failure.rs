//! The failed state, and the two ways out of it.
//!
//! A `write` that finds no room (ENOSPC, EDQUOT) leaves nothing behind that the file needs:
//! what it did not write never reached the page cache, and what it wrote before failing is
//! cut off again with `ftruncate`. The file is then intact up to its last complete batch, so
//! the writer keeps the records since the failure in memory ([`Failure::NoSpace`]) and appends
//! them again every [`APPEND_RETRY`]: writes resume as soon as they fit, however little room
//! was freed. A failed `fsync` is different: the kernel may have dropped the pages it could
//! not write and cleared the error ("fsyncgate"), so nothing already written can be trusted
//! and only a rewrite of the whole file from memory recovers ([`Failure::Rewrite`]). The
//! same goes for any other write error, for a rewrite that failed after its rename, and for
//! more than [`MAX_UNWRITTEN_BYTES`] of records piling up while the disk is full.

use std::io::{self, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

use super::{Writer, FIRST_RETRY};

/// How often the writer tries to append again while the disk is full. Constant, unlike the
/// rewrite's backoff: a try costs one `ftruncate` and one `write`, and the sooner it succeeds
/// the sooner writes resume.
const APPEND_RETRY: Duration = Duration::from_millis(500);

/// Most bytes of records kept in memory while the disk is full. Writes are refused meanwhile,
/// so only records applied before the failure was noticed (and deletions, which are applied
/// even then) arrive here; past this the writer falls back to recovering by a rewrite, whose
/// snapshot covers them without keeping a copy.
const MAX_UNWRITTEN_BYTES: usize = 256 * 1024 * 1024;

/// Why the file cannot be written, which decides how the writer leaves the failed state.
#[derive(Debug)]
pub(super) enum Failure {
    /// A `write` found no room. The file is intact up to `Writer::file_len`; the records
    /// since are here, and are appended once they fit.
    NoSpace {
        /// Every record taken since the failure, in order.
        unwritten: Vec<u8>,
        /// Sequence number of the last of them.
        seq: u64,
    },
    /// The file cannot be trusted (a failed fsync, another error): only a rewrite from
    /// memory recovers. Records taken meanwhile are dropped; the rewrite's snapshot and side
    /// buffer cover them.
    Rewrite,
}

/// Whether a failed write means only that there is no room (so a later retry can succeed).
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

impl Writer {
    /// The batch taken while failed: kept for the append retry after a full disk, dropped
    /// otherwise (the recovery rewrite's snapshot and side buffer cover it).
    pub(super) fn keep_while_failed(&mut self, seq: u64) {
        let Some(Failure::NoSpace {
            unwritten,
            seq: last,
        }) = &mut self.failure
        else {
            return;
        };
        if unwritten.len() + self.batch.len() <= MAX_UNWRITTEN_BYTES {
            unwritten.extend_from_slice(&self.batch);
            *last = seq;
        } else {
            let e = io::Error::other(format!(
                "more than {MAX_UNWRITTEN_BYTES} bytes of records are waiting for room"
            ));
            self.fail(Failure::Rewrite, "write", e);
        }
    }

    /// The write of the batch up to `seq` failed: keep it for the retry if there was only no
    /// room, else give up on the file.
    pub(super) fn write_failed(&mut self, seq: u64, e: io::Error) {
        let failure = if is_no_space(&e) {
            Failure::NoSpace {
                unwritten: self.batch.clone(),
                seq,
            }
        } else {
            Failure::Rewrite
        };
        self.fail(failure, "write", e);
    }

    /// Enters the failed state, or moves from [`Failure::NoSpace`] to [`Failure::Rewrite`]:
    /// writes are refused until the recovery the failure calls for succeeds.
    pub(super) fn fail(&mut self, failure: Failure, what: &str, e: io::Error) {
        self.aof.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        if matches!(self.failure, Some(Failure::Rewrite)) {
            return;
        }
        let (recovery, first_retry) = match failure {
            Failure::NoSpace { .. } => ("the records fit again", APPEND_RETRY),
            Failure::Rewrite => ("it can be rewritten from memory", FIRST_RETRY),
        };
        error!(error = %e, "append-only file {what} failed; refusing writes until {recovery}");
        self.failure = Some(failure);
        self.aof.shared.failed.store(true, Ordering::Relaxed);
        self.aof.shared.durable.send_modify(|d| {
            d.failure = Some(format!("{what} failed: {e}"));
        });
        self.retry_delay = FIRST_RETRY;
        self.retry_at = Some(Instant::now() + first_retry);
    }

    /// Leaves the failed state: everything in memory is in the file again.
    pub(super) fn recovered(&mut self) {
        self.failure = None;
        self.retry_at = None;
        self.retry_delay = FIRST_RETRY;
        self.aof.shared.failed.store(false, Ordering::Relaxed);
        self.aof.shared.durable.send_modify(|d| d.failure = None);
    }

    /// While the disk is full: cuts the file back to its last complete batch and appends the
    /// records kept since the failure. Writes resume if they fit.
    pub(super) fn retry_append(&mut self) {
        let Some(Failure::NoSpace { unwritten, seq }) = &self.failure else {
            return;
        };
        let (len, seq) = (unwritten.len(), *seq);
        // The failed write moved the file offset past what it wrote (and a file not opened
        // with O_APPEND would write there, leaving a hole of zeros): write at the cut.
        let result = self
            .file
            .set_len(self.file_len)
            .and_then(|()| self.file.seek(SeekFrom::Start(self.file_len)))
            .and_then(|_| self.file.write_all(unwritten));
        match result {
            Ok(()) => {}
            Err(e) if is_no_space(&e) => {
                self.aof.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                debug!(bytes = len, "the unwritten records still do not fit");
                self.retry_at = Some(Instant::now() + APPEND_RETRY);
                return;
            }
            Err(e) => return self.fail(Failure::Rewrite, "write", e),
        }
        self.wrote(len);
        self.meta.in_file(seq);
        if self.sync_per_policy(seq) {
            self.recovered();
            info!(
                bytes = len,
                file_len = self.file_len,
                "room on the disk again: the records kept since the failure are appended; accepting writes again"
            );
        }
    }
}
