//! The session commands (`SET_SESSION`, `LIST_SESSIONS`, `END_ALL`, `ROTATE`): every request
//! and reply survives encoding and decoding unchanged, frames that break a rule are refused
//! with `INVALID_ARGUMENT` naming it, and replies that are not a valid answer are malformed.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use sessiond_proto::command::{
    Bind, EndAll, EndAllReply, LimitPolicy, ListSessions, OwnerLimit, Rotate, SessionInfo,
    SessionList, SessionWriteOutcome, SetMode, SetSession, MAX_OWNER_LEN,
};
use sessiond_proto::{
    ClientCodec, CommandError, Limits, Opcode, Request, RequestFrame, ResponseFrame, ServerCodec,
};
use tokio_util::codec::{Decoder, Encoder};

const LIMITS: Limits = Limits {
    max_key_len: 300,
    max_value_len: 2000,
    max_ttl_ms: 400 * 24 * 60 * 60 * 1000,
};

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), len).prop_map(Bytes::from)
}

fn key() -> impl Strategy<Value = Bytes> {
    bytes(1..=LIMITS.max_key_len as usize)
}

fn owner() -> impl Strategy<Value = Bytes> {
    bytes(1..=MAX_OWNER_LEN)
}

fn owner_limit() -> impl Strategy<Value = Option<OwnerLimit>> {
    proptest::option::of(
        (1..=u32::MAX, any::<bool>()).prop_map(|(max, lru)| OwnerLimit {
            max,
            policy: if lru {
                LimitPolicy::EndLeastRecentlyUsed
            } else {
                LimitPolicy::Refuse
            },
        }),
    )
}

fn set_mode() -> impl Strategy<Value = SetMode> {
    any::<u64>().prop_map(|v| match v % 5 {
        0 => SetMode::Upsert,
        1 => SetMode::CreateOnly,
        2 => SetMode::UpdateOnly,
        _ => SetMode::IfVersion(v),
    })
}

fn set_session() -> impl Strategy<Value = Request> {
    (
        key(),
        bytes(0..=1000),
        1..=LIMITS.max_ttl_ms,
        set_mode(),
        proptest::option::of((owner(), owner_limit())),
        proptest::option::of(1..=Limits::HARD_MAX_TTL_MS),
    )
        .prop_map(|(key, value, ttl_ms, mode, owned, lifetime_ms)| {
            let (owner, owner_limit) = match owned {
                Some((owner, limit)) => (Some(owner), limit),
                None => (None, None),
            };
            Request::SetSession(SetSession {
                key,
                value,
                ttl_ms,
                mode,
                owner,
                lifetime_ms,
                owner_limit,
            })
        })
}

fn rotate() -> impl Strategy<Value = Request> {
    (
        key(),
        key(),
        proptest::option::of(any::<u64>()),
        proptest::option::of((owner(), owner_limit())),
    )
        .prop_filter("keys differ", |(old, new, _, _)| old != new)
        .prop_map(|(old_key, new_key, if_version, bind)| {
            Request::Rotate(Rotate {
                old_key,
                new_key,
                if_version,
                bind: bind.map(|(owner, limit)| Bind { owner, limit }),
            })
        })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        set_session(),
        rotate(),
        (owner(), any::<u32>()).prop_map(|(owner, max_sessions)| {
            Request::ListSessions(ListSessions {
                owner,
                max_sessions,
            })
        }),
        (owner(), proptest::option::of(key()))
            .prop_map(|(owner, except)| Request::EndAll(EndAll { owner, except })),
    ]
}

