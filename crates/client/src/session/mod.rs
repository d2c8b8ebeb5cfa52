//! Server-side sessions for web applications: what Flask-Session gives a Flask app.
//!
//! [`Sessions`] turns the `Cookie` header of a request into a [`Session`] (a map of names to
//! JSON-like values), and a modified session back into a stored entry and a `Set-Cookie`
//! header. It is independent of any web framework: it reads header values as strings and
//! returns one. (For tower-sessions and actix-session, see the `tower` and `actix` modules.)
//!
//! - **Ids** are 32 bytes from the OS CSPRNG, URL-safe ([`SessionId`]).
//!   A new session is written create-only, and an id that happens to exist is retried with a
//!   fresh one, never taken over.
//! - **Cookies**: name, `Path`, `Domain`, `HttpOnly`, `Secure`, `SameSite`, permanent
//!   (`Max-Age`) or browser-session, and optional HMAC-SHA256 signing ([`SessionConfig`]).
//! - **Data** is stored as a MessagePack map, the format Flask-Session 0.7+ writes.
//! - **Expiry**: the stored session lives for the configured lifetime (capped to the server's
//!   maximum TTL), extended on every request by the read itself unless turned off.
//!
//! # Concurrent requests
//!
//! A save is conditional on the version the session had when it was loaded. If another
//! request saved the same session in between (two tabs, a double click, parallel API calls),
//! [`Sessions::save`] writes nothing and returns [`SessionError::Conflict`]: the other
//! request's changes are kept, and this one's are not silently written over them. The
//! application then decides. Usually the right thing is to load the session again (with the
//! same `Cookie` header), reapply the change and save; [`Sessions::modify`] does exactly that,
//! retrying a few times. If the session was deleted in between (logout in another tab) the
//! save fails with [`SessionError::Gone`] and does not bring it back.
//!
//! ```no_run
//! use sessiond_client::{Client, SessionConfig, SessionError, Sessions};
//!
//! # async fn demo(cookie_header: Option<&str>) -> Result<(), SessionError> {
//! // An `app` user may read and write sessions but not list them (sessiond's [auth]).
//! let client = Client::builder("127.0.0.1:7878")
//!     .credentials("app", std::env::var("SESSIOND_PASSWORD").unwrap_or_default())
//!     .connect()
//!     .await?;
//! let sessions = Sessions::new(client, SessionConfig::default())?;
//!
//! // In a request handler:
//! let mut session = sessions.load(cookie_header).await?;
//! let visits: u64 = session.get("visits")?.unwrap_or(0);
//! session.insert("visits", visits + 1)?;
//! match sessions.save(&mut session).await {
//!     Ok(Some(set_cookie)) => { /* add `Set-Cookie: {set_cookie}` to the response */ }
//!     Ok(None) => {}
//!     Err(SessionError::Conflict { .. }) => { /* another request won: reload and retry */ }
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```

mod backend;
pub(crate) mod codec;
mod config;
mod cookie;
mod owner;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub(crate) use backend::Backend;
pub use config::SessionConfig;
pub use cookie::{SameSite, SetCookie};
pub use owner::{Device, OWNER_KEY};

use crate::id::{RandomError, SessionId};
use crate::{Client, Error};

/// The most cookies with the session's name that one request can make [`Sessions::load`]
/// look up, so that a request stuffed with cookies cannot multiply store lookups.
const MAX_COOKIES_TRIED: usize = 4;

/// How often [`Sessions::modify`] runs the change before giving up on conflicts.
const MODIFY_ATTEMPTS: u32 = 3;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Another request saved this session after this one loaded it. Nothing was written;
    /// load the session again and reapply the change (see the module docs).
    #[error("version conflict: the session was saved by another request after it was loaded (now version {current})")]
    Conflict {
        /// The version the stored session has now.
        current: u64,
    },
    /// The session was deleted (logout) or expired after it was loaded. Nothing was written.
    #[error("the session was deleted or expired after it was loaded")]
    Gone,
    /// A login would take the user past their limit of live sessions, and the policy is to
    /// refuse ([`Sessions::login`]). Nothing was written.
    #[error("the user already has as many sessions as allowed")]
    OwnerLimitReached,
    /// The session store is unavailable: the node that holds this session is down
    /// ([`Error::Unavailable`]), or the server could not be reached or did not answer in
    /// time. The application decides: answer 503 ("try again shortly"), or carry on as if
    /// the visitor were logged out for this request, without saving (docs/SCALING.md).
    #[error("session store unavailable: {0}")]
    Unavailable(Error),
    /// The store answered with an error.
    #[error(transparent)]
    Client(Error),
    /// A value could not be converted to or from the session's data.
    #[error("session data: {0}")]
    Data(String),
    /// No session id could be generated.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// Every freshly generated id was already taken.
    #[error("no unused session id after {0} attempts: is the random generator broken?")]
    IdCollision(u32),
    /// The configuration cannot be used.
    #[error("session configuration: {0}")]
    Config(String),
}

impl From<Error> for SessionError {
    fn from(e: Error) -> SessionError {
        if e.is_unavailable() {
            SessionError::Unavailable(e)
        } else {
            SessionError::Client(e)
        }
    }
}

impl SessionError {
    /// Whether the store could not be reached ([`SessionError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SessionError::Unavailable(_))
    }
}

