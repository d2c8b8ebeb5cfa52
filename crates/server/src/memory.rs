//! What the server's memory holds, in one place: the accounting behind `limits.max_memory`.
//!
//! Every part of the server that holds memory a client can make grow charges it here, under
//! one of the [`Part`]s: the store's entries and its hash table, the append-only file's
//! buffers, and the connections' buffers. The sum is what STATS reports as
//! `memory_used_bytes` and what [`Accounting::over_limit`] compares with the cap.
//!
//! # Why count rather than ask the allocator
//!
//! mimalloc can report what it holds, but only by walking its heaps, which is far too slow to
//! do before every write, and the figure includes memory freed but not yet returned to the
//! system, which would make the server refuse creates for a while after a mass logout. The
//! parts instead add and subtract what they allocate as they allocate it: one relaxed atomic
//! add per change, the same cost as the payload counter the store kept before. Sizes are
//! rounded up to the allocator's size classes ([`allocated_size`]) so that a 79-byte block
//! counts as the 80 bytes it takes, not 79; `tests/memory_limit.rs` compares the total with
//! the process's resident set.
//!
//! # Using it
//!
//! Counters that change with one object (a connection's read buffer) hold a [`Charge`]: set
//! it to the object's current capacity whenever that changes, and dropping it gives the bytes
//! back. Counters kept by a structure with many small parts (the store) call
//! [`Accounting::add`] and [`Accounting::sub`] directly.
//!
//! # What counting cannot see: the resident set's excess
//!
//! mimalloc gives a freed block back to the heap of the thread that allocated it, and only
//! that thread allocates from it again. With eviction, sessions created on one worker thread
//! are freed by the eviction task on another, and the next creates may run on either: the
//! worker allocating finds no room of its own and takes fresh pages while the other holds
//! free blocks it is not using. The counted total then stays at the cap while the resident
//! set grows past it (measured: 1.12 times a 64 MiB cap with two workers, 1.2 with a
//! scrambled order of deadlines; docs/MEMORY.md). So the daemon also watches its resident
//! set ([`Accounting::observe_resident`], a read of `/proc/self/status` each time the
//! pressure task looks at memory) and counts what it holds past the cap (plus
//! [`RESIDENT_SHARE`] and [`RESIDENT_SLACK`], what partly used pages and a serving runtime
//! take anyway) under [`Part::ResidentExcess`]: the cap then bounds the process, not just
//! what is counted, and eviction (or refusal) makes room for the worker that needs it. Only
//! the excess past the cap counts, never the free room below it: after a mass logout the
//! freed blocks are reused by the next creates, and counting them would refuse those creates
//! for nothing.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// What the limit does when it is reached (`limits.memory_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Reclaim expired entries, then refuse writes that would create a session (or grow
    /// one): the client is told, and no logged-in user is logged out.
    #[default]
    RefuseNew,
    /// Evict the live sessions closest to their deadline until memory is back under the
    /// limit: creates keep succeeding, and the users of the evicted sessions are logged out.
    EvictSoonestExpiring,
}

impl Policy {
    /// The name used in the configuration file and in STATS.
    pub fn name(self) -> &'static str {
        match self {
            Policy::RefuseNew => "refuse-new",
            Policy::EvictSoonestExpiring => "evict-soonest-expiring",
        }
    }
}

/// The parts memory is counted under, as STATS breaks `memory_used_bytes` down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Part {
    /// The store's entries: each one's block (header and key) and its value, as allocated.
    Entries,
    /// The store's hash tables: every bucket at the tables' real capacity.
    Table,
    /// The append-only file's buffers: records waiting to be written, and a rewrite's tail.
    Aof,
    /// Connections' read and write buffers.
    Connections,
    /// How far the process's resident set, less what it held once started, is past
    /// the cap and the allowance for partly used pages ([`RESIDENT_SHARE`],
    /// [`RESIDENT_SLACK`]): memory the allocator holds that the other parts do not count
    /// (see the module docs). Set by [`Accounting::observe_resident`]; 0 short of that.
    ResidentExcess,
}

impl Part {
    /// Every part, in the order STATS lists them.
    pub const ALL: [Part; 5] = [
        Part::Entries,
        Part::Table,
        Part::Aof,
        Part::Connections,
        Part::ResidentExcess,
    ];

    /// The suffix of this part's STATS line (`memory_<name>_bytes`).
    pub fn name(self) -> &'static str {
        match self {
            Part::Entries => "entries",
            Part::Table => "table",
            Part::Aof => "aof",
            Part::Connections => "connections",
            Part::ResidentExcess => "resident_excess",
        }
    }
}

