//! End-to-end tests of the native protocol's commands against the real `sessiond` binary:
//! negotiation, reads, every write mode, versions, TTLs and expiry, `STATS`, and deep
//! pipelining across several connections.
//!
//! The expected statuses and versions are the contract in `proto/PROTOCOL.md` and the
//! protocol crate; every reply is checked to echo its request's opcode and opaque.

use std::time::Duration;

use bytes::Bytes;
use sessiond_proto::command::{
    DelOutcome, GetReply, HelloReply, Request, SetMode, SetOutcome, Touch, TouchReply,
};
use sessiond_proto::{Limits, Opcode, RequestFrame, Status};
use sessiond_tests::{
    assert_error, get_request, set_request, Conn, Daemon, Deadline, CONNECTION_OPCODE,
};

/// A TTL long enough that nothing expires during a test.
const HOUR_MS: u64 = 60 * 60 * 1000;

/// The names `STATS` must report, in this order (`proto/PROTOCOL.md`, 5.7).
const STATS_NAMES: [&str; 18] = [
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
];

/// A started daemon and one connection to it.
async fn daemon_and_conn(config: &str) -> (Daemon, Conn) {
    let daemon = Daemon::start_with_config(config);
    let conn = daemon.connect().await;
    (daemon, conn)
}

/// The entry a `GET` must find.
fn hit(reply: GetReply) -> sessiond_proto::command::Entry {
    match reply {
        GetReply::Hit(entry) => entry,
        GetReply::Miss => panic!("expected a hit, got a miss"),
    }
}

fn stored(outcome: SetOutcome) -> u64 {
    match outcome {
        SetOutcome::Stored { version } => version,
        other => panic!("expected the write to be stored, got {other:?}"),
    }
}

/// A numeric stat.
fn stat(stats: &sessiond_proto::command::StatsReply, name: &str) -> u64 {
    let value = stats
        .get(name)
        .unwrap_or_else(|| panic!("STATS has no {name}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("STATS {name} is not a number: {value:?}"))
}

/// Asserts that the connection still answers requests after an error.
async fn assert_usable(conn: &mut Conn) {
    assert_eq!(conn.ping(b"still here").await.payload, &b"still here"[..]);
}

#[tokio::test]
async fn hello_reports_version_server_and_configured_limits() {
    let config = "[limits]\nmax_key_bytes = 200\nmax_value_bytes = 5000\nmax_ttl = \"1h\"\n";
    let (mut daemon, mut conn) = daemon_and_conn(config).await;

    // A range that includes 1 and more is narrowed to 1, the only version there is.
    for (min, max) in [(1, 1), (1, 7)] {
        let reply = HelloReply::from_frame(&conn.hello(min, max).await)
            .unwrap_or_else(|e| panic!("HELLO {min}..={max}: {e}"));
        assert_eq!(
            reply,
            HelloReply {
                version: 1,
                limits: Limits {
                    max_key_len: 200,
                    max_value_len: 5000,
                    max_ttl_ms: HOUR_MS,
                },
                server: "sessiond/0.1.0".into(),
            }
        );
    }
    assert_usable(&mut conn).await;
    daemon.assert_running();
}

#[tokio::test]
async fn hello_reports_default_limits_without_config() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let reply = HelloReply::from_frame(&conn.hello(1, 1).await).expect("HELLO");
    assert_eq!(reply.limits, Limits::default());
}

#[tokio::test]
async fn hello_is_optional() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    conn.put(b"k", b"v", HOUR_MS).await;
    assert_eq!(hit(conn.get(b"k").await).value, &b"v"[..]);
}

#[tokio::test]
async fn hello_without_a_common_version_is_refused_and_closes() {
    let (mut daemon, mut conn) = daemon_and_conn("").await;
    let reply = conn.hello(2, 3).await;
    assert_error(&reply, Status::UnsupportedVersion);
    conn.expect_closed().await;
    daemon.assert_running();
}

#[tokio::test]
async fn ping_echoes_its_payload() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    assert!(conn.ping(b"").await.payload.is_empty());
    assert_eq!(conn.ping(b"hello").await.payload, &b"hello"[..]);
    let max = vec![0xA5; Limits::MAX_AUX_VALUE_LEN as usize];
    assert_eq!(conn.ping(&max).await.payload, max);
}

