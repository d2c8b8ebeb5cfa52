//! The keys a migration-window client has found moved: absent from their old node and
//! present on their new one.
//!
//! In the window, a request for a key that may still be on its old node asks that node
//! first (`cluster.rs`), so a session the rebalancer has already moved costs two round
//! trips per request until the previous topology is dropped. But once its old node no
//! longer holds a key, nothing puts it back there: the rebalancer only deletes on old
//! nodes, a window client creates keys on their new node only and updates an old node only
//! where it holds the key, and an upsert goes to the new node when the old one lacks the
//! key. So for a key seen missing on its old node and present on its new one, asking the
//! old node again would only ever answer "not found": it is skipped. (That rests on every
//! instance of the application being in the window, which the rebalance requires anyway.)
//!
//! The memory is bounded: at most [`CAPACITY`] keys, the oldest forgotten first. A
//! forgotten key costs two round trips again until it is seen moved once more.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// Keys remembered per window client. Session keys are about 60 bytes, so this is a few
/// MiB at most, and only while the window is open; enough for the sessions in active use
/// on a node's worth of moved keys in the measured deployment (docs/SCALING.md).
pub(super) const CAPACITY: usize = 65_536;

/// A bounded set of keys, oldest out first.
pub(super) struct MovedKeys {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashSet<Arc<[u8]>>,
    order: VecDeque<Arc<[u8]>>,
}

impl MovedKeys {
    pub(super) fn new(capacity: usize) -> MovedKeys {
        MovedKeys {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics under this lock; a poisoned one still holds a valid set.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `key` was found moved (and is still remembered).
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.lock().keys.contains(key)
    }

    /// Remembers that `key` was found moved, forgetting the oldest key if full.
    pub(super) fn insert(&self, key: &[u8]) {
        let mut inner = self.lock();
        if inner.keys.contains(key) {
            return;
        }
        if inner.order.len() >= self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.keys.remove(&oldest);
            }
        }
        let key: Arc<[u8]> = Arc::from(key);
        inner.keys.insert(key.clone());
        inner.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_its_capacity_and_forgets_the_oldest_first() {
        let moved = MovedKeys::new(3);
        for key in [b"a", b"b", b"c", b"a"] {
            moved.insert(key);
        }
        assert!([b"a", b"b", b"c"].iter().all(|k| moved.contains(*k)));
        moved.insert(b"d");
        assert!(!moved.contains(b"a"));
        assert!([b"b", b"c", b"d"].iter().all(|k| moved.contains(*k)));
        assert_eq!(moved.lock().order.len(), 3);
    }
}
