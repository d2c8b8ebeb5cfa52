//! The writer thread: appends records, fsyncs per policy, runs rewrites and recovers from
//! disk failures.
//!
//! A plain thread rather than a tokio task: every step is a blocking syscall, and keeping
//! them off the runtime's workers means a slow disk can never delay request handling.
//!
//! # Two ways out of the failed state
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

mod meta;

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::rewrite::{self, FinishError, RewriteStep, SharedHook};
use super::{lock, Aof, AofSettings, FsyncPolicy, RewriteTail, MAX_REWRITE_TAIL_BYTES};
use crate::store::Store;

/// How long the writer lets records gather between writes when no acknowledgement waits for
/// them (fsync `everysec` and `no`).
const COALESCE: Duration = Duration::from_millis(2);
/// Largest buffer capacity kept between batches.
const MAX_RETAINED_BUFFER: usize = 4 * 1024 * 1024;
/// How often `everysec` fsyncs.
const EVERYSEC: Duration = Duration::from_secs(1);
/// First delay before retrying after a disk failure; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// How often the writer tries to append again while the disk is full. Constant, unlike the
/// rewrite's backoff: a try costs one `ftruncate` and one `write`, and the sooner it succeeds
/// the sooner writes resume.
const APPEND_RETRY: Duration = Duration::from_millis(500);
/// Most bytes of records kept in memory while the disk is full. Writes are refused meanwhile,
/// so only records applied before the failure was noticed (and deletions, which are applied
/// even then) arrive here; past this the writer falls back to recovering by a rewrite, whose
/// snapshot covers them without keeping a copy.
pub(super) const MAX_UNWRITTEN_BYTES: usize = 256 * 1024 * 1024;
/// How long after a failed compaction the next one may start (if the file is still past the
/// thresholds). A compaction needs room for a whole snapshot, which a nearly full disk may not
/// have for a while; appending goes on meanwhile.
const COMPACTION_RETRY: Duration = Duration::from_secs(60);

pub(super) fn spawn(
    aof: Aof,
    settings: AofSettings,
    store: Store,
    file: File,
    file_len: u64,
    hook: SharedHook,
) -> io::Result<JoinHandle<()>> {
    let writer = Writer {
        aof,
        settings,
        store,
        file,
        file_len,
        base_len: file_len,
        batch: Vec::with_capacity(64 * 1024),
        dirty: false,
        last_fsync: Instant::now(),
        rewrite: None,
        retry_at: None,
        retry_delay: FIRST_RETRY,
        failure: None,
        compact_not_before: None,
        hook,
        meta: meta::MetaRecords::new(),
    };
    std::thread::Builder::new()
        .name("aof-writer".into())
        .spawn(move || writer.run())
}

type SnapshotResult = io::Result<(File, u64)>;

struct Writer {
    aof: Aof,
    settings: AofSettings,
    store: Store,
    file: File,
    file_len: u64,
    /// Size of the live data as of the last rewrite (its snapshot), or the file size at load;
    /// growth is measured against it.
    base_len: u64,
    /// Records taken from the shared buffer, being written. Swapped with it, so both
    /// allocations are reused.
    batch: Vec<u8>,
    /// Written since the last fsync.
    dirty: bool,
    last_fsync: Instant,
    /// A rewrite whose snapshot is being written on another thread.
    rewrite: Option<mpsc::Receiver<SnapshotResult>>,
    /// While failed: when to try recovering next.
    retry_at: Option<Instant>,
    /// The delay between recovery rewrites, doubling up to [`MAX_RETRY`].
    retry_delay: Duration,
    /// Set while the file cannot be written (mirrored in `Shared::failed` for connections).
    failure: Option<Failure>,
    /// After a failed compaction: no new one before this.
    compact_not_before: Option<Instant>,
    /// Called at each step of a rewrite ([`rewrite::no_hook`] outside tests).
    hook: SharedHook,
    /// Version reservations and clock records ([`meta`]).
    meta: meta::MetaRecords,
}

/// Why the file cannot be written, which decides how the writer leaves the failed state.
#[derive(Debug)]
enum Failure {
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
    fn run(mut self) {
        loop {
            self.queue_meta_records(false);
            let (seq, closing) = self.take_batch();
            if !self.batch.is_empty() {
                self.write_batch(seq);
                self.grant_reservation();
                if self.policy() != FsyncPolicy::Always && !closing {
                    // Nobody waits for these writes, so let records gather for a moment:
                    // one write per COALESCE instead of one per wake-up, which on a busy
                    // machine is one context switch per request. A crash of the process
                    // loses at most this much more.
                    std::thread::sleep(COALESCE);
                }
            } else if self.dirty && self.policy() == FsyncPolicy::Everysec {
                self.fsync_if_due(seq);
            }
            self.poll_rewrite();
            if closing {
                self.close();
                return;
            }
            self.maybe_start_rewrite();
            // A recovery (an append after a full disk, a rewrite) may have put a reservation
            // in the file.
            self.grant_reservation();
        }
    }

