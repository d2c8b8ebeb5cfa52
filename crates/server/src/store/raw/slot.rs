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
//! # Session extension
//!
//! A session bound to an owner, or given an absolute deadline, carries more: its creation
//! time, its last access, the absolute deadline and the owner. Most sessions carry none of
//! it, so it costs them nothing: the top bit of the value length (values are at most 16 MiB,
//! so the bit is spare) says whether the block continues after the key with
//!
//! ```text
//! offset        size  field
//! 28 + key           8  created, Unix ms
//! 28 + key + 8       8  last access (write or touch), Unix ms
//! 28 + key + 16      8  absolute deadline, Unix ms (0: none)
//! 28 + key + 24      2  owner length (0: no owner)
//! 28 + key + 26      n  owner bytes
//! ```
//!
//! The extension follows the key at whatever alignment that gives, so its fields are read
//! and written unaligned. Changing it (binding an owner to an existing session) builds a new
//! block and swaps the slot's pointer to it, under the same write lock as every other write.
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
use std::cell::UnsafeCell;
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

/// The bit of `value_len` that says the block carries the session extension.
const EXT_FLAG: u32 = 1 << 31;
/// Bytes of the extension before the owner: created, last access, absolute deadline, owner
/// length.
pub const EXT_FIXED_LEN: usize = 8 + 8 + 8 + 2;

/// What the session extension holds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta<'a> {
    /// The owner the session is bound to, if any (never empty).
    pub owner: Option<&'a [u8]>,
    /// When the session was created, Unix ms.
    pub created_ms: u64,
    /// When it was last written or touched, Unix ms.
    pub last_access_ms: u64,
    /// The deadline sliding expiry never passes, Unix ms.
    pub absolute_deadline_ms: Option<u64>,
}

impl Meta<'_> {
    /// Whether a slot needs the extension to hold this (an owner or an absolute deadline).
    pub fn is_needed(&self) -> bool {
        self.owner.is_some() || self.absolute_deadline_ms.is_some()
    }

    fn encoded_len(&self) -> usize {
        EXT_FIXED_LEN + self.owner.map_or(0, <[u8]>::len)
    }
}

/// One entry: key, value, deadline and version. Owns its block and the value's allocation,
/// and frees both when dropped. Hashes and compares as its key, so the map can be searched
/// with a `&[u8]`.
///
/// The pointer sits in an `UnsafeCell` because binding an owner swaps in a bigger block
/// through a shared reference (the table hands out only those); [`SlotMut`] is the proof
/// that nobody else reads the slot meanwhile.
pub struct Slot {
    block: UnsafeCell<NonNull<Header>>,
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
    /// If `key` is longer than 65,535 bytes or `value` than 2 GiB; the protocol limits make
    /// both impossible (`Limits::HARD_MAX_KEY_LEN`, `Limits::HARD_MAX_VALUE_LEN`).
    pub fn new(key: &[u8], value: &[u8], expires_at_ms: u64, version: u64) -> Slot {
        Slot::with_meta(key, value, expires_at_ms, version, None)
    }

    /// A new entry holding copies of `key` and `value` and, if `meta` needs it
    /// ([`Meta::is_needed`]), the session extension.
    ///
    /// # Panics
    ///
    /// As [`Slot::new`], and if the owner is longer than 65,535 bytes (the store limits it to
    /// far less).
    pub fn with_meta(
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
        version: u64,
        meta: Option<&Meta<'_>>,
    ) -> Slot {
        let key_len = u16::try_from(key.len())
            .unwrap_or_else(|_| panic!("key of {} bytes exceeds the 65,535-byte limit", key.len()));
        let (value_ptr, value_len) = allocate_value(value);
        let meta = meta.filter(|meta| meta.is_needed());
        let block = new_block(
            key,
            meta,
            Header {
                deadline_and_key_len: pack(expires_at_ms, key_len),
                version,
                value: value_ptr,
                value_len: value_len | if meta.is_some() { EXT_FLAG } else { 0 },
            },
        );
        Slot {
            block: UnsafeCell::new(block),
        }
    }

    fn block(&self) -> NonNull<Header> {
        // SAFETY: the pointer is replaced only through `SlotMut`, which excludes every shared
        // reader of the slot (see its docs), so reading it here races with no write.
        unsafe { *self.block.get() }
    }

    fn header(&self) -> &Header {
        // SAFETY: the block is initialized and lives as long as `self` (or until a `SlotMut`
        // replaces it, which cannot happen while this shared borrow is usable); nobody writes
        // it while a shared reference to the slot is usable (see `SlotMut`).
        unsafe { self.block().as_ref() }
    }

    /// Where the block starts, for prefetching.
    pub fn block_addr(&self) -> *const u8 {
        self.block().as_ptr().cast_const().cast()
    }

