//! Optional HMAC-SHA256 signing of the cookie value (Flask-Session's `SESSION_USE_SIGNER`).
//!
//! A signed cookie value is `ID.SIGNATURE`, the signature being the unpadded URL-safe base64
//! of HMAC-SHA256(key, context ‖ ID). The context string keeps a signature made here from
//! being valid for any other use of the same key.
//!
//! Session ids are already 256-bit secrets, so signing does not make them harder to guess.
//! What it adds: a server that holds the key can tell a forged or corrupted cookie from an
//! expired session without asking the store, and ids minted by something else (an old
//! deployment, another app sharing the cookie name) are refused. Verification compares in
//! constant time.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for the MAC input.
const CONTEXT: &[u8] = b"sessiond-client session cookie v1\0";

/// Signs and verifies cookie values with a secret key.
///
/// ```
/// use sessiond_client::Signer;
///
/// let signer = Signer::new(b"32 or more random bytes, not this")?;
/// let signed = signer.sign("session-id");
/// assert_eq!(signer.verify(&signed), Some("session-id"));
/// assert_eq!(signer.verify("session-id.forged"), None);
/// # Ok::<(), sessiond_client::KeyTooShort>(())
/// ```
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
}

/// The key given to [`Signer::new`] is too short.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a signing key must be at least {min} bytes, got {len}")]
pub struct KeyTooShort {
    /// The length given.
    pub len: usize,
    /// The minimum, [`Signer::MIN_KEY_LEN`].
    pub min: usize,
}

impl Signer {
    /// The shortest key accepted: 32 bytes, the HMAC-SHA256 output size. A short or guessable
    /// key would let anyone sign cookies.
    pub const MIN_KEY_LEN: usize = 32;

    /// A signer with `key`, which must be random and at least [`Signer::MIN_KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<Signer, KeyTooShort> {
        if key.len() < Self::MIN_KEY_LEN {
            return Err(KeyTooShort {
                len: key.len(),
                min: Self::MIN_KEY_LEN,
            });
        }
        // HMAC accepts keys of any length, so this cannot fail; map it rather than unwrap.
        let mac = HmacSha256::new_from_slice(key).map_err(|_| KeyTooShort {
            len: key.len(),
            min: Self::MIN_KEY_LEN,
        })?;
        Ok(Signer { mac })
    }

    fn mac_of(&self, value: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(CONTEXT);
        mac.update(value.as_bytes());
        mac
    }

    /// `value.SIGNATURE`.
    pub fn sign(&self, value: &str) -> String {
        let tag = self.mac_of(value).finalize().into_bytes();
        format!("{value}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The value inside `signed` if its signature is valid.
    pub fn verify<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let (value, signature) = signed.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(signature).ok()?;
        // `verify_slice` compares in constant time, so response timing does not reveal how
        // much of a forged signature was right.
        self.mac_of(value).verify_slice(&tag).ok()?;
        Some(value)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer { key: <redacted> }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_value_verifies_and_nothing_else_does() {
        let signer = Signer::new(KEY).unwrap();
        let signed = signer.sign("abc");
        assert!(signed.starts_with("abc."));
        assert_eq!(signer.verify(&signed), Some("abc"));

        let other = Signer::new(b"another key of at least 32 bytes!!").unwrap();
        assert_eq!(other.verify(&signed), None);
        assert_eq!(signer.verify("abc"), None);
        assert_eq!(signer.verify("abd.".to_string().as_str()), None);
        let forged = signed.replacen("abc", "abd", 1);
        assert_eq!(signer.verify(&forged), None);
        let mut truncated = signed.clone();
        truncated.pop();
        assert_eq!(signer.verify(&truncated), None);
        assert_eq!(signer.verify(&format!("{signed}x")), None);
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256(KEY, CONTEXT ‖ "abc"), computed independently with Python's hmac.
        let signer = Signer::new(KEY).unwrap();
        let signed = signer.sign("abc");
        let tag = URL_SAFE_NO_PAD
            .decode(signed.rsplit_once('.').unwrap().1)
            .unwrap();
        assert_eq!(tag.len(), 32);
        assert_eq!(hex(&tag), KNOWN_TAG);
    }

    const KNOWN_TAG: &str = "66ffe084aaedb7c3538f28e95a7ffd24909c0d761ee6c15dd2f2410ce793824b";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Signer::new(&KEY[..31]).is_err());
        assert!(format!("{:?}", Signer::new(KEY).unwrap()).contains("redacted"));
    }
}
