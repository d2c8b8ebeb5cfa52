//! End-to-end tests of how the real `sessiond` binary treats malformed and hostile input.
//!
//! The contract (`proto/PROTOCOL.md`, section 8): a frame whose header is readable but whose contents are
//! wrong gets an error response and the connection carries on with the next frame; an
//! oversized key or value is skipped without being buffered; bad magic and an unknown header
//! version are answered once and the connection is closed. No input may take the server down
//! or disturb other clients, so every test ends by checking the process is alive and has not
//! logged a panic.
//!
//! Malformed frames are written as raw bytes, since the protocol crate refuses to build them.

use std::time::Duration;

use bytes::Bytes;
use sessiond_proto::command::{GetReply, Request, SetMode};
use sessiond_proto::header::{RequestHeader, HEADER_LEN, RESPONSE_MAGIC};
use sessiond_proto::{Opcode, RequestFrame, ResponseFrame, Status};
use sessiond_tests::{
    assert_error, ping_request, set_request, Conn, Daemon, Deadline, Rng, CONNECTION_OPCODE,
};

const HOUR_MS: u64 = 60 * 60 * 1000;

/// A request header with every field valid and the body empty; tests break one field.
fn header(opcode: Opcode, opaque: u32) -> RequestHeader {
    RequestHeader {
        version: 1,
        opcode: opcode.into(),
        flags: 0,
        opaque,
        key_len: 0,
        extras_len: 0,
        reserved: 0,
        value_len: 0,
    }
}

fn header_bytes(header: &RequestHeader) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    header.write(&mut bytes);
    bytes
}

/// The encoded bytes of a well-formed frame.
fn frame_bytes(frame: &RequestFrame) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(frame.encoded_len());
    frame.encode(&mut bytes);
    bytes
}

/// A `PING` frame's bytes, appended after bad input to show the connection still works.
fn ping_bytes(opaque: u32) -> Vec<u8> {
    frame_bytes(&ping_request(b"after").to_frame(opaque))
}

/// Asserts that `reply` answers the `PING` from [`ping_bytes`].
fn assert_ping_reply(reply: Option<ResponseFrame>, opaque: u32) {
    let reply = reply.expect("the PING after the bad frame was not answered");
    assert_eq!(
        (reply.opcode, reply.opaque, reply.status()),
        (u8::from(Opcode::Ping), opaque, Some(Status::Ok)),
        "{reply:?}"
    );
    assert_eq!(reply.value, &b"after"[..]);
}

/// Asserts that `reply` is an error with `status` addressed to `opcode`/`opaque`.
fn assert_error_for(reply: Option<ResponseFrame>, status: Status, opcode: u8, opaque: u32) {
    let reply = reply.unwrap_or_else(|| panic!("connection closed instead of answering {status}"));
    assert_eq!((reply.opcode, reply.opaque), (opcode, opaque), "{reply:?}");
    assert_error(&reply, status);
}

/// Sends `bad` followed by a `PING` in one write, and checks that `bad` is answered with
/// `status` and the `PING` after it still is.
async fn assert_rejected_then_continues(conn: &mut Conn, bad: &[u8], status: Status) {
    let (_, bad_header) = RequestHeader::read(bad.first_chunk().expect("a whole header"));
    let ping_opaque = bad_header.opaque.wrapping_add(1);
    let mut bytes = bad.to_vec();
    bytes.extend(ping_bytes(ping_opaque));
    conn.send_raw(&bytes).await;
    assert_error_for(
        conn.recv().await,
        status,
        bad_header.opcode,
        bad_header.opaque,
    );
    assert_ping_reply(conn.recv().await, ping_opaque);
}

/// Sends `bad` and checks the connection-ending answer: one error frame addressed to
/// `opcode`/`opaque` with `status`, then the server closes the connection.
async fn assert_fatal(daemon: &Daemon, bad: &[u8], status: Status, opcode: u8, opaque: u32) {
    let mut conn = daemon.connect().await;
    conn.send_raw(bad).await;
    assert_error_for(conn.recv().await, status, opcode, opaque);
    conn.expect_closed().await;
}