    fn policy(&self) -> FsyncPolicy {
        self.aof.shared.policy
    }

    fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Waits for records (or a timer) and swaps them into `self.batch`. Returns the sequence
    /// number of the last record taken and whether the AOF is closing.
    fn take_batch(&mut self) -> (u64, bool) {
        let mut pending = lock(&self.aof.shared.pending);
        let wait = self.idle_wait();
        if pending.buf.is_empty() && !pending.closing {
            pending = match self.aof.shared.wake.wait_timeout(pending, wait) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        self.batch.clear();
        std::mem::swap(&mut self.batch, &mut pending.buf);
        self.aof.shared.backlog.store(0, Ordering::Relaxed);
        (pending.appended, pending.closing)
    }

    /// How long to sleep when there is nothing to write.
    fn idle_wait(&self) -> Duration {
        if self.rewrite.is_some() {
            return Duration::from_millis(10);
        }
        if let Some(at) = self.retry_at {
            return at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
        }
        if self.dirty && self.policy() == FsyncPolicy::Everysec {
            return EVERYSEC
                .saturating_sub(self.last_fsync.elapsed())
                .max(Duration::from_millis(1));
        }
        Duration::from_secs(1)
    }

    fn write_batch(&mut self, seq: u64) {
        self.append(seq);
        self.advance_taken(seq);
        // After a burst, give the memory back instead of keeping the burst's capacity in
        // both buffers for good (they alternate, so each passes through here).
        if self.batch.capacity() > MAX_RETAINED_BUFFER {
            self.batch = Vec::with_capacity(64 * 1024);
        }
    }

    /// Tells connections waiting in `relieve_backlog` that every record up to `seq` has left
    /// the shared buffer.
    fn advance_taken(&self, seq: u64) {
        self.aof.shared.taken.send_if_modified(|taken| {
            let advanced = *taken < seq;
            *taken = (*taken).max(seq);
            advanced
        });
    }

    fn append(&mut self, seq: u64) {
        match &mut self.failure {
            None => {}
            Some(Failure::NoSpace {
                unwritten,
                seq: last,
            }) => {
                if unwritten.len() + self.batch.len() <= MAX_UNWRITTEN_BYTES {
                    unwritten.extend_from_slice(&self.batch);
                    *last = seq;
                } else {
                    let e = io::Error::other(format!(
                        "more than {MAX_UNWRITTEN_BYTES} bytes of records are waiting for room"
                    ));
                    self.fail(Failure::Rewrite, "write", e);
                }
                return;
            }
            // The file is not trusted any more; these records reach disk through the
            // recovery rewrite instead.
            Some(Failure::Rewrite) => return,
        }
        if let Err(e) = self.file.write_all(&self.batch) {
            let failure = if is_no_space(&e) {
                Failure::NoSpace {
                    unwritten: self.batch.clone(),
                    seq,
                }
            } else {
                Failure::Rewrite
            };
            self.fail(failure, "write", e);
            return;
        }
        self.wrote(self.batch.len());
        self.meta.in_file(seq);
        self.sync_per_policy(seq);
    }

    /// Accounts for `len` bytes appended to the file.
    fn wrote(&mut self, len: usize) {
        self.file_len += len as u64;
        self.aof
            .shared
            .file_len
            .store(self.file_len, Ordering::Relaxed);
        self.dirty = true;
    }

    /// After records up to `seq` were written: fsyncs and publishes them as the policy says.
    /// Returns false if an fsync failed (the writer is then failed).
    fn sync_per_policy(&mut self, seq: u64) -> bool {
        match self.policy() {
            FsyncPolicy::Always => {
                if !self.fsync() {
                    return false;
                }
                self.publish_synced(seq);
                true
            }
            FsyncPolicy::Everysec => self.fsync_if_due(seq),
            FsyncPolicy::No => {
                self.publish_synced(seq);
                true
            }
        }
    }

    /// Fsyncs if a second has passed since the last fsync. Returns false if it failed.
    fn fsync_if_due(&mut self, seq: u64) -> bool {
        if self.last_fsync.elapsed() < EVERYSEC {
            return true;
        }
        if !self.fsync() {
            return false;
        }
        // While the disk is full, records up to `seq` are in memory, not in the file: the
        // fsync covered only what was written before the failure.
        if self.failure.is_none() {
            self.publish_synced(seq);
        }
        true
    }

    /// Fsyncs the file; on failure enters the failed state. Returns whether it succeeded.
    fn fsync(&mut self) -> bool {
        if matches!(self.failure, Some(Failure::Rewrite)) {
            // Never again on a file that failed: a later success would prove nothing.
            return false;
        }
        match self.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.last_fsync = Instant::now();
                true
            }
            Err(e) => {
                self.fail(Failure::Rewrite, "fsync", e);
                false
            }
        }
    }

    fn publish_synced(&self, seq: u64) {
        self.aof.shared.durable.send_if_modified(|d| {
            if d.synced < seq {
                d.synced = seq;
                true
            } else {
                false
            }
        });
    }

    /// Enters the failed state, or moves from [`Failure::NoSpace`] to [`Failure::Rewrite`]:
    /// writes are refused until the recovery the failure calls for succeeds.
    fn fail(&mut self, failure: Failure, what: &str, e: io::Error) {
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
    fn recovered(&mut self) {
        self.failure = None;
        self.retry_at = None;
        self.retry_delay = FIRST_RETRY;
        self.aof.shared.failed.store(false, Ordering::Relaxed);
        self.aof.shared.durable.send_modify(|d| d.failure = None);
    }

    /// While the disk is full: cuts the file back to its last complete batch and appends the
    /// records kept since the failure. Writes resume if they fit.
    fn retry_append(&mut self) {
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

    fn maybe_start_rewrite(&mut self) {
        let due = self.retry_at.is_some_and(|at| Instant::now() >= at);
        match self.failure {
            None => {}
            // Appending does not need the rewrite's room, so it is tried even while a
            // compaction runs.
            Some(Failure::NoSpace { .. }) => {
                if due {
                    self.retry_append();
                }
                return;
            }
            Some(Failure::Rewrite) => {
                if due && self.rewrite.is_none() {
                    info!("trying to recover the append-only file by rewriting it from memory");
                    self.start_rewrite();
                }
                return;
            }
        }
        if self.rewrite.is_some()
            || self
                .compact_not_before
                .is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        let threshold = self
            .base_len
            .saturating_mul(100 + self.settings.rewrite_growth_percent)
            / 100;
        if self.file_len >= self.settings.rewrite_min_bytes && self.file_len >= threshold {
            info!(
                file_len = self.file_len,
                base_len = self.base_len,
                "append-only file has grown; rewriting it"
            );
            self.start_rewrite();
        }
    }

    fn start_rewrite(&mut self) {
        // The side buffer starts before the snapshot reads anything, so every write the
        // snapshot might miss is in it.
        lock(&self.aof.shared.pending).rewrite = RewriteTail::Collecting(Vec::new());
        let (tx, rx) = mpsc::channel();
        let dir = self.settings.dir.clone();
        let store = self.store.clone();
        let hook = self.hook.clone();
        // The same salt as the live file: the side buffer's records, encoded with it, end up
        // in the new file.
        let salt = self.aof.shared.salt;
        let spawned = std::thread::Builder::new()
            .name("aof-rewrite".into())
            .spawn(move || {
                let _ = tx.send(rewrite::write_snapshot(&dir, &store, salt, &*hook));
            });
        match spawned {
            Ok(_) => self.rewrite = Some(rx),
            Err(e) => self.rewrite_failed(e),
        }
    }

    /// Completes the rewrite if its snapshot is written.
    fn poll_rewrite(&mut self) {
        let Some(rx) = &self.rewrite else { return };
        let result = match rx.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => {
                Err(io::Error::other("the rewrite thread died"))
            }
        };
        self.rewrite = None;
        let (snapshot, snapshot_len) = match result {
            Ok(done) => done,
            Err(e) => return self.rewrite_failed(e),
        };
        if let Err(e) = (self.hook)(RewriteStep::Switching) {
            return self.rewrite_failed(e);
        }
        // Take the side buffer and whatever the writer has not written yet, atomically: from
        // here on every record goes to the new file only. The unwritten records are in the
        // side buffer too, so they must not also be appended after the switch.
        let (tail, unwritten, seq) = {
            let mut pending = lock(&self.aof.shared.pending);
            let tail = match std::mem::take(&mut pending.rewrite) {
                RewriteTail::Collecting(tail) => tail,
                RewriteTail::Off | RewriteTail::Overflowed => {
                    drop(pending);
                    return self.abandon_rewrite();
                }
            };
            let unwritten = std::mem::take(&mut pending.buf);
            self.aof.shared.backlog.store(0, Ordering::Relaxed);
            (tail, unwritten, pending.appended)
        };
        let finished = rewrite::finish(
            &self.settings.dir,
            snapshot,
            snapshot_len,
            &tail,
            &*self.hook,
        );
        match finished {
            Ok((file, len)) => {
                self.install(file, len);
                self.meta.in_file(seq);
                // Growth is measured from the snapshot (the live data), not from the snapshot
                // plus the records that arrived while it was written: under a heavy write
                // load that tail can be large, and counting it would let every rewrite raise
                // the bar for the next one.
                self.base_len = snapshot_len;
                self.compact_not_before = None;
                self.aof.shared.rewrites.fetch_add(1, Ordering::Relaxed);
                let recovered = self.failed();
                if recovered {
                    self.recovered();
                }
                self.aof.shared.durable.send_modify(|d| {
                    d.synced = d.synced.max(seq);
                });
                if recovered {
                    info!(
                        file_len = len,
                        "append-only file recovered; accepting writes again"
                    );
                } else {
                    info!(file_len = len, "append-only file rewritten");
                }
            }
            Err(FinishError::BeforeRename(e)) => {
                // The old file is still the live one: give it the records it has not seen.
                self.batch = unwritten;
                if !self.batch.is_empty() {
                    self.write_batch(seq);
                }
                self.rewrite_failed(e);
            }
            Err(FinishError::AfterRename { file, len, source }) => {
                // The name points to the new file, which holds everything taken so far, but
                // the rename may not survive a power loss: nothing appended from now on could
                // be acknowledged as durable. The old file handle must never be written
                // again (no name leads to it). Refuse writes until a recovery rewrite, which
                // renames and fsyncs the directory afresh, succeeds.
                self.install(file, len);
                self.fail(Failure::Rewrite, "rewrite (after its rename)", source);
            }
        }
        // Every record taken at the switch has left the shared buffer: connections waiting
        // for the backlog to drain must hear so now, not at the next unrelated write.
        self.advance_taken(seq);
    }

    /// Makes a rewritten file (complete and fsynced) the one appended to.
    fn install(&mut self, file: File, len: u64) {
        self.file = file;
        self.file_len = len;
        self.dirty = false;
        self.last_fsync = Instant::now();
        self.aof.shared.file_len.store(len, Ordering::Relaxed);
    }

    /// Gives up a rewrite whose side buffer overflowed: the old file is still complete. A
    /// compaction is tried again once the file has grown by the percentage again; a recovery
    /// after the usual delay (its snapshot will include everything in memory).
    fn abandon_rewrite(&mut self) {
        let _ = std::fs::remove_file(self.settings.dir.join(super::REWRITE_FILE_NAME));
        warn!(
            limit = MAX_REWRITE_TAIL_BYTES,
            "abandoning an append-only file rewrite: more writes arrived during it than it keeps"
        );
        match self.failure {
            Some(Failure::Rewrite) => self.retry_at = Some(Instant::now() + self.retry_delay),
            // Recovery appends; it never waited for this rewrite.
            Some(Failure::NoSpace { .. }) => {}
            None => self.base_len = self.file_len,
        }
    }

    fn rewrite_failed(&mut self, e: io::Error) {
        lock(&self.aof.shared.pending).rewrite = RewriteTail::Off;
        let _ = std::fs::remove_file(self.settings.dir.join(super::REWRITE_FILE_NAME));
        self.aof.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        match self.failure {
            Some(Failure::Rewrite) => {
                warn!(error = %e, retry_in = ?self.retry_delay, "append-only file recovery rewrite failed");
                self.retry_at = Some(Instant::now() + self.retry_delay);
                self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
            }
            // A compaction, most likely short of room for its snapshot: appending goes on (or
            // is retried, if the disk is full), and the compaction is tried again later.
            Some(Failure::NoSpace { .. }) | None => {
                warn!(error = %e, retry_in = ?COMPACTION_RETRY, "append-only file compaction failed");
                self.compact_not_before = Some(Instant::now() + COMPACTION_RETRY);
            }
        }
    }

    /// Shutdown: everything recorded is written and fsynced (unless the disk has failed).
    fn close(&mut self) {
        if self.rewrite.take().is_some() {
            debug!("abandoning an unfinished rewrite at shutdown");
            lock(&self.aof.shared.pending).rewrite = RewriteTail::Off;
        }
        // How far the clock got, so that a start with the system clock set back does not
        // revive what expired before this shutdown.
        self.queue_meta_records(true);
        let (seq, _) = self.take_batch();
        if !self.batch.is_empty() {
            self.write_batch(seq);
        }
        // A last chance for what a full disk kept in memory.
        self.retry_append();
        if self.failed() {
            error!("shutting down with an append-only file that could not be written");
            return;
        }
        if self.fsync() {
            self.publish_synced(seq);
            info!(
                file_len = self.file_len,
                "append-only file flushed and fsynced"
            );
        }
    }
}