/// With `evict-soonest-expiring`, eviction starts this share of the cap (1/32, about 3%)
/// under it, so that creates rarely find memory at the cap itself: what eviction frees is
/// reused by the next creates, and the resident set then stays at the cap instead of passing
/// it by what a burst adds before eviction catches up (which it did by 3 to 5% when
/// eviction started at the cap).
pub const EVICT_AHEAD: u64 = 32;

/// The resident set may pass the cap by this share of it (1/32, about 3%) before the excess
/// counts: the allocator's partly used pages take about 2% more than is counted for 100-byte
/// sessions, 0.4% for 1 KiB ones (docs/MEMORY.md), and that much is no reason to refuse or
/// evict anyone.
pub const RESIDENT_SHARE: u64 = 32;

/// ... and by this many bytes: what the process takes once it serves, beyond what it held
/// at the first look (thread stacks and allocator caches as the workers first run, the
/// first connections), about 1 to 2 MiB.
pub const RESIDENT_SLACK: u64 = 2 << 20;

/// [`Accounting::observe_resident`] has not taken the resident set's base yet.
const BASE_PENDING: u64 = u64::MAX - 1;

/// No limit: what a store made outside the daemon (tests, tools) starts with.
const UNLIMITED: u64 = u64::MAX;

/// The memory counters of one server and its limit. Shared as an `Arc` (see
/// [`crate::Store::memory`]).
#[derive(Debug)]
pub struct Accounting {
    /// Bytes held per [`Part`]. Signed, because a part may subtract before another thread's
    /// add for the same object lands; the sum is clamped at 0 when read.
    parts: [AtomicI64; Part::ALL.len()],
    /// The cap, in bytes ([`UNLIMITED`] for none).
    limit: AtomicU64,
    /// Where the policy starts to act: the cap under `refuse-new`, [`EVICT_AHEAD`] under it
    /// with eviction ([`UNLIMITED`] without a cap).
    acts_at: AtomicU64,
    /// [`Policy`] as its index.
    policy: AtomicU8,
    /// Writes refused because memory was at the limit.
    refused: AtomicU64,
    /// Live entries evicted to bring memory back under the limit.
    evicted: AtomicU64,
    /// The resident set the process would have with nothing counted: its resident set when
    /// the pressure task first looked, less what was counted then (the runtime, thread
    /// stacks, the empty tables). [`UNLIMITED`] without a cap, [`BASE_PENDING`] until then.
    resident_base: AtomicU64,
}

impl Accounting {
    /// Counters at zero, without a limit.
    pub fn unlimited() -> Accounting {
        Accounting {
            parts: Default::default(),
            limit: AtomicU64::new(UNLIMITED),
            acts_at: AtomicU64::new(UNLIMITED),
            policy: AtomicU8::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            resident_base: AtomicU64::new(UNLIMITED),
        }
    }

    /// Sets the cap (`None`: no cap) and what happens when it is reached. The daemon calls
    /// this once after replay, so that replay itself is never refused.
    pub fn set_limit(&self, limit: Option<u64>, policy: Policy) {
        self.policy.store(policy as u8, Ordering::Relaxed);
        self.limit
            .store(limit.unwrap_or(UNLIMITED), Ordering::Relaxed);
        let acts_at = match (limit, policy) {
            (None, _) => UNLIMITED,
            (Some(limit), Policy::RefuseNew) => limit,
            (Some(limit), Policy::EvictSoonestExpiring) => limit - limit / EVICT_AHEAD,
        };
        self.acts_at.store(acts_at, Ordering::Relaxed);
        let base = if limit.is_some() {
            BASE_PENDING
        } else {
            UNLIMITED
        };
        self.resident_base.store(base, Ordering::Relaxed);
    }

