//! The session commands of [`Client`]: writes that bind an owner or set an absolute
//! lifetime (`SET_SESSION`), an owner's sessions (`LIST_SESSIONS`), ending them
//! (`END_ALL`), and moving a session to a new key (`ROTATE`).
//!
//! These are what make sessiond a session store rather than a cache: the server keeps an
//! exact index of each owner's live sessions, so listing and ending them is one request, not
//! a scan, and a per-owner limit is enforced atomically. The session layer
//! ([`Sessions::login`](crate::Sessions::login) and friends) is built on them.
//!
//! A client that uses none of them sends exactly the frames it always did, so it keeps
//! working with servers that predate them; a server that does not know one answers
//! `UNKNOWN_OPCODE` ([`Error::Server`]).

use std::time::Duration;

use bytes::Bytes;
use sessiond_proto::command::{
    Bind, EndAll, EndAllReply, ListSessions, OwnerLimit, Rotate, Scan, ScanReply, SessionList,
    SessionWriteOutcome, SetMode, SetSession, MAX_OWNER_LEN,
};
use sessiond_proto::{Opcode, Request};

use crate::client::{checked_key, checked_value, ttl_ms};
use crate::{Client, Error};

/// What a session write may carry beyond a `SET`'s key, value, TTL and mode.
///
/// ```
/// use std::time::Duration;
/// use sessiond_client::{LimitPolicy, OwnerLimit, SessionOptions};
///
/// let options = SessionOptions::new()
///     .owner("user:42")
///     .absolute_lifetime(Duration::from_secs(12 * 3600))
///     .owner_limit(OwnerLimit { max: 5, policy: LimitPolicy::EndLeastRecentlyUsed });
/// assert_eq!(options.owner_bytes(), Some(&b"user:42"[..]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    owner: Option<Bytes>,
    absolute_lifetime: Option<Duration>,
    owner_limit: Option<OwnerLimit>,
}

impl SessionOptions {
    /// No options: a write with these is a plain `SET`.
    pub fn new() -> SessionOptions {
        SessionOptions::default()
    }

    /// Binds the session to `owner` (an opaque id such as a user id, 1 to 256 bytes), so that
    /// [`Client::sessions_of`] lists it and [`Client::end_all`] ends it.
    pub fn owner(mut self, owner: impl AsRef<[u8]>) -> Self {
        self.owner = Some(Bytes::copy_from_slice(owner.as_ref()));
        self
    }

    /// The session ends this long after the write at the latest, however often it is
    /// touched. On an existing session this can bring its deadline closer, never push it
    /// further away.
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// The most live sessions the owner may have, this one included, and what happens when
    /// this write would pass it. The server applies the lower of this and its
    /// `limits.max_sessions_per_owner`. Needs an owner.
    pub fn owner_limit(mut self, limit: OwnerLimit) -> Self {
        self.owner_limit = Some(limit);
        self
    }

    /// The owner, if set.
    pub fn owner_bytes(&self) -> Option<&[u8]> {
        self.owner.as_deref()
    }

    /// Whether there is nothing beyond a plain `SET`.
    pub fn is_empty(&self) -> bool {
        self == &SessionOptions::default()
    }

    /// The owner, checked against what the wire allows, so that a bad one is an
    /// [`Error::InvalidArgument`] here rather than a refusal (or a panic) later.
    fn checked_owner(&self) -> Result<Option<Bytes>, Error> {
        self.owner.as_deref().map(checked_owner).transpose()?;
        if self.owner_limit.is_some_and(|l| l.max == 0) {
            return Err(Error::InvalidArgument(
                "an owner limit must allow at least 1 session".into(),
            ));
        }
        if self.owner.is_none() && self.owner_limit.is_some() {
            return Err(Error::InvalidArgument(
                "an owner limit needs an owner".into(),
            ));
        }
        Ok(self.owner.clone())
    }
}

/// A session write that was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWrite {
    /// The version the session now has.
    pub version: u64,
    /// How many of the owner's other sessions were ended to make room for this one (only
    /// under [`LimitPolicy::EndLeastRecentlyUsed`](crate::LimitPolicy)).
    pub ended: u64,
}

