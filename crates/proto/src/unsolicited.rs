//! Frames the server sends without a request (PROTOCOL.md 4.4).
//!
//! They are built here, once, so that the server sends exactly the bytes the specification
//! shows: `tests/spec_examples.rs` checks these constructors against its examples.

use crate::codec::FrameError;
use crate::frame::ResponseFrame;
use crate::Status;

/// The opcode of a frame that answers no request. A request may carry it too (clients must
/// not send it); its answer is then an ordinary, non-fatal `UNKNOWN_OPCODE` with the
/// request's opaque, which a client tells apart by its status: an unsolicited frame's status
/// is always fatal.
pub const UNSOLICITED_OPCODE: u8 = 0xFF;

/// Whether `frame` is unsolicited: opcode `0xFF` with a fatal status (PROTOCOL.md 4.4). The
/// connection is closing, and every request still outstanding on it is unanswered.
pub fn is_unsolicited(frame: &ResponseFrame) -> bool {
    frame.opcode == UNSOLICITED_OPCODE && frame.status().is_some_and(Status::is_fatal)
}

/// `BUSY`: sent to a connection over the server's connection limit, which is then closed.
pub fn busy() -> ResponseFrame {
    unsolicited(Status::Busy, "connection limit reached; try again later")
}

/// `SHUTTING_DOWN`: sent at shutdown after the response to the last request the server
/// executed; no request sent after that one was executed.
pub fn shutting_down() -> ResponseFrame {
    unsolicited(
        Status::ShuttingDown,
        "server shutting down; later requests were not executed",
    )
}

/// `PROTOCOL_ERROR`: the stream is not a sessiond stream (`error` is a bad magic byte).
pub fn protocol_error(error: &FrameError) -> ResponseFrame {
    unsolicited(Status::ProtocolError, error.to_string())
}

fn unsolicited(status: Status, message: impl Into<String>) -> ResponseFrame {
    ResponseFrame::error(UNSOLICITED_OPCODE, 0, status, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Opcode;

    #[test]
    fn unsolicited_frames_are_fatal_and_answers_to_opcode_0xff_are_not() {
        for frame in [busy(), shutting_down()] {
            assert!(is_unsolicited(&frame), "{frame:?}");
        }
        let answer = ResponseFrame::error(UNSOLICITED_OPCODE, 0, Status::UnknownOpcode, "unknown");
        assert!(!is_unsolicited(&answer));
        let ok = ResponseFrame::new(Opcode::Ping.into(), 0, Status::Ok);
        assert!(!is_unsolicited(&ok));
    }
}