    /// Reads the process's resident set and counts how far it is past the cap under
    /// [`Part::ResidentExcess`] (see the module docs). Does nothing without a cap or where
    /// the resident set cannot be read. Costs a read of `/proc/self/status` (some 20 µs):
    /// the pressure task calls it, never a request.
    pub fn observe_resident(&self) {
        let base = self.resident_base.load(Ordering::Relaxed);
        let (Some(limit), true) = (self.limit(), base != UNLIMITED) else {
            return;
        };
        let Some(resident) = resident_set() else {
            return;
        };
        if base == BASE_PENDING {
            // The first look, once the server has started: its listeners bound and its
            // workers running, which a base taken when the cap is set (before the listeners
            // are bound) would count as excess.
            let base = resident.saturating_sub(self.counted());
            self.resident_base.store(base, Ordering::Relaxed);
            return;
        }
        let allowed = limit + limit / RESIDENT_SHARE + RESIDENT_SLACK;
        let excess = resident.saturating_sub(base).saturating_sub(allowed);
        self.parts[Part::ResidentExcess as usize]
            .store(i64::try_from(excess).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Bytes counted under every part but [`Part::ResidentExcess`].
    fn counted(&self) -> u64 {
        self.used()
            .saturating_sub(self.used_by(Part::ResidentExcess))
    }

    /// The cap, if there is one.
    pub fn limit(&self) -> Option<u64> {
        let limit = self.limit.load(Ordering::Relaxed);
        (limit != UNLIMITED).then_some(limit)
    }

    /// The policy applied at the cap.
    pub fn policy(&self) -> Policy {
        match self.policy.load(Ordering::Relaxed) {
            0 => Policy::RefuseNew,
            _ => Policy::EvictSoonestExpiring,
        }
    }

    /// Counts `bytes` more under `part`.
    #[inline]
    pub fn add(&self, part: Part, bytes: usize) {
        self.parts[part as usize].fetch_add(bytes as i64, Ordering::Relaxed);
    }

    /// Counts `bytes` less under `part`.
    #[inline]
    pub fn sub(&self, part: Part, bytes: usize) {
        self.parts[part as usize].fetch_sub(bytes as i64, Ordering::Relaxed);
    }

    /// Bytes counted under `part`.
    pub fn used_by(&self, part: Part) -> u64 {
        self.parts[part as usize].load(Ordering::Relaxed).max(0) as u64
    }

    /// Bytes counted under every part.
    pub fn used(&self) -> u64 {
        let sum: i64 = self
            .parts
            .iter()
            .map(|part| part.load(Ordering::Relaxed))
            .sum();
        sum.max(0) as u64
    }

    /// Whether `extra` more bytes would take the total past the cap.
    #[inline]
    pub fn would_exceed(&self, extra: usize) -> bool {
        self.would_pass(&self.limit, extra)
    }

    /// Whether the total is past the cap.
    pub fn over_limit(&self) -> bool {
        self.would_exceed(0)
    }

    /// Whether `extra` more bytes would take the total to where the policy acts: the cap,
    /// or with eviction [`EVICT_AHEAD`] under it.
    #[inline]
    pub fn would_press(&self, extra: usize) -> bool {
        self.would_pass(&self.acts_at, extra)
    }

    /// Whether `extra` more bytes would take the total past `threshold`.
    #[inline]
    fn would_pass(&self, threshold: &AtomicU64, extra: usize) -> bool {
        let threshold = threshold.load(Ordering::Relaxed);
        // Without a cap the sum is not even read: the common case costs one load.
        threshold != UNLIMITED && self.used().saturating_add(extra as u64) > threshold
    }

    /// Whether the total is where the policy acts.
    pub fn under_pressure(&self) -> bool {
        self.would_press(0)
    }

    /// A counter for one object's memory under `part`, given back when dropped.
    pub fn charge(self: &Arc<Self>, part: Part) -> Charge {
        Charge {
            accounting: Arc::clone(self),
            part,
            bytes: 0,
        }
    }

    /// Counts a write refused at the cap.
    pub fn note_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes refused at the cap since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Counts live entries evicted.
    pub fn note_evicted(&self, entries: u64) {
        self.evicted.fetch_add(entries, Ordering::Relaxed);
    }

    /// Live entries evicted since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

impl Default for Accounting {
    fn default() -> Self {
        Accounting::unlimited()
    }
}

/// The memory one object holds, counted under one [`Part`] for as long as the charge lives.
#[derive(Debug)]
pub struct Charge {
    accounting: Arc<Accounting>,
    part: Part,
    bytes: usize,
}

impl Charge {
    /// The object now holds `bytes` (say, its buffer's capacity): counts the difference.
    #[inline]
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.accounting.add(self.part, bytes - self.bytes);
        } else if bytes < self.bytes {
            self.accounting.sub(self.part, self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    /// What is counted now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The accounting this charge counts in (to ask whether the cap is reached).
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// The bytes mimalloc (v2, the daemon's allocator) takes for an allocation of `len` bytes:
/// its size classes are exact multiples of 8 up to 64 bytes, then four per doubling (80, 96,
/// 112, 128, 160, ...). Beyond its medium objects (128 KiB) allocations come from the
/// system in whole pages. 0 for 0: an empty value allocates nothing.
pub fn allocated_size(len: usize) -> usize {
    const WORD: usize = 8;
    const MEDIUM_MAX: usize = 128 * 1024;
    const PAGE: usize = 4096;
    if len == 0 {
        return 0;
    }
    if len > MEDIUM_MAX {
        return len.div_ceil(PAGE) * PAGE;
    }
    let words = len.div_ceil(WORD);
    if words <= 8 {
        return words * WORD;
    }
    // Four classes between 2^b and 2^(b+1) words: the step is 2^(b-2) words.
    let b = usize::BITS - 1 - (words - 1).leading_zeros();
    let step = 1usize << (b - 2);
    words.div_ceil(step) * step * WORD
}

/// The process's resident set (`VmRSS`), if it can be read (Linux).
pub fn resident_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The default cap: this share of the memory the process may use.
pub const DEFAULT_SHARE_PERCENT: u64 = 75;

/// The default `limits.max_memory`: [`DEFAULT_SHARE_PERCENT`] of the container's memory
/// limit (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`) when there is one, else of
/// the machine's memory (`MemTotal` in `/proc/meminfo`). The remaining quarter is room for
/// what the accounting does not see: the allocator's partly used pages, the runtime, thread
/// stacks, and the kernel's page cache of the AOF, which a cgroup charges to the container.
/// `None` when neither can be read (not Linux): no cap, and the daemon says so at start.
pub fn default_limit() -> Option<u64> {
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    // "max" (v2) means no limit; v1 says so with a huge number instead.
    .filter_map(|text| text.trim().parse::<u64>().ok())
    .find(|&bytes| bytes < 1 << 60);
    let total = cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })?;
    Some(total / 100 * DEFAULT_SHARE_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_mimalloc_classes() {
        assert_eq!(allocated_size(0), 0);
        assert_eq!(allocated_size(1), 8);
        assert_eq!(allocated_size(64), 64);
        assert_eq!(allocated_size(65), 80);
        // A block with a 51-byte key (28 + 51): the 80-byte class, as raw/slot.rs says.
        assert_eq!(allocated_size(79), 80);
        assert_eq!(allocated_size(81), 96);
        assert_eq!(allocated_size(129), 160);
        assert_eq!(allocated_size(1024), 1024);
        // 1,099 bytes take 1,280 from mimalloc (raw/slot.rs).
        assert_eq!(allocated_size(1099), 1280);
        assert_eq!(allocated_size(1 << 20), 1 << 20);
        assert_eq!(allocated_size((1 << 20) + 1), (1 << 20) + 4096);
    }

    #[test]
    fn charges_follow_their_object_and_are_given_back() {
        let accounting = Arc::new(Accounting::unlimited());
        accounting.set_limit(Some(1000), Policy::RefuseNew);
        let mut charge = accounting.charge(Part::Connections);
        charge.set(600);
        accounting.add(Part::Entries, 300);
        assert_eq!(accounting.used(), 900);
        assert!(!accounting.over_limit());
        assert!(accounting.would_exceed(101));
        charge.set(800);
        assert!(accounting.over_limit());
        charge.set(100);
        assert_eq!(accounting.used_by(Part::Connections), 100);
        drop(charge);
        assert_eq!(accounting.used(), 300);
        accounting.sub(Part::Entries, 300);
        assert_eq!(accounting.used(), 0);
    }

    #[test]
    fn eviction_acts_ahead_of_the_cap_and_refusal_at_it() {
        let accounting = Accounting::unlimited();
        accounting.set_limit(Some(3200), Policy::EvictSoonestExpiring);
        accounting.add(Part::Entries, 3100);
        // Eviction starts 1/32 under the cap; writes are refused only past the cap.
        assert!(!accounting.under_pressure());
        assert!(accounting.would_press(1));
        assert!(!accounting.would_exceed(100));
        assert!(accounting.would_exceed(101));
        accounting.set_limit(Some(3200), Policy::RefuseNew);
        assert!(!accounting.would_press(100));
        assert!(accounting.would_press(101));
    }

    #[test]
    fn no_limit_is_never_exceeded() {
        let accounting = Accounting::unlimited();
        accounting.add(Part::Entries, usize::MAX / 4);
        assert!(!accounting.over_limit());
        assert_eq!(accounting.limit(), None);
    }
}
