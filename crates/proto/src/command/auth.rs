//! `AUTH`: authenticate the connection as a configured user.

use bytes::Bytes;

use super::{malformed, reply_status, unexpected, CommandError, Presence, ReplyError, Shape};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// `AUTH`: the connection becomes the named user, with that user's role, if the password is
/// right.
///
/// ```text
/// flags   0
/// extras  none
/// key     user name, 1..=255 bytes of UTF-8
/// value   password, 1..=1024 bytes
/// ```
///
/// A wrong password and an unknown user are both answered `AUTH_FAILED`, and a failed `AUTH`
/// leaves the connection as it was (authenticated as before, or not at all).
///
/// `Debug` prints the password as `<redacted>`: a request is the kind of value that ends up in
/// a log line or a panic message.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The user name.
    pub user: String,
    /// The password, as sent; never logged.
    pub password: Bytes,
}

const SHAPE: Shape = Shape {
    opcode: Opcode::Auth,
    allowed_flags: 0,
    extras_lens: &[0],
    key: Presence::Required,
    value: Presence::Required,
};

impl Auth {
    /// Parses an `AUTH` frame.
    pub fn parse(frame: RequestFrame) -> Result<Auth, CommandError> {
        SHAPE.check(&frame)?;
        if frame.key.len() > Limits::MAX_USER_LEN {
            return Err(CommandError::InvalidArgument(format!(
                "AUTH: user name longer than {} bytes",
                Limits::MAX_USER_LEN
            )));
        }
        if frame.value.len() > Limits::MAX_PASSWORD_LEN {
            return Err(CommandError::InvalidArgument(format!(
                "AUTH: password longer than {} bytes",
                Limits::MAX_PASSWORD_LEN
            )));
        }
        let user = String::from_utf8(frame.key.to_vec()).map_err(|_| {
            CommandError::InvalidArgument("AUTH: the user name is not UTF-8".into())
        })?;
        Ok(Auth {
            user,
            password: frame.value,
        })
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame {
            key: Bytes::from(self.user.clone()),
            value: self.password.clone(),
            ..RequestFrame::new(Opcode::Auth, opaque)
        }
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The successful `AUTH` reply: `OK`, no extras, the role's name in ASCII as the value
/// (`app`, `monitor` or `admin`).
///
/// Failures are error statuses: `AUTH_FAILED` for an unknown user or a wrong password,
/// `INVALID_ARGUMENT` for a malformed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReply {
    /// The name of the role the connection now has.
    pub role: String,
}

impl AuthReply {
    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        ResponseFrame {
            value: Bytes::from(self.role.clone()),
            ..ResponseFrame::new(Opcode::Auth.into(), opaque, Status::Ok)
        }
    }

    /// Reads an `AUTH` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<AuthReply, ReplyError> {
        match reply_status(frame, Opcode::Auth)? {
            Status::Ok => {}
            other => return Err(unexpected(Opcode::Auth, other)),
        }
        if !frame.extras.is_empty() {
            return Err(malformed(
                Opcode::Auth,
                format!("extras must be empty, got {} bytes", frame.extras.len()),
            ));
        }
        let role = std::str::from_utf8(&frame.value)
            .map_err(|e| malformed(Opcode::Auth, format!("role is not UTF-8: {e}")))?;
        Ok(AuthReply {
            role: role.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(user: &[u8], password: &[u8]) -> RequestFrame {
        RequestFrame {
            key: Bytes::copy_from_slice(user),
            value: Bytes::copy_from_slice(password),
            ..RequestFrame::new(Opcode::Auth, 1)
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let auth = Auth::parse(frame(b"app", b"hunter2")).unwrap();
        let shown = format!("{auth:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn user_and_password_are_bounded_and_required() {
        assert!(Auth::parse(frame(b"", b"pw")).is_err());
        assert!(Auth::parse(frame(b"app", b"")).is_err());
        assert!(Auth::parse(frame(&[b'u'; 256], b"pw")).is_err());
        assert!(Auth::parse(frame(&[b'u'; 255], b"pw")).is_ok());
        assert!(Auth::parse(frame(b"app", &[b'p'; 1025])).is_err());
        assert!(Auth::parse(frame(b"app", &[b'p'; 1024])).is_ok());
        assert!(Auth::parse(frame(&[0xff, 0xfe], b"pw")).is_err());
    }

    #[test]
    fn the_error_message_never_echoes_the_password() {
        let err = Auth::parse(frame(b"app", &[b'p'; 1025])).unwrap_err();
        assert!(!err.to_string().contains("ppp"), "{err}");
    }
}
