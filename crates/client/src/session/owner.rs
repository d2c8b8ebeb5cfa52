//! Sessions that belong to someone: logging in ([`Sessions::login`]), the user's list of
//! devices ([`Sessions::sessions_of`]) and "log out everywhere" ([`Sessions::end_all`]).
//!
//! The server keeps an exact index of each owner's live sessions (expiry, deletion,
//! rotation and restarts keep it in step), so these are single requests, not scans, and a
//! limit on the sessions per owner holds even when logins race.
//!
//! How a handler binds the owner: after checking the user's credentials, call
//! [`Sessions::login`] with the user's id. It binds the session to that id and moves it to a
//! new session id in one step, so an id that an attacker planted in the browser before the
//! login (session fixation) is dead afterwards; send the returned cookie. The owner is also
//! recorded in the session's data under [`OWNER_KEY`], which is how a later request knows
//! whose session it is ([`Session::owner`]).

use std::fmt::{self, Display};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{codec, Session, SessionError, Sessions, SetCookie};
use crate::id::fingerprint;
use crate::session_commands::checked_owner;
use crate::SessionId;

/// The session data entry that names the session's owner. The tower-sessions and
/// actix-session stores use the same entry, so sessions written by any of them agree on
/// it.
pub const OWNER_KEY: &str = "__sessiond_owner";

/// One live session of an owner: what a "your devices" page shows.
///
/// `id` is the session's id, a bearer secret: show [`Device::fingerprint`] instead, and
/// compare ids (`device.id == *session.id()`) to mark the device the page is viewed on.
#[derive(Clone, PartialEq, Eq)]
pub struct Device<I = SessionId> {
    /// The session id.
    pub id: I,
    /// The version of its last write.
    pub version: u64,
    /// When it was created (by the server's clock). A login keeps it: moving a session to
    /// a new id keeps its timestamps.
    pub created: SystemTime,
    /// When it was last used: read with a touch, touched or written.
    pub last_access: SystemTime,
    /// How long until it expires unless used again.
    pub expires_in: Duration,
    /// When it ends at the latest however often it is used, if it has an absolute lifetime.
    pub absolute_deadline: Option<SystemTime>,
}

impl<I: Display> Device<I> {
    /// A short name for the session that is safe to show: 16 hex digits of the SHA-256 of
    /// its id, which cannot be turned back into the id.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.id.to_string())
    }
}

impl<I> fmt::Debug for Device<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Without the id: it is a bearer secret, and devices end up in logs.
        f.debug_struct("Device")
            .field("version", &self.version)
            .field("created", &self.created)
            .field("last_access", &self.last_access)
            .field("expires_in", &self.expires_in)
            .field("absolute_deadline", &self.absolute_deadline)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The owner the session was bound to by [`Sessions::login`], if any.
    pub fn owner(&self) -> Option<&str> {
        self.data.get(OWNER_KEY).and_then(Value::as_str)
    }
}

impl Sessions {
    /// Logs the session in as `owner` (a user id, 1 to 256 bytes): binds it to the owner
    /// and moves it to a new id in one step on the server, keeping its data (with this
    /// request's changes), creation time and absolute deadline. Returns the cookie to send;
    /// the old id is dead.
    ///
    /// A new session is created bound to the owner. The owner's session limit (the server's
    /// `limits.max_sessions_per_owner`, or [`SessionConfig::owner_limit`]) applies: under the
    /// refuse policy a login past it fails with [`SessionError::OwnerLimitReached`] and
    /// changes nothing; under end-least-recently-used the owner's oldest sessions end to
    /// make room.
    ///
    /// Fails like [`Sessions::regenerate`] if another request saved or deleted the session
    /// since it was loaded ([`SessionError::Conflict`], [`SessionError::Gone`]); nothing is
    /// changed then.
    ///
    /// [`SessionConfig::owner_limit`]: super::SessionConfig::owner_limit
    pub async fn login(
        &self,
        session: &mut Session,
        owner: &str,
    ) -> Result<SetCookie, SessionError> {
        if session.destroyed {
            return Err(SessionError::Gone);
        }
        // Checked before the session is touched, so that a refused owner leaves it as it was.
        checked_owner(owner.as_bytes())?;
        session.insert(OWNER_KEY, owner)?;
        match (session.id.clone(), session.version) {
            (Some(old), Some(version)) => {
                self.move_to_new_id(session, &old, version, Some(owner))
                    .await
            }
            _ => self.create(session, Some(owner)).await,
        }
    }

    /// The live sessions of `owner` under this configuration's key prefix, most recently
    /// used first. (A reply holds as many as fit the server's largest value, thousands;
    /// beyond that, the most recently used.)
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<Device>, SessionError> {
        self.backend.sessions_of(owner, SessionId::parse).await
    }

    /// Ends every session of `owner`, on every application instance, atomically: "log out
    /// everywhere", or after a password change. With `except`, that session (the device
    /// the user is on) is kept. Returns how many ended.
    pub async fn end_all(
        &self,
        owner: &str,
        except: Option<&Session>,
    ) -> Result<u64, SessionError> {
        let except = except.and_then(Session::id);
        self.backend.end_all(owner, except).await
    }

    /// Moves a stored session to a new id (binding it to `owner` if given), then writes
    /// the data if this request changed it, and returns the new cookie.
    pub(super) async fn move_to_new_id(
        &self,
        session: &mut Session,
        old: &SessionId,
        version: u64,
        owner: Option<&str>,
    ) -> Result<SetCookie, SessionError> {
        // The new id carries the owner's routing tag when binding one, else the old id's
        // (if any): a session stays on its node unless a login moves it to its owner's.
        let tag = match owner {
            Some(owner) => Some(self.backend.client.owner_tag(owner)),
            None => old.tag().map(str::to_string),
        };
        let (new, version) = self
            .backend
            .rotate(
                old,
                version,
                || SessionId::generate_for_session(tag.as_deref()),
                owner,
            )
            .await?;
        // The session lives at the new id from here on, even if the write below fails: the
        // old one is gone, and a later save goes to the new one.
        session.id = Some(new.clone());
        session.version = Some(version);
        if session.modified {
            let data = codec::encode(&session.data)?;
            let ttl = self.config.lifetime;
            session.version = Some(self.backend.save(&new, &data, ttl, Some(version)).await?);
            session.modified = false;
        }
        self.cookie(&new, session.deadline).await
    }
}
