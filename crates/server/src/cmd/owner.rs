//! What the session commands (`SET_SESSION`, `LIST_SESSIONS`, `END_ALL`, `ROTATE`) share:
//! the translation between the wire's types and the store's, and the answer to a write the
//! store refused. Both protocols use it, so that a refusal reads the same on either.

use sessiond_proto::command::{self, SessionInfo, SessionWriteOutcome};
use sessiond_proto::{Opcode, ResponseFrame, Status};

use super::Outcome;
use crate::store::{self, RotateOutcome, SessionError, SessionSetOutcome};

// The wire and the store agree on how long an owner may be: a request the protocol crate
// accepts is never refused by the store for its owner's length.
const _: () = assert!(command::MAX_OWNER_LEN == store::MAX_OWNER_LEN);

/// The store's form of a per-request owner limit.
pub(crate) fn limit(limit: command::OwnerLimit) -> store::OwnerLimit {
    store::OwnerLimit {
        max: limit.max,
        policy: match limit.policy {
            command::LimitPolicy::Refuse => store::LimitPolicy::Refuse,
            command::LimitPolicy::EndLeastRecentlyUsed => store::LimitPolicy::EndLeastRecentlyUsed,
        },
    }
}

/// The wire's form of what a `SET_SESSION` did.
pub(crate) fn set_outcome(outcome: SessionSetOutcome) -> SessionWriteOutcome {
    match outcome {
        SessionSetOutcome::Stored { version, ended } => SessionWriteOutcome::Stored {
            version,
            ended: ended.len() as u64,
        },
        SessionSetOutcome::Exists => SessionWriteOutcome::Exists,
        SessionSetOutcome::NotFound => SessionWriteOutcome::NotFound,
        SessionSetOutcome::VersionMismatch { current } => {
            SessionWriteOutcome::VersionMismatch { current }
        }
        SessionSetOutcome::OwnerLimitReached => SessionWriteOutcome::OwnerLimit,
    }
}

/// The wire's form of what a `ROTATE` did.
pub(crate) fn rotate_outcome(outcome: RotateOutcome) -> SessionWriteOutcome {
    match outcome {
        RotateOutcome::Rotated { version, ended } => SessionWriteOutcome::Stored {
            version,
            ended: ended.len() as u64,
        },
        RotateOutcome::Exists => SessionWriteOutcome::Exists,
        RotateOutcome::NotFound => SessionWriteOutcome::NotFound,
        RotateOutcome::VersionMismatch { current } => {
            SessionWriteOutcome::VersionMismatch { current }
        }
        RotateOutcome::OwnerLimitReached => SessionWriteOutcome::OwnerLimit,
    }
}

/// The answer to a `SET_SESSION` or `ROTATE`: only a stored or moved session is a change
/// that must be durable before it is acknowledged.
pub(super) fn written(
    result: Result<SessionWriteOutcome, SessionError>,
    opcode: Opcode,
    opaque: u32,
) -> Outcome {
    match result {
        Ok(outcome) => Outcome::write(
            outcome.to_frame(opcode, opaque),
            matches!(outcome, SessionWriteOutcome::Stored { .. }),
        ),
        Err(SessionError::OutOfMemory(_)) => Outcome::reply(super::out_of_memory(opcode, opaque)),
        // The protocol crate refuses these before they reach the store; answered all the same.
        Err(error @ (SessionError::InvalidOwner(_) | SessionError::InvalidLimit)) => {
            Outcome::reply(ResponseFrame::error(
                opcode.into(),
                opaque,
                Status::InvalidArgument,
                format!("{}: {error}", opcode.name()),
            ))
        }
    }
}

/// An owner's session as `LIST_SESSIONS` reports it, at `now_ms`.
pub(crate) fn session_info(session: store::SessionInfo, now_ms: u64) -> SessionInfo {
    SessionInfo {
        key: session.key,
        version: session.version,
        created_ms: session.created_ms,
        last_access_ms: session.last_access_ms,
        // The store lists only live sessions, so this is at least 1 but for a session that
        // expires in the very millisecond it is listed: it is reported as about to.
        ttl_ms: session.expires_at_ms.saturating_sub(now_ms).max(1),
        deadline_ms: session.absolute_deadline_ms,
    }
}
