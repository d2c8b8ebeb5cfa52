//! Property tests: whatever is encoded decodes back to itself, and no input can make the
//! decoder panic or buffer more than its limits allow.
//!
//! The limits are kept small so that frames at and beyond them are cheap to generate; the
//! codec treats every limit the same way whatever its size.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use sessiond_proto::codec::Inbound;
use sessiond_proto::command::{
    Auth, AuthReply, Del, DelOutcome, Entry, Get, GetReply, Hello, HelloReply, Ping, PingReply,
    Set, SetMode, SetOutcome, Stats, StatsReply, Touch, TouchReply,
};
use sessiond_proto::command::{Slowlog, SlowlogEntry, SlowlogLen, SlowlogReply};
use sessiond_proto::header::HEADER_LEN;
use sessiond_proto::{
    ClientCodec, Limits, Request, RequestFrame, ResponseFrame, ServerCodec, Status,
};
use tokio_util::codec::{Decoder, Encoder};

const LIMITS: Limits = Limits {
    max_key_len: 300,
    max_value_len: 2000,
    max_ttl_ms: 400 * 24 * 60 * 60 * 1000,
};

/// The longest frame the server codec may buffer under [`LIMITS`].
const MAX_FRAME: usize =
    HEADER_LEN + 255 + LIMITS.max_key_len as usize + LIMITS.max_value_len as usize;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn bytes(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), len).prop_map(Bytes::from)
}

fn request_frame() -> impl Strategy<Value = RequestFrame> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        bytes(0..=255),
        bytes(0..=LIMITS.max_key_len as usize),
        bytes(0..=LIMITS.max_value_len as usize),
    )
        .prop_map(|(opcode, flags, opaque, extras, key, value)| RequestFrame {
            opcode,
            flags,
            opaque,
            extras,
            key,
            value,
        })
}

fn response_frame() -> impl Strategy<Value = ResponseFrame> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u16>(),
        bytes(0..=255),
        bytes(0..=LIMITS.max_value_len as usize),
    )
        .prop_map(|(opcode, opaque, status, extras, value)| ResponseFrame {
            opcode,
            opaque,
            status,
            extras,
            value,
        })
}

fn key() -> impl Strategy<Value = Bytes> {
    bytes(1..=LIMITS.max_key_len as usize)
}

fn ttl() -> impl Strategy<Value = u64> {
    // Bias towards the edges of the valid range.
    prop_oneof![Just(1), Just(LIMITS.max_ttl_ms), 1..=LIMITS.max_ttl_ms,]
}

fn set_mode() -> impl Strategy<Value = SetMode> {
    prop_oneof![
        Just(SetMode::Upsert),
        Just(SetMode::CreateOnly),
        Just(SetMode::UpdateOnly),
        any::<u64>().prop_map(SetMode::IfVersion),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u8>(), any::<u8>(), bytes(0..=1024)).prop_map(|(a, b, client_name)| {
            Request::Hello(Hello {
                min_version: a.min(b),
                max_version: a.max(b),
                client_name,
            })
        }),
        bytes(0..=1024).prop_map(|payload| Request::Ping(Ping { payload })),
        (key(), proptest::option::of(ttl()))
            .prop_map(|(key, touch_ttl_ms)| Request::Get(Get { key, touch_ttl_ms })),
        (
            key(),
            bytes(0..=LIMITS.max_value_len as usize),
            ttl(),
            set_mode()
        )
            .prop_map(|(key, value, ttl_ms, mode)| Request::Set(Set {
                key,
                value,
                ttl_ms,
                mode
            })),
        (key(), ttl()).prop_map(|(key, ttl_ms)| Request::Touch(Touch { key, ttl_ms })),
        (key(), proptest::option::of(any::<u64>()))
            .prop_map(|(key, if_version)| Request::Del(Del { key, if_version })),
        Just(Request::Stats(Stats)),
        ("[a-z]{1,255}", bytes(1..=1024))
            .prop_map(|(user, password)| Request::Auth(Auth { user, password })),
        prop_oneof![
            any::<u32>().prop_map(|count| Slowlog::Get { count }),
            Just(Slowlog::Len),
            Just(Slowlog::Reset),
        ]
        .prop_map(Request::Slowlog),
    ]
}

