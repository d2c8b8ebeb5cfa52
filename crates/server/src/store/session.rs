//! Session semantics: absolute lifetime, owners, per-owner limits, atomic id rotation.
//!
//! # The API
//!
//! ```text
//! Store::set_session(key, value, Expiry, SetMode, &SessionOptions)
//!     -> Result<SessionSetOutcome, SessionError>
//! Store::sessions_of(owner) -> Vec<SessionInfo>
//! Store::end_all(owner, except: Option<&[u8]>) -> u64
//! Store::rotate(old_key, new_key, if_version: Option<u64>,
//!               bind: Option<(&[u8], Option<OwnerLimit>)>)
//!     -> Result<RotateOutcome, SessionError>
//! Store::set_session_defaults(SessionDefaults)   // limits.max_session_lifetime,
//!                                                // limits.max_sessions_per_owner + policy
//! ```
//!
//! - **Absolute lifetime.** A session may carry an absolute deadline, given at creation
//!   ([`SessionOptions::absolute_deadline`]) or from `limits.max_session_lifetime` (which
//!   applies to every session created, through this API or a plain SET, and is also the
//!   latest deadline a creation may ask for). Every write that
//!   moves a deadline (GET with touch, TOUCH, EXPIRE, an update) clamps it to the absolute
//!   one, so sliding expiry never keeps a session past it. An update may shorten the
//!   absolute deadline, never lengthen it.
//! - **Owner.** A session may be bound to an owner (1 to [`MAX_OWNER_LEN`] opaque bytes, a
//!   user id), at creation or by a later write. An update without an owner keeps the binding;
//!   a write over an expired session is a create and starts unbound.
//! - **Per-owner limit.** Binding a session to an owner that already has `max` live sessions
//!   is refused ([`LimitPolicy::Refuse`]) or ends the least recently used ones
//!   ([`LimitPolicy::EndLeastRecentlyUsed`]: "recently used" is the last write or touch; a
//!   GET without touch takes only a read lock and records no access). The check and the
//!   binding happen under the owner's lock, so two concurrent logins can never both pass it.
//! - **Listing and ending** read the owner index ([`super::owner`]) under the owner's lock
//!   and check every key against the map, so they see exactly the owner's live sessions.
//!   `end_all` ends the sessions the index holds when it starts, one at a time, each under
//!   its gate and then the owner's lock: a login that binds a session meanwhile keeps it. A
//!   GET of one of the sessions sees each one end in turn.
//! - **Rotation** moves a session to a new key (create-only there), conditional on its
//!   version, keeping its value, deadline, owner and timestamps and giving it a new version.
//!   It holds both keys' shard locks (in shard order, so two rotations cannot deadlock) for
//!   the whole move and records it as one ROTATE record, so neither a reader nor a crash
//!   ever sees both keys or neither.
//!
//! Lock order: key gates ([`super::gate`]), then the owner lock, then shard locks (see
//! [`super::owner`]).

use bytes::Bytes;
use sessiond_proto::command::SetMode;
use sessiond_proto::command::SetOutcome;

use super::owner::OwnerGuard;
use super::raw::{
    find_slot, insert_slot, take_slot, Meta, ShardTable, Slot, EXT_FIXED_LEN, HEADER_LEN,
};
use super::{Expiry, Mutation, OutOfMemory, SessionState, SessionWrite, Store, Write};
use crate::memory::allocated_size;

/// The owner limit types and the owner length bound are the protocol's: the store enforces
/// exactly what the wire carries.
pub use sessiond_proto::command::{LimitPolicy, OwnerLimit, MAX_OWNER_LEN};

/// What [`Store::set_session`] sets beyond a plain SET.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions<'a> {
    /// Bind the session to this owner (1 to [`MAX_OWNER_LEN`] bytes).
    pub owner: Option<&'a [u8]>,
    /// Unix ms after which the session is gone whatever touches it; an update keeps the
    /// earlier of this and the deadline it has.
    pub absolute_deadline: Option<u64>,
    /// The limit on the owner's live sessions for this request; without it,
    /// `limits.max_sessions_per_owner`. It can only be lower than that one: with both, the
    /// lower applies.
    pub owner_limit: Option<OwnerLimit>,
}

