//! Every hex example in `proto/PROTOCOL.md`, checked against the crate.
//!
//! The constants below are copies of the specification's ```` ```hex ```` blocks (annotations
//! included). For each one, encoding the typed request or reply must produce exactly those
//! bytes, and decoding them through [`ServerCodec`] or [`ClientCodec`] must give the typed value
//! back. [`every_hex_block_in_the_spec_is_tested`] reads the specification itself and fails if a
//! block there is missing here or differs by a single byte, so the two cannot drift apart.

use bytes::{Bytes, BytesMut};
use sessiond_proto::codec::{FrameError, Inbound};
use sessiond_proto::command::{
    Auth, AuthReply, Bind, Del, DelOutcome, EndAll, EndAllReply, Entry, Get, GetReply, Hello,
    HelloReply, LimitPolicy, ListSessions, OwnerLimit, Ping, PingReply, ReplyError, Rotate,
    SessionInfo, SessionList, SessionWriteOutcome, Set, SetMode, SetOutcome, SetSession, Stats,
    StatsReply, Touch, TouchReply,
};
use sessiond_proto::command::{Scan, ScanEntry, ScanReply};
use sessiond_proto::command::{Slowlog, SlowlogEntry, SlowlogLen, SlowlogReply};
use sessiond_proto::{
    unsolicited, ClientCodec, CommandError, Limits, Opcode, Request, RequestFrame, ResponseFrame,
    ServerCodec, Status,
};
use tokio_util::codec::{Decoder, Encoder};

#[path = "support/spec_hex.rs"]
mod spec_hex;
use spec_hex::{assert_examples_match_spec, hex};

/// The specification itself; `include_str!` also makes cargo rerun these tests when it changes.
const SPEC: &str = include_str!("../../../proto/PROTOCOL.md");

const KEY: &[u8] = b"s:42";
const OTHER_KEY: &[u8] = b"s:43";
const VALUE: &[u8] = br#"{"u":7}"#;
const NEW_VALUE: &[u8] = br#"{"u":8}"#;
const THIRTY_MINUTES: u64 = 30 * 60 * 1000;
const ONE_HOUR: u64 = 60 * 60 * 1000;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn encode_request(frame: &RequestFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ClientCodec::new().encode(frame, &mut buf).unwrap();
    assert_eq!(buf.len(), frame.encoded_len());
    buf.to_vec()
}

fn encode_response(frame: &ResponseFrame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    ServerCodec::new(Limits::default())
        .encode(frame, &mut buf)
        .unwrap();
    assert_eq!(buf.len(), frame.encoded_len());
    buf.to_vec()
}

/// Decodes exactly one request from `bytes` with the default limits.
fn decode_request(bytes: &[u8]) -> Inbound {
    let mut codec = ServerCodec::new(Limits::default());
    let mut buf = BytesMut::from(bytes);
    let inbound = codec.decode(&mut buf).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left after the frame", buf.len());
    inbound
}

/// Decodes exactly one response from `bytes`.
fn decode_response(bytes: &[u8]) -> ResponseFrame {
    let mut buf = BytesMut::from(bytes);
    let frame = ClientCodec::new()
        .decode(&mut buf)
        .unwrap()
        .expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left after the frame", buf.len());
    frame
}

/// The request frame in `block`, decoded by the server codec.
fn request_frame(block: &str) -> RequestFrame {
    match decode_request(&hex(block)) {
        Inbound::Request(frame) => frame,
        Inbound::Rejected(rejection) => panic!("rejected: {rejection:?}"),
    }
}

/// `request` encodes to the bytes of `block`, and those bytes decode and parse back to it.
fn check_request(block: &str, opaque: u32, request: Request) {
    let bytes = hex(block);
    assert_eq!(encode_request(&request.to_frame(opaque)), bytes, "encoding");
    let frame = request_frame(block);
    assert_eq!(frame.opaque, opaque);
    assert_eq!(Request::parse(frame, &Limits::default()), Ok(request));
}

/// `frame` encodes to the bytes of `block`, and those bytes decode back to it.
fn check_response(block: &str, frame: &ResponseFrame) -> ResponseFrame {
    let bytes = hex(block);
    assert_eq!(encode_response(frame), bytes, "encoding");
    let decoded = decode_response(&bytes);
    assert_eq!(&decoded, frame);
    decoded
}

/// `frame` is an error response with `status` and a message, as a client sees it.
fn assert_server_error<T: std::fmt::Debug>(
    reply: Result<T, ReplyError>,
    status: Status,
    message: &str,
) {
    match reply {
        Err(ReplyError::Server {
            status: s,
            message: m,
        }) => {
            assert_eq!(s, status);
            assert_eq!(m, message);
        }
        other => panic!("expected a {status} error, got {other:?}"),
    }
}

