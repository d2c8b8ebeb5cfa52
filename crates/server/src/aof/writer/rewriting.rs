//! The writer's side of a rewrite: when one starts, the switch to the new file, and what a
//! failure on either side of the rename means (AOF.md section 9.1).

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::failure::Failure;
use super::{Writer, MAX_RETRY};
use crate::aof::rewrite::{self, FinishError, RewriteStep};
use crate::aof::{lock, RewriteTail, MAX_REWRITE_TAIL_BYTES, REWRITE_FILE_NAME};

/// How long after a failed compaction the next one may start (if the file is still past the
/// thresholds). A compaction needs room for a whole snapshot, which a nearly full disk may not
/// have for a while; appending goes on meanwhile.
const COMPACTION_RETRY: Duration = Duration::from_secs(60);

impl Writer {
    /// Runs the recovery the failed state calls for once it is due, or else starts a
    /// compaction if the file has grown past both thresholds.
    pub(super) fn maybe_start_rewrite(&mut self) {
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

    pub(super) fn start_rewrite(&mut self) {
        // The side buffer starts before the snapshot reads anything, so every write the
        // snapshot might miss is in it.
        lock(&self.aof.shared.pending).rewrite = RewriteTail::Collecting(Vec::new());
        self.aof.shared.timings.rewrite_started();
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
    pub(super) fn poll_rewrite(&mut self) {
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
                self.aof.shared.timings.rewrite_ended(true);
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
    pub(super) fn install(&mut self, file: File, len: u64) {
        self.file = file;
        self.file_len = len;
        self.dirty = false;
        self.last_fsync = Instant::now();
        self.aof.shared.timings.synced_now();
        self.aof.shared.file_len.store(len, Ordering::Relaxed);
    }

    /// Gives up a rewrite whose side buffer overflowed: the old file is still complete. A
    /// compaction is tried again once the file has grown by the percentage again; a recovery
    /// after the usual delay (its snapshot will include everything in memory).
    pub(super) fn abandon_rewrite(&mut self) {
        self.aof.shared.timings.rewrite_ended(false);
        let _ = std::fs::remove_file(self.settings.dir.join(REWRITE_FILE_NAME));
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

    pub(super) fn rewrite_failed(&mut self, e: io::Error) {
        self.aof.shared.timings.rewrite_ended(false);
        lock(&self.aof.shared.pending).rewrite = RewriteTail::Off;
        let _ = std::fs::remove_file(self.settings.dir.join(REWRITE_FILE_NAME));
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
}
