//! Everything that touches the store's raw memory, at once: readers, writers (every kind of
//! SET, TOUCH, DEL, GETDEL, EXPIREAT, the odd FLUSH, and the session operations: SET with an
//! owner, an absolute deadline and a per-owner limit, rotation to another key, listing and
//! ending an owner's sessions), the expiry sweep, batch prefetching,
//! and `SCAN` and snapshot walks, all on one `Store` over a small key space with TTLs of a
//! few milliseconds, so that entries expire, are reclaimed and are created again under every
//! other operation. The `unsafe` code in `store::raw` is sound only if the shard locks keep
//! these apart; this test is where a mistake there would show, as a torn or foreign value,
//! an expired entry returned, a version going backwards, accounting that no longer adds up,
//! or (under valgrind) a read of freed memory.
//!
//! Invariants checked while running:
//! - a value read (GET, GET+TOUCH, GETDEL, the previous entry of a SET, a snapshot walk) is
//!   whole and belongs to its key: every value is filled with a byte derived from the key
//!   and the value's length;
//! - no expired entry is returned: a hit's remaining TTL is above zero (and no more than the
//!   longest TTL written plus the operation's own duration), and a snapshot walk only sees
//!   deadlines after the walk started;
//! - versions of one key, as one thread sees them, never go backwards, and each of its own
//!   successful writes gets a version above every one it saw before;
//!
//! and once every thread has stopped:
//! - no version was handed out twice, and none above `last_version`;
//! - `len` and the payload in `memory_estimate` equal what the entries still held add up to;
//! - after everything has expired, one sweep cycle leaves the store empty, at zero bytes.
//!
//! `SESSIOND_STRESS_OPS` sets the operations per reader and writer thread (default 100,000,
//! about two seconds in a debug build). Two tools see what the assertions cannot:
//!
//! - valgrind's memcheck finds reads of freed or uninitialized memory and leaks. It runs the
//!   threads one at a time, so it rarely sees a race itself; 30,000 operations take about 15 s:
//!
//!   ```text
//!   SESSIOND_STRESS_OPS=30000 valgrind --error-exitcode=1 --leak-check=full \
//!       --errors-for-leak-kinds=definite,indirect \
//!       target/debug/deps/store_stress-<hash> --test-threads=1
//!   ```
//!
//!   (`--errors-for-leak-kinds`: the test harness leaves its main thread's handle "possibly
//!   lost" at exit.)
//! - ThreadSanitizer finds the races themselves: with the shard lock left out of one walk, it
//!   reports dozens, in hashbrown's control bytes and the slots' blocks. Without
//!   `-Zbuild-std` the standard library is not instrumented, and the one report in the test
//!   harness's own channel (`test::event::CompletedTest`) is a false positive:
//!
//!   ```text
//!   RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" \
//!       cargo +nightly test --target x86_64-unknown-linux-gnu -p sessiond \
//!       --test store_stress -- --test-threads=1
//!   ```
//!
//! - Miri checks the aliasing rules as well (a `&` to a slot's block while a `SlotMut` writes
//!   it, say) and finds races of its own; 200 operations take about ten minutes:
//!
//!   ```text
//!   SESSIOND_STRESS_OPS=200 MIRIFLAGS=-Zmiri-disable-isolation \
//!       cargo +nightly miri test -p sessiond --test store_stress
//!   ```
//!
//! helgrind is no use here: dashmap's locks and the standard library's are built on atomics
//! it does not model, so it reports every access to the map.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use sessiond::clock::Clock;
use sessiond::store::sweep::SweepCursor;
use sessiond::store::{
    Expiry, LimitPolicy, OwnerLimit, RotateOutcome, SessionOptions, SessionSetOutcome,
    ENTRY_OVERHEAD_BYTES,
};
use sessiond::Store;
use sessiond_proto::command::{DelOutcome, Entry, GetReply, SetMode, SetOutcome, TouchReply};

