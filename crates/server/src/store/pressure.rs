//! Holding the store to `limits.max_memory`: admission of writes that grow it, and the
//! background task that reclaims and (with `evict-soonest-expiring`) evicts.
//!
//! # What happens at the cap
//!
//! A write that would create an entry, or grow one, first asks [`Store::admit`]. Under the
//! cap it passes with one atomic load of each counter. Over it:
//!
//! - **`refuse-new`**: the write itself reclaims first, a few sweep steps
//!   ([`RECLAIM_STEPS`]) from a cursor all refused writes share, so expired sessions make
//!   room before anyone is refused; if that was not enough the write is refused with
//!   [`OutOfMemory`], which both protocols report (`OUT_OF_MEMORY`, Redis's `-OOM`).
//!   Meanwhile the background task completes a sweep cycle (at most once a second), so
//!   every expired entry is gone within about a second. Reads, touches, deletes and same-size updates never ask.
//! - **`evict-soonest-expiring`**: a write that finds memory within
//!   [`crate::memory::EVICT_AHEAD`] of the cap wakes the background task, which evicts the
//!   live entries with the earliest deadlines until memory is [`EVICT_BELOW`] under the cap,
//!   and passes. The task runs between requests, so a burst may outrun it for a while; a
//!   write that would take memory past the cap itself is refused like under `refuse-new`,
//!   which bounds memory at the cap whatever the write rate.
//!
//! # Why eviction walks the map twice instead of keeping an expiry index
//!
//! Redis samples a few keys and evicts the best of the sample; exact "soonest first" needs
//! the order of deadlines. An index kept on every write (a heap, a skip list, or even a
//! histogram of deadlines) costs every SET and TOUCH work and memory for a situation most
//! servers never reach. Instead, eviction itself reads the deadlines: a first walk (read
//! locks, a shard at a time) builds a histogram of the entries' remaining lifetimes (0 for
//! expired ones the sweep has not reclaimed yet, which the second walk frees first),
//! weighted by their bytes, with [`SUB_BUCKETS`] buckets per doubling of the lifetime; the
//! smallest lifetime whose bucket brings the total to what must be freed is the threshold.
//! A second walk, the sweep's own step with a deadline to evict through, removes the
//! entries at or under it, records a DEL for each (an evicted session must not come back on
//! restart) and stops once enough is freed. Entries evicted are all among the soonest to
//! expire, to within one histogram bucket (1/16 of the lifetime, about 6%). The cost is two
//! walks of the map under pressure and nothing otherwise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::sweep::{SweepCursor, BUCKETS_PER_LOCK};
use super::{entry_bytes, Store};
use crate::memory::{allocated_size, Part, Policy};

/// A write was refused: the memory in use is at `limits.max_memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("command not allowed when used memory > 'maxmemory'")]
pub struct OutOfMemory;

/// Sweep steps (of [`super::sweep::BUCKETS_PER_LOCK`] buckets, a few microseconds each) a
/// write refused at the cap runs first, to reclaim expired entries. Few: at the cap most
/// writes that create are refused, and each pays for these steps.
pub const RECLAIM_STEPS: usize = 4;

/// How often, at most, the background task sweeps the whole map while memory is over the cap
/// (`refuse-new`).
const RECLAIM_CYCLE_EVERY: Duration = Duration::from_secs(1);

/// Eviction frees memory down to the cap less this share of it (1/16, about 6%): from where
/// it starts ([`crate::memory::EVICT_AHEAD`], 3% under the cap) that is 3% of the cap per
/// round, so that it runs once per such share of writes rather than once per write.
pub const EVICT_BELOW: u64 = 16;

/// Histogram buckets per doubling of the remaining lifetime.
const SUB_BUCKETS: u64 = 16;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();

/// How often the background task looks at memory when nothing wakes it.
const TICK: Duration = Duration::from_millis(100);

/// Evictions run back to back, at most, before the task waits for its next tick.
const MAX_ROUNDS: usize = 100;