/// A numeric stat.
fn stat(stats: &sessiond_proto::command::StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("STATS has no numeric {name}"))
}

#[tokio::test]
async fn bad_magic_gets_protocol_error_then_close() {
    let mut daemon = Daemon::start();
    // Someone pointing an HTTP client at the port: exactly one header's worth of bytes, so
    // the server has nothing unread when it closes.
    let http = b"GET / HTTP/1.1\r\n";
    assert_eq!(http.len(), HEADER_LEN);
    assert_fatal(&daemon, http, Status::ProtocolError, CONNECTION_OPCODE, 0).await;

    // A client sending a response frame as a request.
    let mut bytes = header_bytes(&header(Opcode::Ping, 0x0102_0304));
    bytes[0] = RESPONSE_MAGIC;
    assert_fatal(&daemon, &bytes, Status::ProtocolError, CONNECTION_OPCODE, 0).await;

    // Bad magic after a good frame: the good one is answered first.
    let mut conn = daemon.connect().await;
    let mut bytes = ping_bytes(5);
    bytes.extend_from_slice(&[0u8; HEADER_LEN]);
    conn.send_raw(&bytes).await;
    assert_ping_reply(conn.recv().await, 5);
    assert_error_for(
        conn.recv().await,
        Status::ProtocolError,
        CONNECTION_OPCODE,
        0,
    );
    conn.expect_closed().await;

    assert!(stat(&daemon.stats().await, "protocol_errors") >= 3);
    daemon.assert_running();
}

#[tokio::test]
async fn unsupported_header_version_is_answered_then_closed() {
    let mut daemon = Daemon::start();
    for version in [0, 2, 0xFF] {
        let bad = RequestHeader {
            version,
            ..header(Opcode::Get, 0xDEAD_BEEF)
        };
        assert_fatal(
            &daemon,
            &header_bytes(&bad),
            Status::UnsupportedVersion,
            Opcode::Get.into(),
            0xDEAD_BEEF,
        )
        .await;
    }
    // The opcode is echoed as read, even one that is not defined.
    let bad = RequestHeader {
        version: 9,
        opcode: 0x99,
        ..header(Opcode::Get, 7)
    };
    assert_fatal(
        &daemon,
        &header_bytes(&bad),
        Status::UnsupportedVersion,
        0x99,
        7,
    )
    .await;
    daemon.assert_running();
}

#[tokio::test]
async fn unknown_opcode_is_answered_and_skipped() {
    let mut daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    for opcode in [0x09, 0x42, 0xFE] {
        // With a body, so skipping it has to get the frame's extent right.
        let unknown = RequestFrame {
            opcode,
            flags: 0x5A,
            opaque: 1000 + u32::from(opcode),
            extras: Bytes::from_static(&[1, 2, 3]),
            key: Bytes::from_static(b"some-key"),
            value: Bytes::from_static(b"some value bytes"),
        };
        assert_rejected_then_continues(&mut conn, &frame_bytes(&unknown), Status::UnknownOpcode)
            .await;
    }
    daemon.assert_running();
}

#[tokio::test]
async fn oversized_key_is_rejected_and_skipped() {
    let mut daemon = Daemon::start_with_config("[limits]\nmax_key_bytes = 16\n");
    let mut conn = daemon.connect().await;

    let at_limit = [b'k'; 16];
    conn.put(&at_limit, b"v", HOUR_MS).await;

    let too_long = [b'k'; 17];
    let set = set_request(&too_long, b"value", HOUR_MS, SetMode::Upsert).to_frame(21);
    assert_rejected_then_continues(&mut conn, &frame_bytes(&set), Status::TooLarge).await;
    let get = sessiond_tests::get_request(&too_long).to_frame(31);
    assert_rejected_then_continues(&mut conn, &frame_bytes(&get), Status::TooLarge).await;

    // The largest key the header can declare.
    let huge = vec![b'x'; usize::from(u16::MAX)];
    let get = sessiond_tests::get_request(&huge).to_frame(41);
    assert_rejected_then_continues(&mut conn, &frame_bytes(&get), Status::TooLarge).await;

    assert!(matches!(conn.get(&at_limit).await, GetReply::Hit(_)));
    daemon.assert_running();
}