fn b(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

// ---------------------------------------------------------------------------------------------
// The examples, copied from the specification
// ---------------------------------------------------------------------------------------------

const HELLO_REQUEST: &str = r##"
b5 01 00 00  # magic, version 1, opcode HELLO, flags 0x00
00 00 00 01  # opaque 1
00 00 02 00  # key length 0, extras length 2, reserved
00 00 00 04  # value length 4
01 01        # min_version 1, max_version 1
64 65 6d 6f  # client name "demo"
"##;

const HELLO_RESPONSE: &str = r##"
b6 01 00 18              # magic, version 1, opcode HELLO, extras length 24
00 00 00 01              # opaque 1
00 00 00 00              # status OK (0x0000), reserved
00 00 00 0e              # value length 14
01 00 00 00              # version 1, reserved
00 00 04 00 00 10 00 00  # max_key_len 1024, max_value_len 1048576
00 00 00 00              # reserved
00 00 00 08 0b ef c0 00  # max_ttl_ms 34560000000
73 65 73 73 69 6f 6e 64  # server "sessiond"
2f 30 2e 31 2e 30        # ... "/0.1.0"
"##;

const HELLO_UNSUPPORTED_REQUEST: &str = r##"
b5 01 00 00  # magic, version 1, opcode HELLO, flags 0x00
00 00 00 01  # opaque 1
00 00 02 00  # key length 0, extras length 2, reserved
00 00 00 00  # value length 0
02 03        # min_version 2, max_version 3
"##;

const HELLO_UNSUPPORTED_RESPONSE: &str = r##"
b6 01 00 00                                      # magic, version 1, opcode HELLO, extras length 0
00 00 00 01                                      # opaque 1
00 83 00 00                                      # status UNSUPPORTED_VERSION (0x0083), reserved
00 00 00 44                                      # value length 68
6e 6f 20 63 6f 6d 6d 6f 6e 20 70 72 6f 74 6f 63  # message "no common protoc"
6f 6c 20 76 65 72 73 69 6f 6e 3a 20 63 6c 69 65  # ... "ol version: clie"
6e 74 20 73 70 65 61 6b 73 20 32 2e 2e 3d 33 2c  # ... "nt speaks 2..=3,"
20 73 65 72 76 65 72 20 73 70 65 61 6b 73 20 31  # ... " server speaks 1"
2e 2e 3d 31                                      # ... "..=1"
"##;

const PING_REQUEST: &str = r##"
b5 01 01 00  # magic, version 1, opcode PING, flags 0x00
00 00 00 02  # opaque 2
00 00 00 00  # key length 0, extras length 0, reserved
00 00 00 02  # value length 2
68 69        # payload "hi"
"##;

const PING_RESPONSE: &str = r##"
b6 01 01 00  # magic, version 1, opcode PING, extras length 0
00 00 00 02  # opaque 2
00 00 00 00  # status OK (0x0000), reserved
00 00 00 02  # value length 2
68 69        # payload "hi"
"##;

const SET_REQUEST: &str = r##"
b5 01 03 00              # magic, version 1, opcode SET, flags 0x00
00 00 00 03              # opaque 3
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 07              # value length 7
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 00  # expected_version 0
73 3a 34 32              # key "s:42"
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const SET_RESPONSE: &str = r##"
b6 01 03 08              # magic, version 1, opcode SET, extras length 8
00 00 00 03              # opaque 3
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 07  # version 7
"##;

const GET_REQUEST: &str = r##"
b5 01 02 00  # magic, version 1, opcode GET, flags 0x00
00 00 00 04  # opaque 4
00 04 00 00  # key length 4, extras length 0, reserved
00 00 00 00  # value length 0
73 3a 34 32  # key "s:42"
"##;

const GET_RESPONSE: &str = r##"
b6 01 02 10              # magic, version 1, opcode GET, extras length 16
00 00 00 04              # opaque 4
00 00 00 00              # status OK (0x0000), reserved
00 00 00 07              # value length 7
00 00 00 00 00 00 00 07  # version 7
00 00 00 00 00 1b 74 f4  # ttl_ms 1799412
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const GET_MISS_REQUEST: &str = r##"
b5 01 02 00  # magic, version 1, opcode GET, flags 0x00
00 00 00 05  # opaque 5
00 04 00 00  # key length 4, extras length 0, reserved
00 00 00 00  # value length 0
73 3a 34 33  # key "s:43"
"##;

const GET_MISS_RESPONSE: &str = r##"
b6 01 02 00  # magic, version 1, opcode GET, extras length 0
00 00 00 05  # opaque 5
00 01 00 00  # status NOT_FOUND (0x0001), reserved
00 00 00 00  # value length 0
"##;

const GET_TOUCH_REQUEST: &str = r##"
b5 01 02 01              # magic, version 1, opcode GET, flags 0x01
00 00 00 06              # opaque 6
00 04 08 00              # key length 4, extras length 8, reserved
00 00 00 00              # value length 0
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
73 3a 34 32              # key "s:42"
"##;

const GET_TOUCH_RESPONSE: &str = r##"
b6 01 02 10              # magic, version 1, opcode GET, extras length 16
00 00 00 06              # opaque 6
00 00 00 00              # status OK (0x0000), reserved
00 00 00 07              # value length 7
00 00 00 00 00 00 00 07  # version 7
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const SET_CREATE_REQUEST: &str = r##"
b5 01 03 01              # magic, version 1, opcode SET, flags 0x01
00 00 00 07              # opaque 7
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 07              # value length 7
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 00  # expected_version 0
73 3a 34 32              # key "s:42"
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const SET_CREATE_RESPONSE: &str = r##"
b6 01 03 00  # magic, version 1, opcode SET, extras length 0
00 00 00 07  # opaque 7
00 02 00 00  # status EXISTS (0x0002), reserved
00 00 00 00  # value length 0
"##;

const SET_UPDATE_REQUEST: &str = r##"
b5 01 03 02              # magic, version 1, opcode SET, flags 0x02
00 00 00 08              # opaque 8
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 07              # value length 7
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 00  # expected_version 0
73 3a 34 33              # key "s:43"
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const SET_UPDATE_RESPONSE: &str = r##"
b6 01 03 00  # magic, version 1, opcode SET, extras length 0
00 00 00 08  # opaque 8
00 01 00 00  # status NOT_FOUND (0x0001), reserved
00 00 00 00  # value length 0
"##;

const SET_IF_VERSION_REQUEST: &str = r##"
b5 01 03 03              # magic, version 1, opcode SET, flags 0x03
00 00 00 09              # opaque 9
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 07              # value length 7
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 07  # expected_version 7
73 3a 34 32              # key "s:42"
7b 22 75 22 3a 38 7d     # value '{"u":8}'
"##;

const SET_IF_VERSION_RESPONSE: &str = r##"
b6 01 03 08              # magic, version 1, opcode SET, extras length 8
00 00 00 09              # opaque 9
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 08  # version 8
"##;

const SET_MISMATCH_REQUEST: &str = r##"
b5 01 03 03              # magic, version 1, opcode SET, flags 0x03
00 00 00 0a              # opaque 10
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 07              # value length 7
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 07  # expected_version 7
73 3a 34 32              # key "s:42"
7b 22 75 22 3a 38 7d     # value '{"u":8}'
"##;

const SET_MISMATCH_RESPONSE: &str = r##"
b6 01 03 08              # magic, version 1, opcode SET, extras length 8
00 00 00 0a              # opaque 10
00 03 00 00              # status VERSION_MISMATCH (0x0003), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 08  # current_version 8
"##;

const TOUCH_REQUEST: &str = r##"
b5 01 04 00              # magic, version 1, opcode TOUCH, flags 0x00
00 00 00 0b              # opaque 11
00 04 08 00              # key length 4, extras length 8, reserved
00 00 00 00              # value length 0
00 00 00 00 00 36 ee 80  # ttl_ms 3600000
73 3a 34 32              # key "s:42"
"##;

const TOUCH_RESPONSE: &str = r##"
b6 01 04 08              # magic, version 1, opcode TOUCH, extras length 8
00 00 00 0b              # opaque 11
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 08  # version 8
"##;

const TOUCH_MISS_REQUEST: &str = r##"
b5 01 04 00              # magic, version 1, opcode TOUCH, flags 0x00
00 00 00 0c              # opaque 12
00 04 08 00              # key length 4, extras length 8, reserved
00 00 00 00              # value length 0
00 00 00 00 00 36 ee 80  # ttl_ms 3600000
73 3a 34 33              # key "s:43"
"##;

const TOUCH_MISS_RESPONSE: &str = r##"
b6 01 04 00  # magic, version 1, opcode TOUCH, extras length 0
00 00 00 0c  # opaque 12
00 01 00 00  # status NOT_FOUND (0x0001), reserved
00 00 00 00  # value length 0
"##;

const DEL_IF_VERSION_REQUEST: &str = r##"
b5 01 05 01              # magic, version 1, opcode DEL, flags 0x01
00 00 00 0d              # opaque 13
00 04 08 00              # key length 4, extras length 8, reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 07  # expected_version 7
73 3a 34 32              # key "s:42"
"##;

const DEL_IF_VERSION_RESPONSE: &str = r##"
b6 01 05 08              # magic, version 1, opcode DEL, extras length 8
00 00 00 0d              # opaque 13
00 03 00 00              # status VERSION_MISMATCH (0x0003), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 08  # current_version 8
"##;

const DEL_REQUEST: &str = r##"
b5 01 05 00  # magic, version 1, opcode DEL, flags 0x00
00 00 00 0e  # opaque 14
00 04 00 00  # key length 4, extras length 0, reserved
00 00 00 00  # value length 0
73 3a 34 32  # key "s:42"
"##;

const DEL_RESPONSE: &str = r##"
b6 01 05 00  # magic, version 1, opcode DEL, extras length 0
00 00 00 0e  # opaque 14
00 00 00 00  # status OK (0x0000), reserved
00 00 00 00  # value length 0
"##;

const DEL_MISS_REQUEST: &str = r##"
b5 01 05 00  # magic, version 1, opcode DEL, flags 0x00
00 00 00 0f  # opaque 15
00 04 00 00  # key length 4, extras length 0, reserved
00 00 00 00  # value length 0
73 3a 34 32  # key "s:42"
"##;

const DEL_MISS_RESPONSE: &str = r##"
b6 01 05 00  # magic, version 1, opcode DEL, extras length 0
00 00 00 0f  # opaque 15
00 01 00 00  # status NOT_FOUND (0x0001), reserved
00 00 00 00  # value length 0
"##;

const STATS_REQUEST: &str = r##"
b5 01 06 00  # magic, version 1, opcode STATS, flags 0x00
00 00 00 10  # opaque 16
00 00 00 00  # key length 0, extras length 0, reserved
00 00 00 00  # value length 0
"##;

const STATS_RESPONSE: &str = r##"
b6 01 06 00                                      # magic, version 1, opcode STATS, extras length 0
00 00 00 10                                      # opaque 16
00 00 00 00                                      # status OK (0x0000), reserved
00 00 03 24                                      # value length 804
73 65 72 76 65 72 5f 76 65 72 73 69 6f 6e 20 30  # "server_version 0"
2e 31 2e 30 0a                                   # ... ".1.0\n"
75 70 74 69 6d 65 5f 6d 73 20 36 31 32 33 34 0a  # "uptime_ms 61234\n"
63 6f 6e 6e 65 63 74 69 6f 6e 73 5f 63 75 72 72  # "connections_curr"
65 6e 74 20 31 0a                                # ... "ent 1\n"
63 6f 6e 6e 65 63 74 69 6f 6e 73 5f 74 6f 74 61  # "connections_tota"
6c 20 33 0a                                      # ... "l 3\n"
63 6f 6e 6e 65 63 74 69 6f 6e 73 5f 72 65 6a 65  # "connections_reje"
63 74 65 64 20 30 0a                             # ... "cted 0\n"
72 65 71 75 65 73 74 73 5f 74 6f 74 61 6c 20 32  # "requests_total 2"
33 0a                                            # ... "3\n"
70 72 6f 74 6f 63 6f 6c 5f 65 72 72 6f 72 73 20  # "protocol_errors "
31 0a                                            # ... "1\n"
67 65 74 5f 68 69 74 73 20 32 0a                 # "get_hits 2\n"
67 65 74 5f 6d 69 73 73 65 73 20 31 0a           # "get_misses 1\n"
73 65 74 5f 73 74 6f 72 65 64 20 38 0a           # "set_stored 8\n"
73 65 74 5f 72 65 6a 65 63 74 65 64 20 33 0a     # "set_rejected 3\n"
74 6f 75 63 68 5f 68 69 74 73 20 31 0a           # "touch_hits 1\n"
74 6f 75 63 68 5f 6d 69 73 73 65 73 20 31 0a     # "touch_misses 1\n"
64 65 6c 5f 64 65 6c 65 74 65 64 20 31 0a        # "del_deleted 1\n"
64 65 6c 5f 6d 69 73 73 65 73 20 32 0a           # "del_misses 2\n"
65 6e 74 72 69 65 73 20 36 0a                    # "entries 6\n"
65 78 70 69 72 65 64 5f 72 65 63 6c 61 69 6d 65  # "expired_reclaime"
64 20 30 0a                                      # ... "d 0\n"
6d 65 6d 6f 72 79 5f 62 79 74 65 73 5f 65 73 74  # "memory_bytes_est"
69 6d 61 74 65 20 33 34 32 0a                    # ... "imate 342\n"
6d 65 6d 6f 72 79 5f 75 73 65 64 5f 62 79 74 65  # "memory_used_byte"
73 20 31 37 30 38 38 0a                          # ... "s 17088\n"
6d 65 6d 6f 72 79 5f 6c 69 6d 69 74 5f 62 79 74  # "memory_limit_byt"
65 73 20 36 34 34 32 34 35 30 39 34 34 0a        # ... "es 6442450944\n"
6d 65 6d 6f 72 79 5f 70 6f 6c 69 63 79 20 72 65  # "memory_policy re"
66 75 73 65 2d 6e 65 77 0a                       # ... "fuse-new\n"
6d 65 6d 6f 72 79 5f 72 65 66 75 73 65 64 20 30  # "memory_refused 0"
0a                                               # ... "\n"
6d 65 6d 6f 72 79 5f 65 76 69 63 74 65 64 20 30  # "memory_evicted 0"
0a                                               # ... "\n"
6d 65 6d 6f 72 79 5f 65 6e 74 72 69 65 73 5f 62  # "memory_entries_b"
79 74 65 73 20 34 33 32 0a                       # ... "ytes 432\n"
6d 65 6d 6f 72 79 5f 74 61 62 6c 65 5f 62 79 74  # "memory_table_byt"
65 73 20 33 33 36 0a                             # ... "es 336\n"
6d 65 6d 6f 72 79 5f 61 6f 66 5f 62 79 74 65 73  # "memory_aof_bytes"
20 30 0a                                         # ... " 0\n"
6d 65 6d 6f 72 79 5f 63 6f 6e 6e 65 63 74 69 6f  # "memory_connectio"
6e 73 5f 62 79 74 65 73 20 31 36 33 32 30 0a     # ... "ns_bytes 16320\n"
6d 65 6d 6f 72 79 5f 72 65 73 69 64 65 6e 74 5f  # "memory_resident_"
65 78 63 65 73 73 5f 62 79 74 65 73 20 30 0a     # ... "excess_bytes 0\n"
61 6f 66 5f 65 6e 61 62 6c 65 64 20 31 0a        # "aof_enabled 1\n"
61 6f 66 5f 66 73 79 6e 63 20 65 76 65 72 79 73  # "aof_fsync everys"
65 63 0a                                         # ... "ec\n"
61 6f 66 5f 66 69 6c 65 5f 62 79 74 65 73 20 33  # "aof_file_bytes 3"
37 34 0a                                         # ... "74\n"
61 6f 66 5f 72 65 77 72 69 74 65 73 20 30 0a     # "aof_rewrites 0\n"
61 6f 66 5f 77 72 69 74 65 5f 65 72 72 6f 72 73  # "aof_write_errors"
20 30 0a                                         # ... " 0\n"
61 6f 66 5f 66 61 69 6c 65 64 20 30 0a           # "aof_failed 0\n"
61 75 74 68 5f 66 61 69 6c 75 72 65 73 20 30 0a  # "auth_failures 0\n"
61 75 74 68 5f 74 68 72 6f 74 74 6c 65 64 20 30  # "auth_throttled 0"
0a                                               # ... "\n"
61 75 74 68 5f 74 69 6d 65 6f 75 74 73 20 30 0a  # "auth_timeouts 0\n"
63 6f 6e 6e 65 63 74 69 6f 6e 73 5f 72 65 6a 65  # "connections_reje"
63 74 65 64 5f 70 65 72 5f 61 64 64 72 65 73 73  # ... "cted_per_address"
20 30 0a                                         # ... " 0\n"
63 6f 6e 6e 65 63 74 69 6f 6e 73 5f 64 69 73 70  # "connections_disp"
6c 61 63 65 64 20 30 0a                          # ... "laced 0\n"
66 72 61 6d 65 5f 74 69 6d 65 6f 75 74 73 20 30  # "frame_timeouts 0"
0a                                               # ... "\n"
77 72 69 74 65 5f 74 69 6d 65 6f 75 74 73 20 30  # "write_timeouts 0"
0a                                               # ... "\n"
72 65 70 6c 69 65 73 5f 74 6f 6f 5f 6c 61 72 67  # "replies_too_larg"
65 20 30 0a                                      # ... "e 0\n"
"##;

const INVALID_TTL_REQUEST: &str = r##"
b5 01 03 00              # magic, version 1, opcode SET, flags 0x00
00 00 00 11              # opaque 17
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 07              # value length 7
00 00 00 00 00 00 00 00  # ttl_ms 0
00 00 00 00 00 00 00 00  # expected_version 0
73 3a 34 32              # key "s:42"
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const INVALID_TTL_RESPONSE: &str = r##"
b6 01 03 00                                      # magic, version 1, opcode SET, extras length 0
00 00 00 11                                      # opaque 17
00 81 00 00                                      # status INVALID_ARGUMENT (0x0081), reserved
00 00 00 1e                                      # value length 30
53 45 54 3a 20 74 74 6c 20 6d 75 73 74 20 62 65  # message "SET: ttl must be"
20 61 74 20 6c 65 61 73 74 20 31 20 6d 73        # ... " at least 1 ms"
"##;

const UNKNOWN_OPCODE_REQUEST: &str = r##"
b5 01 42 00  # magic, version 1, opcode 0x42, flags 0x00
00 00 00 12  # opaque 18
00 00 00 00  # key length 0, extras length 0, reserved
00 00 00 00  # value length 0
"##;

const UNKNOWN_OPCODE_RESPONSE: &str = r##"
b6 01 42 00                                      # magic, version 1, opcode 0x42, extras length 0
00 00 00 12                                      # opaque 18
00 82 00 00                                      # status UNKNOWN_OPCODE (0x0082), reserved
00 00 00 13                                      # value length 19
75 6e 6b 6e 6f 77 6e 20 6f 70 63 6f 64 65 20 30  # message "unknown opcode 0"
78 34 32                                         # ... "x42"
"##;

const TOO_LARGE_REQUEST: &str = r##"
b5 01 03 00              # magic, version 1, opcode SET, flags 0x00
00 00 00 13              # opaque 19
00 04 10 00              # key length 4, extras length 16, reserved
00 20 00 00              # value length 2097152
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 00  # expected_version 0
73 3a 34 32              # key "s:42"
"##;

const TOO_LARGE_RESPONSE: &str = r##"
b6 01 03 00                                      # magic, version 1, opcode SET, extras length 0
00 00 00 13                                      # opaque 19
00 84 00 00                                      # status TOO_LARGE (0x0084), reserved
00 00 00 39                                      # value length 57
76 61 6c 75 65 20 6f 66 20 32 30 39 37 31 35 32  # message "value of 2097152"
20 62 79 74 65 73 20 65 78 63 65 65 64 73 20 74  # ... " bytes exceeds t"
68 65 20 6c 69 6d 69 74 20 6f 66 20 31 30 34 38  # ... "he limit of 1048"
35 37 36 20 62 79 74 65 73                       # ... "576 bytes"
"##;

const BAD_MAGIC_REQUEST: &str = r##"
47 45 54 20 2f 20 48 54  # "GET / HT"
54 50 2f 31 2e 31 0d 0a  # "TP/1.1\r\n"
"##;

const BAD_MAGIC_RESPONSE: &str = r##"
b6 01 ff 00                                      # magic, version 1, opcode 0xff, extras length 0
00 00 00 00                                      # opaque 0
00 85 00 00                                      # status PROTOCOL_ERROR (0x0085), reserved
00 00 00 3a                                      # value length 58
62 61 64 20 6d 61 67 69 63 20 62 79 74 65 20 30  # message "bad magic byte 0"
78 34 37 20 28 65 78 70 65 63 74 65 64 20 30 78  # ... "x47 (expected 0x"
62 35 29 3a 20 6e 6f 74 20 61 20 73 65 73 73 69  # ... "b5): not a sessi"
6f 6e 64 20 73 74 72 65 61 6d                    # ... "ond stream"
"##;

const BAD_VERSION_REQUEST: &str = r##"
b5 02 01 00  # magic, version 2, opcode PING, flags 0x00
00 00 00 14  # opaque 20
00 00 00 00  # key length 0, extras length 0, reserved
00 00 00 00  # value length 0
"##;

const BAD_VERSION_RESPONSE: &str = r##"
b6 01 01 00                                      # magic, version 1, opcode PING, extras length 0
00 00 00 14                                      # opaque 20
00 83 00 00                                      # status UNSUPPORTED_VERSION (0x0083), reserved
00 00 00 33                                      # value length 51
75 6e 73 75 70 70 6f 72 74 65 64 20 70 72 6f 74  # message "unsupported prot"
6f 63 6f 6c 20 76 65 72 73 69 6f 6e 20 32 20 28  # ... "ocol version 2 ("
74 68 69 73 20 73 69 64 65 20 73 70 65 61 6b 73  # ... "this side speaks"
20 31 29                                         # ... " 1)"
"##;

const BUSY_RESPONSE: &str = r##"
b6 01 ff 00                                      # magic, version 1, opcode 0xff, extras length 0
00 00 00 00                                      # opaque 0
00 90 00 00                                      # status BUSY (0x0090), reserved
00 00 00 29                                      # value length 41
63 6f 6e 6e 65 63 74 69 6f 6e 20 6c 69 6d 69 74  # message "connection limit"
20 72 65 61 63 68 65 64 3b 20 74 72 79 20 61 67  # ... " reached; try ag"
61 69 6e 20 6c 61 74 65 72                       # ... "ain later"
"##;

const SHUTTING_DOWN_RESPONSE: &str = r##"
b6 01 ff 00                                      # magic, version 1, opcode 0xff, extras length 0
00 00 00 00                                      # opaque 0
00 91 00 00                                      # status SHUTTING_DOWN (0x0091), reserved
00 00 00 36                                      # value length 54
73 65 72 76 65 72 20 73 68 75 74 74 69 6e 67 20  # message "server shutting "
64 6f 77 6e 3b 20 6c 61 74 65 72 20 72 65 71 75  # ... "down; later requ"
65 73 74 73 20 77 65 72 65 20 6e 6f 74 20 65 78  # ... "ests were not ex"
65 63 75 74 65 64                                # ... "ecuted"
"##;

const RESERVED_OPCODE_REQUEST: &str = r##"
b5 01 ff 00  # magic, version 1, opcode 0xff, flags 0x00
00 00 00 15  # opaque 21
00 00 00 00  # key length 0, extras length 0, reserved
00 00 00 00  # value length 0
"##;

const RESERVED_OPCODE_RESPONSE: &str = r##"
b6 01 ff 00                                      # magic, version 1, opcode 0xff, extras length 0
00 00 00 15                                      # opaque 21
00 82 00 00                                      # status UNKNOWN_OPCODE (0x0082), reserved
00 00 00 13                                      # value length 19
75 6e 6b 6e 6f 77 6e 20 6f 70 63 6f 64 65 20 30  # message "unknown opcode 0"
78 66 66                                         # ... "xff"
"##;

const AUTH_HELLO_REQUEST: &str = r##"
b5 01 00 00  # magic, version 1, opcode HELLO, flags 0x00
00 00 00 1f  # opaque 31
00 00 02 00  # key length 0, extras length 2, reserved
00 00 00 00  # value length 0
01 01        # min_version 1, max_version 1
"##;

const AUTH_HELLO_RESPONSE: &str = r##"
b6 01 00 18              # magic, version 1, opcode HELLO, extras length 24
00 00 00 1f              # opaque 31
00 00 00 00              # status OK (0x0000), reserved
00 00 00 0e              # value length 14
01 01 00 00              # version 1, flags 0x01 (AUTH_REQUIRED), reserved
00 00 04 00 00 10 00 00  # max_key_len 1024, max_value_len 1048576
00 00 00 00              # reserved
00 00 00 08 0b ef c0 00  # max_ttl_ms 34560000000
73 65 73 73 69 6f 6e 64  # server "sessiond"
2f 30 2e 31 2e 30        # ... "/0.1.0"
"##;

const AUTH_REQUIRED_REQUEST: &str = r##"
b5 01 02 00  # magic, version 1, opcode GET, flags 0x00
00 00 00 20  # opaque 32
00 04 00 00  # key length 4, extras length 0, reserved
00 00 00 00  # value length 0
73 3a 34 32  # key "s:42"
"##;

const AUTH_REQUIRED_RESPONSE: &str = r##"
b6 01 02 00                                      # magic, version 1, opcode GET, extras length 0
00 00 00 20                                      # opaque 32
00 86 00 00                                      # status AUTH_REQUIRED (0x0086), reserved
00 00 00 28                                      # value length 40
61 75 74 68 65 6e 74 69 63 61 74 69 6f 6e 20 72  # message "authentication r"
65 71 75 69 72 65 64 3a 20 73 65 6e 64 20 41 55  # ... "equired: send AU"
54 48 20 66 69 72 73 74                          # ... "TH first"
"##;

const AUTH_FAILED_REQUEST: &str = r##"
b5 01 07 00     # magic, version 1, opcode AUTH, flags 0x00
00 00 00 21     # opaque 33
00 03 00 00     # key length 3, extras length 0, reserved
00 00 00 05     # value length 5
61 70 70        # user "app"
67 75 65 73 73  # password "guess"
"##;

const AUTH_FAILED_RESPONSE: &str = r##"
b6 01 07 00                                      # magic, version 1, opcode AUTH, extras length 0
00 00 00 21                                      # opaque 33
00 87 00 00                                      # status AUTH_FAILED (0x0087), reserved
00 00 00 1d                                      # value length 29
69 6e 76 61 6c 69 64 20 75 73 65 72 20 6e 61 6d  # message "invalid user nam"
65 20 6f 72 20 70 61 73 73 77 6f 72 64           # ... "e or password"
"##;

const AUTH_REQUEST: &str = r##"
b5 01 07 00        # magic, version 1, opcode AUTH, flags 0x00
00 00 00 22        # opaque 34
00 03 00 00        # key length 3, extras length 0, reserved
00 00 00 06        # value length 6
61 70 70           # user "app"
73 33 63 72 65 74  # password "s3cret"
"##;

const AUTH_RESPONSE: &str = r##"
b6 01 07 00  # magic, version 1, opcode AUTH, extras length 0
00 00 00 22  # opaque 34
00 00 00 00  # status OK (0x0000), reserved
00 00 00 03  # value length 3
61 70 70     # role "app"
"##;

const NO_PERMISSION_REQUEST: &str = r##"
b5 01 06 00  # magic, version 1, opcode STATS, flags 0x00
00 00 00 23  # opaque 35
00 00 00 00  # key length 0, extras length 0, reserved
00 00 00 00  # value length 0
"##;

const NO_PERMISSION_RESPONSE: &str = r##"
b6 01 06 00                                      # magic, version 1, opcode STATS, extras length 0
00 00 00 23                                      # opaque 35
00 88 00 00                                      # status NO_PERMISSION (0x0088), reserved
00 00 00 27                                      # value length 39
75 73 65 72 20 22 61 70 70 22 20 28 72 6f 6c 65  # message "user "app" (role"
20 61 70 70 29 20 6d 61 79 20 6e 6f 74 20 72 75  # ... " app) may not ru"
6e 20 53 54 41 54 53                             # ... "n STATS"
"##;

const SET_SESSION_REQUEST: &str = r##"
b5 01 10 01              # magic, version 1, opcode SET_SESSION, flags 0x01 (create-only)
00 00 00 40              # opaque 64
00 04 20 00              # key length 4, extras length 32, reserved
00 00 00 02              # value length 2
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 00  # expected_version 0
00 00 00 00 02 93 2e 00  # lifetime_ms 43200000
00 00 00 00              # owner_limit 0
00 00 00 00              # owner_len 0, reserved
73 3a 35 30              # key "s:50"
7b 7d                    # value '{}'
"##;

const SET_SESSION_RESPONSE: &str = r##"
b6 01 10 10              # magic, version 1, opcode SET_SESSION, extras length 16
00 00 00 40              # opaque 64
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 09  # version 9
00 00 00 00 00 00 00 00  # ended 0
"##;

const ROTATE_LOGIN_REQUEST: &str = r##"
b5 01 13 07              # magic, version 1, opcode ROTATE, flags 0x07 (IF_VERSION, BIND, END_LRU)
00 00 00 41              # opaque 65
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 06              # value length 6
00 00 00 00 00 00 00 09  # expected_version 9
00 00 00 01              # owner_limit 1
00 04 00 00              # new_key_len 4, reserved
73 3a 35 30              # key (old) "s:50"
73 3a 35 31              # new key "s:51"
75 37                    # owner "u7"
"##;

const ROTATE_LOGIN_RESPONSE: &str = r##"
b6 01 13 10              # magic, version 1, opcode ROTATE, extras length 16
00 00 00 41              # opaque 65
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 0a  # version 10
00 00 00 00 00 00 00 00  # ended 0
"##;

const SET_SESSION_LIMIT_REQUEST: &str = r##"
b5 01 10 01              # magic, version 1, opcode SET_SESSION, flags 0x01 (create-only)
00 00 00 42              # opaque 66
00 04 20 00              # key length 4, extras length 32, reserved
00 00 00 09              # value length 9
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 00  # expected_version 0
00 00 00 00 02 93 2e 00  # lifetime_ms 43200000
00 00 00 01              # owner_limit 1
00 02 00 00              # owner_len 2, reserved
73 3a 35 32              # key "s:52"
75 37                    # owner "u7"
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const SET_SESSION_LIMIT_RESPONSE: &str = r##"
b6 01 10 00  # magic, version 1, opcode SET_SESSION, extras length 0
00 00 00 42  # opaque 66
00 04 00 00  # status OWNER_LIMIT (0x0004), reserved
00 00 00 00  # value length 0
"##;

const SET_SESSION_END_LRU_REQUEST: &str = r##"
b5 01 10 05              # magic, version 1, opcode SET_SESSION, flags 0x05 (create-only, END_LRU)
00 00 00 43              # opaque 67
00 04 20 00              # key length 4, extras length 32, reserved
00 00 00 09              # value length 9
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 00 00 00 00 00 00  # expected_version 0
00 00 00 00 02 93 2e 00  # lifetime_ms 43200000
00 00 00 01              # owner_limit 1
00 02 00 00              # owner_len 2, reserved
73 3a 35 32              # key "s:52"
75 37                    # owner "u7"
7b 22 75 22 3a 37 7d     # value '{"u":7}'
"##;

const SET_SESSION_END_LRU_RESPONSE: &str = r##"
b6 01 10 10              # magic, version 1, opcode SET_SESSION, extras length 16
00 00 00 43              # opaque 67
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 0b  # version 11
00 00 00 00 00 00 00 01  # ended 1
"##;

const LIST_SESSIONS_REQUEST: &str = r##"
b5 01 11 00  # magic, version 1, opcode LIST_SESSIONS, flags 0x00
00 00 00 44  # opaque 68
00 02 04 00  # key length 2, extras length 4, reserved
00 00 00 00  # value length 0
00 00 00 00  # max_sessions 0
75 37        # key (owner) "u7"
"##;

const SCAN_REQUEST: &str = r##"
b5 01 14 00              # magic, version 1, opcode SCAN, flags 0x00
00 00 00 47              # opaque 71
00 00 0c 00              # key length 0, extras length 12, reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 00  # cursor 0
00 00 00 00              # max_entries 0
"##;

const SCAN_RESPONSE: &str = r##"
b6 01 14 10              # magic, version 1, opcode SCAN, extras length 16
00 00 00 47              # opaque 71
00 00 00 00              # status OK (0x0000), reserved
00 00 00 30              # value length 48
00 00 00 00 00 00 00 00  # next_cursor 0: the scan is complete
00 00 00 00 00 00 00 01  # count 1
00 04 00 02              # key_len 4, owner_len 2
00 00 00 02              # value_len 2
00 00 00 00 00 00 00 0b  # version 11
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 01 9b 76 da a8 00  # created_ms 1767225600000
00 00 01 9b 79 6d d6 00  # deadline_ms 1767268800000
73 3a 35 32              # key "s:52"
75 37                    # owner "u7"
68 69                    # value "hi"
"##;

const LIST_SESSIONS_RESPONSE: &str = r##"
b6 01 11 10              # magic, version 1, opcode LIST_SESSIONS, extras length 16
00 00 00 44              # opaque 68
00 00 00 00              # status OK (0x0000), reserved
00 00 00 2e              # value length 46
00 00 00 00 00 00 00 01  # total 1
00 00 00 00 00 00 00 01  # count 1
00 04                    # key_len 4
00 00 00 00 00 00 00 0b  # version 11
00 00 01 9b 76 da a8 00  # created_ms 1767225600000
00 00 01 9b 76 da a8 00  # last_access_ms 1767225600000
00 00 00 00 00 1b 77 40  # ttl_ms 1800000
00 00 01 9b 79 6d d6 00  # deadline_ms 1767268800000
73 3a 35 32              # key "s:52"
"##;

const END_ALL_REQUEST: &str = r##"
b5 01 12 00  # magic, version 1, opcode END_ALL, flags 0x00
00 00 00 45  # opaque 69
00 02 00 00  # key length 2, extras length 0, reserved
00 00 00 00  # value length 0
75 37        # key (owner) "u7"
"##;

const END_ALL_RESPONSE: &str = r##"
b6 01 12 08              # magic, version 1, opcode END_ALL, extras length 8
00 00 00 45              # opaque 69
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 01  # ended 1
"##;

const ROTATE_ENDED_REQUEST: &str = r##"
b5 01 13 00              # magic, version 1, opcode ROTATE, flags 0x00
00 00 00 46              # opaque 70
00 04 10 00              # key length 4, extras length 16, reserved
00 00 00 04              # value length 4
00 00 00 00 00 00 00 00  # expected_version 0
00 00 00 00              # owner_limit 0
00 04 00 00              # new_key_len 4, reserved
73 3a 35 31              # key (old) "s:51"
73 3a 35 33              # new key "s:53"
"##;

const ROTATE_ENDED_RESPONSE: &str = r##"
b6 01 13 00  # magic, version 1, opcode ROTATE, extras length 0
00 00 00 46  # opaque 70
00 01 00 00  # status NOT_FOUND (0x0001), reserved
00 00 00 00  # value length 0
"##;

// 5.9 SLOWLOG: a connection of its own.

const SLOWLOG_GET_REQUEST: &str = r##"
b5 01 08 00              # magic, version 1, opcode SLOWLOG, flags 0x00
00 00 00 28              # opaque 40
00 00 08 00              # key length 0, extras length 8, reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 0a  # operation GET, reserved, count 10
"##;

const SLOWLOG_GET_RESPONSE: &str = r##"
b6 01 08 04                                      # magic, version 1, opcode SLOWLOG, extras length 4
00 00 00 28                                      # opaque 40
00 00 00 00                                      # status OK (0x0000), reserved
00 00 00 37                                      # value length 55
00 00 00 01                                      # count 1
00 00 00 00 00 00 00 00                          # id 0
00 00 01 9a c1 52 7d 7b                          # unix_ms 1764180000123
00 00 00 00 00 00 30 d4                          # duration_us 12500
00 00 00 04                                      # key_len 4
03 53 45 54                                      # command "SET"
06 6e 61 74 69 76 65                             # protocol "native"
0f 31 32 37 2e 30 2e 30 2e 31 3a 35 32 38 31 34  # client "127.0.0.1:52814"
"##;

const SLOWLOG_LEN_REQUEST: &str = r##"
b5 01 08 00              # magic, version 1, opcode SLOWLOG, flags 0x00
00 00 00 29              # opaque 41
00 00 08 00              # key length 0, extras length 8, reserved
00 00 00 00              # value length 0
01 00 00 00 00 00 00 00  # operation LEN, reserved, count 0
"##;

const SLOWLOG_LEN_RESPONSE: &str = r##"
b6 01 08 20              # magic, version 1, opcode SLOWLOG, extras length 32
00 00 00 29              # opaque 41
00 00 00 00              # status OK (0x0000), reserved
00 00 00 00              # value length 0
00 00 00 00 00 00 00 01  # len 1
00 00 00 00 00 00 00 80  # max_len 128
00 00 00 00 00 00 27 10  # threshold_us 10000 (10 ms)
00 00 00 00 00 00 00 01  # recorded_total 1
"##;

const SLOWLOG_RESET_REQUEST: &str = r##"
b5 01 08 00              # magic, version 1, opcode SLOWLOG, flags 0x00
00 00 00 2a              # opaque 42
00 00 08 00              # key length 0, extras length 8, reserved
00 00 00 00              # value length 0
02 00 00 00 00 00 00 00  # operation RESET, reserved, count 0
"##;

const SLOWLOG_RESET_RESPONSE: &str = r##"
b6 01 08 00  # magic, version 1, opcode SLOWLOG, extras length 0
00 00 00 2a  # opaque 42
00 00 00 00  # status OK (0x0000), reserved
00 00 00 00  # value length 0
"##;

/// Every example above, by name, for the coverage check against the specification.
const EXAMPLES: &[(&str, &str)] = &[
    ("HELLO_REQUEST", HELLO_REQUEST),
    ("HELLO_RESPONSE", HELLO_RESPONSE),
    ("HELLO_UNSUPPORTED_REQUEST", HELLO_UNSUPPORTED_REQUEST),
    ("HELLO_UNSUPPORTED_RESPONSE", HELLO_UNSUPPORTED_RESPONSE),
    ("PING_REQUEST", PING_REQUEST),
    ("PING_RESPONSE", PING_RESPONSE),
    ("SET_REQUEST", SET_REQUEST),
    ("SET_RESPONSE", SET_RESPONSE),
    ("GET_REQUEST", GET_REQUEST),
    ("GET_RESPONSE", GET_RESPONSE),
    ("GET_MISS_REQUEST", GET_MISS_REQUEST),
    ("GET_MISS_RESPONSE", GET_MISS_RESPONSE),
    ("GET_TOUCH_REQUEST", GET_TOUCH_REQUEST),
    ("GET_TOUCH_RESPONSE", GET_TOUCH_RESPONSE),
    ("SET_CREATE_REQUEST", SET_CREATE_REQUEST),
    ("SET_CREATE_RESPONSE", SET_CREATE_RESPONSE),
    ("SET_UPDATE_REQUEST", SET_UPDATE_REQUEST),
    ("SET_UPDATE_RESPONSE", SET_UPDATE_RESPONSE),
    ("SET_IF_VERSION_REQUEST", SET_IF_VERSION_REQUEST),
    ("SET_IF_VERSION_RESPONSE", SET_IF_VERSION_RESPONSE),
    ("SET_MISMATCH_REQUEST", SET_MISMATCH_REQUEST),
    ("SET_MISMATCH_RESPONSE", SET_MISMATCH_RESPONSE),
    ("TOUCH_REQUEST", TOUCH_REQUEST),
    ("TOUCH_RESPONSE", TOUCH_RESPONSE),
    ("TOUCH_MISS_REQUEST", TOUCH_MISS_REQUEST),
    ("TOUCH_MISS_RESPONSE", TOUCH_MISS_RESPONSE),
    ("DEL_IF_VERSION_REQUEST", DEL_IF_VERSION_REQUEST),
    ("DEL_IF_VERSION_RESPONSE", DEL_IF_VERSION_RESPONSE),
    ("DEL_REQUEST", DEL_REQUEST),
    ("DEL_RESPONSE", DEL_RESPONSE),
    ("DEL_MISS_REQUEST", DEL_MISS_REQUEST),
    ("DEL_MISS_RESPONSE", DEL_MISS_RESPONSE),
    ("STATS_REQUEST", STATS_REQUEST),
    ("STATS_RESPONSE", STATS_RESPONSE),
    ("INVALID_TTL_REQUEST", INVALID_TTL_REQUEST),
    ("INVALID_TTL_RESPONSE", INVALID_TTL_RESPONSE),
    ("UNKNOWN_OPCODE_REQUEST", UNKNOWN_OPCODE_REQUEST),
    ("UNKNOWN_OPCODE_RESPONSE", UNKNOWN_OPCODE_RESPONSE),
    ("TOO_LARGE_REQUEST", TOO_LARGE_REQUEST),
    ("TOO_LARGE_RESPONSE", TOO_LARGE_RESPONSE),
    ("BAD_MAGIC_REQUEST", BAD_MAGIC_REQUEST),
    ("BAD_MAGIC_RESPONSE", BAD_MAGIC_RESPONSE),
    ("BAD_VERSION_REQUEST", BAD_VERSION_REQUEST),
    ("BAD_VERSION_RESPONSE", BAD_VERSION_RESPONSE),
    ("BUSY_RESPONSE", BUSY_RESPONSE),
    ("SHUTTING_DOWN_RESPONSE", SHUTTING_DOWN_RESPONSE),
    ("RESERVED_OPCODE_REQUEST", RESERVED_OPCODE_REQUEST),
    ("RESERVED_OPCODE_RESPONSE", RESERVED_OPCODE_RESPONSE),
    ("AUTH_HELLO_REQUEST", AUTH_HELLO_REQUEST),
    ("AUTH_HELLO_RESPONSE", AUTH_HELLO_RESPONSE),
    ("AUTH_REQUIRED_REQUEST", AUTH_REQUIRED_REQUEST),
    ("AUTH_REQUIRED_RESPONSE", AUTH_REQUIRED_RESPONSE),
    ("AUTH_FAILED_REQUEST", AUTH_FAILED_REQUEST),
    ("AUTH_FAILED_RESPONSE", AUTH_FAILED_RESPONSE),
    ("AUTH_REQUEST", AUTH_REQUEST),
    ("AUTH_RESPONSE", AUTH_RESPONSE),
    ("NO_PERMISSION_REQUEST", NO_PERMISSION_REQUEST),
    ("NO_PERMISSION_RESPONSE", NO_PERMISSION_RESPONSE),
    ("SLOWLOG_GET_REQUEST", SLOWLOG_GET_REQUEST),
    ("SLOWLOG_GET_RESPONSE", SLOWLOG_GET_RESPONSE),
    ("SLOWLOG_LEN_REQUEST", SLOWLOG_LEN_REQUEST),
    ("SLOWLOG_LEN_RESPONSE", SLOWLOG_LEN_RESPONSE),
    ("SLOWLOG_RESET_REQUEST", SLOWLOG_RESET_REQUEST),
    ("SLOWLOG_RESET_RESPONSE", SLOWLOG_RESET_RESPONSE),
    ("SET_SESSION_REQUEST", SET_SESSION_REQUEST),
    ("SET_SESSION_RESPONSE", SET_SESSION_RESPONSE),
    ("ROTATE_LOGIN_REQUEST", ROTATE_LOGIN_REQUEST),
    ("ROTATE_LOGIN_RESPONSE", ROTATE_LOGIN_RESPONSE),
    ("SET_SESSION_LIMIT_REQUEST", SET_SESSION_LIMIT_REQUEST),
    ("SET_SESSION_LIMIT_RESPONSE", SET_SESSION_LIMIT_RESPONSE),
    ("SET_SESSION_END_LRU_REQUEST", SET_SESSION_END_LRU_REQUEST),
    ("SET_SESSION_END_LRU_RESPONSE", SET_SESSION_END_LRU_RESPONSE),
    ("LIST_SESSIONS_REQUEST", LIST_SESSIONS_REQUEST),
    ("LIST_SESSIONS_RESPONSE", LIST_SESSIONS_RESPONSE),
    ("END_ALL_REQUEST", END_ALL_REQUEST),
    ("END_ALL_RESPONSE", END_ALL_RESPONSE),
    ("ROTATE_ENDED_REQUEST", ROTATE_ENDED_REQUEST),
    ("ROTATE_ENDED_RESPONSE", ROTATE_ENDED_RESPONSE),
    ("SCAN_REQUEST", SCAN_REQUEST),
    ("SCAN_RESPONSE", SCAN_RESPONSE),
];

// ---------------------------------------------------------------------------------------------
// The specification and this file agree
// ---------------------------------------------------------------------------------------------

#[test]
fn every_hex_block_in_the_spec_is_tested() {
    assert_examples_match_spec("PROTOCOL.md", SPEC, EXAMPLES);
}

// ---------------------------------------------------------------------------------------------
// 5.1 HELLO
// ---------------------------------------------------------------------------------------------

#[test]
fn hello() {
    check_request(
        HELLO_REQUEST,
        1,
        Request::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client_name: b(b"demo"),
        }),
    );
    let reply = HelloReply {
        version: 1,
        flags: 0,
        limits: Limits::default(),
        server: "sessiond/0.1.0".into(),
    };
    let frame = check_response(HELLO_RESPONSE, &reply.to_frame(1));
    assert_eq!(HelloReply::from_frame(&frame), Ok(reply));
}

