//! One stored entry, laid out for memory: the hash table holds an 8-byte pointer per entry.
//!
//! # Why not `(Box<[u8]>, struct { value, deadline, version })`
//!
//! That tuple is 48 bytes, and a hash table that doubles when it is 7/8 full spends most of
//! its life between half and 7/8 full: at 1M entries over 1024 shards every shard had just
//! doubled, so each entry paid for about two buckets, about 100 bytes before its key and
//! value were even counted. With a thin pointer per bucket the table costs about 17 bytes
//! per entry at the same load, and everything else lives in one block per entry:
//!
//! ```text
//! offset  size  field
//!      0     8  deadline, Unix ms (low 48 bits) | key length (high 16 bits)
//!      8     8  version
//!     16     8  pointer to the value's own exact-size allocation
//!     24     4  value length
//!     28     n  key bytes
//! ```
//!
//! Keys are at most 65,535 bytes (the protocol's `u16` key length), so the key length fits
//! beside a 48-bit deadline, which reaches the year 10889 (deadlines beyond are stored as
//! that). Packing them saves the 4 bytes that let a 51-byte key (`session:` and a 43-byte id)
//! fit the allocator's 80-byte size class instead of its 96-byte one.
//!
//! The value has an allocation of its own rather than following the key: session values are
//! often a power of two or close to it (1 KiB in the benchmarks), which the allocator's size
//! classes hold exactly, while value + key + header would round up to the next class (a
//! 1,099-byte block takes 1,280 bytes from mimalloc).
//!
//! # Mutation
//!
//! Everything that changes (deadline, version, value) lives in the block, not in the table's
//! bucket, so the table hands out shared references (`&Slot`) even to writers. Writing
//! through one is sound only while nobody else can read the block; [`SlotMut`] can only be
//! made from a guard that holds the shard's write lock, which is that proof.

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ptr::{self, NonNull};

use bytes::Bytes;
use dashmap::mapref::entry::OccupiedEntry;
use dashmap::mapref::one::RefMut;
use sessiond_proto::command::Entry;

/// Deadlines are kept in the low 48 bits of the first word.
const DEADLINE_BITS: u32 = 48;

/// The latest deadline a slot can hold: Unix ms 2^48 - 1, in the year 10889. Later ones are
/// stored as this, which no client can tell apart from "later" (TTLs are capped at 10 years).
pub const MAX_DEADLINE_MS: u64 = (1 << DEADLINE_BITS) - 1;

/// The fixed part of a block. `packed(4)` puts the key right after the value length (offset
/// 28 instead of 32); the block itself is allocated 8-aligned, so the 8-byte fields are still
/// naturally aligned in memory. Fields are only ever read and written by value.
#[repr(C, packed(4))]
struct Header {
    deadline_and_key_len: u64,
    version: u64,
    value: *mut u8,
    value_len: u32,
}

/// Bytes of a block before its key (the block is this plus the key's length).
pub const HEADER_LEN: usize = std::mem::size_of::<Header>();
const BLOCK_ALIGN: usize = 8;

/// One entry: key, value, deadline and version. Owns its block and the value's allocation,
/// and frees both when dropped. Hashes and compares as its key, so the map can be searched
/// with a `&[u8]`.
pub struct Slot {
    block: NonNull<Header>,
}

// SAFETY: a `Slot` owns its allocations, as a `Box` does, so moving it to another thread is
// fine. Shared references only read; writes go through `SlotMut`, which exists only while the
// shard's write lock is held, so no thread reads a block while another writes it.
unsafe impl Send for Slot {}
// SAFETY: see above.
unsafe impl Sync for Slot {}

impl Slot {
    /// A new entry holding copies of `key` and `value`.
    ///
    /// # Panics
    ///
    /// If `key` is longer than 65,535 bytes or `value` than 4 GiB; the protocol limits make
    /// both impossible (`Limits::HARD_MAX_KEY_LEN`, `Limits::HARD_MAX_VALUE_LEN`).
    pub fn new(key: &[u8], value: &[u8], expires_at_ms: u64, version: u64) -> Slot {
        let key_len = u16::try_from(key.len())
            .unwrap_or_else(|_| panic!("key of {} bytes exceeds the 65,535-byte limit", key.len()));
        let (value_ptr, value_len) = allocate_value(value);
        let layout = block_layout(usize::from(key_len));
        // SAFETY: the layout has a non-zero size (it includes the header).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(block) = NonNull::new(raw.cast::<Header>()) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: `block` is a fresh allocation of HEADER_LEN + key_len bytes, aligned for
        // Header; the header is written whole, then the key right after it.
        unsafe {
            block.as_ptr().write(Header {
                deadline_and_key_len: pack(expires_at_ms, key_len),
                version,
                value: value_ptr,
                value_len,
            });
            ptr::copy_nonoverlapping(key.as_ptr(), raw.add(HEADER_LEN), key.len());
        }
        Slot { block }
    }

