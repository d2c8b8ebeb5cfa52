//! The client's error type.
//!
//! One enum for every request, because the outcomes overlap: any request can time out or
//! lose its connection, and the conditional ones can also be declined. The first four
//! variants are the server declining a conditional request; they are ordinary outcomes of a
//! correct program, and [`Error::is_declined`] tells them apart from failures.

use std::sync::Arc;
use std::time::Duration;

use sessiond_proto::command::ReplyError;
use sessiond_proto::{FrameError, Status};

/// Why a request did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not exist or has expired (`TOUCH`, update-only or if-version `SET`,
    /// if-version `DEL`). A plain `GET` miss is `Ok(None)`, not this.
    #[error("not found: the key does not exist or has expired")]
    NotFound,
    /// A create-only `SET` found the key already present.
    #[error("exists: a create-only write found the key already present")]
    Exists,
    /// An if-version `SET` or `DEL` found another version: someone else wrote the key after
    /// the version the request names was read. Nothing was changed.
    #[error("version mismatch: the entry now has version {current}")]
    VersionMismatch {
        /// The version the entry has now.
        current: u64,
    },
    /// The session's owner already has as many live sessions as its limit allows (the
    /// server's `limits.max_sessions_per_owner` or the request's own), and the policy is to
    /// refuse: nothing was written. `SET_SESSION` and `ROTATE` only.
    #[error("owner limit: the owner already has as many sessions as allowed")]
    OwnerLimitReached,
    /// No reply arrived within the request timeout. The request may or may not have been
    /// applied (it may still be, later): retry writes only in a conditional mode.
    #[error("no reply within {after:?}")]
    Timeout {
        /// The request timeout that elapsed.
        after: Duration,
    },
    /// No connection could be made, or it was lost before the reply arrived. A write that
    /// was sent may or may not have been applied.
    #[error("connection to {addr}: {source}")]
    Connection {
        /// The server address.
        addr: Arc<str>,
        /// What went wrong (`ConnectionRefused`, `TimedOut`, `UnexpectedEof`, ...).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The server answered with an error status, such as `INVALID_ARGUMENT` (a TTL above the
    /// server's maximum), `TOO_LARGE`, `BUSY` or `PERSISTENCE_FAILED`.
    #[error("server error {status}: {message}")]
    Server {
        /// The status.
        status: Status,
        /// The server's message.
        message: String,
    },
    /// The server's bytes or replies did not follow the protocol. The connection is closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request cannot be sent as given (for example a key longer than the protocol's
    /// 65535 bytes). Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server refused the client's credentials (`AUTH_FAILED`): an unknown user or a
    /// wrong password, which the server does not tell apart. Raised when a connection is
    /// opened, so by the request that needed it.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The server requires authentication (`AUTH_REQUIRED`, or its `HELLO` says so) and the
    /// client has no credentials: set them with
    /// [`ClientBuilder::credentials`](crate::ClientBuilder::credentials).
    #[error("the server requires authentication: {0}")]
    AuthRequired(String),
    /// The user's role may not run this command (`NO_PERMISSION`): a `monitor` user writing
    /// sessions, an `app` user asking for `STATS`. The connection stays open.
    #[error("no permission: {0}")]
    NoPermission(String),
    /// A node of a multi-node client ([`Client::cluster`](crate::Client::cluster)) is down:
    /// its connection failed or a request to it timed out (`cause`), and until `retry_in`
    /// has passed every request for a key on that node fails at once with this error,
    /// without trying the network. Keys on other nodes are unaffected; keys on this one are
    /// never sent elsewhere. A write whose `cause` is a timeout or a lost connection may or
    /// may not have been applied.
    ///
    /// For the application this is "session store unavailable": answer 503, or treat the
    /// visitor as logged out for this request (docs/SCALING.md discusses both).
    #[error("node {node} is unavailable ({cause}); next attempt in {retry_in:?}")]
    Unavailable {
        /// The node's name.
        node: Arc<str>,
        /// The failure that marked it down.
        #[source]
        cause: Arc<Error>,
        /// How long until requests try the node again.
        retry_in: Duration,
    },
    /// TLS could not be set up: a certificate or key file that cannot be read or used, or a
    /// handshake that failed (a server certificate the CA did not sign or that names another
    /// host, a server that does not speak TLS on that port, a refused client certificate).
    #[error("TLS: {0}")]
    Tls(String),
}

