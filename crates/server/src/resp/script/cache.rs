//! The script cache: what `EVALSHA` finds by SHA1, shared by every RESP connection.
//!
//! `SCRIPT LOAD` and `EVAL` put a script's source here under the SHA1 of its text, as Redis
//! does, so that a client can send a long script once and then only its 40-digit name.
//! Redis keeps every loaded script until `SCRIPT FLUSH`; a client that sends an endless
//! stream of distinct scripts (a script built with its arguments inlined) then grows the
//! server without bound. Here the cache holds at most `resp.max_cached_scripts` scripts and
//! [`MAX_CACHED_BYTES`] of source, and forgets the least recently used one to make room.
//! A forgotten script costs one round trip: `EVALSHA` answers `NOSCRIPT`, and clients
//! (redis-py's `Script`, phpredis, ioredis) then send `EVAL` with the text, which caches it
//! again.
//!
//! The lock is a `std` mutex: nothing awaits while it is held, and each operation is a hash
//! look-up and at most a few B-tree steps.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

/// The most source text the cache holds, in bytes, whatever the number of scripts: a script
/// may be as long as the largest value, and a thousand of those would be a gigabyte.
pub(crate) const MAX_CACHED_BYTES: usize = 64 * 1024 * 1024;

/// A script's name: the SHA1 of its text, as 40 lower-case hexadecimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Sha([u8; 40]);

impl Sha {
    /// The name of `source`.
    pub(crate) fn of(source: &[u8]) -> Sha {
        let digest = sha1_smol::Sha1::from(source).digest().bytes();
        let mut hex = [0u8; 40];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(digest) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        Sha(hex)
    }

    /// A name as a client sent it: 40 hexadecimal digits, either case (Redis accepts both).
    /// Anything else names no script.
    pub(crate) fn parse(text: &[u8]) -> Option<Sha> {
        let hex: [u8; 40] = text.try_into().ok()?;
        hex.iter()
            .all(u8::is_ascii_hexdigit)
            .then(|| Sha(hex.map(|c| c.to_ascii_lowercase())))
    }