#[test]
fn hello_without_a_common_version() {
    let request = Hello {
        min_version: 2,
        max_version: 3,
        client_name: Bytes::new(),
    };
    check_request(
        HELLO_UNSUPPORTED_REQUEST,
        1,
        Request::Hello(request.clone()),
    );
    assert_eq!(request.negotiate(1, 1), None);

    // The server's own answer (it builds it with the same function).
    let message = "no common protocol version: client speaks 2..=3, server speaks 1..=1";
    let frame = check_response(
        HELLO_UNSUPPORTED_RESPONSE,
        &request.no_common_version(1, 1, 1),
    );
    assert!(frame.status().unwrap().is_fatal());
    assert_server_error(
        HelloReply::from_frame(&frame),
        Status::UnsupportedVersion,
        message,
    );
}

// ---------------------------------------------------------------------------------------------
// 5.2 PING
// ---------------------------------------------------------------------------------------------

#[test]
fn ping() {
    check_request(PING_REQUEST, 2, Request::Ping(Ping { payload: b(b"hi") }));
    let reply = PingReply { payload: b(b"hi") };
    let frame = check_response(PING_RESPONSE, &reply.to_frame(2));
    assert_eq!(PingReply::from_frame(&frame), Ok(reply));
}

// ---------------------------------------------------------------------------------------------
// 5.3 GET
// ---------------------------------------------------------------------------------------------

