//! Users and their passwords: who may authenticate, as which role.
//!
//! The configured users ([`crate::config::AuthConfig`]) become an [`Authenticator`] at start:
//! password files and variables are read then, so a missing secret stops the start with its
//! name rather than failing every login later. What each role may then do is
//! [`crate::access`]'s business; this module only answers "is this the password of this
//! user, and what is their role".
//!
//! - [`password`]: argon2id hashes (`sessiond hash-password`) and their verification.
//! - [`role`]: the roles.
//! - `throttle`: the per-address budget of failed attempts.
//!
//! Verification cost: an argon2 verification is deliberately slow. After one succeeds, the
//! SHA-256 of the password is kept (in memory only) and later attempts for that user are
//! compared with it in constant time, so a reconnect storm does not cost an argon2
//! verification per connection. A wrong password is then rejected by the digest alone.
//! Users whose password comes from a file or a variable only ever have a digest.
//!
//! Known limits: until a hashed user has logged in once, each wrong password for them costs
//! an argon2 verification (throttling delays the answers of a guessing address, it does not
//! skip the work), and that difference in time tells such a user from an unknown one.

mod password;
mod role;
mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::config::{Config, UserConfig};
pub use password::{check_hash, hash_password};
use password::{digest, verify_hash, PasswordDigest};
pub use role::Role;
use throttle::Throttle;
pub use throttle::THROTTLE_DELAY;

/// The user `AUTH password` (without a user name) authenticates as, as in Redis; defined by
/// the deprecated `resp.password`.
pub const DEFAULT_USER: &str = "default";

/// Why the configured users could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A `password_file` could not be read.
    #[error("user {user:?}: cannot read password_file {path}: {source}")]
    PasswordFile {
        /// The user.
        user: String,
        /// The file.
        path: PathBuf,
        /// The I/O error (it never contains the file's contents).
        source: std::io::Error,
    },
    /// A `password_env` variable is not set, or not UTF-8.
    #[error("user {user:?}: environment variable {var} (password_env) is not set")]
    PasswordEnv {
        /// The user.
        user: String,
        /// The variable's name.
        var: String,
    },
    /// A password file or variable is empty.
    #[error("user {user:?}: the password from {source_name} is empty")]
    EmptyPassword {
        /// The user.
        user: String,
        /// Where the password was read from.
        source_name: String,
    },
}

/// How a user's password is checked.
enum Stored {
    /// An argon2id hash, and once a password has been verified against it, that password's
    /// digest. A std mutex: nothing awaits while holding it, and it is held only to copy 32
    /// bytes, never during the verification itself.
    Hash {
        phc: String,
        verified: Mutex<Option<PasswordDigest>>,
    },
    /// The digest of a password read from a file or variable at start.
    Digest(PasswordDigest),
}

struct User {
    role: Role,
    stored: Stored,
}

/// The configured users, and the state of authentication shared by every connection.
pub struct Authenticator {
    users: HashMap<String, User>,
    /// How long a new connection has to authenticate.
    pub timeout: Duration,
    throttle: Throttle,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.users.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Authenticator")
            .field("users", &names)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// No users: authentication is off and every connection may do everything.
    pub fn open() -> Authenticator {
        Authenticator {
            users: HashMap::new(),
            timeout: Duration::from_secs(10),
            throttle: Throttle::new(10),
        }
    }

    /// The users of `config`: `[[auth.users]]`, and `default` (role admin) if the deprecated
    /// `resp.password` is set. Reads password files and variables now.
    pub fn from_config(config: &Config) -> Result<Authenticator, AuthSetupError> {
        let mut users = HashMap::new();
        if let Some(password) = &config.resp.password {
            let user = User {
                role: Role::Admin,
                stored: Stored::Digest(digest(password.expose().as_bytes())),
            };
            users.insert(DEFAULT_USER.to_string(), user);
        }
        for user in &config.auth.users {
            users.insert(user.name.clone(), load_user(user)?);
        }
        Ok(Authenticator {
            users,
            timeout: config.auth.timeout,
            throttle: Throttle::new(config.auth.max_failures_per_minute),
        })
    }

    /// Whether connections must authenticate.
    pub fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// The role of `user` if `password` is theirs. An unknown user costs a digest comparison
    /// like a known one, so that timing does not tell which names exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> Option<Role> {
        let attempt = digest(password);
        let Some(found) = self.users.get(user) else {
            let _ = bool::from(attempt.ct_eq(&[0u8; 32]));
            return None;
        };
        let ok = match &found.stored {
            Stored::Digest(expected) => bool::from(attempt.ct_eq(expected)),
            Stored::Hash { phc, verified } => {
                let known = *verified.lock().unwrap_or_else(|e| e.into_inner());
                match known {
                    Some(expected) => bool::from(attempt.ct_eq(&expected)),
                    None => {
                        let ok = verify_slowly(phc, password);
                        if ok {
                            *verified.lock().unwrap_or_else(|e| e.into_inner()) = Some(attempt);
                        }
                        ok
                    }
                }
            }
        };
        ok.then_some(found.role)
    }

    /// Records a failed attempt from `ip`; true if the answer must wait [`THROTTLE_DELAY`].
    pub fn failed(&self, ip: IpAddr) -> bool {
        self.throttle.failed(ip)
    }
}

