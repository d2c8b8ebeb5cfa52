//! An [`actix_session::storage::SessionStore`] for actix-session 0.11 and actix-web 4
//! (feature `actix-session`).
//!
//! Switching an actix-web application to sessiond is a change of the store value:
//!
//! ```no_run
//! use actix_session::SessionMiddleware;
//! use actix_web::{cookie::Key, web, App, HttpServer};
//! use sessiond_client::{actix::SessiondStore, Client};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("127.0.0.1:7878").await?;
//! let key = Key::generate(); // in production, load a fixed key
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(SessionMiddleware::new(SessiondStore::new(client.clone()), key.clone()))
//!         .route("/", web::get().to(|| async { "hello" }))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await?;
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
//! - `save` (a new session) generates a 256-bit [`SessionId`] and writes it create-only,
//!   retrying with a fresh id if it exists. The id is the session key actix-session puts in
//!   its (signed or encrypted) cookie.
//! - `load` reads the entry. `update` writes it **if-version** with the version read at
//!   load (below). `update_ttl` is a `TOUCH`; `delete` a `DEL`. Keys not shaped like our ids
//!   are never looked up.
//! - The data is stored as a MessagePack map of names to values (actix-session's JSON
//!   values are decoded first), the same format as the [`Sessions`] layer and the
//!   tower-sessions store write, so sessions can be shared between them.
//!
//! # Concurrent updates are detected, not lost
//!
//! actix-session hands `update` the session state without the version it was loaded at, so
//! `load` adds an entry named [`VERSION_KEY`] to the state, which the store strips again
//! before writing. If another request updated the session in between, `update` writes
//! nothing and fails; actix-session then answers the request with **500** (the application
//! cannot intercept a store error), and the other request's changes are kept. A client may
//! retry the request. If the session was deleted meanwhile (logout), the update fails the
//! same way rather than re-creating it.
//!
//! Limitations: the version entry is visible through `Session::entries()`. After
//! `Session::clear()` it is gone and that update is update-only (it still cannot re-create
//! a deleted session, but it is not checked against concurrent updates: a cleared session
//! is being replaced wholesale). `Session::renew()` deletes the old key unconditionally,
//! as actix-session does with every store, then saves under a new id.
//!
//! # Owners: login, devices, log out everywhere
//!
//! A handler binds the session to its user with [`login`]: it records the owner in the
//! session state (under [`OWNER_KEY`]) and renews the session, so that at the end of the
//! request actix-session deletes the old key and the store creates the session under a
//! new id, bound to the owner, create-only and under the owner's session limit
//! ([`SessiondStore::with_owner_limit`]), in one write. The store then lists an owner's
//! sessions ([`SessiondStore::sessions_of`]) and ends them ([`SessiondStore::end_all`]);
//! [`current_id`] names the session a request is on, to mark it in the list or keep it.
//!
//! ```no_run
//! use actix_session::Session;
//! use actix_web::{web, HttpResponse};
//! use sessiond_client::actix::{current_id, login, SessiondStore};
//! use sessiond_client::OWNER_KEY;
//!
//! async fn log_in(session: Session) -> HttpResponse {
//!     // ... after checking the user's password:
//!     match login(&session, "user:42") {
//!         Ok(()) => HttpResponse::Ok().body("welcome"),
//!         Err(_) => HttpResponse::InternalServerError().finish(),
//!     }
//! }
//!
//! async fn log_out_other_devices(store: web::Data<SessiondStore>, session: Session) -> HttpResponse {
//!     let Ok(Some(owner)) = session.get::<String>(OWNER_KEY) else {
//!         return HttpResponse::Unauthorized().finish();
//!     };
//!     match store.end_all(&owner, current_id(&session).as_ref()).await {
//!         Ok(ended) => HttpResponse::Ok().body(format!("ended {ended} other sessions")),
//!         Err(_) => HttpResponse::ServiceUnavailable().finish(),
//!     }
//! }
//! ```
//!
//! [`SessiondStore::with_absolute_lifetime`] gives every new session an absolute deadline
//! that the server enforces however the session is touched.
//!
//! [`Sessions`]: crate::Sessions

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_session::{Session, SessionInsertError};
use actix_web::cookie::time::Duration as CookieDuration;
use serde_json::Value;

use crate::session::{codec, Backend};
use crate::{Client, Device, OwnerLimit, SessionError, SessionId, OWNER_KEY};

/// The session-state entry that carries the version from `load` to `update`.
pub const VERSION_KEY: &str = "__sessiond_version";

/// The session-state entry that tells a handler which session it is on ([`current_id`]).
/// Like [`VERSION_KEY`], added at load and never stored.
pub const ID_KEY: &str = "__sessiond_id";

/// An actix-session store backed by sessiond. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessiondStore {
    backend: Backend,
}