#[test]
fn get_hit() {
    check_request(
        GET_REQUEST,
        4,
        Request::Get(Get {
            key: b(KEY),
            touch_ttl_ms: None,
        }),
    );
    let reply = GetReply::Hit(Entry {
        value: b(VALUE),
        version: 7,
        ttl_ms: 1_799_412,
    });
    let frame = check_response(GET_RESPONSE, &reply.to_frame(4));
    assert_eq!(GetReply::from_frame(&frame), Ok(reply));
}

#[test]
fn get_miss() {
    check_request(
        GET_MISS_REQUEST,
        5,
        Request::Get(Get {
            key: b(OTHER_KEY),
            touch_ttl_ms: None,
        }),
    );
    let frame = check_response(GET_MISS_RESPONSE, &GetReply::Miss.to_frame(5));
    assert_eq!(GetReply::from_frame(&frame), Ok(GetReply::Miss));
}

#[test]
fn get_with_touch() {
    check_request(
        GET_TOUCH_REQUEST,
        6,
        Request::Get(Get {
            key: b(KEY),
            touch_ttl_ms: Some(THIRTY_MINUTES),
        }),
    );
    let reply = GetReply::Hit(Entry {
        value: b(VALUE),
        version: 7,
        ttl_ms: THIRTY_MINUTES,
    });
    let frame = check_response(GET_TOUCH_RESPONSE, &reply.to_frame(6));
    assert_eq!(GetReply::from_frame(&frame), Ok(reply));
}