/// One visitor's session: a map from names to values, and where it is stored.
///
/// Values are anything serde can represent as JSON-like data; they are stored as
/// MessagePack. Changing the data marks the session modified; [`Sessions::save`] writes it.
#[derive(Debug, Clone, Default)]
pub struct Session {
    id: Option<SessionId>,
    version: Option<u64>,
    data: BTreeMap<String, Value>,
    modified: bool,
    /// The request carried a session cookie that named no live session.
    stale_cookie: bool,
    destroyed: bool,
    /// When the stored session ends at the latest, where known (it was created here with an
    /// absolute lifetime, or a load found its expiry held back by one), so that the cookie
    /// does not outlive it.
    deadline: Option<SystemTime>,
}

impl Session {
    /// The session's id; `None` for a session that has not been stored yet.
    pub fn id(&self) -> Option<&SessionId> {
        self.id.as_ref()
    }

    /// The version of the stored session this one was loaded from or last saved as.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Whether the session has not been stored yet (no cookie, or one naming no session).
    pub fn is_new(&self) -> bool {
        self.id.is_none()
    }

    /// Whether the data changed since the session was loaded or saved.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// The value under `name`, converted to `T`; `None` if absent.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        self.data
            .get(name)
            .map(|value| {
                T::deserialize(value)
                    .map_err(|e| SessionError::Data(format!("reading {name:?}: {e}")))
            })
            .transpose()
    }

    /// The raw value under `name`.
    pub fn get_value(&self, name: &str) -> Option<&Value> {
        self.data.get(name)
    }

    /// Sets `name` to `value`.
    pub fn insert<T: Serialize>(
        &mut self,
        name: impl Into<String>,
        value: T,
    ) -> Result<(), SessionError> {
        let name = name.into();
        let value = serde_json::to_value(value)
            .map_err(|e| SessionError::Data(format!("storing {name:?}: {e}")))?;
        if self.data.get(&name) != Some(&value) {
            self.data.insert(name, value);
            self.modified = true;
        }
        Ok(())
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let old = self.data.remove(name);
        self.modified |= old.is_some();
        old
    }

    /// Removes everything. Saving an emptied session deletes it and its cookie.
    pub fn clear(&mut self) {
        self.modified |= !self.data.is_empty();
        self.data.clear();
    }

    /// Whether the session holds no data.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// All the data.
    pub fn data(&self) -> &BTreeMap<String, Value> {
        &self.data
    }
}

/// Loads and saves [`Session`]s for one application: a [`Client`] plus a [`SessionConfig`].
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Sessions {
    backend: Backend,
    config: Arc<SessionConfig>,
}