impl Error {
    /// Whether the server declined a conditional request ([`Error::NotFound`],
    /// [`Error::Exists`], [`Error::VersionMismatch`], [`Error::OwnerLimitReached`]): an
    /// answer, not a failure.
    pub fn is_declined(&self) -> bool {
        matches!(
            self,
            Error::NotFound
                | Error::Exists
                | Error::VersionMismatch { .. }
                | Error::OwnerLimitReached
        )
    }

    /// Whether the request may succeed if tried again later: timeouts, lost connections,
    /// and the server's transient statuses (`BUSY`, `SHUTTING_DOWN`, `PERSISTENCE_FAILED`,
    /// and `OUT_OF_MEMORY`: the server is at its memory limit, and a create succeeds again
    /// once sessions are deleted or expire, PROTOCOL.md 6.3).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Connection { .. } | Error::Unavailable { .. } => true,
            Error::Server { status, .. } => matches!(
                status,
                Status::Busy
                    | Status::ShuttingDown
                    | Status::PersistenceFailed
                    | Status::OutOfMemory
            ),
            _ => false,
        }
    }

    /// Whether the store could not be reached: [`Error::Unavailable`] (a node marked
    /// down), or a lost connection or timeout. The application's "session store
    /// unavailable" case.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Connection { .. } | Error::Timeout { .. }
        )
    }

    pub(crate) fn connection(addr: &Arc<str>, source: std::io::Error) -> Error {
        Error::Connection {
            addr: addr.clone(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn closed(addr: &Arc<str>, why: &str) -> Error {
        Error::connection(
            addr,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why.to_string()),
        )
    }

    /// The error for an error status: the authentication ones are typed, because an
    /// application handles them differently (fix the configuration, not retry).
    pub(crate) fn from_status(status: Status, message: String) -> Error {
        match status {
            Status::AuthFailed => Error::AuthFailed(message),
            Status::AuthRequired => Error::AuthRequired(message),
            Status::NoPermission => Error::NoPermission(message),
            status => Error::Server { status, message },
        }
    }

    /// The error for a failed read or write: TLS's own failures (a certificate refused by
    /// either side, an alert) are [`Error::Tls`], whether they end the handshake or, as a
    /// client certificate refused under TLS 1.3 does, the first read after it.
    pub(crate) fn from_io(addr: &Arc<str>, e: std::io::Error) -> Error {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(tls) => Error::Tls(format!("{addr}: {tls}")),
            None => Error::connection(addr, e),
        }
    }

    /// The error for a stream the codec could not read.
    pub(crate) fn from_frame(addr: &Arc<str>, e: FrameError) -> Error {
        match e {
            FrameError::Io(io) => Error::from_io(addr, io),
            other => Error::Protocol(other.to_string()),
        }
    }
}

impl From<ReplyError> for Error {
    fn from(e: ReplyError) -> Error {
        match e {
            ReplyError::Server { status, message } => Error::from_status(status, message),
            malformed @ ReplyError::Malformed { .. } => Error::Protocol(malformed.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_at_its_memory_limit_is_transient_not_declined() {
        let full = Error::from_status(Status::OutOfMemory, "at the limit".into());
        assert!(full.is_transient());
        assert!(!full.is_declined());
        // A request the server will never accept is not.
        assert!(!Error::from_status(Status::TooLarge, "too large".into()).is_transient());
    }
}