#[tokio::test]
async fn get_misses_then_hits_with_value_version_and_ttl() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    assert_eq!(conn.get(b"session:1").await, GetReply::Miss);

    let version = conn.put(b"session:1", b"{\"user\":42}", 60_000).await;
    let entry = hit(conn.get(b"session:1").await);
    assert_eq!(entry.value, &b"{\"user\":42}"[..]);
    assert_eq!(entry.version, version);
    // The bound is the TTL that was set; the lower end only allows for a slow machine.
    assert!(
        (30_000..=60_000).contains(&entry.ttl_ms),
        "ttl {} not in 30000..=60000",
        entry.ttl_ms
    );

    // An empty value is a value.
    let version = conn.put(b"empty", b"", 60_000).await;
    let entry = hit(conn.get(b"empty").await);
    assert!(entry.value.is_empty());
    assert_eq!(entry.version, version);
}

#[tokio::test]
async fn get_with_touch_extends_ttl_and_keeps_version() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let version = conn.put(b"k", b"v", 10_000).await;

    let entry = hit(conn.get_touch(b"k", HOUR_MS).await);
    assert_eq!((entry.value.as_ref(), entry.version), (&b"v"[..], version));
    assert!(
        entry.ttl_ms > 10_000,
        "touch did not extend the ttl: {}",
        entry.ttl_ms
    );
    assert!(entry.ttl_ms <= HOUR_MS);

    // The extension is stored, not just reported.
    let entry = hit(conn.get(b"k").await);
    assert_eq!(entry.version, version);
    assert!(
        entry.ttl_ms > 10_000,
        "touch was not kept: {}",
        entry.ttl_ms
    );

    // Touch may also shorten.
    let entry = hit(conn.get_touch(b"k", 5_000).await);
    assert!(
        entry.ttl_ms <= 5_000,
        "ttl {} after touching to 5000",
        entry.ttl_ms
    );

    // An if-version write with the version read by a touching GET still succeeds.
    let next = stored(
        conn.set(b"k", b"w", HOUR_MS, SetMode::IfVersion(version))
            .await,
    );
    assert!(next > version);

    assert_eq!(conn.get_touch(b"missing", HOUR_MS).await, GetReply::Miss);
}

#[tokio::test]
async fn upsert_creates_and_overwrites() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let first = stored(conn.set(b"k", b"one", HOUR_MS, SetMode::Upsert).await);
    let second = stored(conn.set(b"k", b"two", HOUR_MS, SetMode::Upsert).await);
    assert!(second > first);
    let entry = hit(conn.get(b"k").await);
    assert_eq!((entry.value.as_ref(), entry.version), (&b"two"[..], second));
}

#[tokio::test]
async fn create_only_stores_new_keys_and_refuses_existing_ones() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let version = stored(conn.set(b"k", b"one", HOUR_MS, SetMode::CreateOnly).await);
    assert_eq!(
        conn.set(b"k", b"two", HOUR_MS, SetMode::CreateOnly).await,
        SetOutcome::Exists
    );
    let entry = hit(conn.get(b"k").await);
    assert_eq!(
        (entry.value.as_ref(), entry.version),
        (&b"one"[..], version)
    );
}

#[tokio::test]
async fn update_only_refuses_missing_keys_and_updates_existing_ones() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    assert_eq!(
        conn.set(b"k", b"one", HOUR_MS, SetMode::UpdateOnly).await,
        SetOutcome::NotFound
    );
    assert_eq!(
        conn.get(b"k").await,
        GetReply::Miss,
        "update-only created the key"
    );

    let first = conn.put(b"k", b"one", HOUR_MS).await;
    let second = stored(conn.set(b"k", b"two", HOUR_MS, SetMode::UpdateOnly).await);
    assert!(second > first);
    let entry = hit(conn.get(b"k").await);
    assert_eq!((entry.value.as_ref(), entry.version), (&b"two"[..], second));
}

#[tokio::test]
async fn if_version_writes_only_over_the_expected_version() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    assert_eq!(
        conn.set(b"k", b"x", HOUR_MS, SetMode::IfVersion(1)).await,
        SetOutcome::NotFound
    );
    assert_eq!(
        conn.get(b"k").await,
        GetReply::Miss,
        "if-version created the key"
    );

    let first = conn.put(b"k", b"one", HOUR_MS).await;
    assert_eq!(
        conn.set(b"k", b"stale", HOUR_MS, SetMode::IfVersion(first + 1000))
            .await,
        SetOutcome::VersionMismatch { current: first }
    );
    let second = stored(
        conn.set(b"k", b"two", HOUR_MS, SetMode::IfVersion(first))
            .await,
    );
    assert!(second > first);

    // The version that just won is now stale.
    assert_eq!(
        conn.set(b"k", b"late", HOUR_MS, SetMode::IfVersion(first))
            .await,
        SetOutcome::VersionMismatch { current: second }
    );
    let entry = hit(conn.get(b"k").await);
    assert_eq!((entry.value.as_ref(), entry.version), (&b"two"[..], second));
}