impl Sessions {
    /// Sessions stored through `client` as `config` says. A multi-node client that makes
    /// routing tags with the public default key gets a warning on stderr (see
    /// [`ClientBuilder::owner_tag_key`](crate::ClientBuilder::owner_tag_key)).
    pub fn new(client: Client, config: SessionConfig) -> Result<Sessions, SessionError> {
        config.validate()?;
        if client.topology().is_some() && crate::id::has_public_tag_key(&client) {
            // Not refused: the tags still place sessions correctly, and a deployment that
            // started without a key cannot add one while sessions exist (an owner's new
            // sessions would go to another node than its existing ones, which listing and
            // ending them would then miss). But the operator should know, at start.
            eprintln!(
                "sessiond-client: warning: session ids carry routing tags made with the \
                 public default key, so a cookie confirms guesses of its owner; set \
                 ClientBuilder::owner_tag_key to a secret (docs/SCALING.md)"
            );
        }
        let mut backend = Backend::new(client, config.key_prefix.clone());
        backend.absolute_lifetime = config.absolute_lifetime;
        backend.owner_limit = config.owner_limit;
        Ok(Sessions {
            backend,
            config: Arc::new(config),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The session the request's `Cookie` header values name, or a new empty one if they
    /// name none (no cookie, a bad signature, an expired or deleted session).
    ///
    /// With `refresh_each_request`, the stored session's expiry is extended in the same
    /// round trip.
    pub async fn load<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a str>,
    ) -> Result<Session, SessionError> {
        let mut stale_cookie = false;
        let values = cookie::values(cookie_headers, &self.config.cookie_name);
        for value in values.into_iter().take(MAX_COOKIES_TRIED) {
            stale_cookie = true;
            let Some(id) = self.id_from_cookie(value) else {
                continue;
            };
            if let Some(session) = self.load_id(&id).await? {
                return Ok(session);
            }
        }
        Ok(Session {
            stale_cookie,
            ..Session::default()
        })
    }

    /// The session with id `id`, if it is stored (not expired, not deleted).
    pub async fn load_id(&self, id: &SessionId) -> Result<Option<Session>, SessionError> {
        let touch = match self.config.refresh_each_request {
            true => Some(self.backend.ttl(self.config.lifetime).await?),
            false => None,
        };
        let Some(loaded) = self.backend.load(id, touch).await? else {
            return Ok(None);
        };
        // A touch that left less than it asked for was held back by the session's absolute
        // deadline (the slack covers the milliseconds between the touch and its reply).
        let deadline = touch
            .filter(|asked| loaded.ttl + Duration::from_secs(1) < *asked)
            .map(|_| SystemTime::now() + loaded.ttl);
        // Data that cannot be decoded is treated like a missing session: the visitor gets a
        // fresh one (replacing the cookie) rather than an error on every request.
        let Ok(data) = codec::decode::<BTreeMap<String, Value>>(&loaded.data) else {
            return Ok(None);
        };
        Ok(Some(Session {
            id: Some(id.clone()),
            version: Some(loaded.version),
            data,
            deadline,
            ..Session::default()
        }))
    }

    /// Writes the session if it changed and returns the `Set-Cookie` header value the
    /// response must carry, if any.
    ///
    /// - A new session with data is stored create-only under a fresh id.
    /// - A loaded session that changed is stored if-version: [`SessionError::Conflict`] if
    ///   another request saved it since it was loaded, [`SessionError::Gone`] if it was
    ///   deleted or expired. Either way nothing was written.
    /// - A session emptied of all data is deleted, and its cookie removed.
    /// - An unchanged permanent session re-sends its cookie (with `refresh_each_request`),
    ///   so the cookie's expiry slides with the stored one's.
    pub async fn save(&self, session: &mut Session) -> Result<Option<SetCookie>, SessionError> {
        if session.destroyed {
            return Ok(None);
        }
        let (Some(id), Some(version)) = (session.id.clone(), session.version) else {
            if session.data.is_empty() {
                return Ok(session.stale_cookie.then(|| self.removal_cookie()));
            }
            return self.create(session, None).await.map(Some);
        };
        if !session.modified {
            let refresh = self.config.permanent && self.config.refresh_each_request;
            return Ok(if refresh {
                Some(self.cookie(&id, session.deadline).await?)
            } else {
                None
            });
        }
        if session.data.is_empty() {
            self.backend.delete(&id, Some(version)).await?;
            *session = Session {
                destroyed: true,
                ..Session::default()
            };
            return Ok(Some(self.removal_cookie()));
        }
        let data = codec::encode(&session.data)?;
        let version = self
            .backend
            .save(&id, &data, self.config.lifetime, Some(version))
            .await?;
        session.version = Some(version);
        session.modified = false;
        Ok(Some(self.cookie(&id, session.deadline).await?))
    }

    /// Moves the session to a new id and returns the new cookie: call it when the visitor's
    /// privilege changes, so that an id planted in their browser beforehand (session
    /// fixation) is worthless. (At a login, [`Sessions::login`] does this and binds the
    /// owner.) The move is one `ROTATE` on the server: the old id is dead in the same step,
    /// and the session keeps its owner, creation time and absolute deadline. This request's
    /// changes are then written to the new id.
    ///
    /// If another request saved the session since it was loaded, nothing changes and the
    /// result is [`SessionError::Conflict`]; if it was deleted, [`SessionError::Gone`]. A
    /// new session with no data has nothing to move: `Ok(None)`.
    pub async fn regenerate(
        &self,
        session: &mut Session,
    ) -> Result<Option<SetCookie>, SessionError> {
        if session.destroyed {
            return Ok(None);
        }
        let (Some(old), Some(old_version)) = (session.id.clone(), session.version) else {
            if session.data.is_empty() {
                return Ok(None);
            }
            return self.create(session, None).await.map(Some);
        };
        self.move_to_new_id(session, &old, old_version, None)
            .await
            .map(Some)
    }

    /// Deletes the session (logout) and returns the cookie that removes it from the
    /// browser. The delete is unconditional: logging out wins over concurrent updates.
    pub async fn destroy(&self, session: &mut Session) -> Result<SetCookie, SessionError> {
        if let Some(id) = &session.id {
            self.backend.delete(id, None).await?;
        }
        *session = Session {
            destroyed: true,
            ..Session::default()
        };
        Ok(self.removal_cookie())
    }

    /// Loads the session, applies `change`, and saves, running `change` again on freshly
    /// loaded data when another request saved the session in between (up to 3 attempts,
    /// then [`SessionError::Conflict`]). Returns what `change` returned and the cookie to
    /// send.
    ///
    /// ```no_run
    /// # use sessiond_client::{SessionError, Sessions};
    /// # async fn demo(sessions: Sessions, cookie: Option<&str>) -> Result<(), SessionError> {
    /// let (visits, set_cookie) = sessions
    ///     .modify(cookie, |session| {
    ///         let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
    ///         session.insert("visits", visits)?;
    ///         Ok(visits)
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn modify<'a, I, T>(
        &self,
        cookie_headers: I,
        mut change: impl FnMut(&mut Session) -> Result<T, SessionError>,
    ) -> Result<(T, Option<SetCookie>), SessionError>
    where
        I: IntoIterator<Item = &'a str> + Clone,
    {
        let mut attempt = 1;
        loop {
            let mut session = self.load(cookie_headers.clone()).await?;
            let out = change(&mut session)?;
            match self.save(&mut session).await {
                Ok(cookie) => return Ok((out, cookie)),
                Err(SessionError::Conflict { .. }) if attempt < MODIFY_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores a new session under a fresh id, bound to `owner` if given.
    async fn create(
        &self,
        session: &mut Session,
        owner: Option<&str>,
    ) -> Result<SetCookie, SessionError> {
        let data = codec::encode(&session.data)?;
        // A session bound to an owner gets the owner's routing tag, so that all of them
        // live on the owner's node.
        let tag = owner.map(|owner| self.backend.client.owner_tag(owner));
        let (id, version) = self
            .backend
            .create(
                || SessionId::generate_for_session(tag.as_deref()),
                &data,
                self.config.lifetime,
                owner,
            )
            .await?;
        session.id = Some(id.clone());
        session.version = Some(version);
        session.modified = false;
        // The server counts the absolute lifetime from its own write, a moment later than
        // this: the cookie's end is a little early, never late.
        session.deadline = self
            .config
            .absolute_lifetime
            .map(|lifetime| SystemTime::now() + lifetime);
        self.cookie(&id, session.deadline).await
    }

    fn id_from_cookie(&self, value: &str) -> Option<SessionId> {
        let id = match &self.config.signer {
            Some(signer) => signer.verify(value)?,
            None => value,
        };
        SessionId::parse(id)
    }

    async fn cookie(
        &self,
        id: &SessionId,
        deadline: Option<SystemTime>,
    ) -> Result<SetCookie, SessionError> {
        let value = match &self.config.signer {
            Some(signer) => signer.sign(id.as_str()),
            None => id.as_str().to_string(),
        };
        // The cookie must not outlive the stored session, whose TTL the server may cap and
        // whose absolute deadline may come sooner.
        let max_age = if self.config.permanent {
            let ttl = self.backend.ttl(self.config.lifetime).await?;
            let left = deadline.map(|d| d.duration_since(SystemTime::now()).unwrap_or_default());
            Some(left.map_or(ttl, |left| ttl.min(left)))
        } else {
            None
        };
        Ok(self
            .config
            .cookie
            .set_cookie(&self.config.cookie_name, &value, max_age))
    }

    fn removal_cookie(&self) -> SetCookie {
        self.config.cookie.removal(&self.config.cookie_name)
    }

    /// The key a session id is stored under (prefix + id), e.g. to inspect it with a
    /// [`Client`].
    pub fn key(&self, id: &SessionId) -> String {
        self.backend.key(id)
    }

    /// The TTL saves use: the lifetime, capped to the server's maximum.
    pub async fn ttl(&self) -> Result<Duration, SessionError> {
        self.backend.ttl(self.config.lifetime).await
    }
}

impl SessionId {
    /// [`SessionId::generate`] (behind routing tag `tag`, if given) with the session
    /// layer's error type.
    pub(crate) fn generate_for_session(tag: Option<&str>) -> Result<SessionId, SessionError> {
        match tag {
            None => Ok(SessionId::generate()?),
            Some(tag) => SessionId::generate_tagged(tag)?
                .ok_or_else(|| SessionError::Config(format!("bad routing tag {tag:?}"))),
        }
    }
}