// ---------------------------------------------------------------------------------------------
// 5.4 SET
// ---------------------------------------------------------------------------------------------

fn set(key: &[u8], value: &[u8], ttl_ms: u64, mode: SetMode) -> Request {
    Request::Set(Set {
        key: b(key),
        value: b(value),
        ttl_ms,
        mode,
    })
}

fn check_set_outcome(block: &str, opaque: u32, outcome: SetOutcome) {
    let frame = check_response(block, &outcome.to_frame(opaque));
    assert_eq!(SetOutcome::from_frame(&frame), Ok(outcome));
}

#[test]
fn set_upsert() {
    check_request(
        SET_REQUEST,
        3,
        set(KEY, VALUE, THIRTY_MINUTES, SetMode::Upsert),
    );
    check_set_outcome(SET_RESPONSE, 3, SetOutcome::Stored { version: 7 });
}

#[test]
fn set_create_only() {
    check_request(
        SET_CREATE_REQUEST,
        7,
        set(KEY, VALUE, THIRTY_MINUTES, SetMode::CreateOnly),
    );
    check_set_outcome(SET_CREATE_RESPONSE, 7, SetOutcome::Exists);
}

#[test]
fn set_update_only() {
    check_request(
        SET_UPDATE_REQUEST,
        8,
        set(OTHER_KEY, VALUE, THIRTY_MINUTES, SetMode::UpdateOnly),
    );
    check_set_outcome(SET_UPDATE_RESPONSE, 8, SetOutcome::NotFound);
}

