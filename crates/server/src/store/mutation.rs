//! The seam through which a persistence layer sees every write.

pub use super::raw::Meta as SessionMeta;

/// A whole session as a record restores it: what a SET carries, plus the session extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// Absolute expiry, Unix milliseconds (never after the absolute deadline).
    pub expires_at_ms: u64,
    /// The session's version.
    pub version: u64,
    /// Owner, timestamps and absolute deadline. Without an owner or an absolute deadline
    /// the session is restored as a plain entry.
    pub meta: SessionMeta<'a>,
}

/// One change to the store, as a persistence layer must replay it.
///
/// Deadlines are absolute Unix milliseconds so that replay after downtime drops exactly the
/// entries that expired meanwhile. Expiry itself is not a mutation: a replayed entry whose
/// deadline has passed is simply not restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation<'a> {
    /// The key now holds `value` with `version`, expiring at `expires_at_ms`.
    Set {
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
        /// Absolute expiry, Unix milliseconds.
        expires_at_ms: u64,
        /// The entry's new version.
        version: u64,
    },
    /// The key's deadline moved; value and version are unchanged.
    Touch {
        /// The key.
        key: &'a [u8],
        /// Absolute expiry, Unix milliseconds.
        expires_at_ms: u64,
    },
    /// The key now holds this session (an entry with an owner or an absolute deadline):
    /// like [`Mutation::Set`], with the session extension.
    SessionSet(SessionState<'a>),
    /// A session's deadline moved at an access; value and version are unchanged.
    SessionTouch {
        /// The key.
        key: &'a [u8],
        /// Absolute expiry, Unix milliseconds.
        expires_at_ms: u64,
        /// The time of the access, Unix milliseconds.
        last_access_ms: u64,
    },
    /// `old_key` was removed and the session moved to `new.key`, in one step: one record,
    /// so that no crash can leave both keys, or neither.
    Rotate {
        /// The key the session had.
        old_key: &'a [u8],
        /// The session at its new key, with its new version.
        new: SessionState<'a>,
    },
    /// The key was removed.
    Del {
        /// The key.
        key: &'a [u8],
    },
}

/// Receives every mutation, in the order it was applied to each key.
///
/// The store calls [`MutationSink::record`] while it still holds the lock of the key's shard,
/// so two writes to one key reach the sink in the order they were applied; writes to
/// different keys may interleave. The call must therefore be quick and must not block on I/O:
/// an implementation appends to a buffer that another task writes out.
pub trait MutationSink: Send + Sync + 'static {
    /// Records one applied mutation.
    fn record(&self, mutation: Mutation<'_>);

    /// Records the mutations of one transaction, to be replayed all together or not at all
    /// (the keys are distinct). Called while the transaction still holds its keys, so no
    /// later write of them can be recorded before it. The default records them one by one,
    /// which is right for a sink that keeps nothing across a crash.
    fn record_batch(&self, mutations: &[Mutation<'_>]) {
        for mutation in mutations {
            self.record(*mutation);
        }
    }

    /// A write is waiting for versions beyond the granted ceiling
    /// ([`Store::grant_versions`](super::Store::grant_versions)): the layer that grants them
    /// should reserve more now. Called with a shard lock held, so it must not block.
    fn versions_exhausted(&self) {}
}
