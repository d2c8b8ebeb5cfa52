//! How long the writer's disk operations take, for the metrics: fsync latency, the time of
//! the last fsync, and the last rewrite's duration and result.
//!
//! Recorded by the writer thread, read at scrape time; the writer fsyncs at most once per
//! batch, so plain shared atomics cost nothing measurable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::histogram::{nanos, Histogram, DISK_BOUNDS_NS};

/// The writer's timings.
#[derive(Debug)]
pub struct Timings {
    /// What the other instants are counted from.
    base: Instant,
    fsync: Histogram,
    /// When the file was last fsynced (or opened, or replaced by a rewrite), nanoseconds
    /// after `base`.
    last_fsync_ns: AtomicU64,
    rewrite_started: Mutex<Option<Instant>>,
    last_rewrite_ns: AtomicU64,
    last_rewrite_ok: AtomicBool,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            base: Instant::now(),
            fsync: Histogram::new(DISK_BOUNDS_NS),
            last_fsync_ns: AtomicU64::new(0),
            rewrite_started: Mutex::new(None),
            last_rewrite_ns: AtomicU64::new(0),
            last_rewrite_ok: AtomicBool::new(true),
        }
    }
}

impl Timings {
    /// An fsync that started at `started` has just completed.
    pub(super) fn fsynced(&self, started: Instant) {
        self.fsync.observe(started.elapsed());
        self.synced_now();
    }

    /// The file on disk is complete as of now (a rewritten file was installed).
    pub(super) fn synced_now(&self) {
        self.last_fsync_ns
            .store(nanos(self.base.elapsed()), Ordering::Relaxed);
    }

    /// A rewrite has started.
    pub(super) fn rewrite_started(&self) {
        *super::lock(&self.rewrite_started) = Some(Instant::now());
    }

    /// The rewrite that started last has ended, successfully or not.
    pub(super) fn rewrite_ended(&self, ok: bool) {
        if let Some(started) = super::lock(&self.rewrite_started).take() {
            self.last_rewrite_ns
                .store(nanos(started.elapsed()), Ordering::Relaxed);
        }
        self.last_rewrite_ok.store(ok, Ordering::Relaxed);
    }

    /// Fsync latencies so far.
    pub fn fsync_latency(&self) -> crate::histogram::Snapshot {
        self.fsync.snapshot()
    }

    /// Time since the last fsync.
    pub fn last_fsync_age(&self) -> Duration {
        let last = Duration::from_nanos(self.last_fsync_ns.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }

    /// How long the last rewrite took (zero before the first), and whether it succeeded.
    pub fn last_rewrite(&self) -> (Duration, bool) {
        (
            Duration::from_nanos(self.last_rewrite_ns.load(Ordering::Relaxed)),
            self.last_rewrite_ok.load(Ordering::Relaxed),
        )
    }
}
