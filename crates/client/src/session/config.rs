//! [`SessionConfig`]: Flask-Session's settings, for Rust.

use std::time::Duration;

use sessiond_proto::command::OwnerLimit;
use sessiond_proto::Limits;

use super::cookie::{is_attribute_value, is_token, CookieAttributes, SameSite};
use super::SessionError;
use crate::signer::{KeyTooShort, Signer};

/// How sessions are named, stored and carried in cookies.
///
/// Each setting mirrors a Flask / Flask-Session one, with the same default unless noted:
///
/// | here | Flask | default |
/// | --- | --- | --- |
/// | [`key_prefix`](Self::key_prefix) | `SESSION_KEY_PREFIX` | `session:` |
/// | [`cookie_name`](Self::cookie_name) | `SESSION_COOKIE_NAME` | `session` |
/// | [`permanent`](Self::permanent) | `SESSION_PERMANENT` | `true` |
/// | [`lifetime`](Self::lifetime) | `PERMANENT_SESSION_LIFETIME` | 31 days |
/// | [`refresh_each_request`](Self::refresh_each_request) | `SESSION_REFRESH_EACH_REQUEST` | `true` |
/// | [`absolute_lifetime`](Self::absolute_lifetime) | (none) | off |
/// | [`signing_key`](Self::signing_key) | `SESSION_USE_SIGNER` + `SECRET_KEY` | off |
/// | [`http_only`](Self::http_only) | `SESSION_COOKIE_HTTPONLY` | `true` |
/// | [`secure`](Self::secure) | `SESSION_COOKIE_SECURE` | `false` |
/// | [`same_site`](Self::same_site) | `SESSION_COOKIE_SAMESITE` | `Lax` (Flask: unset) |
/// | [`path`](Self::path) | `SESSION_COOKIE_PATH` | `/` |
/// | [`domain`](Self::domain) | `SESSION_COOKIE_DOMAIN` | unset |
///
/// The session id length is fixed at 32 random bytes (Flask-Session's `SESSION_ID_LENGTH`
/// default), and the serializer is always MessagePack.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) key_prefix: String,
    pub(crate) cookie_name: String,
    pub(crate) permanent: bool,
    pub(crate) lifetime: Duration,
    pub(crate) refresh_each_request: bool,
    pub(crate) absolute_lifetime: Option<Duration>,
    pub(crate) owner_limit: Option<OwnerLimit>,
    pub(crate) signer: Option<Signer>,
    pub(crate) cookie: CookieAttributes,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            key_prefix: "session:".into(),
            cookie_name: "session".into(),
            permanent: true,
            lifetime: Duration::from_secs(31 * 24 * 60 * 60),
            refresh_each_request: true,
            absolute_lifetime: None,
            owner_limit: None,
            signer: None,
            cookie: CookieAttributes {
                path: "/".into(),
                domain: None,
                http_only: true,
                secure: false,
                // Lax rather than Flask's unset: the browser default anyway, and explicit.
                same_site: Some(SameSite::Lax),
            },
        }
    }
}

impl SessionConfig {
    /// Prepended to the session id to make the key, so sessions can share a server with
    /// other data (or other applications, each with its own prefix).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The cookie's name.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// `true`: the cookie carries `Max-Age` = the lifetime and survives browser restarts.
    /// `false`: a browser-session cookie with no expiry. Either way the stored session
    /// expires after [`lifetime`](Self::lifetime) without use.
    pub fn permanent(mut self, permanent: bool) -> Self {
        self.permanent = permanent;
        self
    }

    /// How long a session lives without being used: the TTL of the stored session and the
    /// `Max-Age` of a permanent cookie. Capped to the server's `max_ttl` (400 days by
    /// default), which the server reports when the client connects.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// `true`: every request that loads a session extends it by the lifetime (sliding
    /// expiry, in the same round trip as the read) and re-sends a permanent cookie. `false`:
    /// only saving a modified session extends it.
    pub fn refresh_each_request(mut self, refresh: bool) -> Self {
        self.refresh_each_request = refresh;
        self
    }

