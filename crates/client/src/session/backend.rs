//! What every session front end does with the store: the one place that turns session
//! operations into conditional writes.
//!
//! - A new session is written **create-only**. If the id is taken, the write fails with
//!   `EXISTS` instead of taking over someone's session, and it is retried with a fresh id.
//! - A save is an **if-version** write with the version read at load: a concurrent save in
//!   between fails it with `VERSION_MISMATCH` ([`SessionError::Conflict`]) instead of being
//!   silently overwritten. Without a known version it is **update-only**, so a late request
//!   cannot bring a deleted session back ([`SessionError::Gone`]).
//! - Every TTL is capped to the server's `max_ttl` from `HELLO`, so a long lifetime is
//!   shortened rather than refused.
//! - A session is bound to its owner, and given its absolute deadline, **when it is
//!   created** (`SET_SESSION` create-only) or **moved** (`ROTATE`): the binding and the
//!   deadline then stay with it on the server, so saves are plain if-version `SET`s. A
//!   create without an owner or deadline is a plain `SET`, as before.
//! - A move to a new id is one `ROTATE`: the old id is gone in the same step, and an id
//!   that happens to be taken is retried with a fresh one, as for a create.
//!
//! Ids are anything displayable (ours, tower-sessions' `Id`, actix-session keys); the key is
//! the prefix followed by the id's text.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sessiond_proto::command::{OwnerLimit, SetMode};

use super::{Device, SessionError};
use crate::{Client, Error, SessionOptions};

/// How many fresh ids a create tries before giving up. With 128 or 256 random bits, even a
/// second attempt means the random generator is broken or the store is under attack.
const CREATE_ATTEMPTS: u32 = 4;

/// A stored session as loaded.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The encoded data.
    pub data: Bytes,
    /// The version, for the if-version save.
    pub version: u64,
    /// Remaining lifetime.
    pub ttl: Duration,
}

/// The store operations, with a key prefix and what new sessions get.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub client: Client,
    pub prefix: String,
    /// The absolute lifetime every new session gets.
    pub absolute_lifetime: Option<Duration>,
    /// The limit binding an owner applies, instead of the server's default.
    pub owner_limit: Option<OwnerLimit>,
}

impl Backend {
    pub(crate) fn new(client: Client, prefix: String) -> Backend {
        Backend {
            client,
            prefix,
            absolute_lifetime: None,
            owner_limit: None,
        }
    }

    /// The options of a write that creates a session (for `owner`, if any) or binds one.
    fn options(&self, owner: Option<&str>, creating: bool) -> SessionOptions {
        let mut options = SessionOptions::new();
        if let Some(owner) = owner {
            options = options.owner(owner);
            if let Some(limit) = self.owner_limit {
                options = options.owner_limit(limit);
            }
        }
        match self.absolute_lifetime {
            Some(lifetime) if creating => options.absolute_lifetime(lifetime),
            _ => options,
        }
    }

    pub(crate) fn key(&self, id: &impl Display) -> String {
        format!("{}{id}", self.prefix)
    }

    /// `wanted` within 1 ms ..= the server's maximum TTL.
    pub(crate) async fn ttl(&self, wanted: Duration) -> Result<Duration, SessionError> {
        let max = Duration::from_millis(self.client.limits().await?.max_ttl_ms);
        // min, then max (not `clamp`, which panics if the bounds cross): a server's
        // maximum is validated at HELLO, but this must not panic whatever it says.
        Ok(wanted.min(max).max(Duration::from_millis(1)))
    }

    /// The session `id`, sliding its expiry to `touch` if given.
    pub(crate) async fn load(
        &self,
        id: &impl Display,
        touch: Option<Duration>,
    ) -> Result<Option<Loaded>, SessionError> {
        let key = self.key(id);
        let entry = match touch {
            Some(ttl) => {
                let ttl = self.ttl(ttl).await?;
                self.client.get_and_touch(&key, ttl).await?
            }
            None => self.client.get(&key).await?,
        };
        Ok(entry.map(|entry| Loaded {
            data: entry.value,
            version: entry.version,
            ttl: Duration::from_millis(entry.ttl_ms),
        }))
    }

    /// Stores `data` create-only under the first id from `new_id` that is not taken, bound
    /// to `owner` if given, with the absolute lifetime if one is configured. Returns the id
    /// and the version.
    pub(crate) async fn create<I: Display>(
        &self,
        new_id: impl FnMut() -> Result<I, SessionError>,
        data: &[u8],
        ttl: Duration,
        owner: Option<&str>,
    ) -> Result<(I, u64), SessionError> {
        let ttl = self.ttl(ttl).await?;
        let options = self.options(owner, true);
        let options = &options;
        fresh_id(self, new_id, |key| async move {
            let mode = SetMode::CreateOnly;
            if options.is_empty() {
                // A plain SET: a client that uses no session options sends the frames
                // every server version understands.
                self.client.set(key, data, ttl, mode).await
            } else {
                let written = self.client.set_session(key, data, ttl, mode, options).await;
                written.map(|w| w.version)
            }
        })
        .await
    }