/// Keys in play. Most operations go to the first `HOT_KEYS`, so that threads meet on the
/// same entries; the rest spread over the shards, so that tables hold several entries and
/// grow.
const KEYS: usize = 2048;
const HOT_KEYS: usize = 16;
/// TTLs are 1 to `MAX_TTL_MS` milliseconds.
const MAX_TTL_MS: u64 = 8;
/// Value lengths written: empty, tiny, the same length twice in a row (overwritten in place)
/// and larger ones (a new allocation).
const VALUE_LENS: [usize; 7] = [0, 1, 8, 8, 64, 200, 1024];
const WRITERS: usize = 3;
const READERS: usize = 2;

fn ops_per_thread() -> u64 {
    std::env::var("SESSIOND_STRESS_OPS")
        .ok()
        .and_then(|ops| ops.parse().ok())
        .unwrap_or(100_000)
}

/// Key `i`. Every 17th key is long, so blocks of several sizes are allocated and freed.
fn key(i: usize) -> Vec<u8> {
    if i.is_multiple_of(17) {
        format!("session:{i:0>300}").into_bytes()
    } else {
        format!("session:{i}").into_bytes()
    }
}

/// The index of a key `key` made, if it is one.
fn key_index(key: &[u8]) -> Option<usize> {
    let digits = std::str::from_utf8(key.strip_prefix(b"session:")?).ok()?;
    let i: usize = digits.parse().ok()?;
    (i < KEYS && self::key(i) == key).then_some(i)
}

/// The byte every value of `len` bytes under key `i` is filled with.
fn fill(i: usize, len: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (len as u8) ^ 0x5a
}

fn value(i: usize, len: usize) -> Vec<u8> {
    vec![fill(i, len); len]
}

/// Panics unless `value` is a whole value written under key `i`.
fn check_value(i: usize, value: &[u8]) {
    assert!(
        VALUE_LENS.contains(&value.len()),
        "key {i}: value of {} bytes, which no writer wrote",
        value.len()
    );
    let expected = fill(i, value.len());
    if let Some(at) = value.iter().position(|&b| b != expected) {
        panic!(
            "key {i}: byte {at} of a {}-byte value is not key {i}'s",
            value.len()
        );
    }
}

/// A small xorshift generator: the test needs cheap, varied choices, not good randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A key index: half of the time a hot key.
    fn key(&mut self) -> usize {
        if self.below(2) == 0 {
            self.below(HOT_KEYS as u64) as usize
        } else {
            self.below(KEYS as u64) as usize
        }
    }

    fn ttl(&mut self) -> u64 {
        1 + self.below(MAX_TTL_MS)
    }

    fn value_len(&mut self) -> usize {
        VALUE_LENS[self.below(VALUE_LENS.len() as u64) as usize]
    }
}

/// What one thread has seen: the latest version of each key, and the versions its own writes
/// were given.
struct Seen<'a> {
    store: &'a Store,
    versions: Vec<u64>,
    written: Vec<u64>,
    /// The clock when the current operation started.
    started_ms: u64,
}

