//! [`Credentials`]: the user a client authenticates as, with a password that never shows.

use std::fmt;

use bytes::Bytes;
use sessiond_proto::command::Auth;

/// A user name and password for the server's `AUTH`.
///
/// The password is kept as given and sent on every (re)connection; `Debug` prints it as
/// `<redacted>`, so a client, its builder or a store that holds one can be logged.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: Bytes,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<Vec<u8>>) -> Credentials {
        Credentials {
            user: user.into(),
            password: Bytes::from(password.into()),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The `AUTH` request for these credentials.
    pub fn request(&self) -> Auth {
        Auth {
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let credentials = Credentials::new("app", "hunter2");
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("app"),
            "{shown}"
        );
    }
}
