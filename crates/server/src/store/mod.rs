//! The session store: a sharded map from key to value, deadline and version.
//!
//! [`Store`] is a cheap `Clone` handle over shared state, as mini-redis's `Db` is. Every
//! operation is synchronous and holds one shard lock for the few hundred nanoseconds it
//! needs: nothing awaits while a lock is held, which is why a blocking (parking_lot-style)
//! lock inside `dashmap` is right here and an async mutex would only add overhead.
//!
//! Expiry is enforced twice. Every access checks the deadline, so an expired entry is never
//! returned (and is removed on the spot when the access holds a write lock anyway). The
//! [`sweep`] module reclaims the memory of entries nobody touches again, a bounded slice of
//! the map per tick.
//!
//! Versions come from one store-wide counter, so a key that is deleted and created again
//! never reuses a version a client may still hold (no ABA). The counter is advanced while the
//! shard lock is held, which keeps the versions of one key increasing in the order the writes
//! were applied and handed to the [`MutationSink`]. With persistence, [`versions`] also keeps
//! it from handing out a number twice across crashes.
//!
//! Session semantics (owners, absolute lifetime, rotation, per-owner limits) live in
//! [`session`], with the owner index in `owner`; every write here keeps their fields
//! (clamping deadlines to the absolute one, recording the last access) and tells the index
//! when a session bound to an owner leaves the map.

mod gate;
mod lifetime_cap;
pub mod mutation;
mod owner;
mod prefetch;
mod pressure;
mod raw;
pub mod scan;
pub mod session;
pub mod sweep;
pub mod transaction;
mod versions;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use sessiond_proto::command::{DelOutcome, Entry, GetReply, SetMode, SetOutcome, TouchReply};

use crate::clock::Clock;
use crate::memory::{allocated_size, Accounting, Part};
pub(crate) use gate::off_the_worker;
use gate::Gates;
pub use mutation::{Mutation, MutationSink, SessionMeta, SessionState};
use owner::OwnerIndex;
pub use pressure::OutOfMemory;
use pressure::Pressure;
use raw::{Meta, Slot, SlotMut};
pub use session::{
    LimitPolicy, OwnerLimit, RotateOutcome, SessionDefaults, SessionError, SessionInfo,
    SessionOptions, SessionSetOutcome, MAX_OWNER_LEN,
};
pub use transaction::{Transaction, TransactionTooLarge, MAX_TRANSACTION_BYTES};
use versions::Versions;

/// Number of shards. Many small shards keep lock contention low on many cores and, more
/// importantly here, keep each step of the expiry sweep short. Must be a power of two.
const SHARDS: usize = 1024;

/// When a write makes an entry expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// This many milliseconds from now.
    In(u64),
    /// At this Unix time in milliseconds.
    At(u64),
    /// Keep the entry's current deadline (Redis's `KEEPTTL`); if the key is absent or expired,
    /// this many milliseconds from now, since every entry must expire.
    KeepOr(u64),
}

impl Expiry {
    /// The absolute deadline, given the time and the entry's current deadline if it is live.
    fn deadline(self, now_ms: u64, current: Option<u64>) -> u64 {
        match self {
            Expiry::In(ms) => now_ms + ms,
            Expiry::At(at) => at,
            Expiry::KeepOr(ms) => current.unwrap_or(now_ms + ms),
        }
    }
}

/// Approximate bytes an entry costs beyond its key and value: the table's 8-byte pointer and
/// control byte at the table's average load of about two thirds, the slot's 28-byte header,
/// and the allocator's rounding of its two allocations. Used for the STATS estimate;
/// `examples/entry_memory.rs` measures the real figure.
pub const ENTRY_OVERHEAD_BYTES: u64 = (std::mem::size_of::<Slot>() as u64 + 1) * 3 / 2 + 28 + 8;

/// A handle to the store. Clones share the same data.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// The hasher for keys: foldhash, seeded randomly per process. Keys are chosen by clients, so
/// an unseeded or fixed hash would let an attacker pile keys into one bucket chain; the
/// standard library's SipHash also resists that but costs more per lookup (the largest item
/// of the store's own time in profiles of the default workload).
type KeyHasher = foldhash::fast::RandomState;