/// Sweep (and eviction) steps run between two yields to the runtime: about 50 µs. Fewer
/// let the requests that fill memory run many times for each step that frees it (with 8,
/// a burst of creates on one worker thread outran the first eviction by 10,000 sessions).
const STEPS_PER_YIELD: usize = 32;

/// Shards the eviction's histogram walk reads between two yields (also about 50 µs at a
/// few dozen entries per shard).
const SHARDS_PER_YIELD: usize = 32;

/// The store's state for holding to the cap.
#[derive(Debug, Default)]
pub(super) struct Pressure {
    /// Where refused writes resume reclaiming; a `try_lock` so that writes never wait.
    cursor: Mutex<SweepCursor>,
    /// Where the background eviction resumes (only that task locks it).
    evict_cursor: Mutex<SweepCursor>,
    /// Wakes the background task.
    wake: Notify,
    /// The hash tables' bytes as last counted in [`Part::Table`].
    table_bytes: AtomicU64,
    /// The deadline the last eviction evicted through (0: none yet), which a write that
    /// finds memory past the overshoot allowance evicts through itself.
    evict_through: AtomicU64,
}

impl Store {
    /// Whether a write may add `extra` bytes; see the module docs. Must not be called with a
    /// shard lock held (it may sweep).
    pub(super) fn admit(&self, extra: usize) -> Result<(), OutOfMemory> {
        let memory = &self.shared.memory;
        if !memory.would_press(extra) {
            return Ok(());
        }
        match memory.policy() {
            Policy::RefuseNew => self.reclaim(RECLAIM_STEPS, None, extra),
            Policy::EvictSoonestExpiring => {
                // Eviction runs in the background; only a write that finds it far behind
                // helps, through the threshold it last computed.
                let through = self.shared.pressure.evict_through.load(Ordering::Relaxed);
                if through > 0 && memory.would_exceed(extra) {
                    self.reclaim(RECLAIM_STEPS, Some(through), extra);
                }
            }
        }
        self.check_growth(extra)
    }

    /// Like [`Store::admit`] but for a write that holds a shard lock: no reclaiming.
    pub(super) fn check_growth(&self, extra: usize) -> Result<(), OutOfMemory> {
        let memory = &self.shared.memory;
        if !memory.would_press(extra) {
            return Ok(());
        }
        let evicting = memory.policy() == Policy::EvictSoonestExpiring;
        if evicting {
            // Under refuse-new the task has nothing to do sooner than its next tick, and a
            // flood of refused writes waking it would have it count tables non-stop.
            self.shared.pressure.wake.notify_one();
        }
        let allowed = evicting && !memory.would_exceed(extra);
        if allowed {
            Ok(())
        } else {
            memory.note_refused();
            Err(OutOfMemory)
        }
    }

    /// Runs up to `steps` sweep steps' worth of buckets (evicting through `evict_through`,
    /// if given) from the shared cursor, unless another write is, until `extra` more bytes
    /// fit.
    fn reclaim(&self, steps: usize, evict_through: Option<u64>, extra: usize) {
        let Ok(mut cursor) = self.shared.pressure.cursor.try_lock() else {
            return;
        };
        let now = self.shared.clock.now_ms();
        // Counted in buckets: on a small map a step covers one shard of a few buckets.
        let mut scanned = 0;
        while scanned < (steps * BUCKETS_PER_LOCK) as u64 {
            scanned += self.remove_step(&mut cursor, now, evict_through).scanned;
            if !self.shared.memory.would_exceed(extra) {
                break;
            }
        }
    }

    /// Counts the hash tables at their real capacity under [`Part::Table`]. The tables only
    /// change size when they grow by doubling (dashmap never shrinks them), so counting them
    /// every [`TICK`] rather than on every insert misses at most one tick's growth.
    pub fn count_tables(&self) {
        let total: u64 = self
            .shared
            .map
            .shards()
            .iter()
            .map(|shard| allocated_size(shard.read().allocation_info().1.size()) as u64)
            .sum();
        let before = self
            .shared
            .pressure
            .table_bytes
            .swap(total, Ordering::Relaxed);
        let memory = &self.shared.memory;
        memory.add(Part::Table, total as usize);
        memory.sub(Part::Table, before as usize);
    }