#[tokio::test]
async fn versions_start_at_one_and_strictly_increase() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let mut versions = vec![conn.put(b"a", b"1", HOUR_MS).await];
    assert_eq!(versions[0], 1, "the first version on a fresh server");
    versions.push(conn.put(b"b", b"1", HOUR_MS).await);
    versions.push(conn.put(b"a", b"2", HOUR_MS).await);
    versions.push(conn.put(b"c", b"1", HOUR_MS).await);

    // Delete and recreate: the new entry gets a fresh, larger version, whatever the mode.
    assert_eq!(conn.del(b"a", None).await, DelOutcome::Deleted);
    versions.push(stored(
        conn.set(b"a", b"3", HOUR_MS, SetMode::CreateOnly).await,
    ));
    assert_eq!(conn.del(b"a", None).await, DelOutcome::Deleted);
    versions.push(conn.put(b"a", b"4", HOUR_MS).await);

    // Touches do not consume versions or change them.
    let before = versions.last().copied().unwrap();
    assert_eq!(
        conn.touch(b"a", HOUR_MS).await,
        TouchReply::Touched { version: before }
    );
    versions.push(conn.put(b"d", b"1", HOUR_MS).await);

    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "versions are not strictly increasing: {versions:?}"
    );
    assert_eq!(hit(conn.get(b"a").await).version, before);
}

#[tokio::test]
async fn versions_increase_across_connections() {
    let daemon = Daemon::start();
    let mut a = daemon.connect().await;
    let mut b = daemon.connect().await;
    let mut last = 0;
    for i in 0..20u32 {
        let conn = if i % 2 == 0 { &mut a } else { &mut b };
        let version = conn
            .put(format!("k{}", i % 3).as_bytes(), b"v", HOUR_MS)
            .await;
        assert!(version > last, "version {version} after {last}");
        last = version;
    }
}

#[tokio::test]
async fn touch_sets_ttl_on_hits_and_reports_misses() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    assert_eq!(conn.touch(b"missing", HOUR_MS).await, TouchReply::NotFound);
    assert_eq!(
        conn.get(b"missing").await,
        GetReply::Miss,
        "touch created the key"
    );

    let version = conn.put(b"k", b"v", 10_000).await;
    assert_eq!(
        conn.touch(b"k", HOUR_MS).await,
        TouchReply::Touched { version }
    );
    let entry = hit(conn.get(b"k").await);
    assert_eq!((entry.value.as_ref(), entry.version), (&b"v"[..], version));
    assert!(
        entry.ttl_ms > 10_000,
        "touch did not extend the ttl: {}",
        entry.ttl_ms
    );
}

#[tokio::test]
async fn del_removes_keys() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    assert_eq!(conn.del(b"k", None).await, DelOutcome::NotFound);
    conn.put(b"k", b"v", HOUR_MS).await;
    assert_eq!(conn.del(b"k", None).await, DelOutcome::Deleted);
    assert_eq!(conn.get(b"k").await, GetReply::Miss);
    assert_eq!(conn.del(b"k", None).await, DelOutcome::NotFound);
}

#[tokio::test]
async fn del_if_version_removes_only_the_expected_version() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    assert_eq!(conn.del(b"k", Some(1)).await, DelOutcome::NotFound);

    let version = conn.put(b"k", b"v", HOUR_MS).await;
    assert_eq!(
        conn.del(b"k", Some(version + 1)).await,
        DelOutcome::VersionMismatch { current: version }
    );
    assert_eq!(
        hit(conn.get(b"k").await).version,
        version,
        "mismatched DEL removed it"
    );
    assert_eq!(conn.del(b"k", Some(version)).await, DelOutcome::Deleted);
    assert_eq!(conn.get(b"k").await, GetReply::Miss);
}