/// The header, extras and key of a `SET` whose value is declared `value_len` bytes long;
/// the caller streams (some of) the value.
fn set_prefix(opaque: u32, key: &[u8], value_len: u32) -> Vec<u8> {
    let frame = set_request(key, b"", HOUR_MS, SetMode::Upsert).to_frame(opaque);
    let mut bytes = frame_bytes(&frame);
    let declared = RequestHeader {
        value_len,
        ..RequestHeader::read(bytes.first_chunk().expect("a whole header")).1
    };
    bytes.splice(..HEADER_LEN, header_bytes(&declared));
    bytes
}

/// Streams `total` bytes of filler in 64 KiB writes, calling `sample` every 4 MiB.
async fn stream_filler(conn: &mut Conn, total: u64, mut sample: impl FnMut()) {
    let chunk = vec![0xAB; 64 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = chunk.len().min((total - sent) as usize);
        conn.send_raw(&chunk[..n]).await;
        sent += n as u64;
        if sent.is_multiple_of(4 << 20) {
            sample();
        }
    }
}

/// How much the daemon's resident memory may grow while it is sent an oversized value.
/// Anything that buffered the value would grow by the tens of MiB streamed.
const RSS_GROWTH_LIMIT: u64 = 24 << 20;

#[tokio::test]
async fn oversized_value_is_skipped_without_buffering() {
    const DECLARED: u32 = 100 << 20;
    let mut daemon = Daemon::start_with_config("[limits]\nmax_value_bytes = 1024\n");
    let mut conn = daemon.connect().await;
    conn.put(b"k", &[b'v'; 1024], HOUR_MS).await;
    let baseline = daemon.rss_bytes();

    conn.send_raw(&set_prefix(51, b"k", DECLARED)).await;
    let mut peak = baseline;
    stream_filler(&mut conn, u64::from(DECLARED), || {
        peak = peak.max(daemon.rss_bytes());
    })
    .await;
    conn.send_raw(&ping_bytes(52)).await;

    assert_error_for(conn.recv().await, Status::TooLarge, Opcode::Set.into(), 51);
    assert_ping_reply(conn.recv().await, 52);
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_LIMIT,
        "RSS grew from {baseline} to {peak} bytes while a {DECLARED} byte value was skipped"
    );
    // The rejected write did not replace the stored value.
    match conn.get(b"k").await {
        GetReply::Hit(entry) => assert_eq!(entry.value, vec![b'v'; 1024]),
        GetReply::Miss => panic!("the stored value disappeared"),
    }
    daemon.assert_running();
}

#[tokio::test]
async fn huge_declared_value_is_rejected_at_once_without_allocating() {
    let mut daemon = Daemon::start_with_config("[limits]\nmax_value_bytes = 1024\n");
    let mut bystander = daemon.connect().await;
    bystander.ping(b"").await;
    let baseline = daemon.rss_bytes();

    let mut conn = daemon.connect().await;
    conn.send_raw(&set_prefix(61, b"k", u32::MAX - 1)).await;
    let mut peak = baseline;
    stream_filler(&mut conn, 16 << 20, || peak = peak.max(daemon.rss_bytes())).await;
    peak = peak.max(daemon.rss_bytes());
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_LIMIT,
        "RSS grew from {baseline} to {peak} bytes after a 4 GiB value was declared"
    );
    // The rejection needs only the header, so it is not held back until 4 GiB have passed.
    assert_error_for(conn.recv().await, Status::TooLarge, Opcode::Set.into(), 61);

    bystander.put(b"other", b"v", HOUR_MS).await;
    drop(conn);
    bystander.ping(b"").await;
    daemon.assert_running();
}

