//! Session ids: 256 bits from the operating system's CSPRNG, URL-safe, optionally behind a
//! routing tag.
//!
//! The equivalent of Flask-Session's `secrets.token_urlsafe(32)`: 32 random bytes in
//! unpadded URL-safe base64, 43 characters. A session id is a bearer secret (whoever holds it
//! is the session), so ids come only from the OS generator, and an id from a cookie is
//! accepted only if it has exactly this shape: a browser cannot make the server look up an
//! arbitrary key.
//!
//! The id of a session bound to an owner carries the owner's routing tag in front:
//! `TTTTTTTT~RRRR…` (8 tag characters, a tilde, the 43 random ones; 52 in all). The tag is
//! an HMAC of the owner ([`Client::owner_tag`](crate::Client::owner_tag)), never the owner, and is what placement hashes
//! ([`crate::placement::routing_key`]), so all of an owner's sessions live on one node and
//! listing or ending them stays one atomic request there. The tag adds no secrecy and
//! takes none away: the 256 random bits are the secret. It does say something about the
//! owner: equal tags mark one owner's sessions, and under the default, public tag key a
//! tag confirms a guess of who the owner is (see [`PUBLIC_TAG_KEY`]); set a secret one
//! with [`ClientBuilder::owner_tag_key`](crate::ClientBuilder::owner_tag_key). Ids without a tag (every id made
//! before tags existed, and sessions without an owner) stay valid and route by their whole
//! key.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::placement::{is_base64url, TAG_LEN, TAG_SEPARATOR};

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
    /// Characters in an id's text form without a routing tag.
    pub const LEN: usize = 43;
    /// Characters in an id's text form with a routing tag: tag, `.`, random part.
    pub const TAGGED_LEN: usize = TAG_LEN + 1 + Self::LEN;

    /// A new id from the OS CSPRNG.
    pub fn generate() -> Result<SessionId, RandomError> {
        let mut bytes = [0u8; Self::BYTES];
        getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
        Ok(SessionId(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A new id from the OS CSPRNG behind routing tag `tag` (from
    /// [`Client::owner_tag`](crate::Client::owner_tag) or [`SessionId::tag`]). `None` if
    /// `tag` is not [`TAG_LEN`] URL-safe base64 characters.
    pub fn generate_tagged(tag: &str) -> Result<Option<SessionId>, RandomError> {
        if tag.len() != TAG_LEN || !tag.bytes().all(is_base64url) {
            return Ok(None);
        }
        let random = SessionId::generate()?;
        Ok(Some(SessionId(format!("{tag}~{}", random.0))))
    }

    /// The id in `text`, if it has the exact shape of a generated id, tagged or not.
    pub fn parse(text: &str) -> Option<SessionId> {
        if text.len() == Self::TAGGED_LEN {
            let (tag, random) = text.split_at(TAG_LEN);
            let random = random.strip_prefix(char::from(TAG_SEPARATOR))?;
            return (tag.bytes().all(is_base64url) && Self::parse(random).is_some())
                .then(|| SessionId(text.to_string()));
        }
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

    /// The id's routing tag, if it has one.
    pub fn tag(&self) -> Option<&str> {
        (self.0.len() == Self::TAGGED_LEN).then(|| &self.0[..TAG_LEN])
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

/// The key [`Client`](crate::Client) makes routing tags with unless the application sets
/// its own ([`ClientBuilder::owner_tag_key`](crate::ClientBuilder::owner_tag_key)). It is
/// public, so under it anyone holding one cookie can test guesses of its owner (a user
/// number, an e-mail address) offline: 48 bits confirm a guess.
pub(crate) const PUBLIC_TAG_KEY: &[u8] = b"sessiond owner routing tag v1";

/// Whether `client` makes routing tags with [`PUBLIC_TAG_KEY`].
pub(crate) fn has_public_tag_key(client: &crate::Client) -> bool {
    const PROBE: &str = "sessiond public tag key probe";
    client.owner_tag(PROBE) == owner_tag(PUBLIC_TAG_KEY, PROBE.as_bytes())
}

/// The routing tag of `owner` under `key`: the first 6 bytes of HMAC-SHA256(`key`,
/// `owner`) in URL-safe base64, [`TAG_LEN`] characters. 48 bits spread owners over nodes
/// evenly and, keyed with a secret, say nothing about who the owner is (under
/// [`PUBLIC_TAG_KEY`] they confirm a guess of it). Whatever the key, equal tags link the
/// sessions of one owner: whoever sees several ids (a proxy's log) sees which devices
/// belong to the same user.
pub(crate) fn owner_tag(key: &[u8], owner: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(owner);
    let digest = mac.finalize().into_bytes();
    URL_SAFE_NO_PAD.encode(&digest[..6])
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
    fn the_public_tag_key_is_the_one_clients_use_by_default() {
        let default = crate::Client::builder("h:1").build();
        assert!(has_public_tag_key(&default));
        assert_eq!(
            default.owner_tag("user:42"),
            owner_tag(PUBLIC_TAG_KEY, b"user:42")
        );
        let secret = crate::Client::builder("h:1")
            .owner_tag_key("s3cret")
            .build();
        assert!(!has_public_tag_key(&secret));
    }

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
    fn tagged_ids_parse_and_keep_their_tag() {
        let tag = owner_tag(b"secret", b"user:42");
        assert_eq!(tag.len(), TAG_LEN);
        assert_ne!(tag, owner_tag(b"other secret", b"user:42"));
        let id = SessionId::generate_tagged(&tag).unwrap().unwrap();
        assert_eq!(id.as_str().len(), SessionId::TAGGED_LEN);
        assert_eq!(id.tag(), Some(tag.as_str()));
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert!(!id.as_str().contains("user"));
        // The untagged form still parses, and has no tag.
        let plain = SessionId::generate().unwrap();
        assert_eq!(plain.tag(), None);
        // A bad tag or separator, or a bad random part, is not an id.
        let random = &id.as_str()[TAG_LEN + 1..];
        for bad in [
            format!("{}+~{random}", &tag[..7]),
            format!("{tag}:{random}"),
            format!("{tag}~{}=", &random[..42]),
        ] {
            assert_eq!(SessionId::parse(&bad), None, "{bad}");
        }
        assert!(SessionId::generate_tagged("short").unwrap().is_none());
        // What placement routes by is the tag.
        let key = format!("session:{id}");
        assert_eq!(
            crate::placement::routing_key(key.as_bytes()),
            tag.as_bytes()
        );
    }

    proptest::proptest! {
        /// Whatever the owner and the key prefix, a session minted with the owner's tag
        /// routes by that tag, so every session of an owner lands on one node.
        #[test]
        fn every_tagged_session_routes_by_its_owners_tag(
            owner in proptest::collection::vec(proptest::num::u8::ANY, 1..64),
            prefix in "[ -~]{0,24}",
        ) {
            let tag = owner_tag(b"key", &owner);
            let id = SessionId::generate_tagged(&tag).unwrap().unwrap();
            proptest::prop_assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
            let key = format!("{prefix}{id}");
            let routing = crate::placement::routing_key(key.as_bytes());
            proptest::prop_assert_eq!(routing, tag.as_bytes());
        }
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