    fn header(&self) -> &Header {
        // SAFETY: the block is initialized and lives as long as `self`; nobody writes it while
        // a shared reference to the slot is usable (see `SlotMut`).
        unsafe { self.block.as_ref() }
    }

    /// Where the block starts, for prefetching.
    pub fn block_addr(&self) -> *const u8 {
        self.block.as_ptr().cast_const().cast()
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        let len = (self.header().deadline_and_key_len >> DEADLINE_BITS) as usize;
        // SAFETY: `new` wrote `len` key bytes right after the header; they never change.
        unsafe { std::slice::from_raw_parts(self.block.as_ptr().cast::<u8>().add(HEADER_LEN), len) }
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        let header = self.header();
        let (value, len) = (header.value, header.value_len);
        // SAFETY: `value` points at `len` initialized bytes owned by this slot (a dangling,
        // aligned pointer when `len` is 0, which `from_raw_parts` allows).
        unsafe { std::slice::from_raw_parts(value, len as usize) }
    }

    /// Absolute deadline, Unix milliseconds.
    pub fn expires_at_ms(&self) -> u64 {
        self.header().deadline_and_key_len & MAX_DEADLINE_MS
    }

    /// Version of the last `SET`.
    pub fn version(&self) -> u64 {
        self.header().version
    }

    /// Whether the entry has not expired at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms() > now_ms
    }

    /// The entry as a reply carries it, with the value copied out.
    pub fn entry(&self, now_ms: u64) -> Entry {
        Entry {
            value: Bytes::copy_from_slice(self.value()),
            version: self.version(),
            ttl_ms: self.expires_at_ms().saturating_sub(now_ms),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let header = self.header();
        let (value, value_len) = (header.value, header.value_len);
        let key_len = (header.deadline_and_key_len >> DEADLINE_BITS) as usize;
        // SAFETY: both allocations were made by `new`/`replace_value` with these sizes and
        // are freed exactly once, here.
        unsafe {
            free_value(value, value_len);
            alloc::dealloc(self.block.as_ptr().cast(), block_layout(key_len));
        }
    }
}

impl Borrow<[u8]> for Slot {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly as `[u8]` hashes, which `Borrow` requires: lookups hash a `&[u8]`.
        self.key().hash(state);
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Slot {}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("key_len", &self.key().len())
            .field("value_len", &self.value().len())
            .field("expires_at_ms", &self.expires_at_ms())
            .field("version", &self.version())
            .finish()
    }
}

/// Write access to one slot, made from a guard that holds its shard's write lock.
pub struct SlotMut<'a> {
    slot: &'a Slot,
}

impl<'a> SlotMut<'a> {
    /// Write access through a map reference obtained with `get_mut`.
    pub fn from_ref_mut(guard: &'a mut RefMut<'_, Slot, ()>) -> SlotMut<'a> {
        // Borrowing the guard mutably for 'a keeps every other use of it (and so every other
        // reference into this slot) out while the SlotMut lives; the guard holds the write
        // lock, which keeps other threads out.
        SlotMut { slot: guard.key() }
    }

    /// Write access through an occupied entry of the map's entry API.
    pub fn from_occupied(entry: &'a mut OccupiedEntry<'_, Slot, ()>) -> SlotMut<'a> {
        // As in `from_ref_mut`: an occupied entry holds its shard's write lock.
        SlotMut { slot: entry.key() }
    }

    /// Read access to the slot.
    pub fn slot(&self) -> &Slot {
        self.slot
    }

    fn header_ptr(&mut self) -> *mut Header {
        self.slot.block.as_ptr()
    }

    /// Moves the deadline (saturating at [`MAX_DEADLINE_MS`]).
    pub fn set_expires_at_ms(&mut self, expires_at_ms: u64) {
        let key_len = self.slot.key().len() as u16;
        let header = self.header_ptr();
        // SAFETY: exclusive access (see the type's docs); a by-value write of a packed field
        // through the raw pointer.
        unsafe { (*header).deadline_and_key_len = pack(expires_at_ms, key_len) }
    }

    /// Sets the version.
    pub fn set_version(&mut self, version: u64) {
        let header = self.header_ptr();
        // SAFETY: as in `set_expires_at_ms`.
        unsafe { (*header).version = version }
    }

    /// Replaces the value. A value of the same length is copied over the old one, which
    /// spares the allocator a free and an allocation on the most common update.
    pub fn replace_value(&mut self, value: &[u8]) {
        let header = self.header_ptr();
        // SAFETY: exclusive access; the old value is `value_len` bytes at `value`, owned by
        // this slot. It is either overwritten in place (same length) or freed after the
        // header points at the new allocation, so the slot never refers to freed memory.
        unsafe {
            let (old, old_len) = ((*header).value, (*header).value_len);
            if old_len as usize == value.len() {
                ptr::copy_nonoverlapping(value.as_ptr(), old, value.len());
                return;
            }
            let (new, new_len) = allocate_value(value);
            (*header).value = new;
            (*header).value_len = new_len;
            free_value(old, old_len);
        }
    }
}

