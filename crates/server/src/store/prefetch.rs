//! Warming the caches for a batch of lookups before running them.
//!
//! Reading one entry is a chain of dependent loads: the shard's control bytes, the bucket,
//! the slot's block (header and key), then the value. With 1M sessions the blocks and values
//! are far larger than the caches, so each link is a cache miss, and a request cannot start
//! the next link before the last one arrived. Run one after another, a pipelined batch of 16
//! GETs pays for 16 such chains in sequence.
//!
//! [`Store::prefetch`] walks the batch's keys three times before the batch runs, each pass
//! asking the CPU for the next link of every key's chain, so that the misses of the whole
//! batch overlap instead of queueing:
//!
//! 1. From the hash alone, where the key's probe starts: its control bytes and buckets.
//! 2. The matching buckets (in cache by now): the blocks they point to.
//! 3. The blocks (in cache by now): after checking the key, the first lines of the value.
//!
//! The requests then find their data in cache. A pass only issues prefetches and reads lines
//! the previous pass asked for, because the shard lock it takes for each key is a full
//! memory barrier on x86: a pass that waited for a miss would hold up the rest of the batch
//! behind that barrier (a two-pass version that read the buckets directly just moved the
//! stalls from the lookups into the prefetch). Redis 8 does the same for batches of
//! commands ("prefetch keys").
//!
//! Both protocols call it for every batch they read (`Protocol::prefetch`), with the keys
//! their look-ahead finds (`sessiond_proto::peek`, `resp/peek.rs`).
//!
//! This only reads and never blocks: a shard another thread is writing is skipped, and a key
//! that changes before its request runs costs nothing but a wasted prefetch.

use super::raw::{for_each_candidate, prefetch_line, prefetch_probe_start, ShardTable, Slot};
use super::Store;

/// At most this many keys are prefetched per batch: enough to cover a pipeline of typical
/// depth, few enough that the first key's data is still in cache when its request runs.
pub const MAX_PREFETCH: usize = 32;

/// Bytes per cache line on the CPUs this targets.
const LINE: usize = 64;

impl Store {
    /// Prefetches the entries of `keys` (see the module docs). Does nothing for fewer than
    /// two keys, where there is nothing to overlap.
    pub fn prefetch<'k>(&self, keys: impl Iterator<Item = &'k [u8]> + Clone) {
        if keys.clone().nth(1).is_none() {
            return;
        }
        let mut hashes = [0u64; MAX_PREFETCH];
        let mut count = 0;
        for (key, hash) in keys.clone().zip(hashes.iter_mut()) {
            *hash = self.shared.map.hash_usize(&key) as u64;
            count += 1;
        }
        let hashes = &hashes[..count];
        for &hash in hashes {
            self.with_shard(hash, |table| prefetch_probe_start(table, hash));
        }
        for &hash in hashes {
            self.with_candidates(hash, |slot| prefetch_line(slot.block_addr()));
        }
        for (key, &hash) in keys.zip(hashes) {
            self.with_candidates(hash, |slot| {
                if slot.key() == key {
                    let value = slot.value();
                    prefetch_line(value.as_ptr());
                    // The hardware prefetcher follows a sequential read after its first
                    // lines; asking for the second as well covers small values whole.
                    if value.len() > LINE {
                        prefetch_line(value[LINE..].as_ptr());
                    }
                }
            });
        }
    }

    /// Calls `f` with the table of the shard `hash` belongs to, under its read lock; skips
    /// the shard if it is locked for writing.
    fn with_shard(&self, hash: u64, f: impl FnOnce(&ShardTable)) {
        let map = &self.shared.map;
        if let Some(table) = map.shards()[map.determine_shard(hash as usize)].try_read() {
            f(&table);
        }
    }

    /// Calls `f` for each slot whose hash tag matches `hash` in the first bucket groups its
    /// probe visits (usually just the key's own slot), under the shard's read lock.
    fn with_candidates(&self, hash: u64, mut f: impl FnMut(&Slot)) {
        self.with_shard(hash, |table| for_each_candidate(table, hash, &mut f));
    }
}

#[cfg(test)]
mod tests {
    use sessiond_proto::command::{GetReply, SetMode};

    use crate::Store;

    #[test]
    fn prefetching_present_absent_and_repeated_keys_changes_nothing() {
        let store = Store::new();
        for i in 0..100u32 {
            store.set(
                format!("k{i}").as_bytes(),
                &vec![1u8; i as usize * 10],
                60_000,
                SetMode::Upsert,
            );
        }
        let keys: Vec<Vec<u8>> = (0..200u32)
            .map(|i| format!("k{}", i % 150).into_bytes())
            .collect();
        store.prefetch(keys.iter().map(Vec::as_slice));
        store.prefetch(std::iter::once(&b"k1"[..]));
        store.prefetch(std::iter::empty());
        assert_eq!(store.len(), 100);
        let GetReply::Hit(entry) = store.get(b"k99", None) else {
            panic!("k99 is present");
        };
        assert_eq!(entry.value.len(), 990);
    }

    #[test]
    fn a_shard_locked_for_writing_is_skipped_not_waited_for() {
        let store = Store::new();
        store.set(b"a", b"1", 60_000, SetMode::Upsert);
        store.set(b"b", b"2", 60_000, SetMode::Upsert);
        let map = &store.shared.map;
        let _writer = map.shards()[map.determine_map(&b"a"[..])].write();
        // Would deadlock if it waited for the lock.
        store.prefetch([&b"a"[..], &b"b"[..]].into_iter());
    }
}
