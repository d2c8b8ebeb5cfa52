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
//!
//! Ids are anything displayable (ours, tower-sessions' `Id`, actix-session keys); the key is
//! the prefix followed by the id's text.

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use sessiond_proto::command::SetMode;

use super::SessionError;
use crate::{Client, Error};

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
    #[cfg_attr(not(feature = "tower-sessions"), allow(dead_code))]
    pub ttl: Duration,
}

/// The store operations, with a key prefix.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub client: Client,
    pub prefix: String,
}

impl Backend {
    pub(crate) fn new(client: Client, prefix: String) -> Backend {
        Backend { client, prefix }
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

    /// Stores `data` create-only under the first id from `new_id` that is not taken.
    /// Returns the id and the version.
    pub(crate) async fn create<I: Display>(
        &self,
        mut new_id: impl FnMut() -> Result<I, SessionError>,
        data: &[u8],
        ttl: Duration,
    ) -> Result<(I, u64), SessionError> {
        let ttl = self.ttl(ttl).await?;
        for _ in 0..CREATE_ATTEMPTS {
            let id = new_id()?;
            match self
                .client
                .set(self.key(&id), data, ttl, SetMode::CreateOnly)
                .await
            {
                Ok(version) => return Ok((id, version)),
                Err(Error::Exists) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SessionError::IdCollision(CREATE_ATTEMPTS))
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

/// The session meaning of a declined conditional write.
fn declined(e: Error) -> SessionError {
    match e {
        Error::VersionMismatch { current } => SessionError::Conflict { current },
        Error::NotFound => SessionError::Gone,
        other => SessionError::Client(other),
    }
}
