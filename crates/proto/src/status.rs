//! Response status codes.

/// The outcome of a request, carried in every response header.
///
/// Codes below `0x0080` are ordinary outcomes of a well-formed request (a miss is not an
/// error). Codes from `0x0080` up are errors: their response carries a UTF-8 message in the
/// value and no extras. [`Status::is_fatal`] tells which ones the server follows by closing
/// the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// The request succeeded.
    Ok = 0x0000,
    /// The key does not exist (or has expired).
    NotFound = 0x0001,
    /// A create-only `SET` found the key already present.
    Exists = 0x0002,
    /// An if-version `SET` or `DEL` found a different version; the extras carry the current one.
    VersionMismatch = 0x0003,
    /// A `SET_SESSION` or `ROTATE` would take the owner past its limit on live sessions and
    /// the policy is refuse; nothing was changed.
    OwnerLimit = 0x0004,
    /// The frame was well formed but its arguments were not (bad extras, flags, TTL, key).
    InvalidArgument = 0x0081,
    /// The opcode is not one this server knows.
    UnknownOpcode = 0x0082,
    /// The header's protocol version is not one the server speaks. Fatal.
    UnsupportedVersion = 0x0083,
    /// The key or value is longer than the server's limits. The frame was skipped.
    TooLarge = 0x0084,
    /// The bytes received are not a sessiond frame (bad magic). Fatal.
    ProtocolError = 0x0085,
    /// The server requires authentication and the connection has not authenticated; only
    /// `HELLO`, `AUTH` and `PING` are served before it does.
    AuthRequired = 0x0086,
    /// `AUTH` named an unknown user or gave a wrong password. One status for both, so that
    /// user names cannot be probed.
    AuthFailed = 0x0087,
    /// The authenticated user's role does not allow this command.
    NoPermission = 0x0088,
    /// The server is at its connection limit. Sent unsolicited, then the connection is closed.
    Busy = 0x0090,
    /// The server is shutting down and no longer takes requests. Fatal.
    ShuttingDown = 0x0091,
    /// The write was applied in memory but could not be made durable under the configured
    /// fsync policy, and was not acknowledged.
    PersistenceFailed = 0x0092,
    /// The server's memory is at its limit (`limits.max_memory`) and the write would have
    /// created an entry or grown one. Nothing was changed; reads, touches, deletes and
    /// updates that do not grow an entry are still served, and the write may succeed once
    /// sessions are deleted or expire.
    OutOfMemory = 0x0093,
    /// An unexpected server-side failure.
    InternalError = 0x00ff,
}

impl Status {
    /// Every defined status, in numeric order.
    pub const ALL: [Status; 18] = [
        Status::Ok,
        Status::NotFound,
        Status::Exists,
        Status::VersionMismatch,
        Status::OwnerLimit,
        Status::InvalidArgument,
        Status::UnknownOpcode,
        Status::UnsupportedVersion,
        Status::TooLarge,
        Status::ProtocolError,
        Status::AuthRequired,
        Status::AuthFailed,
        Status::NoPermission,
        Status::Busy,
        Status::ShuttingDown,
        Status::PersistenceFailed,
        Status::OutOfMemory,
        Status::InternalError,
    ];

    /// The status for a wire value, or `None` for a value this crate does not define.
    pub fn from_u16(value: u16) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| *s as u16 == value)
    }

    /// Whether this status is an error (its value carries a message).
    pub fn is_error(self) -> bool {
        self as u16 >= 0x0080
    }

    /// Whether the server closes the connection after sending this status.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Status::UnsupportedVersion
                | Status::ProtocolError
                | Status::Busy
                | Status::ShuttingDown
        )
    }

    /// The upper-case name used in the specification.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NotFound => "NOT_FOUND",
            Status::Exists => "EXISTS",
            Status::VersionMismatch => "VERSION_MISMATCH",
            Status::OwnerLimit => "OWNER_LIMIT",
            Status::InvalidArgument => "INVALID_ARGUMENT",
            Status::UnknownOpcode => "UNKNOWN_OPCODE",
            Status::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Status::TooLarge => "TOO_LARGE",
            Status::ProtocolError => "PROTOCOL_ERROR",
            Status::AuthRequired => "AUTH_REQUIRED",
            Status::AuthFailed => "AUTH_FAILED",
            Status::NoPermission => "NO_PERMISSION",
            Status::Busy => "BUSY",
            Status::ShuttingDown => "SHUTTING_DOWN",
            Status::PersistenceFailed => "PERSISTENCE_FAILED",
            Status::OutOfMemory => "OUT_OF_MEMORY",
            Status::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl From<Status> for u16 {
    fn from(s: Status) -> u16 {
        s as u16
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_u16_inverts_the_discriminant() {
        for s in Status::ALL {
            assert_eq!(Status::from_u16(s as u16), Some(s));
        }
        assert_eq!(Status::from_u16(0x0005), None);
    }

    #[test]
    fn outcomes_are_not_errors() {
        for s in [
            Status::Ok,
            Status::NotFound,
            Status::Exists,
            Status::VersionMismatch,
            Status::OwnerLimit,
        ] {
            assert!(!s.is_error());
            assert!(!s.is_fatal());
        }
        assert!(Status::TooLarge.is_error());
        assert!(!Status::TooLarge.is_fatal());
        for s in [
            Status::AuthRequired,
            Status::AuthFailed,
            Status::NoPermission,
        ] {
            assert!(s.is_error());
            assert!(!s.is_fatal(), "{s} is not fatal");
        }
    }
}