struct Shared {
    /// A set of slots, each hashed and compared as its key: the bucket is one thin pointer.
    map: DashMap<Slot, (), KeyHasher>,
    /// The version counter and its durable reservation.
    versions: Versions,
    clock: Clock,
    sink: Option<Arc<dyn MutationSink>>,
    /// Sum of key and value lengths of the entries held.
    payload_bytes: AtomicI64,
    /// Entries removed because they expired (by the sweep or on access).
    expired_reclaimed: AtomicU64,
    /// What the server's memory holds and its limit: the store counts its entries and table
    /// here, and hands the same accounting to the AOF and the connections.
    memory: Arc<Accounting>,
    /// Admission and eviction at the memory cap.
    pressure: Pressure,
    /// Owner -> keys of its sessions ([`owner`]).
    owners: OwnerIndex,
    /// `limits.max_session_lifetime` in ms, 0 for none: read on every create, so an atomic
    /// rather than behind the lock of `session_defaults`.
    default_lifetime_ms: AtomicU64,
    /// The configured defaults of the session options.
    session_defaults: RwLock<SessionDefaults>,
    /// What makes transactions atomic ([`gate`]).
    gates: Gates,
    /// Held shared by every running transaction, exclusively by a visit of one shard
    /// ([`transaction`] says why).
    transactions: RwLock<()>,
}

impl Store {
    /// An empty store with a wall clock and no persistence.
    pub fn new() -> Store {
        Store::with_parts(Clock::new(), None)
    }

    /// An empty store reading time from `clock` and reporting every mutation to `sink`.
    pub fn with_parts(clock: Clock, sink: Option<Arc<dyn MutationSink>>) -> Store {
        let memory = Arc::new(Accounting::unlimited());
        Store {
            shared: Arc::new(Shared {
                map: DashMap::with_hasher_and_shard_amount(KeyHasher::default(), SHARDS),
                versions: Versions::unlimited(),
                clock,
                sink,
                payload_bytes: AtomicI64::new(0),
                expired_reclaimed: AtomicU64::new(0),
                owners: OwnerIndex::new(memory.clone()),
                memory,
                pressure: Pressure::default(),
                default_lifetime_ms: AtomicU64::new(0),
                session_defaults: RwLock::new(SessionDefaults::default()),
                gates: Gates::new(),
                transactions: RwLock::new(()),
            }),
        }
    }

    /// The server's memory accounting, which the store's entries count in, and the limit
    /// they are held to.
    pub fn memory(&self) -> &Arc<Accounting> {
        &self.shared.memory
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Reads `key`. With `touch_ttl_ms`, first moves its deadline to now plus that TTL (sliding
    /// expiry) without changing the version.
    pub fn get(&self, key: &[u8], touch_ttl_ms: Option<u64>) -> GetReply {
        let _gate = self.shared.gates.shared(key);
        let now = self.shared.clock.now_ms();
        let Some(ttl) = touch_ttl_ms else {
            // A plain read takes only the shard's read lock.
            match self.shared.map.get(key) {
                Some(found) if found.key().is_live(now) => {
                    return GetReply::Hit(found.key().entry(now))
                }
                None => return GetReply::Miss,
                Some(_) => {}
            }
            self.remove_if_expired(key, now);
            return GetReply::Miss;
        };
        match self.shared.map.get_mut(key) {
            Some(mut found) if found.key().is_live(now) => {
                let mut slot = SlotMut::from_ref_mut(&mut found);
                self.move_deadline(&mut slot, now + ttl);
                GetReply::Hit(slot.slot().entry(now))
            }
            Some(slot) => {
                drop(slot);
                self.remove_if_expired(key, now);
                GetReply::Miss
            }
            None => GetReply::Miss,
        }
    }

    /// Writes `value` under `key` with a TTL, subject to `mode`. Not held to the memory
    /// limit: the commands use [`Store::set_limited`].
    pub fn set(&self, key: &[u8], value: &[u8], ttl_ms: u64, mode: SetMode) -> SetOutcome {
        self.set_with(key, value, Expiry::In(ttl_ms), mode)
    }

    /// Writes `value` under `key` with the deadline `expiry` gives, subject to `mode`. Not
    /// held to the memory limit.
    #[inline]
    pub fn set_with(&self, key: &[u8], value: &[u8], expiry: Expiry, mode: SetMode) -> SetOutcome {
        let write = self.plain_write(value, expiry, mode, false);
        self.unlimited(self.write(key, write, None))
    }

    /// Writes `value` under `key` with the deadline `expiry` gives, subject to `mode` and
    /// to the memory limit: at the limit, a write that would create an entry or grow one is
    /// refused (or, with `evict-soonest-expiring`, makes room; see [`pressure`]). With
    /// `previous`, also returns there the entry the key held before (if it was live), read
    /// under the same lock as the write.
    pub fn set_limited(
        &self,
        key: &[u8],
        value: &[u8],
        expiry: Expiry,
        mode: SetMode,
        previous: Option<&mut Option<Entry>>,
    ) -> Result<SetOutcome, OutOfMemory> {
        let write = self.plain_write(value, expiry, mode, true);
        self.write(key, write, previous)
    }

    /// A write that binds no owner and sets no absolute deadline of its own.
    #[inline]
    fn plain_write<'a>(
        &self,
        value: &'a [u8],
        expiry: Expiry,
        mode: SetMode,
        limited: bool,
    ) -> Write<'a> {
        Write {
            value,
            expiry,
            mode,
            now: self.shared.clock.now_ms(),
            limited,
            admitted: false,
            session: SessionWrite::default(),
        }
    }

