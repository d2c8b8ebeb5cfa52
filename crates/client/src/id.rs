//! Session ids: 256 bits from the operating system's CSPRNG, URL-safe.
//!
//! The equivalent of Flask-Session's `secrets.token_urlsafe(32)`: 32 random bytes in
//! unpadded URL-safe base64, 43 characters. A session id is a bearer secret (whoever holds it
//! is the session), so ids come only from the OS generator, and an id from a cookie is
//! accepted only if it has exactly this shape: a browser cannot make the server look up an
//! arbitrary key.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// A session id. `Debug` shows only its first characters, so that logging a session does
/// not leak the secret.
///
/// ```
/// use sessiond_client::SessionId;
///
/// let id = SessionId::generate()?;
/// assert_eq!(id.as_str().len(), 43);
/// assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
/// // Anything else a browser sends is not an id, and is never looked up.
/// assert_eq!(SessionId::parse("../../etc/passwd"), None);
/// assert!(!format!("{id:?}").contains(id.as_str()));
/// # Ok::<(), sessiond_client::RandomError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

/// The OS random generator failed; no id could be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the OS random generator failed: {0}")]
pub struct RandomError(String);

impl SessionId {
    /// Random bytes in an id.
    pub const BYTES: usize = 32;
    /// Characters in an id's text form.
    pub const LEN: usize = 43;

    /// A new id from the OS CSPRNG.
    pub fn generate() -> Result<SessionId, RandomError> {
        let mut bytes = [0u8; Self::BYTES];
        getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
        Ok(SessionId(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The id in `text`, if it has the exact shape of a generated id.
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() != Self::LEN {
            return None;
        }
        // Decoding also rejects a last character with stray low bits, so each 32-byte id
        // has exactly one text form.
        let mut bytes = [0u8; Self::BYTES + 3];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(Self::BYTES) => Some(SessionId(text.to_string())),
            _ => None,
        }
    }

    /// The id's text, as it goes into a cookie and (after the key prefix) into a key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short name for the session that is safe to show: 16 hex digits of the SHA-256 of
    /// the id. A "your devices" page lists the sessions of a user by this, never by id:
    /// an id is a bearer secret, and showing the ids of every device on one page would
    /// hand whoever sees the page all of them. The fingerprint cannot be turned back into
    /// the id, and 64 bits tell a user's sessions apart.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

/// 16 hex digits of the SHA-256 of an id's text: [`SessionId::fingerprint`], also for the
/// ids of the framework stores.
pub(crate) fn fingerprint(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", &self.0[..4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_43_url_safe_characters_and_distinct() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), SessionId::LEN);
            assert!(id
                .as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(SessionId::parse(id.as_str()).as_ref(), Some(id));
        }
    }

    #[test]
    fn parse_accepts_only_the_generated_shape() {
        let id = SessionId::generate().unwrap();
        let text = id.as_str();
        assert_eq!(SessionId::parse(&text[1..]), None);
        assert_eq!(SessionId::parse(&format!("{text}A")), None);
        assert_eq!(SessionId::parse(&format!("{}=", &text[1..])), None);
        assert_eq!(SessionId::parse(&format!("{}+", &text[1..])), None);
        assert_eq!(SessionId::parse(""), None);
        assert_eq!(SessionId::parse(&"é".repeat(21)), None);
        // 43 characters whose last one carries bits beyond 256.
        assert_eq!(SessionId::parse(&format!("{}B", "A".repeat(42))), None);
        assert!(SessionId::parse(&"A".repeat(43)).is_some());
    }

    #[test]
    fn fingerprints_are_stable_short_and_not_the_id() {
        let id = SessionId::parse(&"A".repeat(43)).unwrap();
        let fingerprint = id.fingerprint();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(fingerprint, id.fingerprint());
        assert!(!id.as_str().contains(&fingerprint));
        let other = SessionId::generate().unwrap();
        assert_ne!(other.fingerprint(), fingerprint);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let id = SessionId::generate().unwrap();
        let debug = format!("{id:?}");
        assert!(!debug.contains(id.as_str()));
        assert!(debug.contains(&id.as_str()[..4]));
    }
}
