//! Per-request counters and latency histograms, recorded without locks or shared writes.
//!
//! Every request is counted by protocol, command and outcome, and its latency goes into a
//! histogram per protocol and command. At hundreds of thousands of requests a second on a
//! few worker threads, the cost that matters is cache lines moving between cores: a counter
//! every thread adds to is a line every core must own in turn. So each thread records into a
//! shard of its own ([`Shard`]), found through a thread-local, and only that thread ever
//! writes it: an increment is a relaxed load and store of the thread's own line, with no
//! atomic read-modify-write and no lock. A scrape adds the shards up.
//!
//! Labels are resolved before the hot path: a command is a small index the protocol already
//! knows (the native opcode, the position in RESP's command table) and an outcome is an
//! enum, so recording is array indexing, never a lookup of label strings.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::histogram::{self, Snapshot, REQUEST_BOUNDS_NS};

/// Command slots of the native protocol: one per opcode below 31, and the last for any other
/// byte (and for frames that could not be read at all).
pub const NATIVE_SLOTS: usize = 32;
/// Command slots of RESP: one per entry of its command table, and the last for unknown
/// commands.
pub const RESP_SLOTS: usize = 64;
const SLOTS: usize = NATIVE_SLOTS + RESP_SLOTS;
const BUCKETS: usize = REQUEST_BOUNDS_NS.len() + 1;

/// The protocol a request came over, the `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The binary protocol (`proto/PROTOCOL.md`).
    Native,
    /// Redis's protocol.
    Resp,
}

impl Protocol {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Resp => "resp",
        }
    }

    /// Where its slots start, and how many it has.
    fn slots(self) -> (usize, usize) {
        match self {
            Protocol::Native => (0, NATIVE_SLOTS),
            Protocol::Resp => (NATIVE_SLOTS, RESP_SLOTS),
        }
    }
}

/// How a request ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, for commands that neither find nor store (PING, HELLO, STATS, ...).
    Ok,
    /// A read (or a touch) found a live session.
    Hit,
    /// A read, touch or conditional command found none.
    Miss,
    /// A write stored its session.
    Stored,
    /// A create-only write found the session already there.
    Exists,
    /// A versioned write or delete found another version.
    VersionMismatch,
    /// A delete removed a session.
    Deleted,
    /// Not run: not authenticated, or not allowed for the user's role.
    Denied,
    /// Not run: the memory limit, a failed append-only file, or shutdown.
    Refused,
    /// A login refused because its owner has `max_sessions_per_owner` sessions.
    OwnerLimit,
    /// A malformed or invalid request.
    Error,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 11] = [
        Outcome::Ok,
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Stored,
        Outcome::Exists,
        Outcome::VersionMismatch,
        Outcome::Deleted,
        Outcome::Denied,
        Outcome::Refused,
        Outcome::OwnerLimit,
        Outcome::Error,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stored => "stored",
            Outcome::Exists => "exists",
            Outcome::VersionMismatch => "version_mismatch",
            Outcome::Deleted => "deleted",
            Outcome::Denied => "denied",
            Outcome::Refused => "refused",
            Outcome::OwnerLimit => "owner_limit",
            Outcome::Error => "error",
        }
    }
}

const OUTCOMES: usize = Outcome::ALL.len();

/// What a protocol says about a request it answered: everything the timing code needs to
/// record it, resolved to indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTag {
    /// The protocol.
    pub protocol: Protocol,
    /// The command's slot within the protocol (see [`RequestTag::native`],
    /// [`RequestTag::resp`]).
    slot: u8,
    /// How it ended.
    pub outcome: Outcome,
    /// The command's name as the protocol spells it, for the slow log.
    pub command: &'static str,
    /// The length of its keys, bytes (never the key: it is a credential).
    pub key_len: usize,
}

impl RequestTag {
    /// A native request with opcode byte `opcode`.
    pub fn native(opcode: u8, command: &'static str, outcome: Outcome, key_len: usize) -> Self {
        let slot = usize::from(opcode).min(NATIVE_SLOTS - 1) as u8;
        RequestTag {
            protocol: Protocol::Native,
            slot,
            outcome,
            command,
            key_len,
        }
    }

    /// A RESP request for entry `index` of its command table; `None` for an unknown command.
    pub fn resp(
        index: Option<usize>,
        command: &'static str,
        outcome: Outcome,
        key_len: usize,
    ) -> Self {
        let slot = index.map_or(RESP_SLOTS - 1, |i| i.min(RESP_SLOTS - 1)) as u8;
        RequestTag {
            protocol: Protocol::Resp,
            slot,
            outcome,
            command,
            key_len,
        }
    }

    fn index(self) -> usize {
        self.protocol.slots().0 + usize::from(self.slot)
    }
}

/// One thread's counters. Only its thread writes it (see the module docs), so its atomics
/// are there for the scraping thread to read, not for adding.
#[derive(Debug)]
struct Shard {
    counts: [[AtomicU64; OUTCOMES]; SLOTS],
    buckets: [[AtomicU64; BUCKETS]; SLOTS],
    sums_ns: [AtomicU64; SLOTS],
}

