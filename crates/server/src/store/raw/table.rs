//! Reading and erasing a shard's hash-table buckets directly.
//!
//! Each function takes the table by reference, and that reference is the proof its `unsafe`
//! blocks rely on: callers get a `&ShardTable` only from a shard's read (or write) guard and a
//! `&mut ShardTable` only from its write guard, so while the reference lives no other thread
//! can insert, erase, grow or shrink the table. Nor can any thread write a slot: [`SlotMut`]
//! (the only way to) needs a map guard holding the same shard's write lock, which cannot
//! coexist with the guard the caller borrowed the table from. The callbacks receive `&Slot`s
//! that cannot outlive the call, so no reference escapes the lock.
//!
//! [`SlotMut`]: super::SlotMut

use super::slot::Slot;

/// One shard's hash table, as dashmap keeps it.
pub type ShardTable = hashbrown::raw::RawTable<Bucket>;

/// What one bucket of a shard's table holds.
type Bucket = (Slot, dashmap::SharedValue<()>);

/// How many buckets ahead walks over a table (the expiry sweep, SCAN, snapshots) prefetch
/// the blocks they are about to read: each full bucket's fields are one cache miss away, and
/// asking ahead lets about this many misses overlap.
const WALK_AHEAD: usize = 16;

/// Calls `f` for the entry of each full bucket in `from..end` of `table` (`end` clamped to
/// the bucket count), prefetching the blocks [`WALK_AHEAD`] buckets ahead.
#[inline]
pub fn for_each_slot(table: &ShardTable, from: usize, end: usize, mut f: impl FnMut(&Slot)) {
    let end = end.min(table.buckets());
    for index in from..from.saturating_add(WALK_AHEAD) {
        prefetch_bucket(table, index);
    }
    for index in from..end {
        prefetch_bucket(table, index + WALK_AHEAD);
        // SAFETY: `index < table.buckets()`, as `is_bucket_full` and `bucket` require, and
        // `bucket` is called only for a full bucket, so the table is allocated (an
        // unallocated table has one bucket, which is never full) and the element
        // initialized. The caller's `&ShardTable` keeps the table from changing and every
        // slot from being written while `f` reads it (see the module docs); `f` cannot keep
        // the reference past its call.
        unsafe {
            if table.is_bucket_full(index) {
                f(&table.bucket(index).as_ref().0);
            }
        }
    }
}

/// Erases (and drops) the entry of each full bucket in `from..end` of `table` (`end` clamped
/// to the bucket count) for which `keep` returns false; returns how many it erased.
/// Prefetches like [`for_each_slot`].
#[inline]
pub fn retain_slots(
    table: &mut ShardTable,
    from: usize,
    end: usize,
    mut keep: impl FnMut(&Slot) -> bool,
) -> u64 {
    let end = end.min(table.buckets());
    let mut erased = 0;
    for index in from..from.saturating_add(WALK_AHEAD) {
        prefetch_bucket(table, index);
    }
    for index in from..end {
        prefetch_bucket(table, index + WALK_AHEAD);
        // SAFETY: as in `for_each_slot` for the index, the allocation and the element. The
        // caller's `&mut ShardTable` (from the shard's write guard) means no other reference
        // into the table or its slots exists, so erasing is allowed. The `&Slot` given to
        // `keep` ends before `erase` drops the element. Erasing one bucket neither moves nor
        // drops any other element and never resizes the table, so the remaining indices stay
        // valid; hashbrown's own `retain` walks and erases the same way.
        unsafe {
            if !table.is_bucket_full(index) {
                continue;
            }
            let bucket = table.bucket(index);
            if !keep(&bucket.as_ref().0) {
                table.erase(bucket);
                erased += 1;
            }
        }
    }
    erased
}

/// The slot of `key` (whose hash is `hash`) in `table`, if present.
#[inline]
pub fn find_slot<'t>(table: &'t ShardTable, hash: u64, key: &[u8]) -> Option<&'t Slot> {
    let bucket = table.find(hash, |(slot, _)| slot.key() == key)?;
    // SAFETY: `find` returns only full buckets of this table, so the element is initialized;
    // the returned reference borrows the table, which the caller's `&ShardTable` keeps from
    // changing (see the module docs).
    Some(unsafe { &bucket.as_ref().0 })
}