impl Client {
    /// `SET_SESSION`: [`Client::set`] with [`SessionOptions`]: binds the session to an
    /// owner, gives it an absolute deadline, and/or applies a per-owner limit, in the same
    /// atomic step as the write.
    ///
    /// Declined as `set` is ([`Error::Exists`], [`Error::NotFound`],
    /// [`Error::VersionMismatch`]), and with [`Error::OwnerLimitReached`] when the owner
    /// already has as many sessions as allowed and the policy is to refuse.
    pub async fn set_session(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
        mode: SetMode,
        options: &SessionOptions,
    ) -> Result<SessionWrite, Error> {
        let (key, value) = (key.as_ref(), value.as_ref());
        match self.cluster_inner() {
            Some(cluster) => {
                options.checked_owner()?;
                cluster.set(key, value, ttl, mode, Some(options)).await
            }
            None => self.node_set_session(key, value, ttl, mode, options).await,
        }
    }

    pub(crate) async fn node_set_session(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
        mode: SetMode,
        options: &SessionOptions,
    ) -> Result<SessionWrite, Error> {
        let owner = options.checked_owner()?;
        let value = checked_value(value, owner.as_ref().map_or(0, Bytes::len))?;
        let lifetime_ms = options.absolute_lifetime.map(ttl_ms).transpose()?;
        let request = SetSession {
            key: checked_key(key)?,
            value,
            ttl_ms: ttl_ms(ttl)?,
            mode,
            owner,
            lifetime_ms,
            owner_limit: options.owner_limit,
        };
        let reply = self.call(Request::SetSession(request)).await?;
        written(SessionWriteOutcome::from_frame(&reply, Opcode::SetSession)?)
    }

    /// `LIST_SESSIONS`: the live sessions of `owner`, most recently used first, with their
    /// keys, versions, creation and last-access times, TTLs left and absolute deadlines.
    ///
    /// A reply holds as many as fit the server's largest value; [`SessionList::total`] says
    /// how many the owner has in all. The keys are the sessions' ids, bearer secrets: show a
    /// user a fingerprint of them, never the keys themselves.
    ///
    /// A multi-node client asks the node of the owner's [tag](Client::owner_tag): sessions
    /// bound to an owner must have ids that carry it (the session layer's do).
    pub async fn sessions_of(&self, owner: impl AsRef<[u8]>) -> Result<SessionList, Error> {
        let owner = owner.as_ref();
        match self.cluster_inner() {
            Some(cluster) => {
                checked_owner(owner)?;
                cluster.sessions_of(owner, &self.owner_tag(owner)).await
            }
            None => self.node_sessions_of(owner).await,
        }
    }

    pub(crate) async fn node_sessions_of(&self, owner: &[u8]) -> Result<SessionList, Error> {
        let request = ListSessions {
            owner: checked_owner(owner)?,
            max_sessions: 0,
        };
        let reply = self.call(Request::ListSessions(request)).await?;
        Ok(SessionList::from_frame(&reply)?)
    }

    /// `END_ALL`: ends every live session of `owner` except the one under `except` (the
    /// device the user is on), atomically, and returns how many ended. Ending them all
    /// ("log out everywhere") is `except = None`.
    pub async fn end_all(
        &self,
        owner: impl AsRef<[u8]>,
        except: Option<&[u8]>,
    ) -> Result<u64, Error> {
        let owner = owner.as_ref();
        match self.cluster_inner() {
            Some(cluster) => {
                checked_owner(owner)?;
                cluster.end_all(owner, &self.owner_tag(owner), except).await
            }
            None => self.node_end_all(owner, except).await,
        }
    }

    pub(crate) async fn node_end_all(
        &self,
        owner: &[u8],
        except: Option<&[u8]>,
    ) -> Result<u64, Error> {
        let request = EndAll {
            owner: checked_owner(owner)?,
            except: except.map(checked_key).transpose()?,
        };
        let reply = self.call(Request::EndAll(request)).await?;
        Ok(EndAllReply::from_frame(&reply)?.ended)
    }

    /// `ROTATE`: moves the session under `old` to `new` in one step, keeping its data,
    /// owner, timestamps and absolute deadline and giving it a new version; `old` is gone in
    /// the same step. With `if_version`, only if the session still has that version; with an
    /// owner in `bind`, the session is bound to it (under its limit) in the same step: a
    /// login that defeats session fixation.
    ///
    /// Declined with [`Error::NotFound`] (no session at `old`), [`Error::VersionMismatch`],
    /// [`Error::Exists`] (`new` is taken: pick another id) or [`Error::OwnerLimitReached`].
    ///
    /// A multi-node client whose keys `old` and `new` live on different nodes moves the
    /// session itself (create-only at the new node, then a delete at the version read): the
    /// copy cannot keep the creation time or absolute deadline, which `GET` does not return.
    pub async fn rotate(
        &self,
        old: impl AsRef<[u8]>,
        new: impl AsRef<[u8]>,
        if_version: Option<u64>,
        bind: &SessionOptions,
    ) -> Result<SessionWrite, Error> {
        self.rotate_across(old.as_ref(), new.as_ref(), if_version, bind, None)
            .await
    }