    /// The outcome of a write made with `limited` false, which is never refused.
    fn unlimited(&self, written: Result<SetOutcome, OutOfMemory>) -> SetOutcome {
        written.unwrap_or(SetOutcome::NotFound)
    }

    /// Like [`Store::set_with`], also returning the entry the key held before (if it was
    /// live), read under the same lock as the write.
    pub fn set_returning_previous(
        &self,
        key: &[u8],
        value: &[u8],
        expiry: Expiry,
        mode: SetMode,
    ) -> (SetOutcome, Option<Entry>) {
        let mut previous = None;
        let write = self.plain_write(value, expiry, mode, false);
        let outcome = self.write(key, write, Some(&mut previous));
        (self.unlimited(outcome), previous)
    }

    /// Applies `write` to `key`; then, if the write took the key from an owner (a create
    /// over an expired session, or a binding to another owner), drops it from that owner's
    /// index, after the shard lock is released ([`owner`] says why after).
    #[inline]
    fn write(
        &self,
        key: &[u8],
        write: Write<'_>,
        previous: Option<&mut Option<Entry>>,
    ) -> Result<SetOutcome, OutOfMemory> {
        let _gate = self.shared.gates.shared(key);
        let mut unbound = None;
        let outcome = self.write_locked(key, write, previous, &mut unbound);
        if unbound.is_some() {
            self.unindex_unbound(unbound, key);
        }
        outcome
    }

    fn write_locked(
        &self,
        key: &[u8],
        write: Write<'_>,
        previous: Option<&mut Option<Entry>>,
        unbound: &mut Option<Box<[u8]>>,
    ) -> Result<SetOutcome, OutOfMemory> {
        // Updates are the common case for sessions: find the entry without allocating a key.
        if let Some(mut found) = self.shared.map.get_mut(key) {
            let slot = SlotMut::from_ref_mut(&mut found);
            return self.overwrite(slot, write, previous, unbound);
        }
        if matches!(write.mode, SetMode::UpdateOnly | SetMode::IfVersion(_)) {
            return Ok(SetOutcome::NotFound);
        }
        let meta = self.created_meta(write.session, write.now);
        if write.limited && !write.admitted {
            // Before the shard lock: making room may sweep other shards.
            let ext = if meta.is_needed() {
                raw::EXT_FIXED_LEN + meta.owner.map_or(0, <[u8]>::len)
            } else {
                0
            };
            self.admit(entry_bytes(key.len() + ext, write.value.len()))?;
        }
        // The new slot is built before the shard lock is taken: its version and deadline are
        // set under the lock, once the key is known to be absent.
        match self
            .shared
            .map
            .entry(Slot::with_meta(key, write.value, 0, 0, Some(&meta)))
        {
            // Another writer created the key between the lookup and here.
            MapEntry::Occupied(mut occupied) => {
                let slot = SlotMut::from_occupied(&mut occupied);
                self.overwrite(slot, write, previous, unbound)
            }
            MapEntry::Vacant(vacant) => {
                let mut inserted = vacant.insert(());
                let mut slot = SlotMut::from_ref_mut(&mut inserted);
                let version = self.next_version();
                let deadline = write.expiry.deadline(write.now, None);
                slot.set_expires_at_ms(clamp(deadline, meta.absolute_deadline_ms));
                slot.set_version(version);
                self.record_set(slot.slot());
                self.gained(slot.slot());
                Ok(SetOutcome::Stored { version })
            }
        }
    }