    /// Moves session `old` (if it still has version `expected`) to the first id from
    /// `new_id` that is not taken, binding it to `owner` if given. Returns the new id and
    /// version. The old id is dead once this succeeds.
    pub(crate) async fn rotate<I: Display>(
        &self,
        old: &impl Display,
        expected: u64,
        new_id: impl FnMut() -> Result<I, SessionError>,
        owner: Option<&str>,
    ) -> Result<(I, u64), SessionError> {
        let (old, bind) = (&self.key(old), &self.options(owner, false));
        // Only used when the new id lives on another node than the old (a login on a
        // multi-node client): such a move cannot keep the deadline, so it gets a fresh one.
        let lifetime = self.absolute_lifetime;
        fresh_id(self, new_id, |key| async move {
            let (old, new) = (old.as_bytes(), key.as_bytes());
            let written = self
                .client
                .rotate_across(old, new, Some(expected), bind, lifetime)
                .await;
            written.map(|w| w.version)
        })
        .await
    }

    /// The live sessions of `owner` that belong here: those under this prefix whose id
    /// `parse` accepts (an owner may have sessions of other applications too).
    pub(crate) async fn sessions_of<I>(
        &self,
        owner: &str,
        parse: impl Fn(&str) -> Option<I>,
    ) -> Result<Vec<Device<I>>, SessionError> {
        let list = self.client.sessions_of(owner).await?;
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        Ok(list
            .sessions
            .into_iter()
            .filter_map(|info| {
                let key = std::str::from_utf8(&info.key).ok()?;
                let id = parse(key.strip_prefix(self.prefix.as_str())?)?;
                Some(Device {
                    id,
                    version: info.version,
                    created: at(info.created_ms),
                    last_access: at(info.last_access_ms),
                    expires_in: Duration::from_millis(info.ttl_ms),
                    absolute_deadline: info.deadline_ms.map(at),
                })
            })
            .collect())
    }

    /// Ends every session of `owner` but `except`; how many ended.
    pub(crate) async fn end_all(
        &self,
        owner: &str,
        except: Option<&impl Display>,
    ) -> Result<u64, SessionError> {
        let except = except.map(|id| self.key(id));
        let ended = self
            .client
            .end_all(owner, except.as_deref().map(str::as_bytes))
            .await?;
        Ok(ended)
    }

    /// Overwrites session `id` if it still has version `expected` (or, with no known
    /// version, if it still exists). Returns the new version.
    pub(crate) async fn save(
        &self,
        id: &impl Display,
        data: &[u8],
        ttl: Duration,
        expected: Option<u64>,
    ) -> Result<u64, SessionError> {
        let ttl = self.ttl(ttl).await?;
        let mode = match expected {
            Some(version) => SetMode::IfVersion(version),
            None => SetMode::UpdateOnly,
        };
        self.client
            .set(self.key(id), data, ttl, mode)
            .await
            .map_err(declined)
    }

    /// Deletes session `id`; with `expected`, only if it still has that version.
    pub(crate) async fn delete(
        &self,
        id: &impl Display,
        expected: Option<u64>,
    ) -> Result<(), SessionError> {
        let key = self.key(id);
        match expected {
            Some(version) => self
                .client
                .del_if_version(key, version)
                .await
                .map_err(declined),
            None => self.client.del(key).await.map(drop).map_err(Into::into),
        }
    }

    /// Resets the TTL of session `id`; `false` if it no longer exists.
    #[cfg_attr(not(feature = "actix-session"), allow(dead_code))]
    pub(crate) async fn touch(
        &self,
        id: &impl Display,
        ttl: Duration,
    ) -> Result<bool, SessionError> {
        let ttl = self.ttl(ttl).await?;
        match self.client.touch(self.key(id), ttl).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs `write` on the key of each id from `new_id` until one is not taken (`EXISTS`), at
/// most [`CREATE_ATTEMPTS`] times, and returns that id with the version `write` returned.
async fn fresh_id<I: Display, F>(
    backend: &Backend,
    mut new_id: impl FnMut() -> Result<I, SessionError>,
    mut write: impl FnMut(String) -> F,
) -> Result<(I, u64), SessionError>
where
    F: Future<Output = Result<u64, Error>>,
{
    for _ in 0..CREATE_ATTEMPTS {
        let id = new_id()?;
        match write(backend.key(&id)).await {
            Ok(version) => return Ok((id, version)),
            Err(Error::Exists) => continue,
            Err(e) => return Err(declined(e)),
        }
    }
    Err(SessionError::IdCollision(CREATE_ATTEMPTS))
}

/// The session meaning of a declined conditional write.
fn declined(e: Error) -> SessionError {
    match e {
        Error::VersionMismatch { current } => SessionError::Conflict { current },
        Error::NotFound => SessionError::Gone,
        Error::OwnerLimitReached => SessionError::OwnerLimitReached,
        other => SessionError::from(other),
    }
}
