//! The writer thread: appends records, fsyncs per policy, runs rewrites and recovers from
//! disk failures.
//!
//! A plain thread rather than a tokio task: every step is a blocking syscall, and keeping
//! them off the runtime's workers means a slow disk can never delay request handling.
//!
//! [`failure`] holds the failed state and its two recoveries (after a full disk, and after
//! anything else); [`rewriting`] the writer's side of a rewrite; [`meta`] the records the
//! writer adds of its own.

mod failure;
mod meta;
mod rewriting;

use failure::Failure;

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

use super::rewrite::SharedHook;
use super::{lock, Aof, AofSettings, FsyncPolicy, RewriteTail};
use crate::memory::{Charge, Part};
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
    hook: SharedHook,
) -> io::Result<JoinHandle<()>> {
    let batch_counted = store.memory().charge(Part::Aof);
    let writer = Writer {
        aof,
        settings,
        store,
        file,
        file_len,
        base_len: file_len,
        batch: Vec::with_capacity(64 * 1024),
        batch_counted,
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
    /// `batch`'s capacity, as the memory limit counts it.
    batch_counted: Charge,
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
        pending.recount();
        self.batch_counted.set(self.batch.capacity());
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
            self.batch_counted.set(self.batch.capacity());
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
        if self.failed() {
            return self.keep_while_failed(seq);
        }
        if let Err(e) = self.file.write_all(&self.batch) {
            return self.write_failed(seq, e);
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
        let started = Instant::now();
        match self.file.sync_data() {
            Ok(()) => {
                self.aof.shared.timings.fsynced(started);
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