#[tokio::test]
async fn nonzero_reserved_byte_is_invalid() {
    let mut daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    for reserved in [1, 0x80, 0xFF] {
        let bad = RequestHeader {
            reserved,
            ..header(Opcode::Ping, 70 + u32::from(reserved))
        };
        assert_rejected_then_continues(&mut conn, &header_bytes(&bad), Status::InvalidArgument)
            .await;
    }
    // With a body, which must be consumed.
    let mut bytes = frame_bytes(&set_request(b"k", b"v", HOUR_MS, SetMode::Upsert).to_frame(80));
    bytes[11] = 1;
    assert_rejected_then_continues(&mut conn, &bytes, Status::InvalidArgument).await;
    assert_eq!(
        conn.get(b"k").await,
        GetReply::Miss,
        "a rejected SET was applied"
    );
    daemon.assert_running();
}

/// Frames whose header is fine but whose flags, extras, key or value do not fit the opcode.
fn malformed_requests() -> Vec<(&'static str, RequestFrame)> {
    let frame = |opcode: Opcode| RequestFrame::new(opcode, 0);
    let key = Bytes::from_static(b"k");
    let set = set_request(b"k", b"v", HOUR_MS, SetMode::Upsert).to_frame(0);
    vec![
        (
            "PING with an undefined flag",
            RequestFrame {
                flags: 0x80,
                ..frame(Opcode::Ping)
            },
        ),
        (
            "PING with extras",
            RequestFrame {
                extras: Bytes::from_static(&[0; 8]),
                ..frame(Opcode::Ping)
            },
        ),
        (
            "PING with a key",
            RequestFrame {
                key: key.clone(),
                ..frame(Opcode::Ping)
            },
        ),
        (
            "GET with an undefined flag",
            RequestFrame {
                flags: 0x02,
                key: key.clone(),
                ..frame(Opcode::Get)
            },
        ),
        (
            "GET with 3 bytes of extras",
            RequestFrame {
                extras: Bytes::from_static(&[0; 3]),
                key: key.clone(),
                ..frame(Opcode::Get)
            },
        ),
        (
            "GET TOUCH without a ttl",
            RequestFrame {
                flags: 0x01,
                key: key.clone(),
                ..frame(Opcode::Get)
            },
        ),
        (
            "GET extras without TOUCH",
            RequestFrame {
                extras: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9]),
                key: key.clone(),
                ..frame(Opcode::Get)
            },
        ),
        ("GET without a key", frame(Opcode::Get)),
        (
            "GET with a value",
            RequestFrame {
                key: key.clone(),
                value: Bytes::from_static(b"v"),
                ..frame(Opcode::Get)
            },
        ),
        (
            "SET with 8 bytes of extras",
            RequestFrame {
                extras: set.extras.slice(..8),
                ..set.clone()
            },
        ),
        (
            "SET without extras",
            RequestFrame {
                extras: Bytes::new(),
                ..set.clone()
            },
        ),
        (
            "SET with an undefined flag",
            RequestFrame {
                flags: 0x04,
                ..set.clone()
            },
        ),
        ("SET upsert with an expected version", {
            let mut extras = set.extras.to_vec();
            extras[15] = 1;
            RequestFrame {
                extras: extras.into(),
                ..set.clone()
            }
        }),
        (
            "SET without a key",
            RequestFrame {
                key: Bytes::new(),
                ..set.clone()
            },
        ),
        (
            "TOUCH without extras",
            RequestFrame {
                key: key.clone(),
                ..frame(Opcode::Touch)
            },
        ),
        (
            "DEL with extras but no IF_VERSION",
            RequestFrame {
                extras: Bytes::from_static(&[0; 8]),
                key: key.clone(),
                ..frame(Opcode::Del)
            },
        ),
        (
            "DEL IF_VERSION without extras",
            RequestFrame {
                flags: 0x01,
                key: key.clone(),
                ..frame(Opcode::Del)
            },
        ),
        (
            "STATS with a key",
            RequestFrame {
                key: key.clone(),
                ..frame(Opcode::Stats)
            },
        ),
        (
            "HELLO with 1 byte of extras",
            RequestFrame {
                extras: Bytes::from_static(&[1]),
                ..frame(Opcode::Hello)
            },
        ),
        (
            "HELLO with min above max",
            RequestFrame {
                extras: Bytes::from_static(&[2, 1]),
                ..frame(Opcode::Hello)
            },
        ),
        (
            "PING payload over 1024 bytes",
            RequestFrame {
                value: Bytes::from(vec![0; 1025]),
                ..frame(Opcode::Ping)
            },
        ),
    ]
}

