//! [`Credentials`]: the user a client authenticates as, with a password that never shows.

use std::fmt;
use std::path::Path;

use bytes::Bytes;
use sessiond_proto::command::Auth;

use crate::Error;

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

    /// `user` with the password from the file `password_file` if given, else from the
    /// environment variable `password_var`: how command-line tools take a password without
    /// putting it among their arguments, where every user of the machine could read it.
    ///
    /// A file's trailing newline (what `echo secret > file` writes) is not part of the
    /// password. An empty password, or none at all, is an [`Error::InvalidArgument`].
    pub fn from_file_or_env(
        user: &str,
        password_file: Option<&Path>,
        password_var: &str,
    ) -> Result<Credentials, Error> {
        let password = match password_file {
            Some(path) => {
                let text = std::fs::read(path).map_err(|e| {
                    Error::InvalidArgument(format!("password file {}: {e}", path.display()))
                })?;
                let text = text.strip_suffix(b"\n").unwrap_or(&text);
                text.strip_suffix(b"\r").unwrap_or(text).to_vec()
            }
            None => std::env::var_os(password_var)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "user {user} needs a password: set {password_var} or give a password file"
                    ))
                })?
                .into_encoded_bytes(),
        };
        if password.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the password for user {user} is empty"
            )));
        }
        Ok(Credentials::new(user, password))
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

    #[test]
    fn a_password_files_trailing_newline_is_not_part_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        for (text, password) in [("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw")] {
            std::fs::write(&file, text).unwrap();
            let credentials = Credentials::from_file_or_env("app", Some(&file), "UNSET").unwrap();
            assert_eq!(credentials.password, password.as_bytes());
        }
        std::fs::write(&file, "\n").unwrap();
        let empty = Credentials::from_file_or_env("app", Some(&file), "UNSET");
        assert!(matches!(empty, Err(Error::InvalidArgument(_))));
        let missing = Credentials::from_file_or_env("app", None, "SESSIOND_TEST_UNSET_VARIABLE");
        assert!(matches!(missing, Err(Error::InvalidArgument(_))));
    }
}