impl<'a> Seen<'a> {
    fn new(store: &'a Store) -> Seen<'a> {
        Seen {
            store,
            versions: vec![0; KEYS],
            written: Vec::new(),
            started_ms: 0,
        }
    }

    /// Notes the time before an operation, which bounds the TTLs it may return.
    fn start(&mut self) {
        self.started_ms = self.store.clock().now_ms();
    }

    /// A version read for key `i`: never older than one seen before.
    fn read(&mut self, i: usize, version: u64) {
        assert!(
            version >= self.versions[i],
            "key {i}: read version {version} after {}",
            self.versions[i]
        );
        self.versions[i] = version;
    }

    /// A version this thread's write to key `i` was given: newer than any seen before.
    fn wrote(&mut self, i: usize, outcome: SetOutcome) {
        match outcome {
            SetOutcome::Stored { version } => {
                assert!(
                    version > self.versions[i],
                    "key {i}: wrote version {version} after seeing {}",
                    self.versions[i]
                );
                self.versions[i] = version;
                self.written.push(version);
            }
            SetOutcome::VersionMismatch { current } => self.read(i, current),
            SetOutcome::Exists | SetOutcome::NotFound => {}
        }
    }

    /// An entry returned for key `i` by the operation since `start`. It must be live: at
    /// least 1 ms to live. And no more than `MAX_TTL_MS` plus the operation's duration: the
    /// operation read the clock (at `now >= started_ms`) before taking its lock, and the
    /// deadline it found was set by a write that read the clock before this operation ended,
    /// so `deadline - now <= ended + MAX_TTL_MS - started_ms`. A deadline read from torn or
    /// freed memory would be far off.
    fn entry(&mut self, i: usize, entry: &Entry) {
        check_value(i, &entry.value);
        let most = MAX_TTL_MS + (self.store.clock().now_ms() - self.started_ms);
        assert!(
            (1..=most).contains(&entry.ttl_ms),
            "key {i}: returned with {} ms to live, not 1 to {most}",
            entry.ttl_ms
        );
        self.read(i, entry.version);
    }

    fn reply(&mut self, i: usize, reply: &GetReply) {
        if let GetReply::Hit(entry) = reply {
            self.entry(i, entry);
        }
    }
}

fn writer(store: &Store, seed: u64, ops: u64) -> Vec<u64> {
    let mut rng = Rng(seed);
    let mut seen = Seen::new(store);
    for _ in 0..ops {
        seen.start();
        let i = rng.key();
        let key = key(i);
        let value = value(i, rng.value_len());
        let ttl = rng.ttl();
        match rng.below(110) {
            100..=109 => session_op(store, &mut rng, &mut seen, i, ttl, &value),
            0..=29 => seen.wrote(i, store.set(&key, &value, ttl, SetMode::Upsert)),
            30..=39 => seen.wrote(i, store.set(&key, &value, ttl, SetMode::CreateOnly)),
            40..=44 => seen.wrote(i, store.set(&key, &value, ttl, SetMode::UpdateOnly)),
            45..=54 => {
                let expected = seen.versions[i];
                seen.wrote(
                    i,
                    store.set(&key, &value, ttl, SetMode::IfVersion(expected)),
                );
            }
            55..=59 => {
                let (outcome, previous) = store.set_returning_previous(
                    &key,
                    &value,
                    Expiry::KeepOr(ttl),
                    SetMode::Upsert,
                );
                // The previous entry was read before the write was given its version.
                if let Some(previous) = previous {
                    seen.entry(i, &previous);
                }
                seen.wrote(i, outcome);
            }
            60..=74 => {
                if let TouchReply::Touched { version } = store.touch(&key, ttl) {
                    seen.read(i, version);
                }
            }
            75..=84 => {
                let reply = store.get(&key, Some(ttl));
                seen.reply(i, &reply);
            }
            85..=91 => match store.del(&key, None) {
                DelOutcome::VersionMismatch { .. } => panic!("key {i}: DEL without a version"),
                DelOutcome::Deleted | DelOutcome::NotFound => {}
            },
            92..=94 => {
                if let DelOutcome::VersionMismatch { current } =
                    store.del(&key, Some(seen.versions[i]))
                {
                    seen.read(i, current);
                }
            }
            95..=97 => {
                let reply = store.getdel(&key);
                seen.reply(i, &reply);
            }
            98 => {
                // A deadline in the past removes the key, one in the future moves it.
                let now = store.clock().now_ms();
                let at = if rng.below(2) == 0 {
                    now - 1
                } else {
                    now + ttl
                };
                store.expire_at(&key, at);
            }
            _ => {
                // FLUSH, rarely: every entry at once, under every shard's lock in turn.
                if rng.below(50) == 0 {
                    store.clear();
                }
            }
        }
    }
    seen.written
}

/// The owner of key `i` in the session operations: eight owners, so that their sessions
/// spread over many shards.
fn owner_of(i: usize) -> Vec<u8> {
    format!("user:{}", i % 8).into_bytes()
}

/// One session operation on key `i` (see the module docs).
fn session_op(store: &Store, rng: &mut Rng, seen: &mut Seen<'_>, i: usize, ttl: u64, value: &[u8]) {
    let owner = owner_of(i);
    match rng.below(10) {
        0..=3 => {
            let now = store.clock().now_ms();
            let options = SessionOptions {
                owner: Some(&owner),
                absolute_deadline: (rng.below(2) == 0).then(|| now + 1 + rng.below(MAX_TTL_MS)),
                owner_limit: (rng.below(2) == 0).then(|| OwnerLimit {
                    max: 1 + rng.below(3) as u32,
                    policy: if rng.below(2) == 0 {
                        LimitPolicy::Refuse
                    } else {
                        LimitPolicy::EndLeastRecentlyUsed
                    },
                }),
            };
            let outcome = store
                .set_session(&key(i), value, Expiry::In(ttl), SetMode::Upsert, &options)
                .expect("no memory limit, a valid owner and limit");
            match outcome {
                SessionSetOutcome::Stored { version, ended } => {
                    seen.wrote(i, SetOutcome::Stored { version });
                    for ended in ended {
                        assert!(key_index(&ended).is_some(), "ended a key never written");
                    }
                }
                SessionSetOutcome::VersionMismatch { current } => seen.read(i, current),
                _ => {}
            }
        }
        4..=6 => {
            // The same fill byte at both keys (`fill` depends on `i % 256`), so a moved
            // value is still a whole value of its new key.
            let j = (i + 256) % KEYS;
            let bind = (rng.below(2) == 0).then_some((&owner[..], None));
            let if_version = (rng.below(2) == 0).then_some(seen.versions[i]);
            match store.rotate(&key(i), &key(j), if_version, bind) {
                Ok(RotateOutcome::Rotated { version, .. }) => {
                    seen.wrote(j, SetOutcome::Stored { version })
                }
                Ok(RotateOutcome::VersionMismatch { current }) => seen.read(i, current),
                Ok(_) => {}
                Err(e) => panic!("key {i}: rotation refused: {e}"),
            }
        }
        7..=8 => {
            for session in store.sessions_of(&owner) {
                let listed = key_index(&session.key).expect("a listed key was written");
                assert_eq!(
                    owner_of(listed),
                    owner,
                    "key {listed} listed under another owner"
                );
                assert!(
                    session.expires_at_ms > seen.started_ms,
                    "key {listed}: listed after its deadline"
                );
                assert!(session
                    .absolute_deadline_ms
                    .is_none_or(|at| session.expires_at_ms <= at));
                seen.read(listed, session.version);
            }
        }
        _ => {
            let except = (rng.below(2) == 0).then(|| key(i));
            store.end_all(&owner, except.as_deref());
        }
    }
}

fn reader(store: &Store, seed: u64, ops: u64) {
    let mut rng = Rng(seed);
    let mut seen = Seen::new(store);
    for _ in 0..ops {
        seen.start();
        let i = rng.key();
        let reply = store.get(&key(i), None);
        seen.reply(i, &reply);
    }
}

/// Sets the flag when dropped, so that the background threads stop even when a reader or
/// writer panicked (the scope would otherwise wait for them forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` until `stop` is set; returns how many times it ran.
fn until(stop: &AtomicBool, mut f: impl FnMut()) -> u64 {
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        f();
        rounds += 1;
    }
    rounds
}