/// An argon2 verification blocks its thread for tens of milliseconds. On the multi-threaded
/// runtime the daemon uses, the thread's other connections are handed to another worker
/// first; elsewhere (unit tests) it simply runs.
fn verify_slowly(phc: &str, password: &[u8]) -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| verify_hash(phc, password))
        }
        _ => verify_hash(phc, password),
    }
}

/// One configured user, with a password file or variable read now.
fn load_user(user: &UserConfig) -> Result<User, AuthSetupError> {
    let stored = if let Some(hash) = &user.password_hash {
        Stored::Hash {
            phc: hash.expose().to_string(),
            verified: Mutex::new(None),
        }
    } else if let Some(path) = &user.password_file {
        let text = std::fs::read(path).map_err(|source| AuthSetupError::PasswordFile {
            user: user.name.clone(),
            path: path.clone(),
            source,
        })?;
        let password = strip_newline(&text);
        if password.is_empty() {
            return Err(AuthSetupError::EmptyPassword {
                user: user.name.clone(),
                source_name: format!("password_file {}", path.display()),
            });
        }
        Stored::Digest(digest(password))
    } else {
        let var = user.password_env.clone().unwrap_or_default();
        let password = std::env::var(&var).map_err(|_| AuthSetupError::PasswordEnv {
            user: user.name.clone(),
            var: var.clone(),
        })?;
        if password.is_empty() {
            return Err(AuthSetupError::EmptyPassword {
                user: user.name.clone(),
                source_name: format!("environment variable {var}"),
            });
        }
        Stored::Digest(digest(password.as_bytes()))
    };
    Ok(User {
        role: user.role,
        stored,
    })
}

/// A file written by `echo` or an editor ends in a newline that is not part of the password.
fn strip_newline(text: &[u8]) -> &[u8] {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.strip_suffix(b"\r").unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config_with(users: Vec<UserConfig>) -> Config {
        let mut config = Config::default();
        config.auth.users = users;
        config
    }

    fn user(name: &str, role: Role) -> UserConfig {
        UserConfig {
            name: name.into(),
            role,
            password_hash: None,
            password_file: None,
            password_env: None,
        }
    }

    #[test]
    fn a_hashed_password_is_verified_once_then_by_its_digest() {
        let phc = hash_password(b"pw-app").unwrap();
        let auth = Authenticator::from_config(&config_with(vec![UserConfig {
            password_hash: Some(Secret::new(phc)),
            ..user("app", Role::App)
        }]))
        .unwrap();
        assert!(auth.required());
        assert_eq!(auth.verify("app", b"wrong"), None);
        assert_eq!(auth.verify("app", b"pw-app"), Some(Role::App));
        assert_eq!(auth.verify("app", b"pw-app"), Some(Role::App));
        assert_eq!(auth.verify("app", b"wrong"), None);
        assert_eq!(auth.verify("nobody", b"pw-app"), None);
    }

    #[test]
    fn password_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let auth = Authenticator::from_config(&config_with(vec![UserConfig {
            password_file: Some(path.clone()),
            ..user("mon", Role::Monitor)
        }]))
        .unwrap();
        assert_eq!(auth.verify("mon", b"from-file"), Some(Role::Monitor));
        assert_eq!(auth.verify("mon", b"from-file\n"), None);

        std::fs::write(&path, "\n").unwrap();
        let err = Authenticator::from_config(&config_with(vec![UserConfig {
            password_file: Some(path),
            ..user("mon", Role::Monitor)
        }]))
        .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = Authenticator::from_config(&config_with(vec![UserConfig {
            password_env: Some("SESSIOND_TEST_SURELY_UNSET".into()),
            ..user("app", Role::App)
        }]))
        .unwrap_err();
        assert!(
            err.to_string().contains("SESSIOND_TEST_SURELY_UNSET"),
            "{err}"
        );
    }

    #[test]
    fn resp_password_defines_the_default_admin() {
        let mut config = Config::default();
        config.resp.password = Some(Secret::new("s3cret"));
        let auth = Authenticator::from_config(&config).unwrap();
        assert_eq!(auth.verify(DEFAULT_USER, b"s3cret"), Some(Role::Admin));
        assert_eq!(auth.verify(DEFAULT_USER, b"s3cre"), None);
        let shown = format!("{auth:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!Authenticator::open().required());
    }
}