    /// The session fields of a session created now by `session`: the configured lifetime
    /// (`limits.max_session_lifetime`) is the latest absolute deadline a session may have,
    /// and the one it gets when the write gives none.
    fn created_meta<'a>(&self, session: SessionWrite<'a>, now: u64) -> Meta<'a> {
        let max_lifetime = self.shared.default_lifetime_ms.load(Ordering::Relaxed);
        let latest = (max_lifetime > 0).then(|| now.saturating_add(max_lifetime));
        Meta {
            owner: session.owner,
            created_ms: now,
            last_access_ms: now,
            absolute_deadline_ms: match (session.absolute_deadline_ms, latest) {
                (Some(asked), Some(latest)) => Some(asked.min(latest)),
                (asked, latest) => asked.or(latest),
            },
        }
    }

    /// `SET` against an entry that is present (though maybe expired), under its shard lock.
    fn overwrite(
        &self,
        mut slot: SlotMut<'_>,
        write: Write<'_>,
        previous: Option<&mut Option<Entry>>,
        unbound: &mut Option<Box<[u8]>>,
    ) -> Result<SetOutcome, OutOfMemory> {
        let Write {
            value,
            expiry,
            mode,
            now,
            limited,
            session,
            ..
        } = write;
        let current = slot.slot();
        let live = current.is_live(now);
        if let (Some(previous), true) = (previous, live) {
            *previous = Some(current.entry(now));
        }
        match mode {
            SetMode::CreateOnly if live => return Ok(SetOutcome::Exists),
            SetMode::UpdateOnly | SetMode::IfVersion(_) if !live => {
                return Ok(SetOutcome::NotFound)
            }
            SetMode::IfVersion(expected) if expected != current.version() => {
                return Ok(SetOutcome::VersionMismatch {
                    current: current.version(),
                })
            }
            _ => {}
        }
        let growth =
            allocated_size(value.len()).saturating_sub(allocated_size(current.value().len()));
        if limited && (growth > 0 || !live) {
            // An update that grows the entry, or a create over an expired one. Under the
            // shard lock, so no reclaiming here: the background task does it.
            self.check_growth(growth)?;
        }
        if !live {
            // Replacing an expired entry is a create, as far as anyone can observe.
            self.shared
                .expired_reclaimed
                .fetch_add(1, Ordering::Relaxed);
        }
        let deadline = expiry.deadline(now, live.then_some(current.expires_at_ms()));
        // The common case, a plain SET over a plain entry, has no session fields to keep.
        let plain = !current.has_meta()
            && session.owner.is_none()
            && session.absolute_deadline_ms.is_none()
            && (live || self.shared.default_lifetime_ms.load(Ordering::Relaxed) == 0);
        let absolute = if plain {
            None
        } else {
            self.rewrite_meta(&mut slot, live, session, now, unbound)
        };
        self.value_replaced(slot.slot().value().len(), value.len());
        slot.replace_value(value);
        slot.set_expires_at_ms(clamp(deadline, absolute));
        let version = self.next_version();
        slot.set_version(version);
        self.record_set(slot.slot());
        Ok(SetOutcome::Stored { version })
    }

    /// Brings the session fields of a slot being overwritten up to date: an update keeps
    /// its owner (unless `session` binds another), creation time and the earlier of the
    /// absolute deadlines, and records the access; a write over an expired entry is a create
    /// and starts afresh. Sets `unbound` to the owner the key leaves, if any. Returns the
    /// absolute deadline the slot now has.
    #[inline(never)]
    fn rewrite_meta(
        &self,
        slot: &mut SlotMut<'_>,
        live: bool,
        session: SessionWrite<'_>,
        now: u64,
        unbound: &mut Option<Box<[u8]>>,
    ) -> Option<u64> {
        let current = slot.slot().meta();
        let wanted = match current.filter(|_| live) {
            Some(current) => Meta {
                owner: session.owner.or(current.owner),
                created_ms: current.created_ms,
                last_access_ms: now,
                absolute_deadline_ms: match (
                    current.absolute_deadline_ms,
                    session.absolute_deadline_ms,
                ) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            },
            // A plain entry given session fields: its creation time is not known, the time
            // it became a session is the best there is. The configured lifetime applies to
            // creates only, so an update leaves a plain entry plain.
            None if live => Meta {
                owner: session.owner,
                created_ms: now,
                last_access_ms: now,
                absolute_deadline_ms: session.absolute_deadline_ms,
            },
            // A write over an expired entry is a create.
            None => self.created_meta(session, now),
        };
        let unchanged = match current {
            Some(current) => {
                wanted.is_needed()
                    && current.owner == wanted.owner
                    && current.absolute_deadline_ms == wanted.absolute_deadline_ms
                    && current.created_ms == wanted.created_ms
            }
            None => !wanted.is_needed(),
        };
        let absolute = wanted.absolute_deadline_ms;
        if unchanged {
            slot.set_last_access_ms(now);
            return absolute;
        }
        if let Some(old) = current.and_then(|meta| meta.owner) {
            if wanted.owner != Some(old) {
                *unbound = Some(Box::from(old));
            }
        }
        // The new owner may be borrowed from the block being replaced: copy it first.
        let owner = wanted.owner.map(<[u8]>::to_vec);
        self.replace_meta(
            slot,
            Meta {
                owner: owner.as_deref(),
                ..wanted
            },
        );
        absolute
    }

    /// Gives a slot the session fields `wanted` (which must not borrow from the slot),
    /// counting the block's change of size.
    fn replace_meta(&self, slot: &mut SlotMut<'_>, wanted: Meta<'_>) {
        let before = slot.slot().block_len();
        slot.set_meta(Some(&wanted));
        self.block_resized(before, slot.slot().block_len());
    }

    /// Moves `key`'s deadline to `at_ms` (Unix milliseconds). A deadline that has already
    /// passed removes the key, as Redis's `EXPIREAT` does. Returns whether the key existed.
    pub fn expire_at(&self, key: &[u8], at_ms: u64) -> bool {
        let now = self.shared.clock.now_ms();
        if at_ms <= now {
            return self.del(key, None) == DelOutcome::Deleted;
        }
        let _gate = self.shared.gates.shared(key);
        match self.shared.map.get_mut(key) {
            Some(mut found) if found.key().is_live(now) => {
                self.move_deadline(&mut SlotMut::from_ref_mut(&mut found), at_ms);
                true
            }
            Some(slot) => {
                drop(slot);
                self.remove_if_expired(key, now);
                false
            }
            None => false,
        }
    }

    /// Removes `key` and returns what it held, atomically.
    pub fn getdel(&self, key: &[u8]) -> GetReply {
        let _gate = self.shared.gates.shared(key);
        let now = self.shared.clock.now_ms();
        let removed = self.shared.map.remove_if(key, |slot, _| {
            // Expired entries are reclaimed too, but only live ones are returned and recorded.
            if slot.is_live(now) {
                self.record(Mutation::Del { key });
            }
            true
        });
        let Some((slot, ())) = removed else {
            return GetReply::Miss;
        };
        self.lost(&slot);
        self.unindex_slot(&slot);
        if slot.is_live(now) {
            GetReply::Hit(slot.entry(now))
        } else {
            self.shared
                .expired_reclaimed
                .fetch_add(1, Ordering::Relaxed);
            GetReply::Miss
        }
    }

    /// Removes every entry, recording each live one as deleted. Returns how many live entries
    /// there were.
    pub fn clear(&self) -> usize {
        // Inside a transaction the caller holds some gates already; it never clears.
        let _gates = self.shared.gates.all();
        let now = self.shared.clock.now_ms();
        let mut removed = 0;
        let mut owned = Vec::new();
        self.shared.map.retain(|slot, _| {
            if slot.is_live(now) {
                self.record(Mutation::Del { key: slot.key() });
                removed += 1;
            }
            if let Some(owner) = slot.owner() {
                owned.push((Box::<[u8]>::from(owner), Box::<[u8]>::from(slot.key())));
            }
            self.lost(slot);
            false
        });
        for (owner, key) in owned {
            self.unindex(&owner, &key);
        }
        removed
    }

    /// Moves `key`'s deadline to now plus `ttl_ms`.
    pub fn touch(&self, key: &[u8], ttl_ms: u64) -> TouchReply {
        let _gate = self.shared.gates.shared(key);
        let now = self.shared.clock.now_ms();
        match self.shared.map.get_mut(key) {
            Some(mut found) if found.key().is_live(now) => {
                let mut slot = SlotMut::from_ref_mut(&mut found);
                self.move_deadline(&mut slot, now + ttl_ms);
                TouchReply::Touched {
                    version: slot.slot().version(),
                }
            }
            Some(slot) => {
                drop(slot);
                self.remove_if_expired(key, now);
                TouchReply::NotFound
            }
            None => TouchReply::NotFound,
        }
    }

    /// Removes `key`, if present, live, and (with `if_version`) at that version.
    pub fn del(&self, key: &[u8], if_version: Option<u64>) -> DelOutcome {
        let _gate = self.shared.gates.shared(key);
        let now = self.shared.clock.now_ms();
        let mut outcome = DelOutcome::NotFound;
        let removed = self.shared.map.remove_if(key, |slot, _| {
            if !slot.is_live(now) {
                // Gone already as far as clients can tell; reclaim it while we hold the lock.
                return true;
            }
            match if_version {
                Some(expected) if expected != slot.version() => {
                    outcome = DelOutcome::VersionMismatch {
                        current: slot.version(),
                    };
                    false
                }
                _ => {
                    outcome = DelOutcome::Deleted;
                    // Recorded under the shard lock, like every other mutation.
                    self.record(Mutation::Del { key });
                    true
                }
            }
        });
        if let Some((slot, ())) = removed {
            self.lost(&slot);
            self.unindex_slot(&slot);
            if outcome == DelOutcome::NotFound {
                self.shared
                    .expired_reclaimed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        outcome
    }

    /// Replays a persisted SET: the key holds exactly this, whatever it held before. Not
    /// reported to the sink, and the version counter is moved past `version` so that new
    /// writes never reuse it.
    pub fn restore_set(&self, key: &[u8], value: &[u8], expires_at_ms: u64, version: u64) {
        self.restore_entry(Slot::new(key, value, expires_at_ms, version));
    }

    /// Replays a persisted session (SESSION_SET): the key holds exactly this, with its
    /// owner (indexed) and timestamps. Not reported to the sink.
    pub fn restore_session(&self, session: &SessionState<'_>) {
        let slot = Slot::with_meta(
            session.key,
            session.value,
            session.expires_at_ms,
            session.version,
            Some(&session.meta),
        );
        let Some(owner) = session.meta.owner else {
            return self.restore_entry(slot);
        };
        // As for a live binding: into the index first, then into the map.
        self.shared.owners.lock(owner).add(session.key);
        self.restore_entry(slot);
    }

    /// Puts `slot` in the map in place of whatever its key held.
    fn restore_entry(&self, slot: Slot) {
        self.shared.versions.restore(slot.version());
        self.gained(&slot);
        // The new slot must replace the old one whole (`insert` would keep the old slot and
        // drop the new one): `replace_entry` swaps in the slot the entry was made with.
        let old = match self.shared.map.entry(slot) {
            MapEntry::Occupied(occupied) => occupied.replace_entry(()).0,
            MapEntry::Vacant(vacant) => {
                vacant.insert(());
                return;
            }
        };
        self.lost(&old);
        self.unindex_slot(&old);
    }

    /// Replays a persisted TOUCH. Not reported to the sink.
    pub fn restore_touch(&self, key: &[u8], expires_at_ms: u64) {
        if let Some(mut found) = self.shared.map.get_mut(key) {
            SlotMut::from_ref_mut(&mut found).set_expires_at_ms(expires_at_ms);
        }
    }

    /// Replays a persisted SESSION_TOUCH. Not reported to the sink.
    pub fn restore_session_touch(&self, key: &[u8], expires_at_ms: u64, last_access_ms: u64) {
        if let Some(mut found) = self.shared.map.get_mut(key) {
            let mut slot = SlotMut::from_ref_mut(&mut found);
            slot.set_expires_at_ms(expires_at_ms);
            slot.set_last_access_ms(last_access_ms);
        }
    }

    /// Replays a persisted ROTATE: the old key is gone and the session is at its new key.
    /// Not reported to the sink.
    pub fn restore_rotate(&self, old_key: &[u8], new: &SessionState<'_>) {
        self.restore_del(old_key);
        self.restore_session(new);
    }

    /// Replays a persisted DEL. Not reported to the sink.
    pub fn restore_del(&self, key: &[u8]) {
        if let Some((slot, ())) = self.shared.map.remove(key) {
            self.lost(&slot);
            self.unindex_slot(&slot);
        }
    }

    /// Replays a persisted version floor: new writes get versions above `version`. Not
    /// reported to the sink.
    pub fn restore_last_version(&self, version: u64) {
        self.shared.versions.restore(version);
    }

    /// Without persistence: starts the version counter at the current Unix time in
    /// nanoseconds. Nothing survives a restart then, but a client may still hold a version
    /// from before it, and a session id written again after the restart (many frameworks save
    /// a session under the id its cookie presented) would otherwise be handed the same small
    /// numbers again, letting an if-version write based on the old read succeed. A counter
    /// that starts at the time in nanoseconds stays above every version handed out before, as
    /// long as the server handed out fewer than a billion a second and the clock did not go
    /// back across the restart. `u64` nanoseconds last until the year 2554.
    pub fn seed_versions_from_wall_clock(&self) {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        self.shared.versions.restore(now_ns);
    }

    /// Replays a persisted time: the clock reads at least `unix_ms` from now on, so entries
    /// that had expired before it stay expired even if the system clock is now behind.
    pub fn restore_clock(&self, unix_ms: u64) {
        self.shared.clock.raise_to(unix_ms);
    }

    /// From now on, versions above the last one handed out are handed out only once
    /// [`Store::grant_versions`] has allowed them. A persistence layer calls this after replay,
    /// before the first write, and grants each ceiling once a record of it is durable.
    pub fn require_version_reservations(&self) {
        self.shared.versions.require_reservations();
    }

    /// Notes that a reservation of versions up to `ceiling` is on its way to the disk; it
    /// counts in [`Store::versions_reserved_up_to`] from now on.
    pub fn request_versions(&self, ceiling: u64) {
        self.shared.versions.request(ceiling);
    }

    /// The last version handed out and the highest one granted.
    pub fn version_headroom(&self) -> (u64, u64) {
        (self.shared.versions.last(), self.shared.versions.granted())
    }

    /// Allows versions up to `ceiling` to be handed out.
    pub fn grant_versions(&self, ceiling: u64) {
        self.shared.versions.grant(ceiling);
    }

    /// Every version up to this may have been handed out: with reservations the highest
    /// ceiling granted or requested, else the last version. A snapshot of the store records
    /// it, since versions up to the ceiling may be in clients' hands by the time the snapshot
    /// replaces the file.
    pub fn versions_reserved_up_to(&self) -> u64 {
        self.shared.versions.reserved_up_to()
    }

    /// Number of shards; [`Store::visit_live_in_shard`] takes an index below it.
    pub fn shard_count(&self) -> usize {
        self.shared.map.shards().len()
    }

    /// Calls `f(key, value, expires_at_ms, version)` for every live entry of one shard, under
    /// that shard's read lock (so `f` must not block; a snapshot encodes into memory here and
    /// writes after the call returns).
    pub fn visit_live_in_shard(&self, shard: usize, mut f: impl FnMut(&[u8], &[u8], u64, u64)) {
        self.visit_live_sessions_in_shard(shard, |entry, _| {
            f(entry.key, entry.value, entry.expires_at_ms, entry.version);
        });
    }

    /// Like [`Store::visit_live_in_shard`], with each entry's session fields and whether it
    /// has any (a plain entry's are all zero): what a snapshot writes. The shard is read
    /// while no transaction runs.
    pub fn visit_live_sessions_in_shard(
        &self,
        shard: usize,
        mut f: impl FnMut(&SessionState<'_>, bool),
    ) {
        // Never a transaction's half-done state: a snapshot taken from it would keep writes
        // the transaction then undoes, or had not recorded yet ([`transaction`]).
        let _quiet = (!gate::Held::is_running(&self.shared.gates))
            .then(|| gate::write(&self.shared.transactions));
        let now = self.shared.clock.now_ms();
        self.visit_buckets(shard, 0, usize::MAX, |slot| {
            if slot.is_live(now) {
                let meta = slot.meta();
                let state = SessionState {
                    key: slot.key(),
                    value: slot.value(),
                    expires_at_ms: slot.expires_at_ms(),
                    version: slot.version(),
                    meta: meta.unwrap_or(Meta {
                        owner: None,
                        created_ms: 0,
                        last_access_ms: 0,
                        absolute_deadline_ms: None,
                    }),
                };
                f(&state, meta.is_some());
            }
        });
    }

    /// Calls `f` for each entry in the buckets `from..from + max` of `shard`, under the shard's
    /// read lock. Returns where the visit stopped and the shard's bucket count, for callers
    /// that resume with a cursor.
    fn visit_buckets(
        &self,
        shard: usize,
        from: usize,
        max: usize,
        f: impl FnMut(&Slot),
    ) -> (usize, usize) {
        let table = self.shared.map.shards()[shard].read();
        let buckets = table.buckets();
        let end = from.saturating_add(max).min(buckets);
        raw::for_each_slot(&table, from.min(end), end, f);
        (end, buckets)
    }

    /// Number of entries held, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.shared.map.len()
    }

    /// Whether the store holds no entries at all.
    pub fn is_empty(&self) -> bool {
        self.shared.map.is_empty()
    }

    /// Entries reclaimed because they expired, since start.
    pub fn expired_reclaimed(&self) -> u64 {
        self.shared.expired_reclaimed.load(Ordering::Relaxed)
    }

    /// Estimated memory held by entries: key and value bytes plus
    /// [`ENTRY_OVERHEAD_BYTES`] each.
    pub fn memory_estimate(&self) -> u64 {
        let payload = self.shared.payload_bytes.load(Ordering::Relaxed).max(0) as u64;
        payload + self.len() as u64 * ENTRY_OVERHEAD_BYTES
    }

    /// The last version handed out (0 before the first write).
    pub fn last_version(&self) -> u64 {
        self.shared.versions.last()
    }

    fn next_version(&self) -> u64 {
        self.shared.versions.next(|| {
            if let Some(sink) = &self.shared.sink {
                sink.versions_exhausted();
            }
        })
    }

    fn remove_if_expired(&self, key: &[u8], now: u64) {
        if let Some((slot, ())) = self.shared.map.remove_if(key, |s, _| !s.is_live(now)) {
            self.lost(&slot);
            self.unindex_slot(&slot);
            self.shared
                .expired_reclaimed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves a live entry's deadline (never past its absolute deadline) and records the
    /// TOUCH; for a session, also its last access.
    #[inline]
    fn move_deadline(&self, slot: &mut SlotMut<'_>, expires_at_ms: u64) {
        if slot.slot().has_meta() {
            return self.move_session_deadline(slot, expires_at_ms);
        }
        slot.set_expires_at_ms(expires_at_ms);
        self.record(Mutation::Touch {
            key: slot.slot().key(),
            expires_at_ms: slot.slot().expires_at_ms(),
        });
    }

    /// [`Store::move_deadline`] for a slot with session fields, apart so that the plain
    /// path stays small enough to inline into every read with touch.
    #[inline(never)]
    fn move_session_deadline(&self, slot: &mut SlotMut<'_>, expires_at_ms: u64) {
        let absolute = slot
            .slot()
            .meta()
            .and_then(|meta| meta.absolute_deadline_ms);
        let now = self.shared.clock.now_ms();
        slot.set_expires_at_ms(clamp(expires_at_ms, absolute));
        slot.set_last_access_ms(now);
        self.record(Mutation::SessionTouch {
            key: slot.slot().key(),
            expires_at_ms: slot.slot().expires_at_ms(),
            last_access_ms: now,
        });
    }

    #[inline]
    fn record_set(&self, slot: &Slot) {
        if slot.has_meta() {
            return self.record_session_set(slot);
        }
        self.record(Mutation::Set {
            key: slot.key(),
            value: slot.value(),
            expires_at_ms: slot.expires_at_ms(),
            version: slot.version(),
        });
    }

    #[inline(never)]
    fn record_session_set(&self, slot: &Slot) {
        if let Some(meta) = slot.meta() {
            self.record(Mutation::SessionSet(SessionState {
                key: slot.key(),
                value: slot.value(),
                expires_at_ms: slot.expires_at_ms(),
                version: slot.version(),
                meta,
            }));
        }
    }

    fn record(&self, mutation: Mutation<'_>) {
        if let Some(sink) = &self.shared.sink {
            // A write of a transaction's key is recorded with the rest of the transaction,
            // when it ends.
            if gate::Held::is_running(&self.shared.gates) && transaction::note(&mutation) {
                return;
            }
            sink.record(mutation);
        }
    }

    /// Counts a new entry, in the payload and in the memory accounting.
    fn gained(&self, slot: &Slot) {
        let (key_len, value_len) = (slot.key().len(), slot.value().len());
        self.shared
            .payload_bytes
            .fetch_add((key_len + value_len) as i64, Ordering::Relaxed);
        self.shared.memory.add(Part::Entries, slot_bytes(slot));
    }

    /// Counts an entry's block rebuilt at another size (its session fields changed).
    fn block_resized(&self, old_len: usize, new_len: usize) {
        let memory = &self.shared.memory;
        memory.add(Part::Entries, allocated_size(new_len));
        memory.sub(Part::Entries, allocated_size(old_len));
    }

    /// Counts an entry's value replaced by one of another length.
    fn value_replaced(&self, old_len: usize, new_len: usize) {
        if old_len == new_len {
            return;
        }
        self.shared
            .payload_bytes
            .fetch_add(new_len as i64 - old_len as i64, Ordering::Relaxed);
        let memory = &self.shared.memory;
        memory.add(Part::Entries, allocated_size(new_len));
        memory.sub(Part::Entries, allocated_size(old_len));
    }

    /// Counts one entry removed.
    fn lost(&self, slot: &Slot) {
        let mut freed = Freed::default();
        freed.add(slot);
        self.release(freed);
    }

    /// Counts entries removed together (by a walk over a table).
    fn release(&self, freed: Freed) {
        if freed.payload > 0 || freed.memory > 0 {
            self.shared
                .payload_bytes
                .fetch_sub(freed.payload as i64, Ordering::Relaxed);
            self.shared.memory.sub(Part::Entries, freed.memory);
        }
    }
}

/// The parts of a write that `write` hands to `overwrite`.
#[derive(Clone, Copy)]
struct Write<'a> {
    value: &'a [u8],
    expiry: Expiry,
    mode: SetMode,
    now: u64,
    limited: bool,
    /// The memory limit already admitted the write (before a lock that admission could not
    /// be run under).
    admitted: bool,
    session: SessionWrite<'a>,
}

/// The session fields a write sets, beyond what every SET does.
#[derive(Debug, Default, Clone, Copy)]
struct SessionWrite<'a> {
    /// Bind the session to this owner.
    owner: Option<&'a [u8]>,
    /// Give it this absolute deadline (an update keeps the earlier of this and its own).
    absolute_deadline_ms: Option<u64>,
}

/// `deadline`, but never after `absolute`.
fn clamp(deadline: u64, absolute: Option<u64>) -> u64 {
    absolute.map_or(deadline, |absolute| deadline.min(absolute))
}

/// What a slot takes from the allocator: its block and its value, each rounded to the
/// allocator's size class.
fn slot_bytes(slot: &Slot) -> usize {
    allocated_size(slot.block_len()) + allocated_size(slot.value().len())
}

/// What an entry of these lengths takes from the allocator: its block (header and key) and
/// its value's own allocation, each rounded to the allocator's size class. The table's
/// bucket is counted apart, at the table's real capacity ([`pressure`]).
pub fn entry_bytes(key_len: usize, value_len: usize) -> usize {
    allocated_size(raw::HEADER_LEN + key_len) + allocated_size(value_len)
}

/// The sizes of entries being removed, summed so that a walk updates the counters once.
#[derive(Debug, Default, Clone, Copy)]
struct Freed {
    /// Key and value bytes, as `payload_bytes` counts them.
    payload: usize,
    /// Bytes allocated, as the memory accounting counts them.
    memory: usize,
}

impl Freed {
    fn add(&mut self, slot: &Slot) {
        self.payload += slot.key().len() + slot.value().len();
        self.memory += slot_bytes(slot);
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("entries", &self.len())
            .finish()
    }
}