#[tokio::test]
async fn malformed_arguments_are_invalid_and_the_pipeline_continues() {
    let mut daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    let cases = malformed_requests();
    // All of them pipelined back to back, each followed by a PING.
    let mut frames = Vec::new();
    for (i, (_, frame)) in cases.iter().enumerate() {
        let opaque = 100 + 2 * i as u32;
        frames.push(RequestFrame {
            opaque,
            ..frame.clone()
        });
        frames.push(ping_request(b"after").to_frame(opaque + 1));
    }
    let replies = conn.pipeline(frames.clone()).await;
    for (i, (what, _)) in cases.iter().enumerate() {
        let (bad, ping) = (&replies[2 * i], &replies[2 * i + 1]);
        assert_eq!(
            (bad.opcode, bad.opaque),
            (frames[2 * i].opcode, frames[2 * i].opaque),
            "{what}: reply out of order"
        );
        assert_eq!(
            bad.status(),
            Some(Status::InvalidArgument),
            "{what}: {bad:?}"
        );
        assert_error(bad, Status::InvalidArgument);
        assert_ping_reply(Some(ping.clone()), frames[2 * i + 1].opaque);
    }
    assert_eq!(
        conn.get(b"k").await,
        GetReply::Miss,
        "a rejected SET was applied"
    );
    daemon.assert_running();
}

#[tokio::test]
async fn truncated_frames_from_departing_clients_disturb_no_one() {
    let mut daemon = Daemon::start();
    let mut bystander = daemon.connect().await;
    bystander.put(b"k", b"v", HOUR_MS).await;

    let set = frame_bytes(&set_request(b"k", b"other", HOUR_MS, SetMode::Upsert).to_frame(1));
    // Cut inside the header, inside the extras, and inside the value.
    for cut in [7, HEADER_LEN + 5, set.len() - 1] {
        let mut conn = daemon.connect().await;
        conn.send_raw(&set[..cut]).await;
        drop(conn);
        bystander.ping(b"").await;
    }
    // A declared value far longer than what is sent before the client leaves.
    let mut conn = daemon.connect().await;
    conn.send_raw(&set_prefix(2, b"k", 1000)).await;
    conn.send_raw(&[0; 10]).await;
    drop(conn);

    match bystander.get(b"k").await {
        GetReply::Hit(entry) => assert_eq!(entry.value, &b"v"[..], "a truncated SET was applied"),
        GetReply::Miss => panic!("the bystander's entry disappeared"),
    }
    let deadline = Deadline::after(
        Duration::from_secs(5),
        "the departed connections are closed",
    );
    while stat(&bystander.stats().await, "connections_current") != 1 {
        deadline.tick().await;
    }
    daemon.assert_running();
}

/// Bytes of a random kind of garbage.
fn garbage(rng: &mut Rng, kind: u64) -> Vec<u8> {
    match kind {
        // Noise that does not start with the request magic.
        0 => {
            let mut bytes = rng.bytes(64 * 1024);
            bytes[0] = 0x00;
            bytes
        }
        // A header with valid magic and version but random everything else (including
        // enormous lengths), then noise.
        _ => {
            let mut bytes = rng.bytes(HEADER_LEN);
            bytes.extend(rng.bytes_below(32 * 1024));
            bytes[0] = sessiond_proto::header::REQUEST_MAGIC;
            bytes[1] = 1;
            bytes
        }
    }
}