    /// Bytes of the block: header, key and, for a session that has one, the extension.
    pub fn block_len(&self) -> usize {
        HEADER_LEN + self.key().len() + self.meta().map_or(0, |meta| meta.encoded_len())
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        let len = (self.header().deadline_and_key_len >> DEADLINE_BITS) as usize;
        // SAFETY: `new_block` wrote `len` key bytes right after the header; they never change.
        unsafe {
            std::slice::from_raw_parts(self.block().as_ptr().cast::<u8>().add(HEADER_LEN), len)
        }
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        let header = self.header();
        let (value, len) = (header.value, header.value_len & !EXT_FLAG);
        // SAFETY: `value` points at `len` initialized bytes owned by this slot (a dangling,
        // aligned pointer when `len` is 0, which `from_raw_parts` allows).
        unsafe { std::slice::from_raw_parts(value, len as usize) }
    }

    /// Whether the slot has the session extension (an owner or an absolute deadline): one
    /// bit test, for the hot paths that only need to know.
    #[inline]
    pub fn has_meta(&self) -> bool {
        self.header().value_len & EXT_FLAG != 0
    }

    /// The session extension, if the slot has one.
    pub fn meta(&self) -> Option<Meta<'_>> {
        if !self.has_meta() {
            return None;
        }
        let ext = self.ext_ptr();
        // SAFETY: the flag says `new_block` wrote the extension right after the key: the
        // fixed fields, then `owner_len` owner bytes, all inside the block. Reads are
        // unaligned since the extension follows the key at any offset.
        unsafe {
            let created_ms = ext.cast::<u64>().read_unaligned();
            let last_access_ms = ext.add(8).cast::<u64>().read_unaligned();
            let absolute = ext.add(16).cast::<u64>().read_unaligned();
            let owner_len = usize::from(ext.add(24).cast::<u16>().read_unaligned());
            let owner = std::slice::from_raw_parts(ext.add(EXT_FIXED_LEN), owner_len);
            Some(Meta {
                owner: (owner_len > 0).then_some(owner),
                created_ms,
                last_access_ms,
                absolute_deadline_ms: (absolute > 0).then_some(absolute),
            })
        }
    }

    /// The owner the session is bound to, if any.
    pub fn owner(&self) -> Option<&[u8]> {
        self.meta().and_then(|meta| meta.owner)
    }

    /// Where the extension starts (right after the key); meaningful only if the slot has one.
    fn ext_ptr(&self) -> *mut u8 {
        // Safe pointer arithmetic: the offset stays inside the block when it has an extension
        // (and `wrapping_add` makes no claim when it does not).
        self.block()
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(HEADER_LEN + self.key().len())
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
        let (value, value_len) = (header.value, header.value_len & !EXT_FLAG);
        let block_len = self.block_len();
        // SAFETY: both allocations were made by `new_block`/`replace_value` with these sizes
        // and are freed exactly once, here.
        unsafe {
            free_value(value, value_len);
            alloc::dealloc(self.block().as_ptr().cast(), block_layout(block_len));
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
        self.slot.block().as_ptr()
    }

    /// Records an access (a write or a touch) at `now_ms` in the session extension; nothing
    /// for a slot without one.
    pub fn set_last_access_ms(&mut self, now_ms: u64) {
        if !self.slot.has_meta() {
            return;
        }
        let ext = self.slot.ext_ptr();
        // SAFETY: exclusive access (see the type's docs); the slot has an extension, whose
        // second field is 8 bytes inside the block, written unaligned.
        unsafe { ext.add(8).cast::<u64>().write_unaligned(now_ms) }
    }

    /// Replaces the session extension (`None`, or a `meta` that does not need one, removes
    /// it): builds a block of the new size with the same header and key, points the slot at
    /// it and frees the old one.
    pub fn set_meta(&mut self, meta: Option<&Meta<'_>>) {
        let meta = meta.filter(|meta| meta.is_needed());
        let old = self.slot.block();
        let old_len = self.slot.block_len();
        let mut header = {
            let current = self.slot.header();
            Header {
                deadline_and_key_len: current.deadline_and_key_len,
                version: current.version,
                value: current.value,
                value_len: current.value_len & !EXT_FLAG,
            }
        };
        if meta.is_some() {
            header.value_len |= EXT_FLAG;
        }
        let block = new_block(self.slot.key(), meta, header);
        // SAFETY: exclusive access (see the type's docs), so no reference into the old block
        // is alive: `meta` and the key were copied into the new block above. The value's
        // allocation moved to the new header; the old block is freed once, with the layout
        // it was allocated with.
        unsafe {
            *self.slot.block.get() = block;
            alloc::dealloc(old.as_ptr().cast(), block_layout(old_len));
        }
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
        // SAFETY: exclusive access; the old value is `value_len` bytes at `value` (less the
        // extension flag), owned by this slot. It is either overwritten in place (same
        // length) or freed after the header points at the new allocation, so the slot never
        // refers to freed memory. The flag is kept as it was.
        unsafe {
            let (old, flagged) = ((*header).value, (*header).value_len);
            let (old_len, flag) = (flagged & !EXT_FLAG, flagged & EXT_FLAG);
            if old_len as usize == value.len() {
                ptr::copy_nonoverlapping(value.as_ptr(), old, value.len());
                return;
            }
            let (new, new_len) = allocate_value(value);
            (*header).value = new;
            (*header).value_len = new_len | flag;
            free_value(old, old_len);
        }
    }
}

