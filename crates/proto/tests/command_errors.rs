//! Frames that are well formed but not a valid instance of their command, and replies that are
//! not a valid answer to theirs.
//!
//! Each request case builds a frame by hand (flags, extras, key, value) and checks that
//! [`Request::parse`] refuses it with the right [`CommandError`], which the server turns into
//! `INVALID_ARGUMENT` or `UNKNOWN_OPCODE` without closing the connection.

use bytes::Bytes;
use sessiond_proto::command::{
    DelOutcome, EndAllReply, GetReply, HelloReply, PingReply, ReplyError, Rotate, SessionList,
    SetMode, SetOutcome, SetSession, StatsReply, TouchReply,
};
use sessiond_proto::{CommandError, Limits, Opcode, Request, RequestFrame, ResponseFrame, Status};

const LIMITS: Limits = Limits {
    max_key_len: 64,
    max_value_len: 4096,
    max_ttl_ms: 60_000,
};

fn frame(opcode: Opcode, flags: u8, extras: &[u8], key: &[u8], value: &[u8]) -> RequestFrame {
    RequestFrame {
        flags,
        extras: Bytes::copy_from_slice(extras),
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        ..RequestFrame::new(opcode, 1)
    }
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Asserts that `frame` is refused with `INVALID_ARGUMENT` and a message containing `needle`.
#[track_caller]
fn assert_invalid(frame: RequestFrame, needle: &str) {
    match Request::parse(frame.clone(), &LIMITS) {
        Err(err @ CommandError::InvalidArgument(_)) => {
            assert_eq!(err.status(), Status::InvalidArgument);
            let message = err.to_string();
            assert!(
                message.contains(needle),
                "message {message:?} does not mention {needle:?} for {frame:?}"
            );
        }
        other => panic!("expected INVALID_ARGUMENT for {frame:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_valid(frame: RequestFrame) -> Request {
    match Request::parse(frame.clone(), &LIMITS) {
        Ok(request) => request,
        Err(err) => panic!("{frame:?} was refused: {err}"),
    }
}

#[test]
fn unknown_opcodes() {
    for opcode in [0x09u8, 0x42, 0xfe, 0xff] {
        let frame = RequestFrame {
            opcode,
            ..RequestFrame::default()
        };
        let err = Request::parse(frame, &LIMITS).unwrap_err();
        assert_eq!(err, CommandError::UnknownOpcode(opcode));
        assert_eq!(err.status(), Status::UnknownOpcode);
    }
}

#[test]
fn hello() {
    let ok = |extras: &[u8], value: &[u8]| frame(Opcode::Hello, 0, extras, b"", value);
    assert_valid(ok(&[1, 1], b""));
    assert_valid(ok(&[0, 255], &[b'n'; 1024]));

    assert_invalid(frame(Opcode::Hello, 0x01, &[1, 1], b"", b""), "flag");
    assert_invalid(ok(&[], b""), "extras");
    assert_invalid(ok(&[1], b""), "extras");
    assert_invalid(ok(&[1, 1, 0], b""), "extras");
    assert_invalid(frame(Opcode::Hello, 0, &[1, 1], b"key", b""), "key");
    assert_invalid(ok(&[2, 1], b""), "min_version");
    assert_invalid(ok(&[1, 1], &[b'n'; 1025]), "client name");
}

#[test]
fn hello_negotiates_the_highest_common_version() {
    let hello = |min, max| sessiond_proto::command::Hello {
        min_version: min,
        max_version: max,
        client_name: Bytes::new(),
    };
    assert_eq!(hello(1, 1).negotiate(1, 1), Some(1));
    assert_eq!(hello(1, 3).negotiate(1, 1), Some(1));
    assert_eq!(hello(1, 3).negotiate(2, 5), Some(3));
    assert_eq!(hello(2, 3).negotiate(1, 1), None);
    assert_eq!(hello(0, 0).negotiate(1, 1), None);
}

#[test]
fn ping() {
    assert_valid(frame(Opcode::Ping, 0, b"", b"", b""));
    assert_valid(frame(Opcode::Ping, 0, b"", b"", &[b'p'; 1024]));

    assert_invalid(frame(Opcode::Ping, 0x80, b"", b"", b""), "flag");
    assert_invalid(frame(Opcode::Ping, 0, b"x", b"", b""), "extras");
    assert_invalid(frame(Opcode::Ping, 0, b"", b"k", b""), "key");
    assert_invalid(frame(Opcode::Ping, 0, b"", b"", &[b'p'; 1025]), "payload");
}

#[test]
fn get() {
    assert_valid(frame(Opcode::Get, 0, b"", b"k", b""));
    assert_valid(frame(Opcode::Get, 0x01, &u64s(&[1]), b"k", b""));
    assert_valid(frame(Opcode::Get, 0x01, &u64s(&[60_000]), b"k", b""));

    assert_invalid(frame(Opcode::Get, 0x02, b"", b"k", b""), "flag");
    assert_invalid(frame(Opcode::Get, 0, b"", b"", b""), "key");
    assert_invalid(frame(Opcode::Get, 0, b"", b"k", b"v"), "value");
    assert_invalid(frame(Opcode::Get, 0x01, b"", b"k", b""), "TOUCH");
    assert_invalid(frame(Opcode::Get, 0, &u64s(&[1000]), b"k", b""), "TOUCH");
    assert_invalid(frame(Opcode::Get, 0x01, &[0; 4], b"k", b""), "extras");
    assert_invalid(frame(Opcode::Get, 0x01, &u64s(&[0]), b"k", b""), "ttl");
    assert_invalid(frame(Opcode::Get, 0x01, &u64s(&[60_001]), b"k", b""), "ttl");
}

#[test]
fn set() {
    let extras = |ttl, expected| u64s(&[ttl, expected]);
    for mode in 0..=3 {
        assert_valid(frame(Opcode::Set, mode, &extras(1, 0), b"k", b""));
    }
    let request = assert_valid(frame(Opcode::Set, 3, &extras(60_000, 9), b"k", b"v"));
    let Request::Set(set) = request else {
        panic!("not a SET: {request:?}")
    };
    assert_eq!((set.ttl_ms, set.mode), (60_000, SetMode::IfVersion(9)));
    // 0 is never a version, so this can only fail, but it is a well-formed request.
    let request = assert_valid(frame(Opcode::Set, 3, &extras(1, 0), b"k", b""));
    assert!(matches!(request, Request::Set(s) if s.mode == SetMode::IfVersion(0)));

    assert_invalid(frame(Opcode::Set, 0x04, &extras(1, 0), b"k", b"v"), "flag");
    assert_invalid(frame(Opcode::Set, 0x80, &extras(1, 0), b"k", b"v"), "flag");
    assert_invalid(frame(Opcode::Set, 0, &[], b"k", b"v"), "extras");
    assert_invalid(frame(Opcode::Set, 0, &u64s(&[1]), b"k", b"v"), "extras");
    assert_invalid(frame(Opcode::Set, 0, &[0; 17], b"k", b"v"), "extras");
    assert_invalid(frame(Opcode::Set, 0, &extras(1, 0), b"", b"v"), "key");
    assert_invalid(frame(Opcode::Set, 0, &extras(0, 0), b"k", b"v"), "ttl");
    assert_invalid(frame(Opcode::Set, 3, &extras(0, 5), b"k", b"v"), "ttl");
    assert_invalid(frame(Opcode::Set, 0, &extras(60_001, 0), b"k", b"v"), "ttl");
    assert_invalid(
        frame(Opcode::Set, 0, &extras(u64::MAX, 0), b"k", b"v"),
        "ttl",
    );
    for mode in 0..=2 {
        assert_invalid(
            frame(Opcode::Set, mode, &extras(1, 5), b"k", b"v"),
            "expected_version",
        );
    }
}

#[test]
fn touch() {
    assert_valid(frame(Opcode::Touch, 0, &u64s(&[1]), b"k", b""));

    assert_invalid(frame(Opcode::Touch, 0x01, &u64s(&[1]), b"k", b""), "flag");
    assert_invalid(frame(Opcode::Touch, 0, &[], b"k", b""), "extras");
    assert_invalid(frame(Opcode::Touch, 0, &u64s(&[1, 1]), b"k", b""), "extras");
    assert_invalid(frame(Opcode::Touch, 0, &u64s(&[1]), b"", b""), "key");
    assert_invalid(frame(Opcode::Touch, 0, &u64s(&[1]), b"k", b"v"), "value");
    assert_invalid(frame(Opcode::Touch, 0, &u64s(&[0]), b"k", b""), "ttl");
    assert_invalid(frame(Opcode::Touch, 0, &u64s(&[60_001]), b"k", b""), "ttl");
}

#[test]
fn del() {
    assert_valid(frame(Opcode::Del, 0, b"", b"k", b""));
    assert_valid(frame(Opcode::Del, 0x01, &u64s(&[3]), b"k", b""));

    assert_invalid(frame(Opcode::Del, 0x02, b"", b"k", b""), "flag");
    assert_invalid(frame(Opcode::Del, 0x01, b"", b"k", b""), "IF_VERSION");
    assert_invalid(frame(Opcode::Del, 0, &u64s(&[3]), b"k", b""), "IF_VERSION");
    assert_invalid(frame(Opcode::Del, 0x01, &[0; 4], b"k", b""), "extras");
    assert_invalid(frame(Opcode::Del, 0, b"", b"", b""), "key");
    assert_invalid(frame(Opcode::Del, 0, b"", b"k", b"v"), "value");
}

#[test]
fn stats() {
    assert_valid(frame(Opcode::Stats, 0, b"", b"", b""));

    assert_invalid(frame(Opcode::Stats, 0x01, b"", b"", b""), "flag");
    assert_invalid(frame(Opcode::Stats, 0, b"x", b"", b""), "extras");
    assert_invalid(frame(Opcode::Stats, 0, b"", b"k", b""), "key");
    assert_invalid(frame(Opcode::Stats, 0, b"", b"", b"v"), "value");
}

#[test]
fn ttl_limit_is_the_servers_not_a_constant() {
    let long = Limits {
        max_ttl_ms: Limits::HARD_MAX_TTL_MS,
        ..LIMITS
    };
    let ten_years = frame(
        Opcode::Touch,
        0,
        &u64s(&[Limits::HARD_MAX_TTL_MS]),
        b"k",
        b"",
    );
    assert!(Request::parse(ten_years.clone(), &long).is_ok());
    assert!(Request::parse(ten_years, &LIMITS).is_err());
}

// -------------------------------------------------------------------------------------------
// Replies a client must refuse
// -------------------------------------------------------------------------------------------

fn response(opcode: Opcode, status: u16, extras: &[u8], value: &[u8]) -> ResponseFrame {
    ResponseFrame {
        opcode: opcode.into(),
        opaque: 1,
        status,
        extras: Bytes::copy_from_slice(extras),
        value: Bytes::copy_from_slice(value),
    }
}

#[track_caller]
fn assert_malformed<T: std::fmt::Debug>(reply: Result<T, ReplyError>, needle: &str) {
    match reply {
        Err(err @ ReplyError::Malformed { .. }) => {
            let message = err.to_string();
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected a malformed reply, got {other:?}"),
    }
}

#[test]
fn error_statuses_become_server_errors() {
    let frame = response(Opcode::Get, 0x0081, b"", b"GET: a key is required");
    assert_eq!(
        GetReply::from_frame(&frame),
        Err(ReplyError::Server {
            status: Status::InvalidArgument,
            message: "GET: a key is required".into()
        })
    );
    // Messages need not be UTF-8; they are read lossily.
    let frame = response(Opcode::Set, 0x00ff, b"", b"bad \xff byte");
    assert!(matches!(
        SetOutcome::from_frame(&frame),
        Err(ReplyError::Server { status: Status::InternalError, message }) if message == "bad \u{fffd} byte"
    ));
}

#[test]
fn unknown_and_impossible_statuses_are_malformed() {
    assert_malformed(
        PingReply::from_frame(&response(Opcode::Ping, 0x0005, b"", b"")),
        "unknown status 0x0005",
    );
    assert_malformed(
        GetReply::from_frame(&response(Opcode::Get, 0x0002, b"", b"")),
        "EXISTS",
    );
    assert_malformed(
        TouchReply::from_frame(&response(Opcode::Touch, 0x0003, &[0; 8], b"")),
        "VERSION_MISMATCH",
    );
    assert_malformed(
        DelOutcome::from_frame(&response(Opcode::Del, 0x0002, b"", b"")),
        "EXISTS",
    );
    assert_malformed(
        HelloReply::from_frame(&response(Opcode::Hello, 0x0001, b"", b"")),
        "NOT_FOUND",
    );
    assert_malformed(
        StatsReply::from_frame(&response(Opcode::Stats, 0x0001, b"", b"")),
        "NOT_FOUND",
    );
}

#[test]
fn wrong_extras_are_malformed() {
    assert_malformed(
        GetReply::from_frame(&response(Opcode::Get, 0, &[0; 8], b"v")),
        "extras",
    );
    assert_malformed(
        SetOutcome::from_frame(&response(Opcode::Set, 0, b"", b"")),
        "extras",
    );
    assert_malformed(
        SetOutcome::from_frame(&response(Opcode::Set, 3, &[0; 16], b"")),
        "extras",
    );
    assert_malformed(
        TouchReply::from_frame(&response(Opcode::Touch, 0, b"", b"")),
        "extras",
    );
    assert_malformed(
        DelOutcome::from_frame(&response(Opcode::Del, 3, b"", b"")),
        "extras",
    );
    assert_malformed(
        HelloReply::from_frame(&response(Opcode::Hello, 0, &[0; 23], b"")),
        "extras",
    );
    assert_malformed(
        StatsReply::from_frame(&response(Opcode::Stats, 0, b"", b"a \xff\n")),
        "UTF-8",
    );
}

#[test]
fn malformed_session_replies() {
    // A list whose count the value cannot hold, a truncated record, trailing bytes.
    assert_malformed(
        SessionList::from_frame(&response(Opcode::ListSessions, 0, &u64s(&[5, 5]), b"")),
        "count 5",
    );
    assert_malformed(
        SessionList::from_frame(&response(Opcode::ListSessions, 0, &u64s(&[1, 2]), &[0; 84])),
        "count 2",
    );
    let mut record = vec![0, 9];
    record.extend_from_slice(&[0; 40]);
    record.extend_from_slice(b"short");
    assert_malformed(
        SessionList::from_frame(&response(Opcode::ListSessions, 0, &u64s(&[1, 1]), &record)),
        "truncated",
    );
    record[1] = 5;
    record.push(0);
    assert_malformed(
        SessionList::from_frame(&response(Opcode::ListSessions, 0, &u64s(&[1, 1]), &record)),
        "after the last record",
    );
    assert_malformed(
        SessionList::from_frame(&response(Opcode::ListSessions, 1, &[], b"")),
        "NOT_FOUND",
    );
    assert_malformed(
        EndAllReply::from_frame(&response(Opcode::EndAll, 0x0004, &[], b"")),
        "OWNER_LIMIT",
    );
    assert_malformed(
        Rotate::reply(&response(Opcode::Rotate, 0, &u64s(&[1]), b"")),
        "extras must be 16",
    );
    // An error status is the server's error, with its message.
    assert_eq!(
        SetSession::reply(&response(Opcode::SetSession, 0x0093, &[], b"full")),
        Err(ReplyError::Server {
            status: Status::OutOfMemory,
            message: "full".into()
        })
    );
}
