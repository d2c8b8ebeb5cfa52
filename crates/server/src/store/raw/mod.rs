//! Every line of `unsafe` code in the store, behind a safe API.
//!
//! The workspace denies `unsafe_code`; this module (and only this module) allows it, for two
//! things that a safe interface cannot do at the same cost:
//!
//! - [`slot`]: the entry itself. The hash table holds one 8-byte pointer per entry, and the
//!   key, deadline, version and value live in a block the slot allocates and frees by hand
//!   (the module's docs say why this saves about 80 bytes per entry). Writes to a block go
//!   through [`SlotMut`], which can only be made from a map guard holding the shard's write
//!   lock.
//! - [`table`]: walks over the buckets of one shard's hash table (the expiry sweep, `SCAN`,
//!   snapshots) and lookups by hash alone (batch prefetching). dashmap's safe API offers
//!   neither a resumable position inside a shard nor a lookup that stops short of comparing
//!   keys (comparing waits for the very cache misses prefetching means to overlap), so these
//!   read hashbrown's `RawTable` through dashmap's `raw-api`.
//!
//! The two are one module because their safety arguments depend on each other: the table
//! walks hand out `&Slot`s, which are sound to read only because every write to a slot holds
//! the shard's write lock, and the walks in turn take a `&` or `&mut` of the table, which the
//! shard's read or write lock provides. Everything outside `raw` uses only the safe functions
//! below; each `unsafe` block here carries a `// SAFETY:` argument saying why its pointers are
//! valid, which lock is held, and why no `&mut` aliases what it reads.
//!
//! `tests/unsafe_confined.rs` fails if `unsafe` appears anywhere else or here without its
//! argument. `tests/store_stress.rs` runs readers, writers, the sweep, `SCAN`, snapshots and
//! prefetching on one store at once; after changing anything here, run it under valgrind and
//! ThreadSanitizer too (its docs say how).

#![allow(unsafe_code)]
// Every block and `unsafe impl` states its argument (clippy checks that the comment is there),
// and an `unsafe fn` still marks each unsafe operation in its body.
#![deny(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

mod slot;
mod table;

pub use slot::{Meta, Slot, SlotMut, EXT_FIXED_LEN, HEADER_LEN};
pub use table::{
    find_slot, for_each_candidate, for_each_slot, insert_slot, prefetch_line, prefetch_probe_start,
    retain_slots, take_slot, ShardTable,
};