/// Frames whose header is valid and whose body is fully sent, but whose opcode, flags,
/// extras, key and value are random: each must get exactly one reply, in order.
fn random_frames(rng: &mut Rng, count: usize) -> Vec<RequestFrame> {
    (0..count)
        .map(|i| {
            // No HELLO: one without a common version ends the connection by design.
            let opcode = match rng.below(10) {
                0 => 0xFF,
                n => n as u8,
            };
            let lens = [0, 1, 2, 3, 8, 16, 17];
            let extras_len = lens[rng.below(lens.len() as u64) as usize];
            RequestFrame {
                opcode,
                flags: rng.below(8) as u8,
                opaque: i as u32,
                extras: rng.bytes(extras_len).into(),
                key: rng.bytes_below(40).into(),
                value: rng.bytes_below(300).into(),
            }
        })
        .collect()
}

/// One hostile client: sends garbage of `kind`, then checks that whatever comes back is
/// well-formed and that the server ends the connection.
async fn hostile_client(daemon_addr: std::net::SocketAddr, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut conn = Conn::connect(daemon_addr).await;
    match seed % 3 {
        2 => {
            let frames = random_frames(&mut rng, 500);
            let replies = conn.pipeline(frames.clone()).await;
            for (frame, reply) in frames.iter().zip(&replies) {
                assert_eq!(
                    (reply.opcode, reply.opaque),
                    (frame.opcode, frame.opaque),
                    "seed {seed}"
                );
                let status = reply
                    .status()
                    .unwrap_or_else(|| panic!("seed {seed}: unknown status in {reply:?}"));
                assert!(!status.is_fatal(), "seed {seed}: {status} for {frame:?}");
            }
        }
        kind => {
            // The server may close mid-write; only the replies matter.
            conn.send_raw_lossy(&garbage(&mut rng, kind)).await;
            // A frame may be left incomplete: the client leaving must end it.
            conn.close_write().await;
            while conn.recv().await.is_some() {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_garbage_does_not_disturb_a_well_behaved_client() {
    let mut daemon = Daemon::start();
    let addr = daemon.addr();
    let mut hostile = tokio::task::JoinSet::new();
    for seed in 1..=24u64 {
        hostile.spawn(hostile_client(addr, seed * 0x9E37_79B9));
    }
    let mut good = daemon.connect().await;
    for i in 0..300u32 {
        let key = format!("good:{i}");
        let value = format!("value {i}");
        let version = good.put(key.as_bytes(), value.as_bytes(), HOUR_MS).await;
        match good.get(key.as_bytes()).await {
            GetReply::Hit(entry) => {
                assert_eq!(
                    (entry.value.as_ref(), entry.version),
                    (value.as_bytes(), version)
                );
            }
            GetReply::Miss => panic!("{key} vanished"),
        }
    }
    while let Some(result) = hostile.join_next().await {
        result.expect("hostile client task");
    }
    good.ping(b"").await;
    daemon.assert_running();
}

#[tokio::test]
async fn hello_with_no_common_version_closes_after_earlier_requests() {
    // The refusal is fatal, but requests pipelined before it are still answered.
    let mut daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    let mut bytes = ping_bytes(1);
    let hello = Request::Hello(sessiond_proto::command::Hello {
        min_version: 5,
        max_version: 9,
        client_name: Bytes::new(),
    });
    bytes.extend(frame_bytes(&hello.to_frame(2)));
    conn.send_raw(&bytes).await;
    assert_ping_reply(conn.recv().await, 1);
    assert_error_for(
        conn.recv().await,
        Status::UnsupportedVersion,
        Opcode::Hello.into(),
        2,
    );
    conn.expect_closed().await;
    daemon.assert_running();
}