fn pack(expires_at_ms: u64, key_len: u16) -> u64 {
    (u64::from(key_len) << DEADLINE_BITS) | expires_at_ms.min(MAX_DEADLINE_MS)
}

fn block_layout(block_len: usize) -> Layout {
    // Cannot fail: the size is at most HEADER_LEN + 65,535 + the extension (with an owner of
    // at most 65,535 bytes) and the alignment a power of two.
    Layout::from_size_align(block_len, BLOCK_ALIGN)
        .unwrap_or_else(|_| panic!("block layout for a {block_len}-byte block"))
}

/// Allocates a block holding `header`, then `key`, then (if given) the extension for `meta`.
fn new_block(key: &[u8], meta: Option<&Meta<'_>>, header: Header) -> NonNull<Header> {
    let ext_len = meta.map_or(0, Meta::encoded_len);
    let layout = block_layout(HEADER_LEN + key.len() + ext_len);
    // SAFETY: the layout has a non-zero size (it includes the header).
    let raw = unsafe { alloc::alloc(layout) };
    let Some(block) = NonNull::new(raw.cast::<Header>()) else {
        alloc::handle_alloc_error(layout)
    };
    // SAFETY: `block` is a fresh allocation of HEADER_LEN + key + ext_len bytes, aligned for
    // Header; the header is written whole, then the key right after it, then the extension's
    // fields (unaligned) and owner, which end exactly at the end of the allocation.
    unsafe {
        block.as_ptr().write(header);
        let key_at = raw.add(HEADER_LEN);
        ptr::copy_nonoverlapping(key.as_ptr(), key_at, key.len());
        if let Some(meta) = meta {
            let ext = key_at.add(key.len());
            let owner = meta.owner.unwrap_or_default();
            let owner_len = u16::try_from(owner.len())
                .unwrap_or_else(|_| panic!("owner of {} bytes exceeds 65,535 bytes", owner.len()));
            ext.cast::<u64>().write_unaligned(meta.created_ms);
            ext.add(8)
                .cast::<u64>()
                .write_unaligned(meta.last_access_ms);
            ext.add(16)
                .cast::<u64>()
                .write_unaligned(meta.absolute_deadline_ms.unwrap_or(0));
            ext.add(24).cast::<u16>().write_unaligned(owner_len);
            ptr::copy_nonoverlapping(owner.as_ptr(), ext.add(EXT_FIXED_LEN), owner.len());
        }
    }
    block
}

/// Copies `value` into an exact-size allocation (none for an empty value).
fn allocate_value(value: &[u8]) -> (*mut u8, u32) {
    // Below 2 GiB: the top bit of the stored length is the extension flag.
    let len = u32::try_from(value.len())
        .ok()
        .filter(|len| len & EXT_FLAG == 0)
        .unwrap_or_else(|| panic!("value of {} bytes exceeds the 2 GiB limit", value.len()));
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
    fn the_session_extension_holds_what_it_was_given_and_survives_writes() {
        let meta = Meta {
            owner: Some(b"user:42"),
            created_ms: 1_000,
            last_access_ms: 2_000,
            absolute_deadline_ms: Some(9_000),
        };
        let slot = Slot::with_meta(b"sid", b"value", 5_000, 7, Some(&meta));
        assert_eq!(slot.meta(), Some(meta));
        assert_eq!(slot.owner(), Some(&b"user:42"[..]));
        assert_eq!(slot.block_len(), HEADER_LEN + 3 + EXT_FIXED_LEN + 7);
        assert_eq!(slot.value(), b"value");
        let map: dashmap::DashMap<Slot, ()> = dashmap::DashMap::new();
        map.insert(slot, ());
        let mut guard = map.get_mut(&b"sid"[..]).expect("present");
        let mut slot = SlotMut::from_ref_mut(&mut guard);
        slot.replace_value(b"a longer value");
        slot.set_last_access_ms(3_000);
        assert_eq!(slot.slot().meta().map(|m| m.last_access_ms), Some(3_000));
        assert_eq!(slot.slot().value(), b"a longer value");
        let rebound = Meta {
            owner: Some(b"another owner"),
            absolute_deadline_ms: None,
            ..meta
        };
        slot.set_meta(Some(&rebound));
        assert_eq!(
            slot.slot().meta().map(|m| m.owner),
            Some(Some(&b"another owner"[..]))
        );
        assert_eq!(slot.slot().key(), b"sid");
        assert_eq!(slot.slot().value(), b"a longer value");
        assert_eq!(slot.slot().version(), 7);
        slot.set_meta(None);
        assert_eq!(slot.slot().meta(), None);
        assert_eq!(slot.slot().block_len(), HEADER_LEN + 3);
        assert_eq!(slot.slot().value(), b"a longer value");
        // Without an owner or an absolute deadline a slot keeps no extension.
        let plain = Slot::with_meta(
            b"k",
            b"v",
            1,
            1,
            Some(&Meta {
                owner: None,
                absolute_deadline_ms: None,
                ..meta
            }),
        );
        assert_eq!(plain.meta(), None);
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