impl SessiondStore {
    /// A store using `client`, with keys `session:ID`.
    pub fn new(client: Client) -> SessiondStore {
        SessiondStore {
            backend: Backend::new(client, "session:".into()),
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

    /// The key a session key (cookie value) is stored under.
    pub fn key(&self, session_key: &str) -> String {
        self.backend.key(&session_key)
    }

    /// The live sessions of `owner` under this store's prefix, most recently used first.
    /// Show them by [`Device::fingerprint`], never by id.
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<Device>, SessionError> {
        self.backend.sessions_of(owner, SessionId::parse).await
    }

    /// Ends every session of `owner` but `except` (the current one: [`current_id`]),
    /// atomically; how many ended.
    pub async fn end_all(
        &self,
        owner: &str,
        except: Option<&SessionId>,
    ) -> Result<u64, SessionError> {
        self.backend.end_all(owner, except).await
    }
}

/// Logs `session` in as `owner`: records the owner in its state and renews it, so that at
/// the end of the request the store creates it under a new id bound to the owner (see the
/// module docs). An owner past its limit under the refuse policy fails that save, which
/// actix-session answers with 500.
pub fn login(session: &Session, owner: &str) -> Result<(), SessionInsertError> {
    session.insert(OWNER_KEY, owner)?;
    session.renew();
    Ok(())
}

/// The id of the stored session `session` was loaded from; `None` for a new one.
pub fn current_id(session: &Session) -> Option<SessionId> {
    let id = session.get::<String>(ID_KEY).ok()??;
    SessionId::parse(&id)
}

/// actix-session's state (JSON text per name) as the stored map, without the marker.
fn encode_state(state: &HashMap<String, String>) -> Result<Vec<u8>, SessionError> {
    let data: BTreeMap<&str, Value> = state
        .iter()
        .filter(|(name, _)| name.as_str() != VERSION_KEY && name.as_str() != ID_KEY)
        .map(|(name, json)| {
            // actix-session stores every value as JSON text; anything else is kept as a
            // string rather than dropped.
            let value = serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.clone()));
            (name.as_str(), value)
        })
        .collect();
    codec::encode(&data)
}

/// The stored map as actix-session's state.
fn decode_state(bytes: &[u8]) -> Result<HashMap<String, String>, SessionError> {
    let data: BTreeMap<String, Value> = codec::decode(bytes)?;
    Ok(data
        .into_iter()
        .map(|(name, value)| (name, value.to_string()))
        .collect())
}

fn ttl(ttl: &CookieDuration) -> Duration {
    let ms = ttl.whole_milliseconds();
    Duration::from_millis(
        u64::try_from(ms)
            .unwrap_or(if ms > 0 { u64::MAX } else { 1 })
            .max(1),
    )
}

impl SessionStore for SessiondStore {
    async fn load(
        &self,
        session_key: &SessionKey,
    ) -> Result<Option<HashMap<String, String>>, LoadError> {
        let Some(id) = SessionId::parse(session_key.as_ref()) else {
            return Ok(None);
        };
        let Some(loaded) = self
            .backend
            .load(&id, None)
            .await
            .map_err(|e| LoadError::Other(e.into()))?
        else {
            return Ok(None);
        };
        let mut state =
            decode_state(&loaded.data).map_err(|e| LoadError::Deserialization(e.into()))?;
        state.insert(VERSION_KEY.into(), loaded.version.to_string());
        state.insert(ID_KEY.into(), Value::String(id.as_str().into()).to_string());
        Ok(Some(state))
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl_: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        let bytes = encode_state(&session_state).map_err(|e| SaveError::Serialization(e.into()))?;
        let owner = session_state
            .get(OWNER_KEY)
            .and_then(|json| serde_json::from_str::<String>(json).ok());
        let (id, _) = self
            .backend
            .create(
                || SessionId::generate_for_session(None),
                &bytes,
                ttl(ttl_),
                owner.as_deref(),
            )
            .await
            .map_err(|e| SaveError::Other(e.into()))?;
        SessionKey::try_from(id.as_str().to_string()).map_err(|e| SaveError::Other(e.into()))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        session_state: HashMap<String, String>,
        ttl_: &CookieDuration,
    ) -> Result<SessionKey, UpdateError> {
        let Some(id) = SessionId::parse(session_key.as_ref()) else {
            return Err(UpdateError::Other(anyhow::anyhow!(
                "not a session key this store issued"
            )));
        };
        let expected = session_state
            .get(VERSION_KEY)
            .and_then(|version| version.parse().ok());
        let bytes =
            encode_state(&session_state).map_err(|e| UpdateError::Serialization(e.into()))?;
        self.backend
            .save(&id, &bytes, ttl(ttl_), expected)
            .await
            .map_err(|e| UpdateError::Other(e.into()))?;
        Ok(session_key)
    }

    async fn update_ttl(
        &self,
        session_key: &SessionKey,
        ttl_: &CookieDuration,
    ) -> Result<(), anyhow::Error> {
        if let Some(id) = SessionId::parse(session_key.as_ref()) {
            // A session that is gone has nothing to extend; that is not an error.
            self.backend.touch(&id, ttl(ttl_)).await?;
        }
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> Result<(), anyhow::Error> {
        if let Some(id) = SessionId::parse(session_key.as_ref()) {
            self.backend.delete(&id, None).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_the_stored_map_without_the_marker() {
        let mut state = HashMap::new();
        state.insert("username".to_string(), "\"Alice\"".to_string());
        state.insert("n".to_string(), "3".to_string());
        state.insert("cart".to_string(), r#"{"items":[1,2]}"#.to_string());
        state.insert(VERSION_KEY.to_string(), "42".to_string());
        state.insert(ID_KEY.to_string(), "\"an id\"".to_string());
        let bytes = encode_state(&state).unwrap();
        let back = decode_state(&bytes).unwrap();
        state.remove(VERSION_KEY);
        state.remove(ID_KEY);
        assert_eq!(back, state);
    }

    #[test]
    fn ttls_are_whole_positive_milliseconds() {
        assert_eq!(ttl(&CookieDuration::seconds(2)), Duration::from_secs(2));
        assert_eq!(ttl(&CookieDuration::seconds(-2)), Duration::from_millis(1));
        assert_eq!(ttl(&CookieDuration::ZERO), Duration::from_millis(1));
    }
}
