//! The background expiry sweep: reclaims entries nobody reads again, a bounded step at a time.
//!
//! # Why a bucket cursor
//!
//! Lazy expiry alone never frees a session whose user simply went away, which is most of
//! them. The sweep must find those without stalling requests, so:
//!
//! - It never scans the whole map while holding a lock. It walks the hash-table buckets of one
//!   shard at a time, [`BUCKETS_PER_LOCK`] buckets per lock acquisition, so a request waits at
//!   most for one such step on one of the 1024 shards, whatever the map's size.
//! - It never scans the whole map per tick either. Each tick resumes where the last one
//!   stopped (the cursor, like Redis's `SCAN` cursor) and stops when its time budget is spent
//!   or when it has covered the map once.
//!
//! Redis instead samples 20 random keys per database and repeats while more than a quarter
//! of them had expired. dashmap exposes no random sampling, and a cursor gives a stronger
//! guarantee: every expired entry is reclaimed within one full cycle.
//!
//! # Quiet ticks
//!
//! Walking a map where nothing has expired still costs a cache miss per entry: with 100,000
//! sessions and nothing due, an idle daemon used 1.4 % of a core, most of it this walk,
//! which a server capped at a quarter of a core pays out of its requests' time. So a tick
//! that reclaims nothing halves the next tick's budget, down to [`QUIET_DIVISOR`]th of
//! `sweep_budget`, and a tick that reclaims anything restores the full budget (and may
//! burst, as below). While nothing expires a cycle of the map takes up to that many times
//! longer; the first expired entry found brings the sweep back to full speed within a tick.
//! Expired entries are never returned in the meantime (every access checks the deadline),
//! and at `limits.max_memory` the pressure task does not wait for the sweep: it reclaims
//! (`refuse-new`) or evicts (`evict-soonest-expiring`) itself.
//!
//! If a table grows or shrinks between two steps, the cursor's bucket index then points into
//! a different layout: some buckets are visited twice and some are skipped until the next
//! cycle. That costs a little time and delays reclamation by one cycle; it never returns an
//! expired entry, since every access checks the deadline itself.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use super::raw::retain_slots;
use super::{Freed, Store};

/// Buckets inspected per acquisition of a shard's write lock. At a few nanoseconds per bucket
/// this keeps each lock hold to about a microsecond.
pub const BUCKETS_PER_LOCK: usize = 256;

/// A tick that finds an expired entry in at least one of every `BURST_DENSITY` buckets it
/// visits keeps sweeping for up to `BURST_FACTOR` times its budget (10% of one core with the
/// defaults). Sessions created together expire together, say after a traffic peak, and at
/// the base budget (1% of a core) a million of them took 17 s to reclaim; Redis's active
/// expiry likewise works harder, up to a quarter of its cycle, while more than a tenth of
/// what it samples has expired. Requests still run between steps, since every step yields.
const BURST_DENSITY: u64 = 10;
const BURST_FACTOR: u32 = 10;

/// A tick that reclaims nothing halves the next one's budget, down to `sweep_budget /
/// QUIET_DIVISOR` (see the module docs).
const QUIET_DIVISOR: u32 = 8;

/// How much of `sweep_budget` the next tick may spend: all of it after a tick that reclaimed
/// something, less after each one that did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Effort {
    divisor: u32,
}

impl Default for Effort {
    fn default() -> Self {
        Effort { divisor: 1 }
    }
}

impl Effort {
    /// The next tick's budget.
    fn budget(self, sweep_budget: Duration) -> Duration {
        sweep_budget / self.divisor
    }

    /// Takes a tick that reclaimed `reclaimed` entries into account.
    fn after_tick(self, reclaimed: u64) -> Effort {
        let divisor = if reclaimed > 0 {
            1
        } else {
            (self.divisor * 2).min(QUIET_DIVISOR)
        };
        Effort { divisor }
    }
}

/// Where the sweep resumes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepCursor {
    shard: usize,
    bucket: usize,
}

/// What one [`Store::remove_step`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Step {
    /// Buckets looked at.
    pub scanned: u64,
    /// Expired entries removed.
    pub expired: u64,
    /// Live entries evicted.
    pub evicted: u64,
    /// Whether the cursor passed the end of the map.
    pub completed_cycle: bool,
}

/// What one call to [`Store::sweep`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Buckets looked at.
    pub buckets_scanned: u64,
    /// Expired entries removed.
    pub reclaimed: u64,
    /// Whether the cursor passed the end of the map (and restarted at its beginning) during
    /// this call: a full cycle of the map has been swept.
    pub completed_cycle: bool,
}

impl Store {
    /// Sweeps from `cursor` until `budget` is spent or the map has been covered once,
    /// removing every expired entry found.
    pub fn sweep(&self, cursor: &mut SweepCursor, budget: Duration) -> SweepReport {
        let started = std::time::Instant::now();
        let now = self.shared.clock.now_ms();
        let mut report = SweepReport::default();
        let start = *cursor;
        loop {
            let step = self.remove_step(cursor, now, None);
            report.reclaimed += step.expired;
            report.buckets_scanned += step.scanned;
            report.completed_cycle |= step.completed_cycle;
            // Stop when the budget is spent or when this call has covered the map once.
            let covered_map = cursor.shard == start.shard && cursor.bucket <= start.bucket;
            if covered_map || started.elapsed() >= budget {
                break;
            }
        }
        report
    }