#[tokio::test]
async fn expired_entries_are_never_returned_and_are_reclaimed() {
    let (mut daemon, mut conn) = daemon_and_conn("[expiry]\nsweep_interval = \"20ms\"\n").await;
    let before = conn.stats().await;
    assert_eq!(stat(&before, "entries"), 0);

    conn.put(b"keeper", b"v", HOUR_MS).await;
    conn.put(b"read", b"v", 150).await;
    // Never read: only the background sweep can remove it.
    conn.put(b"unread", b"v", 150).await;

    let deadline = Deadline::after(Duration::from_secs(5), "a 150 ms entry expires");
    while conn.get(b"read").await != GetReply::Miss {
        deadline.tick().await;
    }
    // Once gone, it stays gone, and cannot be touched back to life.
    assert_eq!(conn.touch(b"read", HOUR_MS).await, TouchReply::NotFound);
    assert_eq!(conn.get(b"read").await, GetReply::Miss);
    assert_eq!(
        conn.set(b"read", b"w", HOUR_MS, SetMode::UpdateOnly).await,
        SetOutcome::NotFound
    );

    let reclaimed_before = stat(&before, "expired_reclaimed");
    let deadline = Deadline::after(Duration::from_secs(3), "the sweep reclaims expired entries");
    loop {
        let stats = conn.stats().await;
        if stat(&stats, "entries") == 1 && stat(&stats, "expired_reclaimed") > reclaimed_before {
            break;
        }
        deadline.tick().await;
    }
    assert!(matches!(conn.get(b"keeper").await, GetReply::Hit(_)));
    daemon.assert_running();
}

#[tokio::test]
async fn stats_lists_every_counter_in_order() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let reply = conn.exchange(&Request::Stats(Default::default())).await;
    let text = std::str::from_utf8(&reply.value).expect("STATS is UTF-8");
    assert!(
        text.ends_with('\n'),
        "every STATS line ends in a newline: {text:?}"
    );
    let stats = sessiond_proto::command::StatsReply::from_frame(&reply).expect("STATS");

    // Clients ignore names they do not know, so only the order of the known ones is fixed.
    let names: Vec<&str> = stats
        .stats
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| STATS_NAMES.contains(n))
        .collect();
    assert_eq!(
        names, STATS_NAMES,
        "STATS names or order; full text:\n{text}"
    );
    assert!(!stats.get("server_version").unwrap().is_empty());
    for name in &STATS_NAMES[1..] {
        stat(&stats, name);
    }
}

#[tokio::test]
async fn stats_counts_operations() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    conn.get(b"k").await; // miss
    conn.put(b"k", b"v", HOUR_MS).await;
    conn.get(b"k").await; // hit
    conn.get(b"k").await; // hit
    conn.set(b"k", b"v", HOUR_MS, SetMode::CreateOnly).await; // rejected: exists
    conn.touch(b"k", HOUR_MS).await; // hit
    conn.touch(b"nope", HOUR_MS).await; // miss
    conn.del(b"k", None).await; // deleted
    conn.del(b"k", None).await; // miss
    conn.put(b"k2", b"v", HOUR_MS).await;

    let stats = conn.stats().await;
    let expected = [
        ("connections_current", 1),
        ("get_hits", 2),
        ("get_misses", 1),
        ("set_stored", 2),
        ("set_rejected", 1),
        ("touch_hits", 1),
        ("touch_misses", 1),
        ("del_deleted", 1),
        ("del_misses", 1),
        ("entries", 1),
    ];
    for (name, value) in expected {
        assert_eq!(stat(&stats, name), value, "STATS {name}");
    }
    assert!(stat(&stats, "connections_total") >= 1);
    // Ten requests before STATS; whether STATS counts itself is the server's choice.
    assert!(stat(&stats, "requests_total") >= 10);
    assert!(stat(&stats, "memory_bytes_estimate") > 0);
}