#[test]
fn set_if_version() {
    check_request(
        SET_IF_VERSION_REQUEST,
        9,
        set(KEY, NEW_VALUE, THIRTY_MINUTES, SetMode::IfVersion(7)),
    );
    check_set_outcome(
        SET_IF_VERSION_RESPONSE,
        9,
        SetOutcome::Stored { version: 8 },
    );
}

#[test]
fn set_version_mismatch() {
    check_request(
        SET_MISMATCH_REQUEST,
        10,
        set(KEY, NEW_VALUE, THIRTY_MINUTES, SetMode::IfVersion(7)),
    );
    check_set_outcome(
        SET_MISMATCH_RESPONSE,
        10,
        SetOutcome::VersionMismatch { current: 8 },
    );
}

// ---------------------------------------------------------------------------------------------
// 5.5 TOUCH
// ---------------------------------------------------------------------------------------------

#[test]
fn touch() {
    check_request(
        TOUCH_REQUEST,
        11,
        Request::Touch(Touch {
            key: b(KEY),
            ttl_ms: ONE_HOUR,
        }),
    );
    let reply = TouchReply::Touched { version: 8 };
    let frame = check_response(TOUCH_RESPONSE, &reply.to_frame(11));
    assert_eq!(TouchReply::from_frame(&frame), Ok(reply));
}

#[test]
fn touch_miss() {
    check_request(
        TOUCH_MISS_REQUEST,
        12,
        Request::Touch(Touch {
            key: b(OTHER_KEY),
            ttl_ms: ONE_HOUR,
        }),
    );
    let frame = check_response(TOUCH_MISS_RESPONSE, &TouchReply::NotFound.to_frame(12));
    assert_eq!(TouchReply::from_frame(&frame), Ok(TouchReply::NotFound));
}

// ---------------------------------------------------------------------------------------------
// 5.6 DEL
// ---------------------------------------------------------------------------------------------

fn check_del_outcome(block: &str, opaque: u32, outcome: DelOutcome) {
    let frame = check_response(block, &outcome.to_frame(opaque));
    assert_eq!(DelOutcome::from_frame(&frame), Ok(outcome));
}

#[test]
fn del_if_version() {
    check_request(
        DEL_IF_VERSION_REQUEST,
        13,
        Request::Del(Del {
            key: b(KEY),
            if_version: Some(7),
        }),
    );
    check_del_outcome(
        DEL_IF_VERSION_RESPONSE,
        13,
        DelOutcome::VersionMismatch { current: 8 },
    );
}

#[test]
fn del() {
    let request = Request::Del(Del {
        key: b(KEY),
        if_version: None,
    });
    check_request(DEL_REQUEST, 14, request.clone());
    check_del_outcome(DEL_RESPONSE, 14, DelOutcome::Deleted);
    check_request(DEL_MISS_REQUEST, 15, request);
    check_del_outcome(DEL_MISS_RESPONSE, 15, DelOutcome::NotFound);
}

// ---------------------------------------------------------------------------------------------
// 5.7 STATS
// ---------------------------------------------------------------------------------------------

/// The statistics the specification lists, in its order.
const STAT_NAMES: [&str; 42] = [
    "server_version",
    "uptime_ms",
    "connections_current",
    "connections_total",
    "connections_rejected",
    "requests_total",
    "protocol_errors",
    "get_hits",
    "get_misses",
    "set_stored",
    "set_rejected",
    "touch_hits",
    "touch_misses",
    "del_deleted",
    "del_misses",
    "entries",
    "expired_reclaimed",
    "memory_bytes_estimate",
    "memory_used_bytes",
    "memory_limit_bytes",
    "memory_policy",
    "memory_refused",
    "memory_evicted",
    "memory_entries_bytes",
    "memory_table_bytes",
    "memory_aof_bytes",
    "memory_connections_bytes",
    "memory_resident_excess_bytes",
    "aof_enabled",
    "aof_fsync",
    "aof_file_bytes",
    "aof_rewrites",
    "aof_write_errors",
    "aof_failed",
    "auth_failures",
    "auth_throttled",
    "auth_timeouts",
    "connections_rejected_per_address",
    "connections_displaced",
    "frame_timeouts",
    "write_timeouts",
    "replies_too_large",
];