/// Removes the slot of `key` from `table` and returns it, if present.
#[inline]
pub fn take_slot(table: &mut ShardTable, hash: u64, key: &[u8]) -> Option<Slot> {
    let bucket = table.find(hash, |(slot, _)| slot.key() == key)?;
    // SAFETY: `bucket` is a full bucket of this very table, just found, and the caller's
    // `&mut ShardTable` means no reference into the table is alive, so removing it (which
    // moves the element out) is allowed.
    let ((slot, _), _) = unsafe { table.remove(bucket) };
    Some(slot)
}

/// Inserts `slot` (whose key's hash is `hash`; the key must be absent) into `table`.
/// `rehash` gives the hash of a slot, for a table that must grow.
#[inline]
pub fn insert_slot(table: &mut ShardTable, hash: u64, slot: Slot, rehash: impl Fn(&Slot) -> u64) {
    table.insert(hash, (slot, dashmap::SharedValue::new(())), |(slot, _)| {
        rehash(slot)
    });
}

/// Calls `f` for each slot whose 7-bit hash tag matches `hash` in the bucket groups the
/// probe for `hash` visits (usually just the key's own slot): lookup without a key, for
/// prefetching. `f` must check the key itself.
#[inline]
pub fn for_each_candidate(table: &ShardTable, hash: u64, mut f: impl FnMut(&Slot)) {
    // SAFETY: `iter_hash` requires that the table outlive the iterator, and `as_ref` that the
    // bucket hold an initialized element while the reference is used: the iterator is
    // consumed within this call, yields only full buckets, and the caller's `&ShardTable`
    // keeps the table and its slots unchanged meanwhile (see the module docs).
    unsafe {
        for bucket in table.iter_hash(hash) {
            f(&bucket.as_ref().0);
        }
    }
}

/// Prefetches where the probe for `hash` starts in `table`: its control bytes and its
/// first bucket. Safe code (pointer arithmetic with `wrapping_*`, and prefetching never
/// dereferences), kept here because it depends on hashbrown's memory layout: control bytes
/// follow the end of the bucket array, bucket `i` ends `i` elements before that end, and a
/// probe starts at `hash & (buckets - 1)`.
#[inline]
pub fn prefetch_probe_start(table: &ShardTable, hash: u64) {
    let start = (hash as usize) & (table.buckets() - 1);
    let data_end = table.data_end().as_ptr().cast::<u8>().cast_const();
    prefetch_line(data_end.wrapping_add(start));
    prefetch_line(data_end.wrapping_sub((start + 1) * std::mem::size_of::<Bucket>()));
}

/// Prefetches the block of bucket `index` of `table` if the bucket exists and is full.
#[inline(always)]
fn prefetch_bucket(table: &ShardTable, index: usize) {
    if index >= table.buckets() {
        return;
    }
    // SAFETY: `index < table.buckets()`, as `is_bucket_full` and `bucket` require; `bucket`
    // and `as_ref` are used only for a full bucket, so the table is allocated and the element
    // initialized, and the caller's reference to the table keeps it in place meanwhile.
    unsafe {
        if table.is_bucket_full(index) {
            prefetch_line(table.bucket(index).as_ref().0.block_addr());
        }
    }
}

/// Asks the CPU to bring the cache line at `addr` closer. A hint: it never faults, even for
/// an address that is not mapped, and compiles to nothing where there is no such instruction.
#[inline(always)]
pub fn prefetch_line(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // Newer compilers consider this intrinsic safe (SSE is in the x86_64 baseline), older
        // ones do not.
        #[allow(unused_unsafe)]
        // SAFETY: prefetching dereferences nothing and is defined for any address; SSE, which
        // provides the instruction, is part of the x86_64 baseline.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(addr.cast::<i8>());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
