//! The writer thread: appends records, fsyncs per policy, runs rewrites and recovers from
//! disk failures.
//!
//! A plain thread rather than a tokio task: every step is a blocking syscall, and keeping
//! them off the runtime's workers means a slow disk can never delay request handling.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::rewrite::{self, no_hook};
use super::{lock, Aof, AofSettings, Durable, FsyncPolicy, RewriteTail, MAX_REWRITE_TAIL_BYTES};
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

pub(super) fn spawn(
    aof: Aof,
    settings: AofSettings,
    store: Store,
    file: File,
    file_len: u64,
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
    retry_delay: Duration,
}

impl Writer {
    fn run(mut self) {
        loop {
            let (seq, closing) = self.take_batch();
            if !self.batch.is_empty() {
                self.write_batch(seq);
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
        }
    }

    fn policy(&self) -> FsyncPolicy {
        self.aof.shared.policy
    }

    fn failed(&self) -> bool {
        self.aof.is_failed()
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
        self.aof.shared.taken.send_if_modified(|taken| {
            let advanced = *taken < seq;
            *taken = (*taken).max(seq);
            advanced
        });
        // After a burst, give the memory back instead of keeping the burst's capacity in
        // both buffers for good (they alternate, so each passes through here).
        if self.batch.capacity() > MAX_RETAINED_BUFFER {
            self.batch = Vec::with_capacity(64 * 1024);
        }
    }

    fn append(&mut self, seq: u64) {
        if self.failed() {
            // The file is not trusted any more; these records reach disk through the
            // recovery rewrite's side buffer instead.
            return;
        }
        if let Err(e) = self.file.write_all(&self.batch) {
            self.fail("write", e);
            return;
        }
        self.file_len += self.batch.len() as u64;
        self.aof
            .shared
            .file_len
            .store(self.file_len, Ordering::Relaxed);
        self.dirty = true;
        match self.policy() {
            FsyncPolicy::Always => {
                if self.fsync() {
                    self.publish_synced(seq);
                }
            }
            FsyncPolicy::Everysec => self.fsync_if_due(seq),
            FsyncPolicy::No => self.publish_synced(seq),
        }
    }

    fn fsync_if_due(&mut self, seq: u64) {
        if self.last_fsync.elapsed() >= EVERYSEC && self.fsync() {
            self.publish_synced(seq);
        }
    }

    /// Fsyncs the file; on failure enters the failed state. Returns whether it succeeded.
    fn fsync(&mut self) -> bool {
        match self.file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.last_fsync = Instant::now();
                true
            }
            Err(e) => {
                self.fail("fsync", e);
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

    /// Enters the failed state: writes are refused until a rewrite from memory succeeds.
    fn fail(&mut self, what: &str, e: io::Error) {
        self.aof.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        if self.failed() {
            return;
        }
        error!(error = %e, "append-only file {what} failed; refusing writes until it can be rewritten");
        self.aof.shared.failed.store(true, Ordering::Relaxed);
        self.aof.shared.durable.send_modify(|d| {
            d.failure = Some(format!("{what} failed: {e}"));
        });
        self.retry_delay = FIRST_RETRY;
        self.retry_at = Some(Instant::now() + FIRST_RETRY);
    }

    fn maybe_start_rewrite(&mut self) {
        if self.rewrite.is_some() {
            return;
        }
        if self.failed() {
            if self.retry_at.is_some_and(|at| Instant::now() >= at) {
                info!("trying to recover the append-only file by rewriting it from memory");
                self.start_rewrite();
            }
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
        // The same salt as the live file: the side buffer's records, encoded with it, end up
        // in the new file.
        let salt = self.aof.shared.salt;
        let spawned = std::thread::Builder::new()
            .name("aof-rewrite".into())
            .spawn(move || {
                let _ = tx.send(rewrite::write_snapshot(&dir, &store, salt, &no_hook));
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
            (tail, unwritten, pending.appended)
        };
        match rewrite::finish(&self.settings.dir, snapshot, snapshot_len, &tail, &no_hook) {
            Ok((file, len)) => {
                self.file = file;
                self.file_len = len;
                // Growth is measured from the snapshot (the live data), not from the snapshot
                // plus the records that arrived while it was written: under a heavy write
                // load that tail can be large, and counting it would let every rewrite raise
                // the bar for the next one.
                self.base_len = snapshot_len;
                self.dirty = false;
                self.last_fsync = Instant::now();
                self.aof.shared.file_len.store(len, Ordering::Relaxed);
                self.aof.shared.rewrites.fetch_add(1, Ordering::Relaxed);
                let recovered = self.failed();
                self.aof.shared.failed.store(false, Ordering::Relaxed);
                self.retry_at = None;
                self.aof.shared.durable.send_modify(|d| {
                    *d = Durable {
                        synced: d.synced.max(seq),
                        failure: None,
                    };
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
            Err(e) => {
                // The old file is still the live one: give it the records it has not seen.
                self.batch = unwritten;
                if !self.batch.is_empty() {
                    self.write_batch(seq);
                }
                self.rewrite_failed(e);
            }
        }
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
        if self.failed() {
            self.retry_at = Some(Instant::now() + self.retry_delay);
        } else {
            self.base_len = self.file_len;
        }
    }

    fn rewrite_failed(&mut self, e: io::Error) {
        lock(&self.aof.shared.pending).rewrite = RewriteTail::Off;
        let _ = std::fs::remove_file(self.settings.dir.join(super::REWRITE_FILE_NAME));
        self.aof.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        warn!(error = %e, retry_in = ?self.retry_delay, "append-only file rewrite failed");
        // Retry later, whether this was a recovery or a compaction.
        self.retry_at = Some(Instant::now() + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY);
        if !self.failed() {
            // A compaction that failed: do not retry it before the file grows further.
            self.retry_at = None;
            self.base_len = self.file_len;
        }
    }

    /// Shutdown: everything recorded is written and fsynced (unless the disk has failed).
    fn close(&mut self) {
        if self.rewrite.take().is_some() {
            debug!("abandoning an unfinished rewrite at shutdown");
            lock(&self.aof.shared.pending).rewrite = RewriteTail::Off;
        }
        let (seq, _) = self.take_batch();
        if !self.batch.is_empty() {
            self.write_batch(seq);
        }
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