    /// The longest a session may live, however often it is used: the server ends it this
    /// long after it was created even if every request slides its idle expiry (OWASP ASVS
    /// V7's absolute timeout). Set when a session is created, and enforced by sessiond
    /// itself, so no application instance can extend it; moving a session to a new id
    /// ([`Sessions::regenerate`](super::Sessions::regenerate),
    /// [`Sessions::login`](super::Sessions::login)) keeps its deadline. The cookie's
    /// `Max-Age` never reaches past it either. Off by default (the server may still apply
    /// its own `limits.max_session_lifetime`).
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = Some(lifetime);
        self
    }

    /// The most sessions one user may have at once, and what a login past it does
    /// ([`Sessions::login`](super::Sessions::login)): refuse
    /// ([`SessionError::OwnerLimitReached`]) or end the user's least recently used
    /// sessions. Enforced atomically by the server, so racing logins cannot pass it. Unset,
    /// the server's `limits.max_sessions_per_owner` applies (by default 1000, refusing); set,
    /// the lower of the two does.
    pub fn owner_limit(mut self, limit: OwnerLimit) -> Self {
        self.owner_limit = Some(limit);
        self
    }

    /// Signs the cookie value with HMAC-SHA256 under `key` (at least 32 random bytes), and
    /// ignores cookies whose signature does not verify.
    pub fn signing_key(mut self, key: &[u8]) -> Result<Self, KeyTooShort> {
        self.signer = Some(Signer::new(key)?);
        Ok(self)
    }

    /// The cookie's `HttpOnly` flag: scripts in the page cannot read it.
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.cookie.http_only = http_only;
        self
    }

    /// The cookie's `Secure` flag: sent over HTTPS only. Turn it on in production.
    pub fn secure(mut self, secure: bool) -> Self {
        self.cookie.secure = secure;
        self
    }

    /// The cookie's `SameSite` attribute, or `None` to leave it out.
    pub fn same_site(mut self, same_site: Option<SameSite>) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// The cookie's `Path`.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The cookie's `Domain`, or `None` for the host that set it.
    pub fn domain(mut self, domain: Option<String>) -> Self {
        self.cookie.domain = domain;
        self
    }

    /// Checks what the setters cannot: names and attributes that would break the header.
    pub(crate) fn validate(&self) -> Result<(), SessionError> {
        let invalid = |what: &str, value: &str| {
            Err(SessionError::Config(format!(
                "{what} {value:?} cannot be used in a cookie"
            )))
        };
        if !is_token(&self.cookie_name) {
            return invalid("cookie name", &self.cookie_name);
        }
        if self.cookie.path.is_empty() || !is_attribute_value(&self.cookie.path) {
            return invalid("path", &self.cookie.path);
        }
        if let Some(domain) = &self.cookie.domain {
            if domain.is_empty() || !is_attribute_value(domain) {
                return invalid("domain", domain);
            }
        }
        check_lifetime("session lifetime", self.lifetime)?;
        if self.owner_limit.is_some_and(|l| l.max == 0) {
            return Err(SessionError::Config(
                "the owner limit must allow at least 1 session".into(),
            ));
        }
        if let Some(absolute) = self.absolute_lifetime {
            check_lifetime("absolute session lifetime", absolute)?;
        }
        Ok(())
    }
}

/// A lifetime the server accepts: at least 1 s (shorter ones round to nothing in a cookie's
/// `Max-Age`) and at most the protocol's longest TTL, so that a configuration the server
/// would refuse on every write is refused once, here, and `SystemTime::now() + lifetime`
/// cannot overflow.
fn check_lifetime(what: &str, lifetime: Duration) -> Result<(), SessionError> {
    let longest = Duration::from_millis(Limits::HARD_MAX_TTL_MS);
    if lifetime < Duration::from_secs(1) || lifetime > longest {
        return Err(SessionError::Config(format!(
            "the {what} must be between 1 s and {} days",
            longest.as_secs() / 86_400
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an absolute lifetime past `SystemTime`'s range passed validation and
    /// panicked on the first session created; one past ten years failed every create at
    /// run time instead of at configuration.
    #[test]
    fn lifetimes_beyond_the_longest_ttl_are_refused_at_configuration() {
        let ten_years = Duration::from_millis(Limits::HARD_MAX_TTL_MS);
        assert!(SessionConfig::default()
            .absolute_lifetime(ten_years)
            .validate()
            .is_ok());
        for lifetime in [ten_years + Duration::from_secs(1), Duration::MAX] {
            let absolute = SessionConfig::default()
                .absolute_lifetime(lifetime)
                .validate();
            assert!(
                matches!(absolute, Err(SessionError::Config(_))),
                "{absolute:?}"
            );
            let idle = SessionConfig::default().lifetime(lifetime).validate();
            assert!(matches!(idle, Err(SessionError::Config(_))), "{idle:?}");
        }
        let short = SessionConfig::default()
            .absolute_lifetime(Duration::from_millis(999))
            .validate();
        assert!(matches!(short, Err(SessionError::Config(_))), "{short:?}");
    }
}
