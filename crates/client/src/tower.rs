//! A [`tower_sessions_core::SessionStore`] for tower-sessions 0.15 (feature `tower-sessions`).
//!
//! Switching an axum (or any tower) application from another store to sessiond is a change
//! of the store value:
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use sessiond_client::{tower::SessiondStore, Client};
//! use tower_sessions::{Session, SessionManagerLayer};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("127.0.0.1:7878").await?;
//! let app: Router = Router::new()
//!     .route("/", get(|session: Session| async move {
//!         session.insert("username", "Alice").await.ok();
//!         "Session data set!"
//!     }))
//!     .layer(SessionManagerLayer::new(SessiondStore::new(client)));
//! # Ok(())
//! # }
//! ```
//!
//! Authentication and TLS are the client's: build it with
//! [`ClientBuilder::credentials`](crate::ClientBuilder::credentials) (an `app` user is all a
//! store needs) and [`ClientBuilder::tls`](crate::ClientBuilder::tls); every connection the
//! store's client opens, reconnections included, logs in and verifies the server.
//!
//! # How it maps
//!
//! - `create` is a create-only write; if tower-sessions' id is taken, the store retries with
//!   a fresh [`Id`] instead of overwriting. (Ids are tower-sessions' own: 128 random bits.)
//! - `load` reads the entry; the record's expiry is now plus the remaining TTL.
//! - `save` writes with the TTL up to the record's expiry date, capped to the server's
//!   maximum TTL, **conditional on the version read at load** (below).
//! - `delete` removes the entry.
//! - The data is stored as a MessagePack map, the same format as the [`Sessions`] layer and
//!   the actix-session store write.
//!
//! # Concurrent saves are detected, not lost
//!
//! `SessionStore::save` receives only the record, with no version, so the store carries the
//! version inside the record: `load` adds an entry named [`VERSION_KEY`] to the record's
//! data, which the store strips again before writing. `save` then writes if-version. When
//! two requests load the same session and both save, the second save fails with a store
//! error instead of silently replacing the first one's changes. The entry holds a token
//! that maps, in the store's memory, to the last version this record saved, so saving the
//! same `Session` twice in one request (an explicit `session.save()` followed by the
//! middleware's) is not mistaken for a conflict.
//!
//! What the application sees on a conflict: by default the `SessionManagerLayer` logs the
//! failed save and answers **500** instead of the handler's response. To handle it, save in
//! the handler and reload on conflict:
//!
//! ```no_run
//! use sessiond_client::tower::is_conflict;
//! use tower_sessions::Session;
//!
//! async fn increment(session: Session) -> Result<String, tower_sessions::session::Error> {
//!     loop {
//!         let n: u64 = session.get("n").await?.unwrap_or(0);
//!         session.insert("n", n + 1).await?;
//!         match session.save().await {
//!             Ok(()) => return Ok(format!("n = {}", n + 1)),
//!             // Another request saved first: take its data and apply the change again.
//!             Err(e) if is_conflict(&e) => session.load().await?,
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//! ```
//!
//! Limitations, honestly:
//!
//! - The version entry is visible to the application through `session.get(VERSION_KEY)`.
//!   After `session.clear()` it is gone, and that request's save is update-only: it still
//!   cannot resurrect a deleted session, but it is not checked against concurrent saves
//!   (after a `clear`, the request means to replace everything anyway).
//! - A session whose every key the application removed (one by one) still holds the version
//!   entry, so tower-sessions saves it rather than removing its cookie; the store deletes
//!   the entry instead of writing an empty map, and the next request starts a new session.
//! - `Session::cycle_id` deletes the old id unconditionally before the new one is created:
//!   that is tower-sessions' own sequence, so a save racing with it can be lost.
//! - The marker identifies one *load*: copies of a loaded `Record` share it and count as
//!   one loader. tower-sessions never copies records between requests, but a cache does, so
//!   do not put one (`CachingSessionStore`) in front of this store.
//! - A save of a session that was deleted or expired after it was loaded fails too (it is
//!   not re-created): a late request cannot undo a logout.
//!
//! # Owners: login, devices, log out everywhere
//!
//! A handler binds the session to its user with [`login`]: it records the owner in the
//! session (under [`OWNER_KEY`]) and cycles its id, so that at the end of the request the
//! store creates the session under a new id, bound to the owner, create-only and under the
//! owner's session limit ([`SessiondStore::with_owner_limit`]), in one write. The old id is
//! deleted by tower-sessions' `cycle_id` before that. The store then lists an owner's
//! sessions ([`SessiondStore::sessions_of`]) and ends them ([`SessiondStore::end_all`]):
//!
//! ```no_run
//! use axum::extract::State;
//! use sessiond_client::tower::{login, SessiondStore};
//! use sessiond_client::OWNER_KEY;
//! use tower_sessions::Session;
//!
//! async fn log_in(session: Session) -> Result<&'static str, tower_sessions::session::Error> {
//!     // ... after checking the user's password:
//!     login(&session, "user:42").await?;
//!     Ok("welcome")
//! }
//!
//! async fn log_out_everywhere(State(store): State<SessiondStore>, session: Session) -> String {
//!     let Ok(Some(owner)) = session.get::<String>(OWNER_KEY).await else {
//!         return "not logged in".into();
//!     };
//!     match store.end_all(&owner, None).await {
//!         Ok(ended) => format!("ended {ended} sessions"),
//!         Err(e) => format!("failed: {e}"),
//!     }
//! }
//! ```
//!
//! [`SessiondStore::with_absolute_lifetime`] gives every new session an absolute deadline
//! that the server enforces however the session is touched (tower-sessions' cookie expiry
//! does not know about it: past the deadline the cookie names no session, and the visitor
//! starts a new one).
//!
//! [`Sessions`]: crate::Sessions

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};
use tower_sessions_core::Session;

