//! The owner index: for each owner, the keys of the sessions bound to it.
//!
//! # What it promises
//!
//! Every live session bound to owner X has its key in X's set, at every moment. The set may
//! also hold keys that are not X's live sessions: those of expired entries still in the map
//! (until the sweep or an access removes them), and, for a short while, keys deleted,
//! evicted, rotated away or bound to another owner: every operation that reads the set
//! (`sessions_of`, `end_all`, the per-owner limit) checks each key against the map under
//! X's lock and drops the ones that are not X's live sessions, so what a client observes is
//! exactly "the live sessions whose owner is X". A key that leaves the map is also dropped
//! right after its removal (the store calls `Store::unindex`), so the set does not keep the
//! keys of sessions nobody asks about again: Spring Session's principal index leaked
//! exactly those (spring-session #1715).
//!
//! # Lock order
//!
//! Owner lock first, shard locks second, never the other way round. The owner operations
//! (binding, listing, ending, rotation into an owner, the limit) take the owner's lock and
//! then, one key at a time, shard locks. Operations that start from a shard (delete, expiry,
//! eviction, overwriting an expired session) never take an owner lock while they hold a
//! shard lock: they release it, then clean the index. That is why the set is a superset for
//! a moment rather than exact, and why a key is added to it *before* the session is bound
//! (so the superset holds at every moment) and removed only after checking, under the owner
//! lock, that it is not the owner's live session.
//!
//! Owners are spread over [`OWNER_SHARDS`] mutexes by hash; at most one is held at a time,
//! so they cannot deadlock with each other. A `std` mutex is right here for the reason the
//! store's module docs give for the shard locks: nothing awaits while one is held.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::memory::{allocated_size, Accounting, Part};

/// Number of owner-index mutexes. Owner operations are rarer than reads and writes of
/// sessions, and each holds its lock for one owner's keys only.
const OWNER_SHARDS: usize = 256;

/// What the index holds per key beyond the key's own allocation: its `Box` in a set bucket
/// (16 bytes) and the set's control byte and spare buckets at its usual load (about 8).
const KEY_OVERHEAD: usize = 24;
/// What it holds per owner beyond the owner's bytes: the owner's `Box` and the key set in a
/// map bucket (16 + 48 bytes) and the map's spare buckets (about 16).
const OWNER_OVERHEAD: usize = 80;

type Keys = HashSet<Box<[u8]>, foldhash::fast::RandomState>;
type Owners = HashMap<Box<[u8]>, Keys, foldhash::fast::RandomState>;

/// The index, sharded by owner.
pub(super) struct OwnerIndex {
    shards: Box<[Mutex<Owners>]>,
    hasher: foldhash::fast::RandomState,
    /// The server's memory accounting: the index counts under [`Part::Entries`], since it
    /// grows and shrinks with the sessions bound to owners.
    memory: Arc<Accounting>,
}

impl OwnerIndex {
    pub(super) fn new(memory: Arc<Accounting>) -> OwnerIndex {
        OwnerIndex {
            shards: (0..OWNER_SHARDS)
                .map(|_| Mutex::new(Owners::default()))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            memory,
        }
    }

    /// Locks `owner`'s part of the index. While the guard lives, no other thread changes
    /// which keys are bound to `owner` through the index.
    pub(super) fn lock<'a>(&'a self, owner: &'a [u8]) -> OwnerGuard<'a> {
        let shard = self.hasher.hash_one(owner) as usize % self.shards.len();
        let owners = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        OwnerGuard {
            owners,
            owner,
            memory: &self.memory,
        }
    }

    /// Number of owners with at least one key in the index.
    pub(super) fn owners(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |owners| owners.len()))
            .sum()
    }
}

/// One owner's keys, locked.
pub(super) struct OwnerGuard<'a> {
    owners: MutexGuard<'a, Owners>,
    owner: &'a [u8],
    memory: &'a Accounting,
}

impl OwnerGuard<'_> {
    /// The owner this guard is for.
    pub(super) fn owner(&self) -> &[u8] {
        self.owner
    }

    /// A copy of the keys in the owner's set (candidates: the caller checks each).
    pub(super) fn keys(&self) -> Vec<Box<[u8]>> {
        self.owners
            .get(self.owner)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many keys besides `key` the owner's set holds: an upper bound on its other live
    /// sessions (the set may still hold keys whose entries expired), so that a limit check
    /// can skip the walk of [`OwnerGuard::keys`] when even this is below the limit, which is
    /// every login of an owner with fewer sessions than the limit.
    pub(super) fn others_than(&self, key: &[u8]) -> usize {
        self.owners
            .get(self.owner)
            .map_or(0, |keys| keys.len() - usize::from(keys.contains(key)))
    }

    /// Whether `key` is in the owner's set.
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.owners
            .get(self.owner)
            .is_some_and(|keys| keys.contains(key))
    }

    /// Adds `key` to the owner's set; returns whether it was absent.
    pub(super) fn add(&mut self, key: &[u8]) -> bool {
        if self.contains(key) {
            return false;
        }
        if !self.owners.contains_key(self.owner) {
            self.memory.add(Part::Entries, owner_bytes(self.owner));
        }
        self.memory.add(Part::Entries, key_bytes(key));
        self.owners
            .entry(Box::from(self.owner))
            .or_default()
            .insert(Box::from(key))
    }

    /// Removes `key` from the owner's set, and the owner from the index once its set is
    /// empty (so an owner whose sessions are all gone costs nothing).
    pub(super) fn remove(&mut self, key: &[u8]) {
        if let Some(keys) = self.owners.get_mut(self.owner) {
            if keys.remove(key) {
                self.memory.sub(Part::Entries, key_bytes(key));
            }
            if keys.is_empty() {
                self.owners.remove(self.owner);
                self.memory.sub(Part::Entries, owner_bytes(self.owner));
            }
        }
    }
}

/// What one key in an owner's set takes from the allocator.
fn key_bytes(key: &[u8]) -> usize {
    allocated_size(key.len()) + KEY_OVERHEAD
}

/// What one owner's entry takes, beside its keys.
fn owner_bytes(owner: &[u8]) -> usize {
    allocated_size(owner.len()) + OWNER_OVERHEAD
}