fn session_info() -> impl Strategy<Value = SessionInfo> {
    (
        key(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        1..=u64::MAX,
        proptest::option::of(1..=u64::MAX),
    )
        .prop_map(
            |(key, version, created_ms, last_access_ms, ttl_ms, deadline_ms)| SessionInfo {
                key,
                version,
                created_ms,
                last_access_ms,
                ttl_ms,
                deadline_ms,
            },
        )
}

fn write_outcome() -> impl Strategy<Value = SessionWriteOutcome> {
    prop_oneof![
        (any::<u64>(), any::<u64>())
            .prop_map(|(version, ended)| SessionWriteOutcome::Stored { version, ended }),
        Just(SessionWriteOutcome::Exists),
        Just(SessionWriteOutcome::NotFound),
        any::<u64>().prop_map(|current| SessionWriteOutcome::VersionMismatch { current }),
        Just(SessionWriteOutcome::OwnerLimit),
    ]
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Encodes `frame` as a client would and decodes it as the server does.
fn through_the_wire(frame: &RequestFrame) -> RequestFrame {
    let mut buf = BytesMut::new();
    ClientCodec::new().encode(frame, &mut buf).unwrap();
    match ServerCodec::new(LIMITS).decode(&mut buf).unwrap().unwrap() {
        sessiond_proto::Inbound::Request(frame) => frame,
        other => panic!("rejected: {other:?}"),
    }
}

fn response_through_the_wire(frame: &ResponseFrame) -> ResponseFrame {
    let mut buf = BytesMut::new();
    ServerCodec::new(LIMITS).encode(frame, &mut buf).unwrap();
    ClientCodec::new().decode(&mut buf).unwrap().unwrap()
}

fn frame(opcode: Opcode, flags: u8, extras: &[u8], key: &[u8], value: &[u8]) -> RequestFrame {
    RequestFrame {
        flags,
        extras: Bytes::copy_from_slice(extras),
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        ..RequestFrame::new(opcode, 1)
    }
}

#[track_caller]
fn assert_invalid(frame: RequestFrame, needle: &str) {
    match Request::parse(frame.clone(), &LIMITS) {
        Err(CommandError::InvalidArgument(message)) => assert!(
            message.contains(needle),
            "message {message:?} does not mention {needle:?} for {frame:?}"
        ),
        other => panic!("expected INVALID_ARGUMENT for {frame:?}, got {other:?}"),
    }
}

/// `SET_SESSION` extras.
fn set_session_extras(
    ttl: u64,
    expected: u64,
    lifetime: u64,
    limit: u32,
    owner_len: u16,
    reserved: u16,
) -> Vec<u8> {
    let mut e = Vec::new();
    e.put_u64(ttl);
    e.put_u64(expected);
    e.put_u64(lifetime);
    e.put_u32(limit);
    e.put_u16(owner_len);
    e.put_u16(reserved);
    e
}

/// `ROTATE` extras.
fn rotate_extras(expected: u64, limit: u32, new_key_len: u16, reserved: u16) -> Vec<u8> {
    let mut e = Vec::new();
    e.put_u64(expected);
    e.put_u32(limit);
    e.put_u16(new_key_len);
    e.put_u16(reserved);
    e
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn requests_round_trip(request in request(), opaque in any::<u32>()) {
        let frame = through_the_wire(&request.to_frame(opaque));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(Request::parse(frame, &LIMITS), Ok(request));
    }

    #[test]
    fn write_outcomes_round_trip(
        outcome in write_outcome(),
        rotate in any::<bool>(),
        opaque in any::<u32>(),
    ) {
        let opcode = if rotate { Opcode::Rotate } else { Opcode::SetSession };
        let frame = response_through_the_wire(&outcome.to_frame(opcode, opaque));
        prop_assert_eq!(SessionWriteOutcome::from_frame(&frame, opcode), Ok(outcome));
        let typed = if rotate { Rotate::reply(&frame) } else { SetSession::reply(&frame) };
        prop_assert_eq!(typed, Ok(outcome));
    }

    #[test]
    fn session_lists_round_trip(
        sessions in vec(session_info(), 0..20),
        extra in 0u64..5,
        opaque in any::<u32>(),
    ) {
        let list = SessionList { total: sessions.len() as u64 + extra, sessions };
        let frame = response_through_the_wire(&list.to_frame(opaque));
        prop_assert_eq!(list.more(), extra > 0);
        prop_assert_eq!(SessionList::from_frame(&frame), Ok(list));
    }

    /// Whatever the budget, the list keeps the most recently used sessions that fit, in
    /// that order, and counts them all.
    #[test]
    fn a_list_keeps_the_most_recent_sessions_that_fit(
        sessions in vec(session_info(), 0..40),
        max_sessions in 0u32..50,
        max_bytes in 0usize..8000,
    ) {
        let list = SessionList::fitting(sessions.clone(), max_sessions, max_bytes);
        prop_assert_eq!(list.total, sessions.len() as u64);
        let used: usize = list.sessions.iter().map(SessionInfo::encoded_len).sum();
        prop_assert!(used <= max_bytes);
        if max_sessions > 0 {
            prop_assert!(list.sessions.len() <= max_sessions as usize);
        }
        let mut sorted = sessions;
        sorted.sort_by(|a, b| b.last_access_ms.cmp(&a.last_access_ms).then(a.key.cmp(&b.key)));
        prop_assert_eq!(&sorted[..list.sessions.len()], &list.sessions[..]);
        // The next one would not have fit.
        if let Some(next) = sorted.get(list.sessions.len()) {
            prop_assert!(
                used + next.encoded_len() > max_bytes
                    || list.sessions.len() == max_sessions as usize
            );
        }
    }

    #[test]
    fn end_all_replies_round_trip(ended in any::<u64>(), opaque in any::<u32>()) {
        let reply = EndAllReply { ended };
        let frame = response_through_the_wire(&reply.to_frame(opaque));
        prop_assert_eq!(EndAllReply::from_frame(&frame), Ok(reply));
    }
}

// ---------------------------------------------------------------------------------------------
// Requests that break a rule
// ---------------------------------------------------------------------------------------------

#[test]
fn set_session_rules() {
    let ok =
        |flags, extras: &[u8], value: &[u8]| frame(Opcode::SetSession, flags, extras, b"k", value);
    let valid = Request::parse(
        ok(0x05, &set_session_extras(1000, 0, 5000, 3, 2, 0), b"u1{}"),
        &LIMITS,
    );
    assert_eq!(
        valid,
        Ok(Request::SetSession(SetSession {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"{}"),
            ttl_ms: 1000,
            mode: SetMode::CreateOnly,
            owner: Some(Bytes::from_static(b"u1")),
            lifetime_ms: Some(5000),
            owner_limit: Some(OwnerLimit {
                max: 3,
                policy: LimitPolicy::EndLeastRecentlyUsed
            }),
        }))
    );

    let too_long = Limits::HARD_MAX_TTL_MS + 1;
    let cases: [(u8, Vec<u8>, &[u8], &str); 9] = [
        (0x08, set_session_extras(1000, 0, 0, 0, 0, 0), b"", "flag"),
        (0, vec![0; 16], b"", "extras"),
        (0, set_session_extras(0, 0, 0, 0, 0, 0), b"", "ttl"),
        (
            0,
            set_session_extras(1000, 7, 0, 0, 0, 0),
            b"",
            "expected_version",
        ),
        (0, set_session_extras(1000, 0, 0, 0, 0, 1), b"", "reserved"),
        (
            0,
            set_session_extras(1000, 0, 0, 0, 5, 0),
            b"abc",
            "owner of 5",
        ),
        (
            0,
            set_session_extras(1000, 0, 0, 3, 0, 0),
            b"",
            "needs an owner",
        ),
        (
            0x04,
            set_session_extras(1000, 0, 0, 0, 1, 0),
            b"u",
            "END_LRU",
        ),
        (
            0,
            set_session_extras(1000, 0, too_long, 0, 0, 0),
            b"",
            "lifetime",
        ),
    ];
    for (flags, extras, value, needle) in cases {
        assert_invalid(ok(flags, &extras, value), needle);
    }
    let long_owner = vec![b'o'; MAX_OWNER_LEN + 1];
    assert_invalid(
        ok(
            0,
            &set_session_extras(1000, 0, 0, 0, long_owner.len() as u16, 0),
            &long_owner,
        ),
        "owner of 257 bytes",
    );
    assert_invalid(
        frame(
            Opcode::SetSession,
            0,
            &set_session_extras(1000, 0, 0, 0, 0, 0),
            b"",
            b"",
        ),
        "key",
    );
}

#[test]
fn rotate_rules() {
    let ok =
        |flags, extras: &[u8], value: &[u8]| frame(Opcode::Rotate, flags, extras, b"old", value);
    assert_eq!(
        Request::parse(ok(0x03, &rotate_extras(9, 0, 3, 0), b"newu1"), &LIMITS),
        Ok(Request::Rotate(Rotate {
            old_key: Bytes::from_static(b"old"),
            new_key: Bytes::from_static(b"new"),
            if_version: Some(9),
            bind: Some(Bind {
                owner: Bytes::from_static(b"u1"),
                limit: None
            }),
        }))
    );
    let cases: [(u8, Vec<u8>, &[u8], &str); 10] = [
        (0x08, rotate_extras(0, 0, 3, 0), b"new", "flag"),
        (0, rotate_extras(9, 0, 3, 0), b"new", "IF_VERSION"),
        (0, rotate_extras(0, 0, 3, 1), b"new", "reserved"),
        (0, rotate_extras(0, 0, 0, 0), b"new", "new key is required"),
        (0, rotate_extras(0, 0, 9, 0), b"new", "new_key of 9"),
        (0, rotate_extras(0, 0, 3, 0), b"old", "differ"),
        (0, rotate_extras(0, 0, 3, 0), b"newu1", "BIND"),
        (
            0x02,
            rotate_extras(0, 0, 3, 0),
            b"new",
            "owner must not be empty",
        ),
        (0, rotate_extras(0, 2, 3, 0), b"new", "needs an owner"),
        (0x06, rotate_extras(0, 0, 3, 0), b"newu", "END_LRU"),
    ];
    for (flags, extras, value, needle) in cases {
        assert_invalid(ok(flags, &extras, value), needle);
    }
    let long = vec![b'n'; LIMITS.max_key_len as usize + 1];
    assert_invalid(
        ok(0, &rotate_extras(0, 0, long.len() as u16, 0), &long),
        "new key of 301",
    );
    assert_invalid(
        frame(Opcode::Rotate, 0, &rotate_extras(0, 0, 3, 0), b"old", b""),
        "value",
    );
}

#[test]
fn list_and_end_all_rules() {
    assert_invalid(frame(Opcode::ListSessions, 0, &[0; 4], b"", b""), "key");
    assert_invalid(frame(Opcode::ListSessions, 0, &[], b"u", b""), "extras");
    assert_invalid(frame(Opcode::ListSessions, 1, &[0; 4], b"u", b""), "flag");
    assert_invalid(frame(Opcode::ListSessions, 0, &[0; 4], b"u", b"v"), "value");
    let long_owner = vec![b'o'; MAX_OWNER_LEN + 1];
    assert_invalid(
        frame(Opcode::ListSessions, 0, &[0; 4], &long_owner, b""),
        "owner of 257",
    );
    assert_invalid(
        frame(Opcode::EndAll, 0, &[], &long_owner, b""),
        "owner of 257",
    );
    assert_invalid(frame(Opcode::EndAll, 0, &[0; 8], b"u", b""), "extras");
    assert_invalid(frame(Opcode::EndAll, 0, &[], b"", b""), "key");
    assert_eq!(
        Request::parse(frame(Opcode::EndAll, 0, &[], b"u", b""), &LIMITS),
        Ok(Request::EndAll(EndAll {
            owner: Bytes::from_static(b"u"),
            except: None
        }))
    );
}