/// A `SLOWLOG` reply of any of the three kinds, with the request it answers.
fn slowlog_reply() -> impl Strategy<Value = (Slowlog, SlowlogReply)> {
    // Texts up to the 255 bytes an entry's length byte can say, multi-byte UTF-8 included.
    let text = || "[ -~é]{0,100}";
    let entry = (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()),
        (text(), text(), text()),
    )
        .prop_map(
            |((id, unix_ms, duration_us, key_len), (command, protocol, client))| SlowlogEntry {
                id,
                unix_ms,
                duration_us,
                key_len,
                command,
                protocol,
                client,
            },
        );
    let len = (
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(0..u64::MAX),
        any::<u64>(),
    )
        .prop_map(|(len, max_len, threshold_us, recorded_total)| SlowlogLen {
            len,
            max_len,
            threshold_us,
            recorded_total,
        });
    prop_oneof![
        (vec(entry, 0..20), any::<u32>())
            .prop_map(|(entries, count)| (Slowlog::Get { count }, SlowlogReply::Entries(entries))),
        len.prop_map(|len| (Slowlog::Len, SlowlogReply::Len(len))),
        Just((Slowlog::Reset, SlowlogReply::Reset)),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(max_key_len, max_value_len, max_ttl_ms)| Limits {
            max_key_len,
            max_value_len,
            max_ttl_ms,
        },
    )
}

fn stats_reply() -> impl Strategy<Value = StatsReply> {
    // The format's own constraints: names are non-empty lower-case words without spaces,
    // values are single lines (they may contain spaces).
    vec(("[a-z_][a-z0-9_]{0,24}", "[ -~]{0,24}"), 0..24).prop_map(|stats| StatsReply { stats })
}

/// One item of a request stream and what the server codec must make of it.
#[derive(Debug, Clone)]
enum Item {
    /// A frame within the limits: decoded as is.
    Valid(RequestFrame),
    /// A frame whose key or value is over the limits: rejected with `TOO_LARGE`, body skipped.
    Oversized(RequestFrame),
    /// A frame with a nonzero reserved byte: rejected with `INVALID_ARGUMENT`.
    Reserved(RequestFrame, u8),
}

fn item() -> impl Strategy<Value = Item> {
    let oversized = (
        request_frame(),
        prop_oneof![
            bytes(LIMITS.max_key_len as usize + 1..=LIMITS.max_key_len as usize + 100)
                .prop_map(|key| (Some(key), None)),
            bytes(LIMITS.max_value_len as usize + 1..=3 * LIMITS.max_value_len as usize)
                .prop_map(|value| (None, Some(value))),
        ],
    )
        .prop_map(|(mut frame, (key, value))| {
            if let Some(key) = key {
                frame.key = key;
            }
            if let Some(value) = value {
                frame.value = value;
            }
            Item::Oversized(frame)
        });
    prop_oneof![
        4 => request_frame().prop_map(Item::Valid),
        1 => oversized,
        1 => (request_frame(), 1..=u8::MAX).prop_map(|(frame, reserved)| Item::Reserved(frame, reserved)),
    ]
}

impl Item {
    fn encode(&self, dst: &mut Vec<u8>) {
        match self {
            Item::Valid(frame) | Item::Oversized(frame) => frame.encode(dst),
            Item::Reserved(frame, reserved) => {
                let start = dst.len();
                frame.encode(dst);
                dst[start + 11] = *reserved;
            }
        }
    }