    /// [`Client::rotate`], giving a session that moves between nodes the absolute
    /// `lifetime` (from the move) that it would otherwise lose.
    pub(crate) async fn rotate_across(
        &self,
        old: &[u8],
        new: &[u8],
        if_version: Option<u64>,
        bind: &SessionOptions,
        lifetime: Option<Duration>,
    ) -> Result<SessionWrite, Error> {
        if bind.absolute_lifetime.is_some() {
            return Err(Error::InvalidArgument(
                "a rotation keeps the session's absolute deadline; it cannot set one".into(),
            ));
        }
        match self.cluster_inner() {
            Some(cluster) => {
                bind.checked_owner()?;
                cluster.rotate(old, new, if_version, bind, lifetime).await
            }
            None => self.node_rotate(old, new, if_version, bind).await,
        }
    }

    pub(crate) async fn node_rotate(
        &self,
        old: &[u8],
        new: &[u8],
        if_version: Option<u64>,
        bind: &SessionOptions,
    ) -> Result<SessionWrite, Error> {
        let request = Rotate {
            old_key: checked_key(old)?,
            new_key: checked_key(new)?,
            if_version,
            bind: bind.checked_owner()?.map(|owner| Bind {
                owner,
                limit: bind.owner_limit,
            }),
        };
        let reply = self.call(Request::Rotate(request)).await?;
        written(SessionWriteOutcome::from_frame(&reply, Opcode::Rotate)?)
    }
}

impl Client {
    /// `SCAN`: the server's live entries from `cursor` on (0 to start), whole shards at a
    /// time, each with its value, version, TTL, owner and absolute deadline, and the cursor
    /// to continue from (0 when done). `max_entries` is a hint (0: as many as fit the
    /// server's largest value). Needs the `admin` role on a server with users; a
    /// multi-node client must ask each node ([`Client::nodes`]).
    pub async fn scan(&self, cursor: u64, max_entries: u32) -> Result<ScanReply, Error> {
        let request = Scan {
            cursor,
            max_entries,
        };
        let reply = self.call(Request::Scan(request)).await?;
        Ok(ScanReply::from_frame(&reply)?)
    }
}

/// The result of a session write, with the declined outcomes as their typed errors.
fn written(outcome: SessionWriteOutcome) -> Result<SessionWrite, Error> {
    match outcome {
        SessionWriteOutcome::Stored { version, ended } => Ok(SessionWrite { version, ended }),
        SessionWriteOutcome::Exists => Err(Error::Exists),
        SessionWriteOutcome::NotFound => Err(Error::NotFound),
        SessionWriteOutcome::VersionMismatch { current } => Err(Error::VersionMismatch { current }),
        SessionWriteOutcome::OwnerLimit => Err(Error::OwnerLimitReached),
    }
}

/// An owner as frame bytes: 1 to [`MAX_OWNER_LEN`] bytes.
pub(crate) fn checked_owner(owner: &[u8]) -> Result<Bytes, Error> {
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN {
        return Err(Error::InvalidArgument(format!(
            "an owner must be 1 to {MAX_OWNER_LEN} bytes, not {}",
            owner.len()
        )));
    }
    Ok(Bytes::copy_from_slice(owner))
}

#[cfg(test)]
mod tests {
    use sessiond_proto::command::LimitPolicy;

    use super::*;

    #[test]
    fn owners_are_1_to_256_bytes() {
        assert!(checked_owner(b"u").is_ok());
        assert!(checked_owner(&[b'u'; MAX_OWNER_LEN]).is_ok());
        for bad in [&b""[..], &[b'u'; MAX_OWNER_LEN + 1]] {
            assert!(matches!(checked_owner(bad), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn a_limit_needs_an_owner_and_room_for_one() {
        let limit = OwnerLimit {
            max: 3,
            policy: LimitPolicy::Refuse,
        };
        assert!(SessionOptions::new()
            .owner_limit(limit)
            .checked_owner()
            .is_err());
        let none = OwnerLimit { max: 0, ..limit };
        assert!(SessionOptions::new()
            .owner("u")
            .owner_limit(none)
            .checked_owner()
            .is_err());
        assert_eq!(
            SessionOptions::new()
                .owner("u")
                .owner_limit(limit)
                .checked_owner()
                .unwrap()
                .as_deref(),
            Some(&b"u"[..])
        );
        assert!(SessionOptions::new().is_empty());
    }
}