use crate::session::{codec, Backend};
use crate::{Client, Device, OwnerLimit, SessionError, OWNER_KEY};

/// The record data entry that carries the version from `load` to `save`.
pub const VERSION_KEY: &str = "__sessiond_version";

/// Start of the message of a store error that reports a version conflict.
const CONFLICT: &str = "sessiond: version conflict";

/// Tokens remembered per generation; two generations are kept, so a token is forgotten
/// only after at least this many newer loads. A forgotten token falls back to the version
/// read at load, which is only wrong (a spurious conflict) for a second save of the same
/// record.
const GENERATION: usize = 8192;

/// Distinguishes loads within the process, so that each loaded record's saves follow their
/// own version chain.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A tower-sessions store backed by sessiond. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessiondStore {
    backend: Backend,
    versions: Arc<Versions>,
}

impl SessiondStore {
    /// A store using `client`, with keys `session:ID`.
    pub fn new(client: Client) -> SessiondStore {
        SessiondStore {
            backend: Backend::new(client, "session:".into()),
            versions: Arc::new(Versions::default()),
        }
    }

    /// Keys are `prefix` followed by the session id.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> SessiondStore {
        self.backend.prefix = prefix.into();
        self
    }

    /// Gives every new session an absolute lifetime, as
    /// [`SessionConfig::absolute_lifetime`](crate::SessionConfig::absolute_lifetime) does.
    pub fn with_absolute_lifetime(mut self, lifetime: Duration) -> SessiondStore {
        self.backend.absolute_lifetime = Some(lifetime);
        self
    }

    /// Limits the sessions per owner at a [`login`], as
    /// [`SessionConfig::owner_limit`](crate::SessionConfig::owner_limit) does.
    pub fn with_owner_limit(mut self, limit: OwnerLimit) -> SessiondStore {
        self.backend.owner_limit = Some(limit);
        self
    }

    /// The key session `id` is stored under.
    pub fn key(&self, id: &Id) -> String {
        self.backend.key(id)
    }

    /// The live sessions of `owner` under this store's prefix, most recently used first.
    /// Show them by [`Device::fingerprint`], never by id.
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<Device<Id>>, SessionError> {
        self.backend.sessions_of(owner, |id| id.parse().ok()).await
    }

    /// Ends every session of `owner` but `except` (the current one, `session.id()`),
    /// atomically; how many ended.
    pub async fn end_all(&self, owner: &str, except: Option<Id>) -> Result<u64, SessionError> {
        self.backend.end_all(owner, except.as_ref()).await
    }

    /// Puts the version marker into `data` and remembers its token.
    fn mark(&self, data: &mut HashMap<String, Value>, version: u64) {
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        self.versions.remember(token, version);
        data.insert(VERSION_KEY.into(), json!({ "v": version, "t": token }));
    }
}

/// What the marker in a record says.
struct Marker {
    version: u64,
    token: u64,
}

impl Marker {
    fn parse(value: &Value) -> Option<Marker> {
        Some(Marker {
            version: value.get("v")?.as_u64()?,
            token: value.get("t")?.as_u64()?,
        })
    }
}

/// Last version saved per token, in two generations (a bounded map without timestamps).
#[derive(Debug, Default)]
struct Versions {
    generations: Mutex<[HashMap<u64, u64>; 2]>,
}

impl Versions {
    fn remember(&self, token: u64, version: u64) {
        let mut generations = self
            .generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let [young, old] = &mut *generations;
        if young.len() >= GENERATION {
            *old = std::mem::take(young);
        }
        old.remove(&token);
        young.insert(token, version);
    }

    fn recall(&self, token: u64) -> Option<u64> {
        let generations = self
            .generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let [young, old] = &*generations;
        young.get(&token).or_else(|| old.get(&token)).copied()
    }
}