#[test]
fn stats() {
    check_request(STATS_REQUEST, 16, Request::Stats(Stats));
    // Section 5's session: six SETs on an earlier connection, the refused HELLO on another,
    // then this connection's 16 requests.
    let values = [
        "0.1.0",
        "61234",
        "1",
        "3",
        "0",
        "23",
        "1",
        "2",
        "1",
        "8",
        "3",
        "1",
        "1",
        "1",
        "2",
        "6",
        "0",
        "342",
        "17088",
        "6442450944",
        "refuse-new",
        "0",
        "0",
        "432",
        "336",
        "0",
        "16320",
        "0",
        "1",
        "everysec",
        "374",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
    ];
    let reply = StatsReply {
        stats: STAT_NAMES
            .iter()
            .zip(values)
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
    };
    let frame = check_response(STATS_RESPONSE, &reply.to_frame(16));
    let decoded = StatsReply::from_frame(&frame).unwrap();
    assert_eq!(decoded, reply);
    assert_eq!(decoded.get("requests_total"), Some("23"));
    assert_eq!(decoded.get("no_such_stat"), None);
}

// ---------------------------------------------------------------------------------------------
// 5.8 AUTH
// ---------------------------------------------------------------------------------------------

#[test]
fn hello_says_that_auth_is_required() {
    check_request(
        AUTH_HELLO_REQUEST,
        31,
        Request::Hello(Hello {
            min_version: 1,
            max_version: 1,
            client_name: Bytes::new(),
        }),
    );
    let reply = HelloReply {
        version: 1,
        flags: sessiond_proto::command::HELLO_FLAG_AUTH_REQUIRED,
        limits: Limits::default(),
        server: "sessiond/0.1.0".into(),
    };
    let frame = check_response(AUTH_HELLO_RESPONSE, &reply.to_frame(31));
    let decoded = HelloReply::from_frame(&frame).unwrap();
    assert!(decoded.auth_required());
    assert_eq!(decoded, reply);
}

#[test]
fn a_request_before_auth_is_refused_but_not_fatally() {
    check_request(
        AUTH_REQUIRED_REQUEST,
        32,
        Request::Get(Get {
            key: b(KEY),
            touch_ttl_ms: None,
        }),
    );
    let message = "authentication required: send AUTH first";
    let response = ResponseFrame::error(Opcode::Get.into(), 32, Status::AuthRequired, message);
    let frame = check_response(AUTH_REQUIRED_RESPONSE, &response);
    assert!(!Status::AuthRequired.is_fatal());
    assert_server_error(GetReply::from_frame(&frame), Status::AuthRequired, message);
}

#[test]
fn auth_with_a_wrong_password() {
    check_request(
        AUTH_FAILED_REQUEST,
        33,
        Request::Auth(Auth {
            user: "app".into(),
            password: b(b"guess"),
        }),
    );
    let message = "invalid user name or password";
    let response = ResponseFrame::error(Opcode::Auth.into(), 33, Status::AuthFailed, message);
    let frame = check_response(AUTH_FAILED_RESPONSE, &response);
    assert_server_error(AuthReply::from_frame(&frame), Status::AuthFailed, message);
}

#[test]
fn auth() {
    check_request(
        AUTH_REQUEST,
        34,
        Request::Auth(Auth {
            user: "app".into(),
            password: b(b"s3cret"),
        }),
    );
    let reply = AuthReply { role: "app".into() };
    let frame = check_response(AUTH_RESPONSE, &reply.to_frame(34));
    assert_eq!(AuthReply::from_frame(&frame), Ok(reply));
}

#[test]
fn a_role_without_the_permission() {
    check_request(NO_PERMISSION_REQUEST, 35, Request::Stats(Stats));
    let message = "user \"app\" (role app) may not run STATS";
    let response = ResponseFrame::error(Opcode::Stats.into(), 35, Status::NoPermission, message);
    let frame = check_response(NO_PERMISSION_RESPONSE, &response);
    assert_server_error(
        StatsReply::from_frame(&frame),
        Status::NoPermission,
        message,
    );
}

// ---------------------------------------------------------------------------------------------
// 4.4, 7 and 8: unsolicited frames, limits and errors
// ---------------------------------------------------------------------------------------------

#[test]
fn busy_is_unsolicited_and_fatal() {
    // The server sends the frame `unsolicited::busy` builds.
    let frame = check_response(BUSY_RESPONSE, &unsolicited::busy());
    let status = frame.status().unwrap();
    assert!(status.is_error() && status.is_fatal());
    assert!(frame.extras.is_empty());
    assert!(unsolicited::is_unsolicited(&frame));
}

#[test]
fn shutting_down_is_unsolicited_and_fatal() {
    let frame = check_response(SHUTTING_DOWN_RESPONSE, &unsolicited::shutting_down());
    assert_eq!(frame.status(), Some(Status::ShuttingDown));
    assert!(frame.status().unwrap().is_fatal());
    assert!(unsolicited::is_unsolicited(&frame));
}

/// Regression test: the specification said a client recognises unsolicited frames by
/// opcode 0xFF alone, so the answer to a request carrying 0xFF looked like one.
#[test]
fn the_reserved_opcode_is_answered_as_unknown_and_is_not_unsolicited() {
    let built = RequestFrame {
        opcode: unsolicited::UNSOLICITED_OPCODE,
        opaque: 21,
        ..RequestFrame::default()
    };
    assert_eq!(encode_request(&built), hex(RESERVED_OPCODE_REQUEST));
    let frame = request_frame(RESERVED_OPCODE_REQUEST);
    let err = Request::parse(frame, &Limits::default()).unwrap_err();
    assert_eq!(err, CommandError::UnknownOpcode(0xff));
    let response = ResponseFrame::error(0xff, 21, err.status(), err.to_string());
    let response = check_response(RESERVED_OPCODE_RESPONSE, &response);
    assert!(!response.status().unwrap().is_fatal());
    assert!(!unsolicited::is_unsolicited(&response));
}

#[test]
fn invalid_ttl() {
    let frame = request_frame(INVALID_TTL_REQUEST);
    let (opcode, opaque) = (frame.opcode, frame.opaque);
    let err = Request::parse(frame, &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        CommandError::InvalidArgument("SET: ttl must be at least 1 ms".into())
    );
    // The same request, built from its parts, is what the spec shows.
    let mut built = set(KEY, VALUE, THIRTY_MINUTES, SetMode::Upsert).to_frame(17);
    built.extras = Bytes::from(vec![0u8; 16]);
    assert_eq!(encode_request(&built), hex(INVALID_TTL_REQUEST));

    let response = ResponseFrame::error(opcode, opaque, err.status(), err.to_string());
    let response = check_response(INVALID_TTL_RESPONSE, &response);
    assert!(!response.status().unwrap().is_fatal());
    assert_server_error(
        SetOutcome::from_frame(&response),
        Status::InvalidArgument,
        "SET: ttl must be at least 1 ms",
    );
}

#[test]
fn unknown_opcode() {
    let built = RequestFrame {
        opcode: 0x42,
        opaque: 18,
        ..RequestFrame::default()
    };
    assert_eq!(encode_request(&built), hex(UNKNOWN_OPCODE_REQUEST));
    let frame = request_frame(UNKNOWN_OPCODE_REQUEST);
    assert_eq!(frame, built);
    let err = Request::parse(frame, &Limits::default()).unwrap_err();
    assert_eq!(err, CommandError::UnknownOpcode(0x42));

    let response = ResponseFrame::error(0x42, 18, err.status(), err.to_string());
    let response = check_response(UNKNOWN_OPCODE_RESPONSE, &response);
    assert_eq!(response.status(), Some(Status::UnknownOpcode));
    assert_eq!(response.message(), "unknown opcode 0x42");
}