fn pack(expires_at_ms: u64, key_len: u16) -> u64 {
    (u64::from(key_len) << DEADLINE_BITS) | expires_at_ms.min(MAX_DEADLINE_MS)
}

fn block_layout(key_len: usize) -> Layout {
    // Cannot fail: the size is at most HEADER_LEN + 65,535 and the alignment a power of two.
    Layout::from_size_align(HEADER_LEN + key_len, BLOCK_ALIGN)
        .unwrap_or_else(|_| panic!("block layout for a {key_len}-byte key"))
}

/// Copies `value` into an exact-size allocation (none for an empty value).
fn allocate_value(value: &[u8]) -> (*mut u8, u32) {
    let len = u32::try_from(value.len())
        .unwrap_or_else(|_| panic!("value of {} bytes exceeds the 4 GiB limit", value.len()));
    let boxed: Box<[u8]> = Box::from(value);
    (Box::into_raw(boxed).cast::<u8>(), len)
}

/// Frees what `allocate_value` returned.
///
/// # Safety
///
/// `value` and `len` must come from one call of `allocate_value`, and be freed only once.
unsafe fn free_value(value: *mut u8, len: u32) {
    // SAFETY: rebuilds the box `allocate_value` leaked, with its length.
    drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(value, len as usize)) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_it_was_given() {
        let slot = Slot::new(b"session:abc", b"value", 1_700_000_000_123, 42);
        assert_eq!(slot.key(), b"session:abc");
        assert_eq!(slot.value(), b"value");
        assert_eq!(slot.expires_at_ms(), 1_700_000_000_123);
        assert_eq!(slot.version(), 42);
        assert!(slot.is_live(1_700_000_000_122));
        assert!(!slot.is_live(1_700_000_000_123));
    }

    #[test]
    fn empty_and_longest_keys_and_empty_values() {
        let key = vec![7u8; usize::from(u16::MAX)];
        let slot = Slot::new(&key, b"", 5, 1);
        assert_eq!(slot.key(), &key[..]);
        assert_eq!(slot.value(), b"");
        assert_eq!(slot.expires_at_ms(), 5);
        let slot = Slot::new(b"", b"v", 6, 2);
        assert_eq!(slot.key(), b"");
        assert_eq!(slot.value(), b"v");
    }

    #[test]
    fn deadlines_beyond_48_bits_saturate_without_touching_the_key() {
        let slot = Slot::new(b"k", b"v", u64::MAX, 1);
        assert_eq!(slot.expires_at_ms(), MAX_DEADLINE_MS);
        assert_eq!(slot.key(), b"k");
    }

    #[test]
    fn hashes_and_compares_as_its_key() {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::FixedState::default();
        let slot = Slot::new(b"key", b"v", 1, 1);
        assert_eq!(hasher.hash_one(&slot), hasher.hash_one(&b"key"[..]));
        assert_eq!(slot, Slot::new(b"key", b"other", 2, 2));
        assert_ne!(slot, Slot::new(b"kez", b"v", 1, 1));
    }

    #[test]
    fn writes_through_the_map_guard() {
        let map: dashmap::DashMap<Slot, ()> = dashmap::DashMap::new();
        map.insert(Slot::new(b"k", b"1234", 10, 1), ());
        let mut guard = map.get_mut(&b"k"[..]).expect("present");
        let mut slot = SlotMut::from_ref_mut(&mut guard);
        slot.replace_value(b"abcd"); // same length: in place
        assert_eq!(slot.slot().value(), b"abcd");
        slot.replace_value(b"a longer value");
        slot.replace_value(b"");
        slot.replace_value(b"xy");
        slot.set_expires_at_ms(20);
        slot.set_version(3);
        drop(guard);
        let read = map.get(&b"k"[..]).expect("present");
        assert_eq!(read.key().value(), b"xy");
        assert_eq!(read.key().expires_at_ms(), 20);
        assert_eq!(read.key().version(), 3);
        assert_eq!(read.key().key(), b"k");
    }
}