    /// Starts the task that holds memory to the cap; it stops when `stopped` is cancelled.
    pub(super) fn start_pressure_task(&self, stopped: CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            store.count_tables();
            let memory = &store.shared.memory;
            if let (true, Some(limit)) = (memory.over_limit(), memory.limit()) {
                // Replay never refuses an entry: a restart must not lose accepted sessions.
                tracing::warn!(
                    used = memory.used(),
                    limit,
                    policy = memory.policy().name(),
                    "memory in use after replay exceeds limits.max_memory",
                );
            }
            let mut was_over = false;
            let mut last_cycle: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    _ = store.shared.pressure.wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                }
                store.count_tables();
                memory.observe_resident();
                let over = memory.over_limit();
                if over != was_over {
                    tracing::info!(
                        used = memory.used(),
                        limit = memory.limit(),
                        policy = memory.policy().name(),
                        "memory {} limits.max_memory",
                        if over { "reached" } else { "back under" },
                    );
                    was_over = over;
                }
                // A whole cycle of the map at most every RECLAIM_CYCLE_EVERY while over the
                // cap: on a large map a cycle costs tens of milliseconds, and the regular
                // sweep goes on meanwhile.
                let due = last_cycle.is_none_or(|at| at.elapsed() >= RECLAIM_CYCLE_EVERY);
                if over && memory.policy() == Policy::RefuseNew && due {
                    store.reclaim_cycle(&stopped).await;
                    last_cycle = Some(tokio::time::Instant::now());
                }
                // While writes keep memory at the cap, evict again at once rather than at
                // the next tick, a bounded number of rounds (memory may be held by buffers
                // that eviction cannot free).
                let mut rounds = 0;
                while memory.policy() == Policy::EvictSoonestExpiring
                    && memory.under_pressure()
                    && rounds < MAX_ROUNDS
                    && !stopped.is_cancelled()
                {
                    store.evict_once(&stopped).await;
                    tokio::task::yield_now().await;
                    memory.observe_resident();
                    rounds += 1;
                }
            }
        });
    }

    /// Reclaims every expired entry (one sweep cycle). Eviction needs no such cycle first:
    /// its own walk removes the expired entries it passes.
    async fn reclaim_cycle(&self, stopped: &CancellationToken) {
        let mut cursor = SweepCursor::default();
        let now = self.shared.clock.now_ms();
        let mut steps = 0;
        while !stopped.is_cancelled() {
            if self.remove_step(&mut cursor, now, None).completed_cycle {
                break;
            }
            steps += 1;
            if steps % STEPS_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// With `evict-soonest-expiring` and memory where eviction starts: one eviction down to
    /// [`EVICT_BELOW`] under the cap.
    async fn evict_once(&self, stopped: &CancellationToken) {
        let memory = &self.shared.memory;
        let Some(limit) = memory.limit() else { return };
        if memory.policy() == Policy::EvictSoonestExpiring && memory.under_pressure() {
            self.evict_down_to(limit - limit / EVICT_BELOW, stopped)
                .await;
        }
    }

    /// Evicts the live entries with the earliest deadlines until memory is at most `target`
    /// (or nothing is left to evict); see the module docs.
    pub async fn evict_down_to(&self, target: u64, stopped: &CancellationToken) {
        let memory = &self.shared.memory;
        let Some(need) = memory.used().checked_sub(target).filter(|&n| n > 0) else {
            return;
        };
        let now = self.shared.clock.now_ms();
        let mut weights = vec![0u64; histogram_index(u64::MAX) + 1];
        for shard in 0..self.shard_count() {
            self.visit_buckets(shard, 0, usize::MAX, |slot| {
                // An expired entry the sweep has not reached yet counts as a lifetime of 0:
                // the eviction walk frees it whatever the threshold (every step removes the
                // expired entries it passes), so its bytes are part of what the walk frees,
                // not a reason to evict live sessions in its place.
                let bytes = entry_bytes(slot.key().len(), slot.value().len());
                let left = slot.expires_at_ms().saturating_sub(now);
                weights[histogram_index(left)] += bytes as u64;
            });
            if shard % SHARDS_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut total = 0;
        let Some(index) = weights.iter().position(|&bytes| {
            total += bytes;
            total >= need
        }) else {
            // Not even every entry would be enough (connections or the AOF hold the rest):
            // evict them all.
            return self
                .evict_through(u64::MAX, u64::MAX, target, stopped)
                .await;
        };
        // Every entry in the buckets below `index` must go, and as many of the bucket at
        // `index` as it takes.
        let all_through = match index {
            0 => 0,
            _ => now.saturating_add(histogram_upper(index - 1)),
        };
        let some_through = now.saturating_add(histogram_upper(index));
        self.shared
            .pressure
            .evict_through
            .store(some_through, Ordering::Relaxed);
        self.evict_through(all_through, some_through, target, stopped)
            .await;
    }

    /// One walk over the map that removes every live entry whose deadline is at or before
    /// `all_through`, and those at or before `some_through` while memory is above `target`.
    ///
    /// The walk covers the whole map even once memory is under `target`: stopping there
    /// would keep, in the shards not yet visited, sessions that expire sooner than some it
    /// evicted. It starts where the last one stopped, so that the entries of the threshold's
    /// own bucket are not always taken from the first shards.
    async fn evict_through(
        &self,
        all_through: u64,
        some_through: u64,
        target: u64,
        stopped: &CancellationToken,
    ) {
        let mut steps = 0;
        let mut evicted = 0;
        let mut covered = 0;
        let buckets = self.buckets();
        while !stopped.is_cancelled() && covered < buckets {
            let over = self.shared.memory.used() > target;
            if !over && all_through == 0 {
                break;
            }
            let through = if over { some_through } else { all_through };
            let now = self.shared.clock.now_ms();
            let step = match self.shared.pressure.evict_cursor.lock() {
                Ok(mut cursor) => self.remove_step(&mut cursor, now, Some(through)),
                Err(poisoned) => self.remove_step(&mut poisoned.into_inner(), now, Some(through)),
            };
            evicted += step.evicted;
            covered += step.scanned;
            steps += 1;
            if steps % STEPS_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
        tracing::debug!(
            evicted,
            some_through,
            "evicted the sessions expiring soonest"
        );
    }
}

impl Store {
    /// Buckets in all the shards' tables now.
    fn buckets(&self) -> u64 {
        let shards = self.shared.map.shards();
        shards
            .iter()
            .map(|shard| shard.read().buckets() as u64)
            .sum()
    }
}

/// The histogram bucket of a remaining lifetime of `ms`: exact below [`SUB_BUCKETS`] ms,
/// then [`SUB_BUCKETS`] buckets per doubling.
fn histogram_index(ms: u64) -> usize {
    if ms < SUB_BUCKETS {
        return ms as usize;
    }
    let log = 63 - ms.leading_zeros();
    let sub = (ms >> (log - SUB_BITS)) & (SUB_BUCKETS - 1);
    ((u64::from(log - SUB_BITS) + 1) * SUB_BUCKETS + sub) as usize
}

/// The longest lifetime in histogram bucket `index`.
fn histogram_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS;
    let lower = (SUB_BUCKETS + sub) << shift;
    lower.saturating_add((1 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_cover_every_lifetime_in_order() {
        let mut last = 0;
        for ms in (0..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let index = histogram_index(ms);
            assert!(index >= last, "{ms}");
            assert!(
                histogram_upper(index) >= ms,
                "{ms}: {}",
                histogram_upper(index)
            );
            if index > 0 {
                assert!(histogram_upper(index - 1) < ms, "{ms}");
            }
            last = index;
        }
        // A bucket spans 1/16 of its lifetimes.
        let index = histogram_index(1 << 20);
        assert_eq!(histogram_upper(index), (1 << 20) + (1 << 16) - 1);
    }
}