#[test]
fn too_large_value_is_answered_before_its_body_and_skipped() {
    const DECLARED: usize = 2 * 1024 * 1024;
    let prefix = hex(TOO_LARGE_REQUEST);
    // The block is the start of a real frame: header, extras, key, then a 2 MiB value.
    let mut whole = Vec::new();
    let value = vec![b'x'; DECLARED];
    let full = set(KEY, &value, THIRTY_MINUTES, SetMode::Upsert).to_frame(19);
    whole.extend(encode_request(&full));
    assert_eq!(whole[..prefix.len()], prefix[..]);

    let mut codec = ServerCodec::new(Limits::default());
    let mut buf = BytesMut::from(&prefix[..]);
    let rejection = match codec.decode(&mut buf).unwrap() {
        Some(Inbound::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    };
    assert_eq!(
        (rejection.opcode, rejection.opaque),
        (Opcode::Set.into(), 19)
    );
    assert_eq!(rejection.status, Status::TooLarge);
    let response = check_response(TOO_LARGE_RESPONSE, &rejection.to_response());
    assert!(!response.status().unwrap().is_fatal());

    // The rest of the body streams in and is thrown away; a PING behind it still works.
    let mut rest = whole[prefix.len()..].to_vec();
    rest.extend(hex(PING_REQUEST));
    for chunk in rest.chunks(64 * 1024) {
        buf.extend_from_slice(chunk);
        if let Some(inbound) = codec.decode(&mut buf).unwrap() {
            assert_eq!(inbound, Inbound::Request(request_frame(PING_REQUEST)));
            assert!(buf.is_empty());
            return;
        }
        assert!(
            buf.capacity() <= 256 * 1024,
            "the discarded body was buffered"
        );
    }
    panic!("the PING after the oversized frame was never decoded");
}

#[test]
fn bad_magic() {
    let bytes = hex(BAD_MAGIC_REQUEST);
    assert_eq!(bytes, b"GET / HTTP/1.1\r\n");
    let mut buf = BytesMut::from(&bytes[..]);
    let err = ServerCodec::new(Limits::default())
        .decode(&mut buf)
        .unwrap_err();
    assert!(matches!(
        err,
        FrameError::BadMagic {
            found: 0x47,
            expected: 0xb5,
            ..
        }
    ));
    let response = ResponseFrame::error(0xff, 0, Status::ProtocolError, err.to_string());
    let response = check_response(BAD_MAGIC_RESPONSE, &response);
    assert!(response.status().unwrap().is_fatal());
}

#[test]
fn unsupported_header_version() {
    let mut buf = BytesMut::from(&hex(BAD_VERSION_REQUEST)[..]);
    let err = ServerCodec::new(Limits::default())
        .decode(&mut buf)
        .unwrap_err();
    let FrameError::UnsupportedVersion {
        found,
        opcode,
        opaque,
    } = err
    else {
        panic!("expected UnsupportedVersion, got {err:?}");
    };
    assert_eq!((found, opcode, opaque), (2, Opcode::Ping.into(), 20));
    let response =
        ResponseFrame::error(opcode, opaque, Status::UnsupportedVersion, err.to_string());
    let response = check_response(BAD_VERSION_RESPONSE, &response);
    assert!(response.status().unwrap().is_fatal());
}

// ---------------------------------------------------------------------------------------------
// 5.10 to 5.13: the session commands
// ---------------------------------------------------------------------------------------------

const TWELVE_HOURS: u64 = 12 * ONE_HOUR;
const OWNER: &[u8] = b"u7";

fn set_session(
    key: &[u8],
    value: &[u8],
    owner: Option<&[u8]>,
    limit: Option<OwnerLimit>,
) -> Request {
    Request::SetSession(SetSession {
        key: b(key),
        value: b(value),
        ttl_ms: THIRTY_MINUTES,
        mode: SetMode::CreateOnly,
        owner: owner.map(b),
        lifetime_ms: Some(TWELVE_HOURS),
        owner_limit: limit,
    })
}

fn limit_of_one(policy: LimitPolicy) -> Option<OwnerLimit> {
    Some(OwnerLimit { max: 1, policy })
}

fn check_write_outcome(block: &str, opcode: Opcode, opaque: u32, outcome: SessionWriteOutcome) {
    let frame = check_response(block, &outcome.to_frame(opcode, opaque));
    assert_eq!(SessionWriteOutcome::from_frame(&frame, opcode), Ok(outcome));
}

#[test]
fn set_session_anonymous_with_a_lifetime() {
    check_request(
        SET_SESSION_REQUEST,
        64,
        set_session(b"s:50", b"{}", None, None),
    );
    check_write_outcome(
        SET_SESSION_RESPONSE,
        Opcode::SetSession,
        64,
        SessionWriteOutcome::Stored {
            version: 9,
            ended: 0,
        },
    );
}

#[test]
fn set_session_refused_by_the_owner_limit() {
    check_request(
        SET_SESSION_LIMIT_REQUEST,
        66,
        set_session(
            b"s:52",
            VALUE,
            Some(OWNER),
            limit_of_one(LimitPolicy::Refuse),
        ),
    );
    check_write_outcome(
        SET_SESSION_LIMIT_RESPONSE,
        Opcode::SetSession,
        66,
        SessionWriteOutcome::OwnerLimit,
    );
}

#[test]
fn set_session_ending_the_least_recently_used() {
    check_request(
        SET_SESSION_END_LRU_REQUEST,
        67,
        set_session(
            b"s:52",
            VALUE,
            Some(OWNER),
            limit_of_one(LimitPolicy::EndLeastRecentlyUsed),
        ),
    );
    check_write_outcome(
        SET_SESSION_END_LRU_RESPONSE,
        Opcode::SetSession,
        67,
        SessionWriteOutcome::Stored {
            version: 11,
            ended: 1,
        },
    );
}

#[test]
fn scan() {
    check_request(
        SCAN_REQUEST,
        71,
        Request::Scan(Scan {
            cursor: 0,
            max_entries: 0,
        }),
    );
    let created_ms = 1_767_225_600_000;
    let reply = ScanReply {
        next_cursor: 0,
        entries: vec![ScanEntry {
            key: b(b"s:52"),
            owner: Some(b(OWNER)),
            value: b(b"hi"),
            version: 11,
            ttl_ms: THIRTY_MINUTES,
            created_ms,
            deadline_ms: Some(created_ms + TWELVE_HOURS),
        }],
    };
    let frame = check_response(SCAN_RESPONSE, &reply.to_frame(71));
    assert_eq!(ScanReply::from_frame(&frame), Ok(reply));
}

#[test]
fn list_sessions() {
    check_request(
        LIST_SESSIONS_REQUEST,
        68,
        Request::ListSessions(ListSessions {
            owner: b(OWNER),
            max_sessions: 0,
        }),
    );
    let created_ms = 1_767_225_600_000;
    let list = SessionList {
        total: 1,
        sessions: vec![SessionInfo {
            key: b(b"s:52"),
            version: 11,
            created_ms,
            last_access_ms: created_ms,
            ttl_ms: THIRTY_MINUTES,
            deadline_ms: Some(created_ms + TWELVE_HOURS),
        }],
    };
    let frame = check_response(LIST_SESSIONS_RESPONSE, &list.to_frame(68));
    assert_eq!(SessionList::from_frame(&frame), Ok(list));
}

#[test]
fn end_all() {
    check_request(
        END_ALL_REQUEST,
        69,
        Request::EndAll(EndAll {
            owner: b(OWNER),
            except: None,
        }),
    );
    let reply = EndAllReply { ended: 1 };
    let frame = check_response(END_ALL_RESPONSE, &reply.to_frame(69));
    assert_eq!(EndAllReply::from_frame(&frame), Ok(reply));
}

#[test]
fn rotate_at_login() {
    check_request(
        ROTATE_LOGIN_REQUEST,
        65,
        Request::Rotate(Rotate {
            old_key: b(b"s:50"),
            new_key: b(b"s:51"),
            if_version: Some(9),
            bind: Some(Bind {
                owner: b(OWNER),
                limit: limit_of_one(LimitPolicy::EndLeastRecentlyUsed),
            }),
        }),
    );
    check_write_outcome(
        ROTATE_LOGIN_RESPONSE,
        Opcode::Rotate,
        65,
        SessionWriteOutcome::Stored {
            version: 10,
            ended: 0,
        },
    );
}

#[test]
fn rotate_an_ended_session() {
    check_request(
        ROTATE_ENDED_REQUEST,
        70,
        Request::Rotate(Rotate {
            old_key: b(b"s:51"),
            new_key: b(b"s:53"),
            if_version: None,
            bind: None,
        }),
    );
    check_write_outcome(
        ROTATE_ENDED_RESPONSE,
        Opcode::Rotate,
        70,
        SessionWriteOutcome::NotFound,
    );
}

// ---------------------------------------------------------------------------------------------
// 5.9 SLOWLOG
// ---------------------------------------------------------------------------------------------

/// The reply to `request` decodes from `block` to `reply`, which encodes back to `block`.
fn check_slowlog_reply(block: &str, opaque: u32, request: Slowlog, reply: SlowlogReply) {
    let frame = check_response(block, &reply.to_frame(opaque));
    assert_eq!(SlowlogReply::from_frame(&frame, &request), Ok(reply));
}

#[test]
fn slowlog_get() {
    let request = Slowlog::Get { count: 10 };
    check_request(SLOWLOG_GET_REQUEST, 40, Request::Slowlog(request));
    let entry = SlowlogEntry {
        id: 0,
        unix_ms: 1_764_180_000_123,
        duration_us: 12_500,
        key_len: 4,
        command: "SET".into(),
        protocol: "native".into(),
        client: "127.0.0.1:52814".into(),
    };
    check_slowlog_reply(
        SLOWLOG_GET_RESPONSE,
        40,
        request,
        SlowlogReply::Entries(vec![entry]),
    );
}

#[test]
fn slowlog_len() {
    check_request(SLOWLOG_LEN_REQUEST, 41, Request::Slowlog(Slowlog::Len));
    let len = SlowlogLen {
        len: 1,
        max_len: 128,
        threshold_us: Some(10_000),
        recorded_total: 1,
    };
    check_slowlog_reply(
        SLOWLOG_LEN_RESPONSE,
        41,
        Slowlog::Len,
        SlowlogReply::Len(len),
    );
}

#[test]
fn slowlog_reset() {
    check_request(SLOWLOG_RESET_REQUEST, 42, Request::Slowlog(Slowlog::Reset));
    check_slowlog_reply(
        SLOWLOG_RESET_RESPONSE,
        42,
        Slowlog::Reset,
        SlowlogReply::Reset,
    );
}

#[test]
fn slowlog_rules_on_the_extras() {
    let with_extras = |extras: [u8; 8]| RequestFrame {
        extras: Bytes::copy_from_slice(&extras),
        ..Slowlog::Len.to_frame(1)
    };
    for bad in [
        [0x03, 0, 0, 0, 0, 0, 0, 0],    // no operation 3
        [0x01, 0, 0, 0, 0, 0, 0, 0x0a], // LEN with a count
        [0x02, 0, 0, 0, 0, 0, 0, 0x01], // RESET with a count
        [0x00, 0x01, 0, 0, 0, 0, 0, 0], // a reserved byte set
    ] {
        let error = Request::parse(with_extras(bad), &Limits::default()).unwrap_err();
        assert_eq!(error.status(), Status::InvalidArgument, "{bad:02x?}");
    }
    // GET with count 0 is valid, and asks for nothing.
    assert_eq!(
        Request::parse(with_extras([0; 8]), &Limits::default()),
        Ok(Request::Slowlog(Slowlog::Get { count: 0 }))
    );
}