    /// What the decoder reports for this item, without the rejection's wording.
    fn expected(&self) -> Outcome {
        match self {
            Item::Valid(frame) => Outcome::Request(frame.clone()),
            Item::Oversized(frame) => {
                Outcome::Rejected(frame.opcode, frame.opaque, Status::TooLarge)
            }
            Item::Reserved(frame, _) => {
                Outcome::Rejected(frame.opcode, frame.opaque, Status::InvalidArgument)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Request(RequestFrame),
    Rejected(u8, u32, Status),
}

impl From<Inbound> for Outcome {
    fn from(inbound: Inbound) -> Outcome {
        match inbound {
            Inbound::Request(frame) => Outcome::Request(frame),
            Inbound::Rejected(r) => Outcome::Rejected(r.opcode, r.opaque, r.status),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn encode_request(frame: &RequestFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    ClientCodec::new().encode(frame, &mut buf).unwrap();
    buf
}

fn encode_response(frame: &ResponseFrame) -> BytesMut {
    let mut buf = BytesMut::new();
    ServerCodec::new(LIMITS).encode(frame, &mut buf).unwrap();
    buf
}

/// Decodes the one request in `buf`, which must then be empty.
fn decode_request(mut buf: BytesMut) -> Inbound {
    let inbound = ServerCodec::new(LIMITS).decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    inbound
}

/// Decodes the one response in `buf`, which must then be empty.
fn decode_response(mut buf: BytesMut) -> ResponseFrame {
    let frame = ClientCodec::new().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    frame
}

/// Splits `data` at the given cut points, in order, into consecutive chunks.
fn split<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for point in points {
        chunks.push(&data[start..point]);
        start = point;
    }
    chunks.push(&data[start..]);
    chunks
}

/// Feeds `chunks` to a fresh server codec, decoding after each until it asks for more.
///
/// Stops at the first fatal error. Checks after every call that the buffer never holds more
/// than the bytes fed so far plus one frame within the limits, allowing for `BytesMut`
/// doubling its allocation when it grows.
fn feed(chunks: &[&[u8]]) -> (Vec<Outcome>, bool) {
    let mut codec = ServerCodec::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let result = codec.decode(&mut buf);
            assert!(
                buf.capacity() <= 2 * (fed + MAX_FRAME),
                "capacity {} after {fed} bytes",
                buf.capacity()
            );
            match result {
                Ok(Some(inbound)) => out.push(inbound.into()),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn request_frames_round_trip(frame in request_frame()) {
        let buf = encode_request(&frame);
        prop_assert_eq!(buf.len(), frame.encoded_len());
        prop_assert_eq!(decode_request(buf), Inbound::Request(frame));
    }

    #[test]
    fn response_frames_round_trip(frame in response_frame()) {
        let buf = encode_response(&frame);
        prop_assert_eq!(buf.len(), frame.encoded_len());
        prop_assert_eq!(decode_response(buf), frame);
    }

    #[test]
    fn requests_round_trip(request in request(), opaque in any::<u32>()) {
        let frame = request.to_frame(opaque);
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(Request::parse(frame.clone(), &LIMITS), Ok(request.clone()));
        // And the same through the wire.
        let Inbound::Request(decoded) = decode_request(encode_request(&frame)) else {
            panic!("a valid request was rejected");
        };
        prop_assert_eq!(Request::parse(decoded, &LIMITS), Ok(request));
    }

    #[test]
    fn hello_replies_round_trip(
        version in any::<u8>(),
        flags in any::<u8>(),
        limits in limits(),
        server in any::<String>(),
        opaque in any::<u32>(),
    ) {
        let reply = HelloReply { version, flags, limits, server };
        let frame = decode_response(encode_response(&reply.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(HelloReply::from_frame(&frame), Ok(reply));
    }

    #[test]
    fn auth_replies_round_trip(role in "[a-z]{0,16}", opaque in any::<u32>()) {
        let reply = AuthReply { role };
        let frame = decode_response(encode_response(&reply.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(AuthReply::from_frame(&frame), Ok(reply));
    }

    #[test]
    fn ping_replies_round_trip(payload in bytes(0..=1024), opaque in any::<u32>()) {
        let reply = PingReply { payload };
        let frame = decode_response(encode_response(&reply.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(PingReply::from_frame(&frame), Ok(reply));
    }

    #[test]
    fn get_replies_round_trip(
        hit in proptest::option::of((bytes(0..=2000), any::<u64>(), any::<u64>())),
        opaque in any::<u32>(),
    ) {
        let reply = match hit {
            Some((value, version, ttl_ms)) => GetReply::Hit(Entry { value, version, ttl_ms }),
            None => GetReply::Miss,
        };
        let frame = decode_response(encode_response(&reply.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(GetReply::from_frame(&frame), Ok(reply));
    }

    #[test]
    fn set_outcomes_round_trip(version in any::<u64>(), which in 0..4u8, opaque in any::<u32>()) {
        let outcome = match which {
            0 => SetOutcome::Stored { version },
            1 => SetOutcome::Exists,
            2 => SetOutcome::NotFound,
            _ => SetOutcome::VersionMismatch { current: version },
        };
        let frame = decode_response(encode_response(&outcome.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(SetOutcome::from_frame(&frame), Ok(outcome));
    }

    #[test]
    fn touch_replies_round_trip(version in proptest::option::of(any::<u64>()), opaque in any::<u32>()) {
        let reply = match version {
            Some(version) => TouchReply::Touched { version },
            None => TouchReply::NotFound,
        };
        let frame = decode_response(encode_response(&reply.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(TouchReply::from_frame(&frame), Ok(reply));
    }

    #[test]
    fn del_outcomes_round_trip(version in any::<u64>(), which in 0..3u8, opaque in any::<u32>()) {
        let outcome = match which {
            0 => DelOutcome::Deleted,
            1 => DelOutcome::NotFound,
            _ => DelOutcome::VersionMismatch { current: version },
        };
        let frame = decode_response(encode_response(&outcome.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(DelOutcome::from_frame(&frame), Ok(outcome));
    }

    #[test]
    fn stats_replies_round_trip(reply in stats_reply(), opaque in any::<u32>()) {
        let frame = decode_response(encode_response(&reply.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(StatsReply::from_frame(&frame), Ok(reply));
    }

    #[test]
    fn slowlog_replies_round_trip((request, reply) in slowlog_reply(), opaque in any::<u32>()) {
        let frame = decode_response(encode_response(&reply.to_frame(opaque)));
        prop_assert_eq!(frame.opaque, opaque);
        prop_assert_eq!(SlowlogReply::from_frame(&frame, &request), Ok(reply));
    }

    /// Random bytes, and random headers that get past the magic and version checks with
    /// random lengths behind them, never panic the decoder or make it over-allocate.
    #[test]
    fn byte_soup_never_panics_or_overallocates(
        segments in vec(
            prop_oneof![
                vec(any::<u8>(), 0..64),
                (any::<[u8; 14]>(), vec(any::<u8>(), 0..600)).prop_map(|(rest, body)| {
                    let mut bytes = vec![0xb5, 0x01];
                    bytes.extend_from_slice(&rest);
                    bytes.extend(body);
                    bytes
                }),
            ],
            0..12,
        ),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let soup = segments.concat();
        let (_, _) = feed(&split(&soup, &cuts));
        // Plain random bytes on their own, too, through the client side as well.
        let mut buf = BytesMut::from(&soup[..]);
        let mut client = ClientCodec::with_max_body_len(MAX_FRAME as u64);
        while let Ok(Some(_)) = client.decode(&mut buf) {}
        prop_assert!(buf.capacity() <= 2 * (soup.len() + MAX_FRAME));
    }

    /// A stream of frames, some of which are rejected, decodes to the same outcomes however
    /// it is split into reads.
    #[test]
    fn split_streams_decode_the_same(
        items in vec(item(), 1..8),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for item in &items {
            item.encode(&mut stream);
        }
        let expected: Vec<Outcome> = items.iter().map(Item::expected).collect();

        let (whole, failed) = feed(&[&stream]);
        prop_assert!(!failed);
        prop_assert_eq!(&whole, &expected);

        let (pieces, failed) = feed(&split(&stream, &cuts));
        prop_assert!(!failed);
        prop_assert_eq!(&pieces, &expected);

        // One byte at a time, the worst case for every partial-read path.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (bytewise, failed) = feed(&bytes);
        prop_assert!(!failed);
        prop_assert_eq!(&bytewise, &expected);
    }

    /// A stream of responses split anywhere decodes to the same frames.
    #[test]
    fn split_response_streams_decode_the_same(
        frames in vec(response_frame(), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for frame in &frames {
            frame.encode(&mut stream);
        }
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in split(&stream, &cuts) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, frames);
    }
}
