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
//! [`Sessions`]: crate::Sessions

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration as CookieDuration;
use serde_json::Value;

use crate::session::{codec, Backend};
use crate::{Client, SessionError, SessionId};

/// The session-state entry that carries the version from `load` to `update`.
pub const VERSION_KEY: &str = "__sessiond_version";

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

    /// The key a session key (cookie value) is stored under.
    pub fn key(&self, session_key: &str) -> String {
        self.backend.key(&session_key)
    }
}

/// actix-session's state (JSON text per name) as the stored map, without the marker.
fn encode_state(state: &HashMap<String, String>) -> Result<Vec<u8>, SessionError> {
    let data: BTreeMap<&str, Value> = state
        .iter()
        .filter(|(name, _)| name.as_str() != VERSION_KEY)
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
        Ok(Some(state))
    }

    async fn save(
        &self,
        session_state: HashMap<String, String>,
        ttl_: &CookieDuration,
    ) -> Result<SessionKey, SaveError> {
        let bytes = encode_state(&session_state).map_err(|e| SaveError::Serialization(e.into()))?;
        let (id, _) = self
            .backend
            .create(SessionId::generate_for_session, &bytes, ttl(ttl_))
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
        let bytes = encode_state(&state).unwrap();
        let back = decode_state(&bytes).unwrap();
        state.remove(VERSION_KEY);
        assert_eq!(back, state);
    }

    #[test]
    fn ttls_are_whole_positive_milliseconds() {
        assert_eq!(ttl(&CookieDuration::seconds(2)), Duration::from_secs(2));
        assert_eq!(ttl(&CookieDuration::seconds(-2)), Duration::from_millis(1));
        assert_eq!(ttl(&CookieDuration::ZERO), Duration::from_millis(1));
    }
}