/// The configured defaults (`[limits]`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionDefaults {
    /// `limits.max_session_lifetime`: every session created gets an absolute deadline this
    /// many ms after its creation, unless the write gives one.
    pub max_lifetime_ms: Option<u64>,
    /// `limits.max_sessions_per_owner` and `limits.owner_limit_policy`.
    pub owner_limit: Option<OwnerLimit>,
}

/// What [`Store::set_session`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSetOutcome {
    /// Written, with this version; `ended` holds the keys of the owner's sessions the
    /// least-recently-used policy ended to make room.
    Stored {
        /// The session's new version.
        version: u64,
        /// Sessions ended by the owner's limit.
        ended: Vec<Bytes>,
    },
    /// Create-only, and the key is live.
    Exists,
    /// Update-only or if-version, and the key is absent.
    NotFound,
    /// If-version, and the key is at another version.
    VersionMismatch {
        /// The key's version.
        current: u64,
    },
    /// The owner is at its limit and the policy is to refuse. Nothing was written.
    OwnerLimitReached,
}

impl From<SetOutcome> for SessionSetOutcome {
    fn from(outcome: SetOutcome) -> SessionSetOutcome {
        match outcome {
            SetOutcome::Stored { version } => SessionSetOutcome::Stored {
                version,
                ended: Vec::new(),
            },
            SetOutcome::Exists => SessionSetOutcome::Exists,
            SetOutcome::NotFound => SessionSetOutcome::NotFound,
            SetOutcome::VersionMismatch { current } => {
                SessionSetOutcome::VersionMismatch { current }
            }
        }
    }
}

/// What [`Store::rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The session is at the new key with this version; the old key is gone.
    Rotated {
        /// The session's new version.
        version: u64,
        /// Sessions of the owner it was bound to that the owner's limit ended.
        ended: Vec<Bytes>,
    },
    /// The old key is absent.
    NotFound,
    /// The old key is at another version.
    VersionMismatch {
        /// The old key's version.
        current: u64,
    },
    /// The new key is taken (or is the old key itself).
    Exists,
    /// Binding to the owner would pass its limit and the policy is to refuse.
    OwnerLimitReached,
}

/// One live session of an owner, as [`Store::sessions_of`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's key.
    pub key: Bytes,
    /// Its version.
    pub version: u64,
    /// When it was created (or first bound, for an entry that was not a session), Unix ms.
    pub created_ms: u64,
    /// Its last write or touch, Unix ms.
    pub last_access_ms: u64,
    /// When it expires unless touched, Unix ms.
    pub expires_at_ms: u64,
    /// The deadline no touch moves it past, Unix ms.
    pub absolute_deadline_ms: Option<u64>,
}

/// Why a session operation was refused before it did anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The memory limit refused the write.
    #[error(transparent)]
    OutOfMemory(#[from] OutOfMemory),
    /// The owner is empty or longer than [`MAX_OWNER_LEN`].
    #[error("an owner must be 1 to {MAX_OWNER_LEN} bytes, not {0}")]
    InvalidOwner(usize),
    /// A limit of 0 sessions, which no session could ever be created under.
    #[error("an owner's session limit must be at least 1")]
    InvalidLimit,
}

/// (owner, key) pairs whose binding ended under a shard lock: the keys leave the owners'
/// index once the lock is released.
pub(super) type Unbound = Vec<(Box<[u8]>, Box<[u8]>)>;

/// The outcome of the locked part of a rotation.
enum Locked {
    Done(RotateOutcome),
    /// The old key's owner changed between the look that chose the owner lock and the shard
    /// locks: try again with the right lock.
    OwnerChanged,
    /// The moved entry would grow (a longer key, or session fields for a plain entry) and
    /// the memory limit refused it. Nothing was changed.
    OutOfMemory(OutOfMemory),
}