    /// The 40 digits.
    pub(crate) fn as_str(&self) -> &str {
        // Only ever built from ASCII hex digits, above.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The scripts `EVALSHA` can run.
#[derive(Debug)]
pub(crate) struct Cache {
    inner: Mutex<Lru>,
    /// How many times the cache was flushed: a worker thread that compiled scripts under an
    /// older generation drops its compiled functions, so `SCRIPT FLUSH` frees them too.
    generation: AtomicU64,
}

#[derive(Debug)]
struct Lru {
    max_scripts: usize,
    max_bytes: usize,
    /// Each script and the tick of its last use.
    scripts: HashMap<Sha, (Bytes, u64)>,
    /// The same scripts by last use, oldest first.
    by_use: BTreeMap<u64, Sha>,
    bytes: usize,
    tick: u64,
}

impl Cache {
    /// An empty cache that holds at most `max_scripts` scripts.
    pub(crate) fn new(max_scripts: usize) -> Cache {
        Cache::with_byte_limit(max_scripts, MAX_CACHED_BYTES)
    }

    fn with_byte_limit(max_scripts: usize, max_bytes: usize) -> Cache {
        Cache {
            inner: Mutex::new(Lru {
                max_scripts: max_scripts.max(1),
                max_bytes,
                scripts: HashMap::new(),
                by_use: BTreeMap::new(),
                bytes: 0,
                tick: 0,
            }),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // A panic elsewhere while holding the lock leaves a consistent map (every method
        // below changes it in steps that each keep it whole), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `source` under `sha` (its SHA1), forgetting the least recently used scripts
    /// if the cache is full.
    pub(crate) fn insert(&self, sha: Sha, source: Bytes) {
        let mut lru = self.lock();
        lru.touch(&sha);
        if lru.scripts.contains_key(&sha) {
            return;
        }
        lru.bytes += source.len();
        let tick = lru.next_tick();
        lru.scripts.insert(sha, (source, tick));
        lru.by_use.insert(tick, sha);
        while lru.scripts.len() > lru.max_scripts
            || (lru.bytes > lru.max_bytes && lru.scripts.len() > 1)
        {
            let Some((_, oldest)) = lru.by_use.pop_first() else {
                break;
            };
            if let Some((source, _)) = lru.scripts.remove(&oldest) {
                lru.bytes -= source.len();
            }
        }
    }

    /// The source of the script named `sha`, marked as just used.
    pub(crate) fn get(&self, sha: &Sha) -> Option<Bytes> {
        let mut lru = self.lock();
        lru.touch(sha);
        lru.scripts.get(sha).map(|(source, _)| source.clone())
    }

    /// Whether a script named `sha` is cached (`SCRIPT EXISTS` does not count as a use).
    pub(crate) fn contains(&self, sha: &Sha) -> bool {
        self.lock().scripts.contains_key(sha)
    }

    /// Forgets every script (`SCRIPT FLUSH`).
    pub(crate) fn flush(&self) {
        let mut lru = self.lock();
        lru.scripts.clear();
        lru.by_use.clear();
        lru.bytes = 0;
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the cache was flushed.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// How many scripts are cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().scripts.len()
    }
}

impl Lru {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Marks `sha`, if cached, as the most recently used.
    fn touch(&mut self, sha: &Sha) {
        let tick = self.tick + 1;
        if let Some((_, used)) = self.scripts.get_mut(sha) {
            self.by_use.remove(used);
            *used = tick;
            self.by_use.insert(tick, *sha);
            self.tick = tick;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(text: &'static str) -> (Sha, Bytes) {
        (
            Sha::of(text.as_bytes()),
            Bytes::from_static(text.as_bytes()),
        )
    }

    #[test]
    fn sha_is_redis_sha1hex() {
        // `redis-cli SCRIPT LOAD "return 1"` answers this name.
        assert_eq!(
            Sha::of(b"return 1").as_str(),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
        let upper = b"E0E1F9FABFC9D4800C877A703B823AC0578FF8DB";
        assert_eq!(Sha::parse(upper), Some(Sha::of(b"return 1")));
        assert_eq!(Sha::parse(b"e0e1"), None);
        assert_eq!(
            Sha::parse(b"g0e1f9fabfc9d4800c877a703b823ac0578ff8db"),
            None
        );
    }

    #[test]
    fn holds_at_most_max_scripts_and_forgets_the_least_recently_used() {
        let cache = Cache::new(2);
        let (a, b, c) = (
            script("return 'a'"),
            script("return 'b'"),
            script("return 'c'"),
        );
        cache.insert(a.0, a.1.clone());
        cache.insert(b.0, b.1.clone());
        // Using `a` makes `b` the oldest.
        assert_eq!(cache.get(&a.0), Some(a.1.clone()));
        cache.insert(c.0, c.1.clone());
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(&a.0));
        assert!(!cache.contains(&b.0));
        assert!(cache.contains(&c.0));
        // Inserting a cached script again is a use, not a second copy.
        cache.insert(a.0, a.1);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn holds_at_most_max_bytes_but_always_the_newest_script() {
        let cache = Cache::with_byte_limit(100, 20);
        let (a, b) = (script("return 'aaaaaaaa'"), script("return 'bbbbbbbb'"));
        cache.insert(a.0, a.1);
        cache.insert(b.0, b.1);
        assert!(!cache.contains(&a.0));
        assert!(cache.contains(&b.0));
        let big = script("return 'a script longer than the whole budget'");
        cache.insert(big.0, big.1);
        assert!(cache.contains(&big.0));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn flush_forgets_everything_and_bumps_the_generation() {
        let cache = Cache::new(10);
        let a = script("return 1");
        cache.insert(a.0, a.1);
        let before = cache.generation();
        cache.flush();
        assert!(!cache.contains(&a.0));
        assert_eq!(cache.get(&a.0), None);
        assert_eq!(cache.generation(), before + 1);
    }
}