/// The requests one pipelining connection sends: for each key a SET then a GET, so every GET
/// must see the value written just before it on the same connection.
fn pipelined_requests(conn_id: usize, pairs: usize) -> Vec<RequestFrame> {
    let mut frames = Vec::with_capacity(pairs * 2);
    for i in 0..pairs {
        let key = format!("pipe:{conn_id}:{}", i % 97);
        let value = format!("value {conn_id} {i}");
        let opaque = (i * 2) as u32 ^ 0x5A5A_0000;
        frames.push(
            set_request(key.as_bytes(), value.as_bytes(), HOUR_MS, SetMode::Upsert)
                .to_frame(opaque),
        );
        frames.push(get_request(key.as_bytes()).to_frame(opaque + 1));
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_pipelines_on_many_connections_answer_in_order() {
    const CONNECTIONS: usize = 8;
    const PAIRS: usize = 2_000;
    let daemon = Daemon::start();
    let mut tasks = tokio::task::JoinSet::new();
    for conn_id in 0..CONNECTIONS {
        let mut conn = daemon.connect().await;
        tasks.spawn(async move {
            let frames = pipelined_requests(conn_id, PAIRS);
            let replies = conn.pipeline(frames.clone()).await;
            let mut last_version = 0;
            for (i, (request, reply)) in frames.iter().zip(&replies).enumerate() {
                assert_eq!(
                    (reply.opcode, reply.opaque),
                    (request.opcode, request.opaque),
                    "connection {conn_id}: reply {i} out of order"
                );
                if request.opcode == u8::from(Opcode::Set) {
                    let version = stored(SetOutcome::from_frame(reply).expect("SET reply"));
                    assert!(
                        version > last_version,
                        "connection {conn_id}: versions went back"
                    );
                    last_version = version;
                } else {
                    let entry = hit(GetReply::from_frame(reply).expect("GET reply"));
                    assert_eq!(
                        entry.value,
                        frames[i - 1].value,
                        "connection {conn_id}, reply {i}"
                    );
                    assert_eq!(
                        entry.version, last_version,
                        "connection {conn_id}, reply {i}"
                    );
                }
            }
            conn
        });
    }
    while let Some(result) = tasks.join_next().await {
        let mut conn = result.expect("pipelining task");
        assert_usable(&mut conn).await;
    }
}

#[tokio::test]
async fn largest_key_and_value_round_trip() {
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let limits = Limits::default();
    let key = vec![b'k'; limits.max_key_len as usize];
    let value: Vec<u8> = (0..limits.max_value_len).map(|i| (i % 251) as u8).collect();
    let version = conn.put(&key, &value, HOUR_MS).await;
    let entry = hit(conn.get(&key).await);
    assert_eq!(entry.version, version);
    assert!(
        entry.value == value,
        "a {} byte value came back changed",
        value.len()
    );
}

#[tokio::test]
async fn out_of_range_ttls_are_invalid_and_the_connection_continues() {
    let (mut daemon, mut conn) = daemon_and_conn("[limits]\nmax_ttl = \"1h\"\n").await;
    conn.put(b"k", b"v", HOUR_MS).await;
    let too_long = HOUR_MS + 1;
    let requests = [
        set_request(b"k", b"v", 0, SetMode::Upsert),
        set_request(b"k", b"v", too_long, SetMode::Upsert),
        set_request(b"new", b"v", too_long, SetMode::CreateOnly),
        Request::Touch(Touch {
            key: Bytes::from_static(b"k"),
            ttl_ms: 0,
        }),
        Request::Touch(Touch {
            key: Bytes::from_static(b"k"),
            ttl_ms: too_long,
        }),
        Request::Get(sessiond_proto::command::Get {
            key: Bytes::from_static(b"k"),
            touch_ttl_ms: Some(0),
        }),
        Request::Get(sessiond_proto::command::Get {
            key: Bytes::from_static(b"k"),
            touch_ttl_ms: Some(too_long),
        }),
        // Beyond the protocol's hard maximum as well.
        set_request(b"k", b"v", Limits::HARD_MAX_TTL_MS + 1, SetMode::Upsert),
        set_request(b"k", b"v", u64::MAX, SetMode::Upsert),
    ];
    for request in &requests {
        let reply = conn.exchange(request).await;
        assert_error(&reply, Status::InvalidArgument);
        assert_usable(&mut conn).await;
    }
    // None of them changed anything, and the largest allowed TTL is accepted.
    let entry = hit(conn.get(b"k").await);
    assert_eq!(entry.value, &b"v"[..]);
    assert!(entry.ttl_ms > 60_000);
    assert_eq!(conn.get(b"new").await, GetReply::Miss);
    conn.put(b"k", b"w", HOUR_MS).await;
    daemon.assert_running();
}

#[tokio::test]
async fn connection_level_opcode_is_not_a_request() {
    // 0xFF is reserved for frames that answer no request; a client sending it is just an
    // unknown opcode, answered and skipped.
    let (_daemon, mut conn) = daemon_and_conn("").await;
    let reply = conn
        .call(RequestFrame {
            opcode: CONNECTION_OPCODE,
            opaque: 77,
            ..Default::default()
        })
        .await;
    assert_eq!((reply.opcode, reply.opaque), (CONNECTION_OPCODE, 77));
    assert_error(&reply, Status::UnknownOpcode);
    assert_usable(&mut conn).await;
}
