//! Password hashes: making one (`sessiond hash-password`), checking that a configured one is
//! usable, and verifying a password against one.
//!
//! Hashes are argon2id PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), made with
//! the `argon2` crate's defaults (OWASP's recommendation: 19 MiB, 2 passes, 1 lane).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

/// A SHA-256 digest of a password: what the server keeps in memory to compare later
/// attempts against without another argon2 verification.
pub(crate) type PasswordDigest = [u8; 32];

/// The digest of `password`.
pub(crate) fn digest(password: &[u8]) -> PasswordDigest {
    Sha256::digest(password).into()
}

/// Hashes `password` with a fresh random salt, as `sessiond hash-password` prints it.
pub fn hash_password(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password, &salt)?
        .to_string())
}

/// Whether `phc` is an argon2id PHC string this server can verify against. The reason never
/// quotes the string: it is a secret too (it lets an attacker try guesses offline).
pub fn check_hash(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc)
        .map_err(|_| "is not a PHC string; use what `sessiond hash-password` prints".to_string())?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "uses {}, not argon2id; use what `sessiond hash-password` prints",
            hash.algorithm
        ));
    }
    if hash.hash.is_none() {
        return Err("has no hash part; use what `sessiond hash-password` prints".into());
    }
    Ok(())
}

/// Whether `password` matches the PHC string `phc`. Deliberately slow (tens of milliseconds
/// in a release build), which is what makes a stolen hash expensive to attack.
pub(crate) fn verify_hash(phc: &str, password: &[u8]) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash_password(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        check_hash(&phc).unwrap();
        assert!(verify_hash(&phc, b"correct horse"));
        assert!(!verify_hash(&phc, b"correct horsf"));
        // A fresh salt each time.
        assert_ne!(phc, hash_password(b"correct horse").unwrap());
    }

    #[test]
    fn unusable_hashes_are_refused_without_being_quoted() {
        for bad in [
            "hunter2",
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            "",
        ] {
            let reason = check_hash(bad).unwrap_err();
            assert!(bad.is_empty() || !reason.contains(bad), "{reason}");
        }
    }
}