    /// One step of a walk over the map: removes, from [`BUCKETS_PER_LOCK`] buckets at
    /// `cursor` under their shard's write lock, every expired entry and, with `evict_through`,
    /// every live one whose deadline is at or before it (recording its DEL, so that an
    /// evicted session does not come back on restart). Moves the cursor past them.
    pub(super) fn remove_step(
        &self,
        cursor: &mut SweepCursor,
        now: u64,
        evict_through: Option<u64>,
    ) -> Step {
        let shards = self.shared.map.shards();
        let mut freed = Freed::default();
        let mut step = Step::default();
        // Sessions bound to an owner that this step removes: their keys leave the owner
        // index once the shard lock is released (lock order: owner before shard).
        let mut unbound = Vec::new();
        let mut table = shards[cursor.shard].write();
        let buckets = table.buckets();
        let end = (cursor.bucket + BUCKETS_PER_LOCK).min(buckets);
        retain_slots(&mut table, cursor.bucket, end, |slot| {
            if !slot.is_live(now) {
                step.expired += 1;
            } else if evict_through.is_some_and(|at| slot.expires_at_ms() <= at)
                // A key a transaction holds is not evicted under it (see `gate`).
                && self.shared.gates.is_free(slot.key())
            {
                step.evicted += 1;
                self.record(super::Mutation::Del { key: slot.key() });
            } else {
                return true;
            }
            if let Some(owner) = slot.owner() {
                unbound.push((Box::from(owner), Box::from(slot.key())));
            }
            freed.add(slot);
            false
        });
        drop(table);
        self.unindex_all(unbound);
        step.scanned = (end - cursor.bucket) as u64;
        self.release(freed);
        if end >= buckets {
            cursor.shard = (cursor.shard + 1) % shards.len();
            cursor.bucket = 0;
            step.completed_cycle = cursor.shard == 0;
        } else {
            cursor.bucket = end;
        }
        self.shared
            .expired_reclaimed
            .fetch_add(step.expired, Ordering::Relaxed);
        self.shared.memory.note_evicted(step.evicted);
        step
    }

    /// Starts the background sweep on the current tokio runtime: every `interval`, sweep
    /// steps until `budget` is spent or the map has been covered once. The task stops when
    /// the returned guard is dropped.
    ///
    /// Between steps the task yields to the runtime, so the requests queued on its worker
    /// thread run after at most one step (a few microseconds) instead of after the whole
    /// tick's budget: run in one go, a tick showed in the worker's p99.9 latency.
    pub fn start_sweeper(&self, interval: Duration, budget: Duration) -> SweeperGuard {
        let token = CancellationToken::new();
        // The task that holds memory to the cap stops with the sweep.
        self.start_pressure_task(token.clone());
        let stopped = token.clone();
        let store = self.clone();
        tokio::spawn(async move {
            let mut cursor = SweepCursor::default();
            let mut effort = Effort::default();
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    _ = ticker.tick() => {
                        let reclaimed = store.sweep_tick(&mut cursor, effort, budget, &stopped).await;
                        effort = effort.after_tick(reclaimed);
                    }
                }
            }
        });
        SweeperGuard {
            _guard: token.drop_guard(),
        }
    }

    /// One tick of the background sweep: single steps, yielding in between, until the
    /// budget `effort` allows of `sweep_budget` is spent, the cursor completes a cycle of the
    /// map, or the sweeper is stopped. Returns how many expired entries it reclaimed.
    async fn sweep_tick(
        &self,
        cursor: &mut SweepCursor,
        effort: Effort,
        sweep_budget: Duration,
        stopped: &CancellationToken,
    ) -> u64 {
        // The budget counts the time spent sweeping, not the time other tasks run while the
        // sweep yields: otherwise a busy server would sweep less exactly when it has more
        // to reclaim.
        let mut spent = Duration::ZERO;
        let budget = effort.budget(sweep_budget);
        let mut limit = budget;
        let (mut reclaimed, mut scanned) = (0, 0);
        loop {
            let step = std::time::Instant::now();
            // A zero budget makes `sweep` do exactly one step.
            let report = self.sweep(cursor, Duration::ZERO);
            spent += step.elapsed();
            reclaimed += report.reclaimed;
            scanned += report.buckets_scanned;
            if spent >= limit && limit == budget && reclaimed * BURST_DENSITY >= scanned {
                // Much of what this tick saw had expired: more likely waits further on.
                limit = sweep_budget * BURST_FACTOR;
            }
            if report.completed_cycle || spent >= limit || stopped.is_cancelled() {
                break;
            }
            tokio::task::yield_now().await;
        }
        if reclaimed > 0 {
            tracing::trace!(reclaimed, "expiry sweep");
        }
        reclaimed
    }
}

/// Stops the background sweep when dropped (mini-redis's `DbDropGuard` idea).
#[derive(Debug)]
pub struct SweeperGuard {
    _guard: DropGuard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_ticks_lower_the_budget_and_one_reclaim_restores_it() {
        let budget = Duration::from_millis(1);
        let mut effort = Effort::default();
        assert_eq!(effort.budget(budget), budget);
        let mut budgets = Vec::new();
        for _ in 0..5 {
            effort = effort.after_tick(0);
            budgets.push(effort.budget(budget).as_micros());
        }
        assert_eq!(budgets, [500, 250, 125, 125, 125]);
        effort = effort.after_tick(1);
        assert_eq!(effort.budget(budget), budget);
    }
}