fn sweeper(store: &Store, stop: &AtomicBool) -> u64 {
    let mut cursor = SweepCursor::default();
    let mut reclaimed = 0;
    until(stop, || {
        reclaimed += store
            .sweep(&mut cursor, Duration::from_micros(200))
            .reclaimed;
    });
    reclaimed
}

fn prefetcher(store: &Store, stop: &AtomicBool) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    until(stop, || {
        let count = 2 + rng.below(40) as usize;
        let keys: Vec<Vec<u8>> = (0..count).map(|_| key(rng.key())).collect();
        store.prefetch(keys.iter().map(Vec::as_slice));
    })
}

/// Alternates a full `SCAN` with a snapshot walk over every shard.
fn walker(store: &Store, stop: &AtomicBool) -> u64 {
    until(stop, || {
        let mut cursor = 0;
        loop {
            let (next, keys) = store.scan(cursor, 10, |_| true);
            for key in keys {
                assert!(
                    key_index(&key).is_some(),
                    "SCAN returned a key nobody wrote"
                );
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let started = store.clock().now_ms();
        for shard in 0..store.shard_count() {
            store.visit_live_in_shard(shard, |key, value, expires_at_ms, version| {
                let i = key_index(key).expect("a snapshot entry's key is one nobody wrote");
                check_value(i, value);
                assert!(
                    expires_at_ms > started,
                    "key {i}: snapshot of an expired entry"
                );
                assert!(version > 0);
            });
        }
    })
}

#[test]
fn readers_writers_sweep_prefetch_and_walks_at_once_keep_every_invariant() {
    // tokio's clock (the real one here, outside a runtime) rather than `CLOCK_BOOTTIME`, which
    // Miri does not provide: what is under test is the store's memory, not the clock.
    let store = Store::with_parts(Clock::following_tokio(), None);
    let ops = ops_per_thread();
    let stop = AtomicBool::new(false);
    let (written, background) = thread::scope(|scope| {
        let background = [sweeper, prefetcher, walker].map(|task| {
            let (store, stop) = (&store, &stop);
            scope.spawn(move || task(store, stop))
        });
        let stop_background = StopOnDrop(&stop);
        let writers: Vec<_> = (0..WRITERS as u64)
            .map(|n| {
                let store = &store;
                scope.spawn(move || writer(store, 0x1234_5678 + n * 7919, ops))
            })
            .collect();
        let readers: Vec<_> = (0..READERS as u64)
            .map(|n| {
                let store = &store;
                scope.spawn(move || reader(store, 0xabcd_ef01 + n * 104_729, ops))
            })
            .collect();
        let written: Vec<Vec<u64>> = writers
            .into_iter()
            .map(|w| w.join().expect("a writer panicked"))
            .collect();
        for r in readers {
            r.join().expect("a reader panicked");
        }
        drop(stop_background);
        let background = background.map(|b| b.join().expect("a background task panicked"));
        (written, background)
    });
    let [reclaimed, prefetches, walks] = background;
    eprintln!(
        "{ops} ops per thread; sweep reclaimed {reclaimed}, {prefetches} prefetch batches, \
         {walks} walks, {} writes stored",
        written.iter().map(Vec::len).sum::<usize>()
    );
    assert!(reclaimed > 0 && prefetches > 0 && walks > 0);

    // No version was handed out twice, and none beyond the counter.
    let mut versions = HashSet::new();
    for version in written.into_iter().flatten() {
        assert!(
            versions.insert(version),
            "version {version} handed out twice"
        );
        assert!(version <= store.last_version());
    }

    // A read of every key removes the expired ones it finds; what remains is exactly the
    // hits, and the accounting must agree with them.
    let (mut held, mut payload) = (0u64, 0u64);
    for i in 0..KEYS {
        let key = key(i);
        if let GetReply::Hit(entry) = store.get(&key, None) {
            check_value(i, &entry.value);
            held += 1;
            payload += (key.len() + entry.value.len()) as u64;
        }
    }
    assert_eq!(store.len() as u64, held);
    assert_eq!(
        store.memory_estimate(),
        payload + held * ENTRY_OVERHEAD_BYTES
    );

    // Once all of it has expired, one cycle of the sweep reclaims everything.
    thread::sleep(Duration::from_millis(MAX_TTL_MS + 2));
    let mut cursor = SweepCursor::default();
    while !store
        .sweep(&mut cursor, Duration::from_secs(1))
        .completed_cycle
    {}
    assert_eq!(store.len(), 0);
    assert_eq!(store.memory_estimate(), 0);
}
