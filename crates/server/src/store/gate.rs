//! Key gates: what makes a transaction atomic with respect to every other command.
//!
//! A single-key command is atomic on its own: it holds its key's shard lock for the few
//! hundred nanoseconds it runs. A transaction (`MULTI`/`EXEC`, a script) runs many commands
//! on several keys and must not let anyone see it half done, nor change its keys between its
//! commands. It cannot hold the map's shard locks across commands (each command takes them
//! itself, and they are not reentrant), so each key also has a *gate*: one of [`GATES`]
//! reader-writer locks, chosen by a hash of the key.
//!
//! - Every public store method that reads or writes a key holds that key's gate shared for
//!   its duration ([`Gates::shared`]): uncontended, that is one atomic add and one subtract.
//! - A transaction holds the gates of all its keys exclusively, taken in index order (so two
//!   transactions cannot deadlock), for its whole run ([`Gates::exclusive`]). The thread
//!   running it is marked ([`Held`]), and the store methods it calls skip the gates it
//!   already holds instead of waiting for themselves.
//! - Work that removes keys on its own schedule (eviction, the per-owner limit) never waits
//!   for a gate: it passes over a key whose gate is taken ([`Gates::is_free`]), since waiting
//!   there, with a shard or owner lock held, could deadlock with the transaction.
//! - "Log out everywhere" takes each session's gate before the owner's lock.
//!
//! Lock order: gates (in index order), then owner locks, then shard locks.
//!
//! Gates are coarser than keys: two keys may share one, which costs a transaction nothing but
//! a little concurrency. Nothing awaits while a gate is held, so `std`'s blocking lock is
//! right here, as it is for the shards. A command that finds its gate taken may wait as long
//! as a script runs (`resp.max_script_time_ms`), so it waits off the async worker
//! ([`off_the_worker`]): only the requests for held keys wait, not every connection the
//! worker serves.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

/// Number of gates. A power of two well above the number of worker threads, so that
/// unrelated transactions rarely share one.
pub(super) const GATES: usize = 1024;

/// The gates of one store.
pub(super) struct Gates {
    locks: Box<[RwLock<()>]>,
    hasher: foldhash::fast::RandomState,
}

/// A gate held shared by one command; `None` inside a transaction that holds it already.
pub(super) type SharedGate<'a> = Option<RwLockReadGuard<'a, ()>>;

impl Gates {
    pub(super) fn new() -> Gates {
        Gates {
            locks: (0..GATES).map(|_| RwLock::new(())).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The gate of `key`.
    pub(super) fn index(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) & (GATES - 1)
    }

    /// Holds `key`'s gate shared, unless this thread is running a transaction of this store
    /// (which holds the gates of its keys, and must not wait for itself).
    #[inline]
    pub(super) fn shared(&self, key: &[u8]) -> SharedGate<'_> {
        if Held::is_running(self) {
            return None;
        }
        Some(read(&self.locks[self.index(key)]))
    }

    /// Holds the gates of two keys shared (a rotation), each once, in index order.
    pub(super) fn shared_pair(&self, a: &[u8], b: &[u8]) -> (SharedGate<'_>, SharedGate<'_>) {
        if Held::is_running(self) {
            return (None, None);
        }
        let (i, j) = (self.index(a), self.index(b));
        let read = |i: usize| Some(read(&self.locks[i]));
        match i.cmp(&j) {
            std::cmp::Ordering::Equal => (read(i), None),
            std::cmp::Ordering::Less => {
                let first = read(i);
                (first, read(j))
            }
            std::cmp::Ordering::Greater => {
                let first = read(j);
                (read(i), first)
            }
        }
    }

    /// Whether no transaction holds `key`'s gate: for removals that must pass over a key
    /// rather than wait (the caller holds a shard or owner lock). A transaction's own keys
    /// are not free either, to itself: it removes them through the store's methods.
    pub(super) fn is_free(&self, key: &[u8]) -> bool {
        self.locks[self.index(key)].try_read().is_ok()
    }

    /// Holds the gates of `keys` exclusively, each once, in index order.
    pub(super) fn exclusive(&self, keys: &[&[u8]]) -> Vec<RwLockWriteGuard<'_, ()>> {
        let mut indexes: Vec<usize> = keys.iter().map(|key| self.index(key)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        self.exclusive_indexes(&indexes)
    }

    /// Holds every gate exclusively (`FLUSHALL`, which removes every key).
    pub(super) fn all(&self) -> Vec<RwLockWriteGuard<'_, ()>> {
        let indexes: Vec<usize> = (0..GATES).collect();
        self.exclusive_indexes(&indexes)
    }

    fn exclusive_indexes(&self, sorted: &[usize]) -> Vec<RwLockWriteGuard<'_, ()>> {
        sorted.iter().map(|&i| write(&self.locks[i])).collect()
    }
}

/// Takes `lock` shared. Uncontended, at once; if a transaction holds it, the wait (as long as
/// a script may run) happens off the async worker, so that the worker's other connections
/// carry on meanwhile.
pub(super) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match lock.try_read() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => {
            off_the_worker(|| lock.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
        }
    }
}

/// Takes `lock` exclusively, waiting off the async worker if it must wait (see [`read`]).
pub(super) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    match lock.try_write() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => off_the_worker(|| {
            lock.write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }),
    }
}

/// Runs `f`, which may block for a while, without holding up the other tasks of the current
/// async worker thread: on a multi-threaded tokio runtime the worker hands its tasks to
/// another thread for the duration (`block_in_place`). Elsewhere (a plain thread, a
/// current-thread runtime) it just runs `f`.
pub(crate) fn off_the_worker<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

thread_local! {
    /// The store (its gates' address) whose transaction this thread is running, if any.
    static RUNNING: RefCell<Option<usize>> = const { RefCell::new(None) };
}

/// Marks the current thread as running a transaction of one store until dropped. A
/// transaction runs synchronously on one thread (nothing in it awaits), so a thread-local
/// mark is exact.
pub(super) struct Held {
    previous: Option<usize>,
}

impl Held {
    pub(super) fn mark(gates: &Gates) -> Held {
        let previous = RUNNING.with(|running| running.replace(Some(Held::id(gates))));
        Held { previous }
    }

    /// Whether the current thread is running a transaction of the store of `gates`.
    #[inline]
    pub(super) fn is_running(gates: &Gates) -> bool {
        RUNNING.with(|running| *running.borrow() == Some(Held::id(gates)))
    }

    fn id(gates: &Gates) -> usize {
        gates as *const Gates as usize
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        RUNNING.with(|running| *running.borrow_mut() = self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_skips_its_own_gates_and_others_wait() {
        let gates = Gates::new();
        let held = gates.exclusive(&[b"a", b"b", b"a"]);
        assert!(!gates.is_free(b"a"));
        {
            let _running = Held::mark(&gates);
            assert!(gates.shared(b"a").is_none());
        }
        // Outside the transaction's thread mark, the gate is taken.
        assert!(!Held::is_running(&gates));
        drop(held);
        assert!(gates.is_free(b"a"));
        assert!(gates.shared(b"a").is_some());
    }

    #[test]
    fn a_pair_on_one_gate_takes_it_once() {
        let gates = Gates::new();
        let a = b"key-a".as_slice();
        // Find a second key on the same gate.
        let b = (0..100_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| gates.index(k) == gates.index(a))
            .expect("some key shares the gate");
        let (first, second) = gates.shared_pair(a, &b);
        assert!(first.is_some() && second.is_none());
    }
}