/// Logs `session` in as `owner`: records the owner in it and gives it a new id, so that at
/// the end of the request the store creates it under the new id bound to the owner (see
/// the module docs). Fails if the session cannot be read from the store; an owner past its
/// limit under the refuse policy fails the save, which tower-sessions answers with 500.
pub async fn login(
    session: &Session,
    owner: &str,
) -> Result<(), tower_sessions_core::session::Error> {
    session.insert(OWNER_KEY, owner).await?;
    session.cycle_id().await
}

/// Whether a tower-sessions error is a sessiond version conflict: another request saved
/// the session after this one loaded it, and nothing was written.
pub fn is_conflict(error: &tower_sessions_core::session::Error) -> bool {
    matches!(
        error,
        tower_sessions_core::session::Error::Store(session_store::Error::Backend(message))
            if message.starts_with(CONFLICT)
    )
}

fn store_error(e: SessionError) -> session_store::Error {
    match e {
        SessionError::Conflict { current } => session_store::Error::Backend(format!(
            "{CONFLICT}: the session was saved by another request after it was loaded (now version {current})"
        )),
        SessionError::Data(message) => session_store::Error::Encode(message),
        other => session_store::Error::Backend(format!("sessiond: {other}")),
    }
}

/// The TTL that makes the entry expire at `expiry`, at least 1 ms.
fn ttl_until(expiry: OffsetDateTime) -> Duration {
    let ms = (expiry - OffsetDateTime::now_utc()).whole_milliseconds();
    Duration::from_millis(
        u64::try_from(ms)
            .unwrap_or(if ms > 0 { u64::MAX } else { 1 })
            .max(1),
    )
}

/// The record's data without the marker, and the marker.
fn split_marker(record: &Record) -> (HashMap<String, Value>, Option<Marker>) {
    let mut data = record.data.clone();
    let marker = data.remove(VERSION_KEY).as_ref().and_then(Marker::parse);
    (data, marker)
}

#[async_trait]
impl SessionStore for SessiondStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let (data, _) = split_marker(record);
        let bytes = codec::encode(&data).map_err(store_error)?;
        let owner = data.get(OWNER_KEY).and_then(Value::as_str);
        let mut proposed = Some(record.id);
        let (id, version) = self
            .backend
            .create(
                || Ok(proposed.take().unwrap_or_default()),
                &bytes,
                ttl_until(record.expiry_date),
                owner,
            )
            .await
            .map_err(store_error)?;
        record.id = id;
        record.data = data;
        self.mark(&mut record.data, version);
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let (data, marker) = split_marker(record);
        let expected = marker
            .as_ref()
            .map(|m| self.versions.recall(m.token).unwrap_or(m.version));
        if data.is_empty() {
            return match self.backend.delete(&record.id, expected).await {
                Ok(()) | Err(SessionError::Gone) => Ok(()),
                Err(e) => Err(store_error(e)),
            };
        }
        let bytes = codec::encode(&data).map_err(store_error)?;
        let version = self
            .backend
            .save(&record.id, &bytes, ttl_until(record.expiry_date), expected)
            .await
            .map_err(store_error)?;
        if let Some(marker) = marker {
            self.versions.remember(marker.token, version);
        }
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(loaded) = self.backend.load(id, None).await.map_err(store_error)? else {
            return Ok(None);
        };
        // Undecodable data is treated as no session: the visitor starts a new one instead
        // of getting an error on every request.
        let Ok(mut data) = codec::decode::<HashMap<String, Value>>(&loaded.data) else {
            return Ok(None);
        };
        self.mark(&mut data, loaded.version);
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date: OffsetDateTime::now_utc() + loaded.ttl,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.backend.delete(id, None).await.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_remember_the_latest_and_forget_old_generations() {
        let versions = Versions::default();
        versions.remember(1, 10);
        versions.remember(1, 11);
        assert_eq!(versions.recall(1), Some(11));
        for token in 2..(2 + 2 * GENERATION as u64) {
            versions.remember(token, token);
        }
        assert_eq!(versions.recall(1), None);
        assert!(versions.recall(1 + 2 * GENERATION as u64).is_some());
    }

    #[test]
    fn ttls_follow_the_expiry_date() {
        let hour = ttl_until(OffsetDateTime::now_utc() + time::Duration::hours(1));
        assert!(hour <= Duration::from_secs(3600) && hour > Duration::from_secs(3590));
        assert_eq!(
            ttl_until(OffsetDateTime::now_utc() - time::Duration::hours(1)),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn conflicts_are_recognisable() {
        let conflict = store_error(SessionError::Conflict { current: 7 });
        assert!(is_conflict(&tower_sessions_core::session::Error::Store(
            conflict
        )));
        let gone = store_error(SessionError::Gone);
        assert!(!is_conflict(&tower_sessions_core::session::Error::Store(
            gone
        )));
    }
}