/// The refuse policy turned a binding down (see [`Store::bind_ahead`]).
struct LimitReached;

impl Store {
    /// Sets the configured defaults: `limits.max_session_lifetime`,
    /// `limits.max_sessions_per_owner` and `limits.owner_limit_policy`.
    pub fn set_session_defaults(&self, defaults: SessionDefaults) {
        self.shared.default_lifetime_ms.store(
            defaults.max_lifetime_ms.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        *self
            .shared
            .session_defaults
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = defaults;
    }

    /// The configured defaults.
    pub fn session_defaults(&self) -> SessionDefaults {
        *self
            .shared
            .session_defaults
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Number of owners with sessions in the index (an index entry is dropped when its last
    /// session leaves the map).
    pub fn owner_count(&self) -> usize {
        self.shared.owners.owners()
    }

    /// A SET that may also bind an owner and set an absolute deadline, held to the memory
    /// limit and, when it binds, to the owner's limit (see the module docs).
    pub fn set_session(
        &self,
        key: &[u8],
        value: &[u8],
        expiry: Expiry,
        mode: SetMode,
        options: &SessionOptions<'_>,
    ) -> Result<SessionSetOutcome, SessionError> {
        let now = self.shared.clock.now_ms();
        let mut write = Write {
            value,
            expiry,
            mode,
            now,
            limited: true,
            admitted: false,
            session: SessionWrite {
                owner: options.owner,
                absolute_deadline_ms: options.absolute_deadline,
            },
        };
        let Some(owner) = options.owner else {
            if options.absolute_deadline.is_some() {
                // Session fields grow a plain entry's block, which the overwrite (checking
                // only the value) would not ask for; a create asks for itself.
                if let Some(growth @ 1..) = self.update_growth(key, value.len(), write.session, now)
                {
                    self.admit(growth)?;
                }
            }
            return Ok(self.write(key, write, None)?.into());
        };
        check_owner(owner)?;
        let limit = self.owner_limit(options.owner_limit)?;
        // Lock order: the key's gate, then the owner's lock, then the shard's.
        let _gate = self.shared.gates.shared(key);
        // Admission may reclaim expired entries, which cleans the owner index: it must run
        // before the owner's lock is taken. An update asks only for what it adds, as a plain
        // overwrite does: one that changes no size never asks. (Should the entry go between
        // this look and the write, the create is not asked for again: one entry, at most,
        // per write racing a delete.)
        match self.update_growth(key, value.len(), write.session, now) {
            Some(0) => {}
            Some(growth) => self.admit(growth)?,
            None => self.admit(super::entry_bytes(
                key.len() + EXT_FIXED_LEN + owner.len(),
                value.len(),
            ))?,
        }
        write.admitted = true;

        let mut guard = self.shared.owners.lock(owner);
        let bound = self.is_live_session_of(key, owner, now);
        let Ok(added) = self.bind_ahead(&mut guard, key, bound, limit, now) else {
            return Ok(SessionSetOutcome::OwnerLimitReached);
        };
        let mut unbound = None;
        let written = self.write_locked(key, write, None, &mut unbound);
        let mut outcome = match written {
            Ok(outcome) => SessionSetOutcome::from(outcome),
            Err(e) => {
                self.settle(&mut guard, key, added, now);
                return Err(e.into());
            }
        };
        match &mut outcome {
            SessionSetOutcome::Stored { ended, .. } => {
                *ended = self.ended_by_limit(&mut guard, now, key, bound, limit);
            }
            _ => self.settle(&mut guard, key, added, now),
        }
        drop(guard);
        if let Some(previous) = unbound {
            self.unindex(&previous, key);
        }
        Ok(outcome)
    }

    /// The live sessions of `owner`, oldest first.
    pub fn sessions_of(&self, owner: &[u8]) -> Vec<SessionInfo> {
        let now = self.shared.clock.now_ms();
        let mut guard = self.shared.owners.lock(owner);
        let mut sessions = self.live_sessions(&mut guard, now, None);
        drop(guard);
        sessions.sort_by(|a, b| (a.created_ms, &a.key).cmp(&(b.created_ms, &b.key)));
        sessions
    }

    /// Ends every live session of `owner` but `except` (the caller's own, for "log out my
    /// other devices"), recording a DEL for each. Returns how many ended.
    pub fn end_all(&self, owner: &[u8], except: Option<&[u8]>) -> u64 {
        let now = self.shared.clock.now_ms();
        let keys = self.shared.owners.lock(owner).keys();
        let mut ended = 0;
        for key in keys {
            // Each session's gate before the owner's lock (the lock order): a transaction
            // holding the key finishes first, and its record precedes this DEL in the file.
            let _gate = self.shared.gates.shared(&key);
            let mut guard = self.shared.owners.lock(owner);
            if Some(&key[..]) == except {
                if !self.is_live_session_of(&key, owner, now) {
                    guard.remove(&key);
                }
                continue;
            }
            if self.end_session(&mut guard, &key, now) {
                ended += 1;
            }
        }
        ended
    }

    /// Moves the session at `old_key` to `new_key` in one step (see the module docs). With
    /// `if_version`, only if the session is at that version. With `bind`, the session is
    /// also bound to that owner, under the owner's limit (`None`: the configured one).
    pub fn rotate(
        &self,
        old_key: &[u8],
        new_key: &[u8],
        if_version: Option<u64>,
        bind: Option<(&[u8], Option<OwnerLimit>)>,
    ) -> Result<RotateOutcome, SessionError> {
        if old_key == new_key {
            return Ok(RotateOutcome::Exists);
        }
        let limit = match bind {
            Some((owner, limit)) => {
                check_owner(owner)?;
                self.owner_limit(limit)?
            }
            None => None,
        };
        let _gates = self.shared.gates.shared_pair(old_key, new_key);
        loop {
            let now = self.shared.clock.now_ms();
            // The owner the moved session will have decides which owner lock to hold.
            let current: Option<Box<[u8]>> = self
                .shared
                .map
                .get(old_key)
                .and_then(|found| found.key().owner().map(Box::from));
            let Some(target) = bind.map(|(owner, _)| owner).or(current.as_deref()) else {
                let mut unbound = Vec::new();
                let locked =
                    self.rotate_locked(old_key, new_key, if_version, None, now, None, &mut unbound);
                self.unindex_all(unbound);
                match locked {
                    Locked::Done(outcome) => return Ok(outcome),
                    Locked::OutOfMemory(e) => return Err(e.into()),
                    Locked::OwnerChanged => continue,
                }
            };
            let mut guard = self.shared.owners.lock(target);
            let bound = self.is_live_session_of(old_key, target, now);
            let Ok(added) = self.bind_ahead(&mut guard, new_key, bound, limit, now) else {
                return Ok(RotateOutcome::OwnerLimitReached);
            };
            let mut unbound = Vec::new();
            let bind_owner = bind.map(|(owner, _)| owner);
            let locked = self.rotate_locked(
                old_key,
                new_key,
                if_version,
                bind_owner,
                now,
                current.as_deref(),
                &mut unbound,
            );
            let outcome = match locked {
                Locked::Done(RotateOutcome::Rotated { version, .. }) => {
                    let ended = self.ended_by_limit(&mut guard, now, new_key, bound, limit);
                    Some(Ok(RotateOutcome::Rotated { version, ended }))
                }
                Locked::Done(other) => {
                    self.settle(&mut guard, new_key, added, now);
                    Some(Ok(other))
                }
                Locked::OutOfMemory(e) => {
                    self.settle(&mut guard, new_key, added, now);
                    Some(Err(e.into()))
                }
                Locked::OwnerChanged => {
                    self.settle(&mut guard, new_key, added, now);
                    None
                }
            };
            drop(guard);
            self.unindex_all(unbound);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// The rotation itself, under both keys' shard locks. `bind` is the owner to bind;
    /// without it the old key must still have `expected_owner`, whose lock the caller holds
    /// (or none). Owners that lose a key are pushed to `unbound`, for the caller to clean
    /// once it has released its owner lock.
    #[allow(clippy::too_many_arguments)]
    fn rotate_locked(
        &self,
        old_key: &[u8],
        new_key: &[u8],
        if_version: Option<u64>,
        bind: Option<&[u8]>,
        now: u64,
        expected_owner: Option<&[u8]>,
        unbound: &mut Unbound,
    ) -> Locked {
        let map = &self.shared.map;
        let old_hash = map.hash_usize(&old_key) as u64;
        let new_hash = map.hash_usize(&new_key) as u64;
        let old_shard = map.determine_shard(old_hash as usize);
        let new_shard = map.determine_shard(new_hash as usize);
        let shards = map.shards();
        let keys = RotateKeys {
            old_key,
            old_hash,
            new_key,
            new_hash,
        };
        let mut rotate = |old: &mut ShardTable, new: Option<&mut ShardTable>| {
            self.rotate_in(
                old,
                new,
                &keys,
                if_version,
                bind,
                now,
                expected_owner,
                unbound,
            )
        };
        // Two shard locks are taken in shard order, so two rotations never wait for each
        // other in a cycle; nothing else holds two.
        if old_shard == new_shard {
            rotate(&mut shards[old_shard].write(), None)
        } else if old_shard < new_shard {
            let mut old = shards[old_shard].write();
            let mut new = shards[new_shard].write();
            rotate(&mut old, Some(&mut new))
        } else {
            let mut new = shards[new_shard].write();
            let mut old = shards[old_shard].write();
            rotate(&mut old, Some(&mut new))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rotate_in(
        &self,
        old_table: &mut ShardTable,
        mut new_table: Option<&mut ShardTable>,
        keys: &RotateKeys<'_>,
        if_version: Option<u64>,
        bind: Option<&[u8]>,
        now: u64,
        expected_owner: Option<&[u8]>,
        unbound: &mut Unbound,
    ) -> Locked {
        match find_slot(old_table, keys.old_hash, keys.old_key) {
            Some(old) if old.is_live(now) => {
                if bind.is_none() && old.owner() != expected_owner {
                    return Locked::OwnerChanged;
                }
                if if_version.is_some_and(|expected| expected != old.version()) {
                    return Locked::Done(RotateOutcome::VersionMismatch {
                        current: old.version(),
                    });
                }
                // The moved entry's value is the old one's; its block grows with a longer
                // key or with session fields a binding gives a plain entry. Under the shard
                // locks, so no reclaiming here: the same rule as an overwrite.
                let growth = block_growth(old, keys.new_key.len(), bind, false);
                if growth > 0 {
                    if let Err(e) = self.check_growth(growth) {
                        return Locked::OutOfMemory(e);
                    }
                }
            }
            _ => return Locked::Done(RotateOutcome::NotFound),
        }
        {
            // With both keys in one shard, one table serves both.
            let table = match new_table.as_deref_mut() {
                Some(table) => table,
                None => &mut *old_table,
            };
            match find_slot(table, keys.new_hash, keys.new_key) {
                Some(existing) if existing.is_live(now) => {
                    return Locked::Done(RotateOutcome::Exists);
                }
                Some(_) => {
                    if let Some(expired) = take_slot(table, keys.new_hash, keys.new_key) {
                        self.reclaimed(&expired, unbound);
                    }
                }
                None => {}
            }
        }
        // Taken from the map only now that the rotation is certain to happen.
        let Some(old) = take_slot(old_table, keys.old_hash, keys.old_key) else {
            return Locked::Done(RotateOutcome::NotFound);
        };
        let meta = old.meta().map(|meta| Meta {
            owner: bind.or(meta.owner),
            ..meta
        });
        let meta = match (meta, bind) {
            (Some(meta), _) => Some(meta),
            // A plain entry bound as it moves becomes a session now.
            (None, Some(owner)) => Some(Meta {
                owner: Some(owner),
                created_ms: now,
                last_access_ms: now,
                absolute_deadline_ms: None,
            }),
            (None, None) => None,
        };
        let version = self.next_version();
        let moved = Slot::with_meta(
            keys.new_key,
            old.value(),
            old.expires_at_ms(),
            version,
            meta.as_ref(),
        );
        self.record(Mutation::Rotate {
            old_key: keys.old_key,
            new: SessionState {
                key: moved.key(),
                value: moved.value(),
                expires_at_ms: moved.expires_at_ms(),
                version,
                meta: moved.meta().unwrap_or(NO_META),
            },
        });
        self.lost(&old);
        self.gained(&moved);
        if let Some(owner) = old.owner() {
            unbound.push((Box::from(owner), Box::from(keys.old_key)));
        }
        let map = &self.shared.map;
        let table = match new_table {
            Some(table) => table,
            None => old_table,
        };
        insert_slot(table, keys.new_hash, moved, |slot| {
            map.hash_usize(&slot.key()) as u64
        });
        Locked::Done(RotateOutcome::Rotated {
            version,
            ended: Vec::new(),
        })
    }

    /// Counts an expired slot removed under a shard lock, and notes its owner (if any) for
    /// cleaning once the lock is released.
    fn reclaimed(&self, slot: &Slot, unbound: &mut Unbound) {
        self.lost(slot);
        self.shared
            .expired_reclaimed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(owner) = slot.owner() {
            unbound.push((Box::from(owner), Box::from(slot.key())));
        }
    }

    /// The owner limit that applies: the request's, else the configured one; with both, the
    /// lower number with the request's policy. A request may tighten the operator's limit
    /// but never loosen it: `limits.max_sessions_per_owner` is a policy of the deployment
    /// (how many devices one account may hold), and an application credential that could
    /// raise it per request would make it advice.
    fn owner_limit(
        &self,
        requested: Option<OwnerLimit>,
    ) -> Result<Option<OwnerLimit>, SessionError> {
        if requested.is_some_and(|limit| limit.max == 0) {
            return Err(SessionError::InvalidLimit);
        }
        Ok(match (requested, self.session_defaults().owner_limit) {
            (Some(requested), Some(configured)) => Some(OwnerLimit {
                max: requested.max.min(configured.max),
                policy: requested.policy,
            }),
            (requested, configured) => requested.or(configured),
        })
    }

    /// What a write of a `value_len`-byte value with `session`'s fields adds to the live
    /// entry at `key`: its value's growth and its block's (session fields for a plain entry,
    /// a longer owner). `None` when there is no live entry, so that the write creates one.
    fn update_growth(
        &self,
        key: &[u8],
        value_len: usize,
        session: SessionWrite<'_>,
        now: u64,
    ) -> Option<usize> {
        let found = self.shared.map.get(key)?;
        let slot = found.key();
        if !slot.is_live(now) {
            return None;
        }
        let value_growth =
            allocated_size(value_len).saturating_sub(allocated_size(slot.value().len()));
        let absolute = session.absolute_deadline_ms.is_some();
        Some(value_growth + block_growth(slot, key.len(), session.owner, absolute))
    }

    /// Puts `key` into the guard's owner set ahead of binding it, so that the index holds
    /// every live session of the owner at every moment, and applies the refuse policy of
    /// `limit` unless the key is already `bound` to the owner (an update adds no session).
    /// Returns whether the key was added (for [`Store::settle`]); refused, leaves the set as
    /// it was.
    fn bind_ahead(
        &self,
        guard: &mut OwnerGuard<'_>,
        key: &[u8],
        bound: bool,
        limit: Option<OwnerLimit>,
        now: u64,
    ) -> Result<bool, LimitReached> {
        let added = guard.add(key);
        if let (Some(limit), false) = (limit, bound) {
            if limit.policy == LimitPolicy::Refuse
                && guard.others_than(key) >= limit.max as usize
                && self.live_sessions(guard, now, Some(key)).len() >= limit.max as usize
            {
                if added {
                    guard.remove(key);
                }
                return Err(LimitReached);
            }
        }
        Ok(added)
    }

    /// After `key` was bound (unless it was already `bound`): the sessions the
    /// least-recently-used policy of `limit` ends to bring the owner back to its limit.
    fn ended_by_limit(
        &self,
        guard: &mut OwnerGuard<'_>,
        now: u64,
        key: &[u8],
        bound: bool,
        limit: Option<OwnerLimit>,
    ) -> Vec<Bytes> {
        match limit {
            Some(limit) if !bound && limit.policy == LimitPolicy::EndLeastRecentlyUsed => {
                self.end_least_recent(guard, now, key, limit.max)
            }
            _ => Vec::new(),
        }
    }

    /// Whether `key` holds an entry bound to `owner`, live or not. The index keeps such a
    /// key until the entry leaves the map: replay can bring an entry it holds back to life
    /// (a TOUCH record after a SET whose deadline has passed by the time of the replay), and
    /// removing the entry calls [`Store::unindex`] anyway.
    fn is_bound_to(&self, key: &[u8], owner: &[u8]) -> bool {
        self.shared
            .map
            .get(key)
            .is_some_and(|found| found.key().owner() == Some(owner))
    }

    /// Whether `key` is a live session bound to `owner`.
    fn is_live_session_of(&self, key: &[u8], owner: &[u8], now: u64) -> bool {
        self.shared
            .map
            .get(key)
            .is_some_and(|found| found.key().is_live(now) && found.key().owner() == Some(owner))
    }

    /// The live sessions of the guard's owner but `except`, dropping from its set the keys
    /// that are not (any more).
    fn live_sessions(
        &self,
        guard: &mut OwnerGuard<'_>,
        now: u64,
        except: Option<&[u8]>,
    ) -> Vec<SessionInfo> {
        let mut sessions = Vec::new();
        for key in guard.keys() {
            if Some(&key[..]) == except {
                // Not counted, and not dropped: a caller may have just added it, ahead of
                // the binding.
                continue;
            }
            let info = self.shared.map.get(&key[..]).and_then(|found| {
                let slot = found.key();
                let meta = slot.meta()?;
                (slot.is_live(now) && meta.owner == Some(guard.owner())).then(|| SessionInfo {
                    key: Bytes::copy_from_slice(slot.key()),
                    version: slot.version(),
                    created_ms: meta.created_ms,
                    last_access_ms: meta.last_access_ms,
                    expires_at_ms: slot.expires_at_ms(),
                    absolute_deadline_ms: meta.absolute_deadline_ms,
                })
            });
            match info {
                Some(info) => sessions.push(info),
                None if !self.is_bound_to(&key, guard.owner()) => guard.remove(&key),
                None => {}
            }
        }
        sessions
    }

    /// Ends the least recently used sessions of the guard's owner (but `keep`) until at most
    /// `max - 1` are left beside `keep`; returns their keys.
    fn end_least_recent(
        &self,
        guard: &mut OwnerGuard<'_>,
        now: u64,
        keep: &[u8],
        max: u32,
    ) -> Vec<Bytes> {
        let allowed = (max as usize).saturating_sub(1);
        if guard.others_than(keep) <= allowed {
            return Vec::new();
        }
        let mut others = self.live_sessions(guard, now, Some(keep));
        if others.len() <= allowed {
            return Vec::new();
        }
        others.sort_by(|a, b| {
            (a.last_access_ms, a.created_ms, &a.key).cmp(&(b.last_access_ms, b.created_ms, &b.key))
        });
        let excess = others.len() - allowed;
        // A session a transaction holds is passed over (waiting for its gate here, under
        // the owner's lock, could deadlock); the next least recent one ends instead.
        others
            .into_iter()
            .filter(|info| {
                self.shared.gates.is_free(&info.key) && self.end_session(guard, &info.key, now)
            })
            .take(excess)
            .map(|info| info.key)
            .collect()
    }

    /// Removes `key` if it is a live session of the guard's owner, recording its DEL, and
    /// drops it from the owner's set either way (it is not the owner's after this). Returns
    /// whether it ended a session.
    fn end_session(&self, guard: &mut OwnerGuard<'_>, key: &[u8], now: u64) -> bool {
        let owner = guard.owner();
        let removed = self.shared.map.remove_if(key, |slot, _| {
            let mine = slot.is_live(now) && slot.owner() == Some(owner);
            if mine {
                self.record(Mutation::Del { key });
            }
            mine
        });
        guard.remove(key);
        match removed {
            Some((slot, ())) => {
                self.lost(&slot);
                true
            }
            None => false,
        }
    }

    /// After a binding that did not happen: drops `key` from the owner's set if this call
    /// added it and it is not the owner's live session after all.
    fn settle(&self, guard: &mut OwnerGuard<'_>, key: &[u8], added: bool, now: u64) {
        if added && !self.is_live_session_of(key, guard.owner(), now) {
            guard.remove(key);
        }
    }

    /// Drops `key` from `owner`'s set unless the map still holds it bound to `owner`. Called
    /// after a session bound to `owner` left the map (or the owner), with no lock held.
    #[inline(never)]
    pub(super) fn unindex(&self, owner: &[u8], key: &[u8]) {
        let mut guard = self.shared.owners.lock(owner);
        if guard.contains(key) && !self.is_bound_to(key, owner) {
            guard.remove(key);
        }
    }

    /// [`Store::unindex`] for the owner a write took `key` from (out of the hot path of
    /// plain writes, which have none).
    #[cold]
    #[inline(never)]
    pub(super) fn unindex_unbound(&self, owner: Option<Box<[u8]>>, key: &[u8]) {
        if let Some(owner) = owner {
            self.unindex(&owner, key);
        }
    }

    /// [`Store::unindex`] for a slot that left the map, if it had an owner.
    pub(super) fn unindex_slot(&self, slot: &Slot) {
        if let Some(owner) = slot.owner() {
            self.unindex(owner, slot.key());
        }
    }

    /// [`Store::unindex`] for each (owner, key).
    pub(super) fn unindex_all(&self, unbound: Unbound) {
        for (owner, key) in unbound {
            self.unindex(&owner, &key);
        }
    }
}

/// The session fields of a plain entry, in a record that always carries them.
const NO_META: Meta<'static> = Meta {
    owner: None,
    created_ms: 0,
    last_access_ms: 0,
    absolute_deadline_ms: None,
};

/// The two keys of a rotation and their hashes.
struct RotateKeys<'a> {
    old_key: &'a [u8],
    old_hash: u64,
    new_key: &'a [u8],
    new_hash: u64,
}

/// What `slot`'s block grows by when rebuilt for a key of `key_len` bytes, bound to `owner`
/// (`None`: the owner it has, if any) and, if `absolute`, with an absolute deadline. A block
/// carries the session fields once it has any of them; an owner takes its length more.
fn block_growth(slot: &Slot, key_len: usize, owner: Option<&[u8]>, absolute: bool) -> usize {
    let current = slot.meta();
    let owner = owner.or(current.and_then(|meta| meta.owner));
    let extension = if current.is_some() || owner.is_some() || absolute {
        EXT_FIXED_LEN + owner.map_or(0, <[u8]>::len)
    } else {
        0
    };
    allocated_size(HEADER_LEN + key_len + extension)
        .saturating_sub(allocated_size(slot.block_len()))
}

fn check_owner(owner: &[u8]) -> Result<(), SessionError> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(SessionError::InvalidOwner(owner.len()));
    }
    Ok(())
}