impl Shard {
    fn new() -> Shard {
        Shard {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            sums_ns: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Adds `n` to a counter that only the calling thread writes: a plain load and store, which
/// cannot lose an update because nobody else stores to it.
#[inline]
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

thread_local! {
    /// This thread's shard of each [`Requests`] it has recorded into, by the recorder's id.
    /// Nearly always one entry: one server per process.
    static SHARDS: RefCell<Vec<(u64, Arc<Shard>)>> = const { RefCell::new(Vec::new()) };
}

/// Gives every [`Requests`] its own id, so that a thread's shards of two servers in one
/// process (tests) stay apart.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The per-request counters and histograms of one server.
#[derive(Debug)]
pub struct Requests {
    id: u64,
    /// Every thread's shard, for scrapes. Locked when a thread records its first request and
    /// at each scrape; never on the per-request path.
    shards: Mutex<Vec<Arc<Shard>>>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests::new()
    }
}

impl Requests {
    /// No requests counted yet.
    pub fn new() -> Requests {
        Requests {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
        }
    }

    /// Counts one request that took `ns` nanoseconds.
    ///
    /// Looks the shard up per request rather than once per batch of pipelined requests: a
    /// task may move to another worker thread at any `.await` between two requests, and a
    /// shard must never be written from two threads.
    #[inline]
    pub fn record(&self, tag: RequestTag, ns: u64) {
        let index = tag.index();
        SHARDS.with(|shards| {
            let mut shards = shards.borrow_mut();
            let shard = match shards.iter().position(|(id, _)| *id == self.id) {
                Some(at) => &shards[at].1,
                None => {
                    let shard = Arc::new(Shard::new());
                    self.all_shards().push(shard.clone());
                    shards.push((self.id, shard));
                    &shards[shards.len() - 1].1
                }
            };
            add(&shard.counts[index][tag.outcome as usize], 1);
            add(
                &shard.buckets[index][histogram::bucket(REQUEST_BOUNDS_NS, ns)],
                1,
            );
            add(&shard.sums_ns[index], ns);
        });
    }

    fn all_shards(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every thread's counts added up, per protocol and command slot.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            counts: vec![[0; OUTCOMES]; SLOTS],
            latency: vec![Snapshot::empty(REQUEST_BOUNDS_NS); SLOTS],
        };
        for shard in self.all_shards().iter() {
            for slot in 0..SLOTS {
                for (into, count) in totals.counts[slot].iter_mut().zip(&shard.counts[slot]) {
                    *into += count.load(Ordering::Relaxed);
                }
                let latency = &mut totals.latency[slot];
                for (into, count) in latency.counts.iter_mut().zip(&shard.buckets[slot]) {
                    *into += count.load(Ordering::Relaxed);
                }
                latency.sum_ns += shard.sums_ns[slot].load(Ordering::Relaxed);
            }
        }
        totals
    }
}

/// The counts of every request so far.
#[derive(Debug)]
pub struct Totals {
    counts: Vec<[u64; OUTCOMES]>,
    latency: Vec<Snapshot>,
}

impl Totals {
    /// Each command slot of `protocol` that has served a request: its slot number, its
    /// count per outcome (in [`Outcome::ALL`] order), and its latency histogram.
    pub fn served(&self, protocol: Protocol) -> impl Iterator<Item = (usize, &[u64], &Snapshot)> {
        let (start, len) = protocol.slots();
        (0..len).filter_map(move |slot| {
            let latency = &self.latency[start + slot];
            (latency.count() > 0).then(|| (slot, &self.counts[start + slot][..], latency))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_several_threads_add_up() {
        let requests = Arc::new(Requests::new());
        let get = RequestTag::native(0x02, "GET", Outcome::Hit, 10);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let requests = requests.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        requests.record(get, 7_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        requests.record(
            RequestTag::resp(None, "nosuch", Outcome::Error, 0),
            2_000_000_000,
        );
        let totals = requests.totals();
        let native: Vec<_> = totals.served(Protocol::Native).collect();
        assert_eq!(native.len(), 1);
        let (slot, counts, latency) = native[0];
        assert_eq!(slot, 2);
        assert_eq!(counts[Outcome::Hit as usize], 4000);
        assert_eq!(counts.iter().sum::<u64>(), 4000);
        assert_eq!(latency.counts[1], 4000, "7 µs is in the 10 µs bucket");
        assert_eq!(latency.sum_ns, 4000 * 7_000);
        let resp: Vec<_> = totals.served(Protocol::Resp).collect();
        assert_eq!(resp.len(), 1);
        assert_eq!(resp[0].0, RESP_SLOTS - 1);
        assert_eq!(resp[0].2.counts[REQUEST_BOUNDS_NS.len()], 1);
    }

    #[test]
    fn two_recorders_in_one_thread_stay_apart() {
        let a = Requests::new();
        let b = Requests::new();
        let tag = RequestTag::native(0x01, "PING", Outcome::Ok, 0);
        a.record(tag, 1);
        a.record(tag, 1);
        b.record(tag, 1);
        let count = |r: &Requests| {
            r.totals()
                .served(Protocol::Native)
                .map(|s| s.2.count())
                .sum::<u64>()
        };
        assert_eq!(count(&a), 2);
        assert_eq!(count(&b), 1);
    }
}
