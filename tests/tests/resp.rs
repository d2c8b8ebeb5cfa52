//! End-to-end tests of the RESP listener against the real `sessiond` binary, in raw RESP
//! bytes: every command's reply type in RESP2 and RESP3, the decoder's edge cases and bad
//! input, the TTL rules, authentication, and that RESP and the native protocol see the same
//! sessions, persisted the same way.
//!
//! Tests with real Redis clients (redis-cli, redis-benchmark, redis-py under Flask-Session)
//! are in `resp_clients.rs`.

use std::time::Duration;

use sessiond_proto::command::{GetReply, SetMode, SetOutcome};
use sessiond_tests::resp::{command, RespConn, Value};
use sessiond_tests::{Conn, Daemon, Deadline};

const HOUR_MS: u64 = 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A daemon with a RESP listener on an ephemeral port and `config` (TOML).
fn daemon_with(config: &str) -> Daemon {
    Daemon::start_with_args(config, &["--resp-listen", "127.0.0.1:0"])
}

fn daemon() -> Daemon {
    daemon_with("")
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

/// Reads raw bytes until `want.len()` have arrived, and compares them.
async fn expect_bytes(conn: &mut RespConn, want: &[u8]) {
    let got = conn.recv().await.expect("a reply");
    let mut encoded = Vec::new();
    encode(&got, &mut encoded);
    assert_eq!(
        String::from_utf8_lossy(&encoded),
        String::from_utf8_lossy(want)
    );
}

/// Re-encodes a parsed value (the parser keeps every type distinct, so this is exact).
fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Value::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::NullBulk => out.extend_from_slice(b"$-1\r\n"),
        Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
        Value::Null => out.extend_from_slice(b"_\r\n"),
        Value::Array(items) | Value::Set(items) => {
            let tag = if matches!(value, Value::Set(_)) {
                '~'
            } else {
                '*'
            };
            out.extend_from_slice(format!("{tag}{}\r\n", items.len()).as_bytes());
            items.iter().for_each(|i| encode(i, out));
        }
        Value::Map(pairs) => {
            out.extend_from_slice(format!("%{}\r\n", pairs.len()).as_bytes());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Verbatim(format, b) => {
            out.extend_from_slice(format!("={}\r\n{format}:", b.len() + 4).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Value::Double(d) => out.extend_from_slice(format!(",{d}\r\n").as_bytes()),
    }
}

// ---------------------------------------------------------------------------------------
// Reply types
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn string_commands_reply_with_redis_types_in_resp2() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;

    assert_eq!(c.call(&["GET", "k"]).await, Value::NullBulk);
    assert_eq!(c.call(&["SET", "k", "v1"]).await, ok());
    assert_eq!(c.call(&["GET", "k"]).await, Value::bulk("v1"));
    assert_eq!(c.call(&["set", "k", "v2", "nx"]).await, Value::NullBulk);
    assert_eq!(
        c.call(&["SET", "k", "v2", "XX", "GET"]).await,
        Value::bulk("v1")
    );
    assert_eq!(c.call(&["SET", "new", "v", "XX"]).await, Value::NullBulk);
    assert_eq!(
        c.call(&["SET", "new", "v", "NX", "GET"]).await,
        Value::NullBulk
    );
    assert_eq!(c.call(&["GET", "new"]).await, Value::bulk("v"));
    assert_eq!(c.call(&["SETEX", "s", "100", "sv"]).await, ok());
    assert_eq!(c.call(&["PSETEX", "p", "100000", "pv"]).await, ok());
    assert_eq!(
        c.call(&["MGET", "k", "missing", "s", "p"]).await,
        Value::Array(vec![
            Value::bulk("v2"),
            Value::NullBulk,
            Value::bulk("sv"),
            Value::bulk("pv")
        ])
    );
    assert_eq!(c.call(&["GETEX", "s"]).await, Value::bulk("sv"));
    assert_eq!(
        c.call(&["GETEX", "s", "EX", "1000"]).await,
        Value::bulk("sv")
    );
    assert_eq!(c.call(&["TTL", "s"]).await, Value::Integer(1000));
    assert_eq!(
        c.call(&["GETEX", "missing", "PX", "10"]).await,
        Value::NullBulk
    );
    assert_eq!(c.call(&["GETDEL", "p"]).await, Value::bulk("pv"));
    assert_eq!(c.call(&["GETDEL", "p"]).await, Value::NullBulk);
    // Binary-safe keys and values.
    let value: Vec<u8> = (0..=255).collect();
    assert_eq!(c.call_bytes(&[b"SET", b"\x00\xff\r\n", &value]).await, ok());
    assert_eq!(
        c.call_bytes(&[b"GET", b"\x00\xff\r\n"]).await,
        Value::Bulk(value)
    );
}

#[tokio::test]
async fn keyspace_commands_reply_with_redis_types() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    for k in ["a", "b", "c"] {
        assert_eq!(c.call(&["SET", k, "v"]).await, ok());
    }
    assert_eq!(
        c.call(&["EXISTS", "a", "a", "nope", "b"]).await,
        Value::Integer(3)
    );
    assert_eq!(c.call(&["DBSIZE"]).await, Value::Integer(3));
    assert_eq!(c.call(&["DEL", "a", "nope"]).await, Value::Integer(1));
    assert_eq!(c.call(&["UNLINK", "b", "c", "b"]).await, Value::Integer(2));
    assert_eq!(c.call(&["DBSIZE"]).await, Value::Integer(0));

    assert_eq!(c.call(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.call(&["EXPIRE", "k", "100"]).await, Value::Integer(1));
    assert_eq!(c.call(&["TTL", "k"]).await, Value::Integer(100));
    assert_eq!(c.call(&["PEXPIRE", "k", "50000"]).await, Value::Integer(1));
    let pttl = c.call(&["PTTL", "k"]).await.int();
    assert!((49_000..=50_000).contains(&pttl), "{pttl}");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = (now_s + 200).to_string();
    assert_eq!(c.call(&["EXPIREAT", "k", &at]).await, Value::Integer(1));
    let ttl = c.call(&["TTL", "k"]).await.int();
    assert!((198..=200).contains(&ttl), "{ttl}");
    let at_ms = ((now_s + 300) * 1000).to_string();
    assert_eq!(c.call(&["PEXPIREAT", "k", &at_ms]).await, Value::Integer(1));
    assert_eq!(c.call(&["EXPIRE", "nope", "100"]).await, Value::Integer(0));
    assert_eq!(c.call(&["TTL", "nope"]).await, Value::Integer(-2));
    assert_eq!(c.call(&["PTTL", "nope"]).await, Value::Integer(-2));
    // NX: "only if the key has no expiry", which no key lacks. XX: always has one.
    assert_eq!(
        c.call(&["EXPIRE", "k", "100", "NX"]).await,
        Value::Integer(0)
    );
    assert_eq!(
        c.call(&["EXPIRE", "k", "100", "XX"]).await,
        Value::Integer(1)
    );
    assert!(c.call(&["EXPIRE", "k", "100", "GT"]).await.is_error("ERR"));
    assert_eq!(
        c.call(&["EXPIRE", "k", "100", "NX", "XX"]).await,
        Value::Error("ERR NX and XX, GT or LT options at the same time are not compatible".into())
    );
    assert_eq!(
        c.call(&["EXPIRE", "k", "100", "bogus"]).await,
        Value::Error("ERR Unsupported option bogus".into())
    );
    // A deadline in the past deletes the key, and counts as done.
    assert_eq!(c.call(&["EXPIRE", "k", "-1"]).await, Value::Integer(1));
    assert_eq!(c.call(&["EXISTS", "k"]).await, Value::Integer(0));
}

#[tokio::test]
async fn connection_and_server_commands() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
    assert_eq!(c.call(&["ping", "hi"]).await, Value::bulk("hi"));
    assert_eq!(c.call(&["ECHO", "x y"]).await, Value::bulk("x y"));
    assert_eq!(c.call(&["SELECT", "0"]).await, ok());
    assert_eq!(
        c.call(&["SELECT", "1"]).await,
        Value::Error("ERR DB index is out of range".into())
    );
    let id = c.call(&["CLIENT", "ID"]).await.int();
    assert!(id > 0);
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Value::NullBulk);
    assert_eq!(c.call(&["CLIENT", "SETNAME", "web-1"]).await, ok());
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Value::bulk("web-1"));
    assert_eq!(
        c.call(&["CLIENT", "SETNAME", "a b"]).await,
        Value::Error(
            "ERR Client names cannot contain spaces, newlines or special characters.".into()
        )
    );
    assert_eq!(
        c.call(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]).await,
        ok()
    );
    assert_eq!(
        c.call(&["CLIENT", "SETINFO", "lib-ver", "5.3.1"]).await,
        ok()
    );
    assert_eq!(
        c.call(&["CLIENT", "SETINFO", "color", "red"]).await,
        Value::Error("ERR Unrecognized option 'color'".into())
    );
    assert_eq!(
        c.call(&["CLIENT", "KILL", "x"]).await,
        Value::Error("ERR unknown subcommand 'KILL'. Try CLIENT HELP.".into())
    );
    assert_eq!(
        c.call(&["CLIENT", "ID", "extra"]).await,
        Value::Error("ERR wrong number of arguments for 'client|id' command".into())
    );

    // INFO: a bulk string in RESP2, with Redis's section headers and fields.
    let info = c.call(&["INFO"]).await;
    assert!(matches!(info, Value::Bulk(_)), "{info:?}");
    let text = info.text();
    for needle in [
        "# Server\r\n",
        "redis_version:",
        "# Clients\r\nconnected_clients:",
        "# Memory\r\nused_memory:",
        "# Keyspace\r\n",
        &format!("tcp_port:{}\r\n", daemon.resp_addr().port()),
    ] {
        assert!(text.contains(needle), "INFO lacks {needle:?}:\n{text}");
    }
    assert_eq!(c.call(&["SET", "k", "v"]).await, ok());
    let keyspace = c.call(&["INFO", "keyspace"]).await.text();
    assert_eq!(keyspace, "# Keyspace\r\ndb0:keys=1,expires=1,avg_ttl=0\r\n");
    assert_eq!(c.call(&["INFO", "nosuchsection"]).await, Value::bulk(""));

    // COMMAND and its subcommands.
    let count = c.call(&["COMMAND", "COUNT"]).await.int();
    let all = c.call(&["COMMAND"]).await;
    assert_eq!(all.items().len() as i64, count);
    let info = c.call(&["COMMAND", "INFO", "get", "nosuch"]).await;
    let get = info.items()[0].items();
    assert_eq!(get[0], Value::bulk("get"));
    assert_eq!(get[1], Value::Integer(2));
    assert_eq!(get.len(), 10, "Redis 7 reports ten fields per command");
    assert_eq!(info.items()[1], Value::NullBulk);
    let docs = c.call(&["COMMAND", "DOCS", "set"]).await;
    let docs = docs.items();
    assert_eq!(docs[0], Value::bulk("set"));
    assert!(docs[1].items().contains(&Value::bulk("summary")));
    assert!(c
        .call(&["COMMAND", "LIST"])
        .await
        .items()
        .contains(&Value::bulk("scan")));
}

#[tokio::test]
async fn resp3_after_hello_3() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    // Without HELLO: RESP2.
    c.send(&["GET", "missing"]).await;
    expect_bytes(&mut c, b"$-1\r\n").await;

    let hello = c.call(&["HELLO", "3"]).await;
    let Value::Map(pairs) = hello else {
        panic!("HELLO 3 must answer a RESP3 map, got {hello:?}")
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| *k == Value::bulk(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("HELLO lacks {name}"))
    };
    assert_eq!(field("proto"), Value::Integer(3));
    assert_eq!(field("mode"), Value::bulk("standalone"));
    assert_eq!(field("role"), Value::bulk("master"));
    assert!(matches!(field("id"), Value::Integer(_)));
    assert!(matches!(field("version"), Value::Bulk(_)));
    assert_eq!(field("modules"), Value::Array(vec![]));

    c.send(&["GET", "missing"]).await;
    expect_bytes(&mut c, b"_\r\n").await;
    assert_eq!(
        c.call(&["MGET", "missing"]).await,
        Value::Array(vec![Value::Null])
    );
    assert_eq!(c.call(&["SET", "k", "v", "NX"]).await, ok());
    assert_eq!(c.call(&["SET", "k", "v", "NX"]).await, Value::Null);
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Value::Null);
    assert!(matches!(
        c.call(&["INFO", "server"]).await,
        Value::Verbatim(ref format, _) if format == "txt"
    ));
    // COMMAND's flags are sets in RESP3; COMMAND DOCS is a map.
    let info = c.call(&["COMMAND", "INFO", "set"]).await;
    assert!(matches!(info.items()[0].items()[2], Value::Set(_)));
    assert!(matches!(
        c.call(&["COMMAND", "DOCS", "get"]).await,
        Value::Map(_)
    ));

    // Back to RESP2; HELLO with no version just reports.
    let hello = c.call(&["HELLO", "2"]).await;
    assert!(
        matches!(hello, Value::Array(ref items) if items.len() == 14),
        "{hello:?}"
    );
    let hello = c.call(&["HELLO"]).await;
    assert!(hello.items().contains(&Value::Integer(2)));
    assert_eq!(
        c.call(&["HELLO", "4"]).await,
        Value::Error("NOPROTO unsupported protocol version".into())
    );
    assert_eq!(
        c.call(&["HELLO", "three"]).await,
        Value::Error("ERR Protocol version is not an integer or out of range".into())
    );
    assert_eq!(
        c.call(&["HELLO", "3", "BOGUS"]).await,
        Value::Error("ERR Syntax error in HELLO option 'BOGUS'".into())
    );
    // HELLO SETNAME names the connection.
    c.call(&["HELLO", "3", "SETNAME", "named"]).await;
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Value::bulk("named"));
}

#[tokio::test]
async fn errors_are_worded_like_redis() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    assert_eq!(
        c.call(&["FOO", "a", "b"]).await,
        Value::Error("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ".into())
    );
    assert_eq!(
        c.call(&["LPUSH"]).await,
        Value::Error("ERR unknown command 'LPUSH', with args beginning with: ".into())
    );
    assert_eq!(
        c.call(&["GET"]).await,
        Value::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(
        c.call(&["get", "a", "b"]).await,
        Value::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(
        c.call(&["PING", "a", "b"]).await,
        Value::Error("ERR wrong number of arguments for 'ping' command".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v", "EX"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v", "NX", "XX"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v", "EX", "1", "PX", "1"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v", "KEEPTTL", "EX", "1"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v", "EX", "x"]).await,
        Value::Error("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v", "EX", "0"]).await,
        Value::Error("ERR invalid expire time in 'set' command".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v", "PX", "-5"]).await,
        Value::Error("ERR invalid expire time in 'set' command".into())
    );
    assert_eq!(
        c.call(&["SETEX", "k", "0", "v"]).await,
        Value::Error("ERR invalid expire time in 'setex' command".into())
    );
    assert_eq!(
        c.call(&["PSETEX", "k", "abc", "v"]).await,
        Value::Error("ERR value is not an integer or out of range".into())
    );
    assert_eq!(
        c.call(&["GETEX", "k", "NX"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(
        c.call(&["EXPIRE", "k", "9223372036854775807"]).await,
        Value::Error("ERR invalid expire time in 'expire' command".into())
    );
    assert_eq!(
        c.call(&["SCAN", "x"]).await,
        Value::Error("ERR invalid cursor".into())
    );
    assert_eq!(
        c.call(&["SCAN", "0", "COUNT", "0"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(
        c.call(&["SCAN", "0", "MATCH"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(
        c.call(&["AUTH", "secret"]).await,
        Value::Error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into()
        )
    );
    // Keys follow the same rules as in the native protocol.
    assert!(c.call(&["SET", "", "v"]).await.is_error("ERR empty keys"));
    let long = "k".repeat(1025);
    assert!(c
        .call(&["GET", &long])
        .await
        .is_error("ERR key is too long"));
    // The connection is still fine after all that.
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
}

// ---------------------------------------------------------------------------------------
// TTL rules
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn every_key_expires() {
    let daemon = daemon_with("[resp]\ndefault_ttl = \"2h\"\n[limits]\nmax_ttl = \"1d\"\n");
    let mut c = daemon.resp_connect().await;
    // No TTL given: the default.
    assert_eq!(c.call(&["SET", "k", "v"]).await, ok());
    assert_eq!(c.call(&["TTL", "k"]).await, Value::Integer(7200));
    // Longer than max_ttl: clamped, not refused.
    assert_eq!(c.call(&["SET", "k", "v", "EX", "999999999"]).await, ok());
    assert_eq!(c.call(&["TTL", "k"]).await, Value::Integer(86_400));
    assert_eq!(
        c.call(&["EXPIRE", "k", "999999999"]).await,
        Value::Integer(1)
    );
    let pttl = c.call(&["PTTL", "k"]).await.int();
    assert!(pttl <= DAY_MS && pttl > DAY_MS - 5_000, "{pttl}");
    assert_eq!(
        c.call(&["SET", "k", "v", "PXAT", "99999999999999"]).await,
        ok()
    );
    assert_eq!(c.call(&["TTL", "k"]).await, Value::Integer(86_400));
    // KEEPTTL keeps the deadline; on a new key it gives the default.
    assert_eq!(c.call(&["EXPIRE", "k", "500"]).await, Value::Integer(1));
    assert_eq!(c.call(&["SET", "k", "v2", "KEEPTTL"]).await, ok());
    assert_eq!(c.call(&["TTL", "k"]).await, Value::Integer(500));
    assert_eq!(c.call(&["SET", "fresh", "v", "KEEPTTL"]).await, ok());
    assert_eq!(c.call(&["TTL", "fresh"]).await, Value::Integer(7200));
    // PERSIST answers 0 and keeps the TTL; GETEX PERSIST reads and keeps it too.
    assert_eq!(c.call(&["PERSIST", "k"]).await, Value::Integer(0));
    assert_eq!(c.call(&["GETEX", "k", "PERSIST"]).await, Value::bulk("v2"));
    assert_eq!(c.call(&["TTL", "k"]).await, Value::Integer(500));
    // A deadline in the past: SET answers OK and the key is gone; GETEX returns the value
    // and deletes the key.
    assert_eq!(c.call(&["SET", "gone", "v", "PXAT", "1"]).await, ok());
    assert_eq!(c.call(&["GET", "gone"]).await, Value::NullBulk);
    assert_eq!(
        c.call(&["GETEX", "k", "EXAT", "1"]).await,
        Value::bulk("v2")
    );
    assert_eq!(c.call(&["GET", "k"]).await, Value::NullBulk);
}

#[tokio::test]
async fn a_short_ttl_expires() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["SET", "k", "v", "PX", "100"]).await, ok());
    let deadline = Deadline::after(Duration::from_secs(5), "the key expires");
    while c.call(&["GET", "k"]).await != Value::NullBulk {
        deadline.tick().await;
    }
    assert_eq!(c.call(&["TTL", "k"]).await, Value::Integer(-2));
}

// ---------------------------------------------------------------------------------------
// One store, two protocols
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sessions_are_shared_between_protocols() {
    let daemon = daemon();
    let mut resp = daemon.resp_connect().await;
    let mut native = daemon.connect().await;

    // RESP write, native read: same value, the TTL given, a version.
    assert_eq!(
        resp.call(&["SET", "sess:1", "alice", "EX", "600"]).await,
        ok()
    );
    let GetReply::Hit(entry) = native.get(b"sess:1").await else {
        panic!("a RESP write is not visible natively")
    };
    assert_eq!(&entry.value[..], b"alice");
    assert!(entry.ttl_ms <= 600_000 && entry.ttl_ms > 590_000);
    let v1 = entry.version;
    assert!(v1 > 0);

    // Native write, RESP read.
    let v2 = native.put(b"sess:2", b"bob", HOUR_MS).await;
    assert!(v2 > v1, "one version counter for both protocols");
    assert_eq!(resp.call(&["GET", "sess:2"]).await, Value::bulk("bob"));
    let ttl = resp.call(&["TTL", "sess:2"]).await.int();
    assert!((3595..=3600).contains(&ttl), "{ttl}");

    // A RESP overwrite gets a newer version, so a native if-version write made against
    // the old one fails.
    assert_eq!(resp.call(&["SET", "sess:1", "alice2"]).await, ok());
    assert!(matches!(
        native
            .set(b"sess:1", b"stale", HOUR_MS, SetMode::IfVersion(v1))
            .await,
        SetOutcome::VersionMismatch { current } if current > v2
    ));
    // RESP EXPIRE moves the deadline the native side sees, without a new version.
    let GetReply::Hit(before) = native.get(b"sess:1").await else {
        panic!()
    };
    assert_eq!(
        resp.call(&["EXPIRE", "sess:1", "30"]).await,
        Value::Integer(1)
    );
    let GetReply::Hit(after) = native.get(b"sess:1").await else {
        panic!()
    };
    assert_eq!(after.version, before.version);
    assert!(after.ttl_ms <= 30_000);

    // Deletes either way.
    assert_eq!(resp.call(&["DEL", "sess:2"]).await, Value::Integer(1));
    assert_eq!(native.get(b"sess:2").await, GetReply::Miss);
    native.del(b"sess:1", None).await;
    assert_eq!(resp.call(&["GET", "sess:1"]).await, Value::NullBulk);

    // Both protocols' requests count in the native STATS.
    let stats = native.stats().await;
    assert!(stats.get("get_hits").unwrap().parse::<u64>().unwrap() >= 2);
    assert!(stats.get("set_stored").unwrap().parse::<u64>().unwrap() >= 3);
}

#[tokio::test]
async fn scan_finds_every_key_matching() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    let mut native = daemon.connect().await;
    for i in 0..300 {
        let key = format!("myapp:{i}");
        native.put(key.as_bytes(), b"v", HOUR_MS).await;
        native
            .put(format!("other:{i}").as_bytes(), b"v", HOUR_MS)
            .await;
    }
    let mut found = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let reply = c
            .call(&["SCAN", &cursor, "MATCH", "myapp:*", "COUNT", "50"])
            .await;
        let items = reply.items();
        cursor = items[0].text();
        // JavaScript clients parse cursors as Numbers.
        assert!(cursor.parse::<u64>().unwrap() < 1 << 53, "{cursor}");
        for key in items[1].items() {
            let key = key.text();
            assert!(key.starts_with("myapp:"), "{key}");
            found.insert(key);
        }
        calls += 1;
        assert!(calls < 10_000, "SCAN never finished");
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(found.len(), 300);
    // TYPE string matches everything; other types nothing.
    let reply = c
        .call(&["SCAN", "0", "COUNT", "1000", "TYPE", "hash"])
        .await;
    assert!(reply.items()[1].items().is_empty());
}

#[tokio::test]
async fn resp_writes_survive_a_restart() {
    let mut daemon = daemon();
    {
        let mut c = daemon.resp_connect().await;
        assert_eq!(c.call(&["SET", "kept", "v1", "EX", "3600"]).await, ok());
        assert_eq!(c.call(&["SET", "kept", "v2", "KEEPTTL"]).await, ok());
        assert_eq!(c.call(&["SET", "moved", "v"]).await, ok());
        assert_eq!(
            c.call(&["EXPIRE", "moved", "7000"]).await,
            Value::Integer(1)
        );
        assert_eq!(c.call(&["SET", "deleted", "v"]).await, ok());
        assert_eq!(c.call(&["DEL", "deleted"]).await, Value::Integer(1));
        assert_eq!(c.call(&["SET", "taken", "v"]).await, ok());
        assert_eq!(c.call(&["GETDEL", "taken"]).await, Value::bulk("v"));
    }
    daemon.terminate(Duration::from_secs(20));
    let daemon = daemon.restart_with_args(&["--resp-listen", "127.0.0.1:0"]);
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["GET", "kept"]).await, Value::bulk("v2"));
    let ttl = c.call(&["TTL", "kept"]).await.int();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    let ttl = c.call(&["TTL", "moved"]).await.int();
    assert!((6900..=7000).contains(&ttl), "{ttl}");
    assert_eq!(c.call(&["GET", "deleted"]).await, Value::NullBulk);
    assert_eq!(c.call(&["GET", "taken"]).await, Value::NullBulk);
}

#[tokio::test]
async fn fsync_always_acknowledges_resp_writes_after_they_are_durable() {
    let mut daemon =
        Daemon::start_with_args("", &["--resp-listen", "127.0.0.1:0", "--fsync", "always"]);
    let mut c = daemon.resp_connect().await;
    // Pipelined writes, each acknowledged only after its fsync.
    let mut batch = Vec::new();
    for i in 0..50 {
        let key = format!("k{i}");
        batch.extend(command(&[b"SET", key.as_bytes(), b"v"]));
    }
    c.send_raw(&batch).await;
    for _ in 0..50 {
        assert_eq!(c.recv().await, Some(ok()));
    }
    // Acknowledged means durable: a crash right now loses nothing.
    daemon.kill9();
    let daemon = daemon.restart_with_args(&["--resp-listen", "127.0.0.1:0"]);
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["DBSIZE"]).await, Value::Integer(50));
}

#[tokio::test]
async fn flush_is_refused_unless_enabled() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["SET", "k", "v"]).await, ok());
    assert!(c
        .call(&["FLUSHDB"])
        .await
        .is_error("ERR FLUSHDB is disabled"));
    assert!(c
        .call(&["FLUSHALL"])
        .await
        .is_error("ERR FLUSHALL is disabled"));
    assert_eq!(c.call(&["DBSIZE"]).await, Value::Integer(1));

    let mut daemon = daemon_with("[resp]\nallow_flush = true\n");
    let mut c = daemon.resp_connect().await;
    for k in ["a", "b", "c"] {
        assert_eq!(c.call(&["SET", k, "v"]).await, ok());
    }
    assert_eq!(c.call(&["FLUSHDB", "SYNC"]).await, ok());
    assert_eq!(c.call(&["DBSIZE"]).await, Value::Integer(0));
    assert_eq!(
        c.call(&["FLUSHALL", "NOW"]).await,
        Value::Error("ERR syntax error".into())
    );
    assert_eq!(c.call(&["SET", "d", "v"]).await, ok());
    assert_eq!(c.call(&["FLUSHALL", "ASYNC"]).await, ok());
    // Persisted as deletions.
    daemon.terminate(Duration::from_secs(20));
    let daemon = daemon.restart_with_args(&["--resp-listen", "127.0.0.1:0"]);
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["DBSIZE"]).await, Value::Integer(0));
}

#[tokio::test]
async fn a_password_is_required_when_configured() {
    let daemon = daemon_with("[resp]\npassword = \"s3cret\"\n");
    let mut c = daemon.resp_connect().await;
    assert_eq!(
        c.call(&["GET", "k"]).await,
        Value::Error("NOAUTH Authentication required.".into())
    );
    // Unknown commands are still unknown (Redis checks the name before authentication).
    assert!(c.call(&["NOPE"]).await.is_error("ERR unknown command"));
    assert!(c
        .call(&["HELLO", "3"])
        .await
        .is_error("NOAUTH HELLO must be called"));
    let wrong =
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(c.call(&["AUTH", "guess"]).await, wrong);
    assert_eq!(c.call(&["AUTH", "s3cre"]).await, wrong);
    assert_eq!(c.call(&["AUTH", "alice", "s3cret"]).await, wrong);
    assert_eq!(c.call(&["AUTH", "s3cret"]).await, ok());
    assert_eq!(c.call(&["GET", "k"]).await, Value::NullBulk);

    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["AUTH", "default", "s3cret"]).await, ok());
    let mut c = daemon.resp_connect().await;
    let hello = c.call(&["HELLO", "3", "AUTH", "default", "s3cret"]).await;
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    assert_eq!(c.call(&["GET", "k"]).await, Value::Null);

    // Before authenticating, a client cannot make the server buffer much (Redis's limits).
    let mut c = daemon.resp_connect().await;
    c.send_raw(b"*1\r\n$100000\r\n").await;
    assert_eq!(
        c.recv().await,
        Some(Value::Error(
            "ERR Protocol error: unauthenticated bulk length".into()
        ))
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn quit_answers_then_closes() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    c.send_raw(&[command(&[b"QUIT"]), command(&[b"PING"])].concat())
        .await;
    assert_eq!(c.recv().await, Some(ok()));
    c.expect_closed().await;
}

// ---------------------------------------------------------------------------------------
// The decoder: pipelining, fragmentation, inline commands
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pipelined_and_fragmented_requests() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    let mut batch = Vec::new();
    for i in 0..200 {
        let key = format!("k{i}");
        batch.extend(command(&[b"SET", key.as_bytes(), b"v"]));
        batch.extend(command(&[b"GET", key.as_bytes()]));
    }
    c.send_raw(&batch).await;
    for _ in 0..200 {
        assert_eq!(c.recv().await, Some(ok()));
        assert_eq!(c.recv().await, Some(Value::bulk("v")));
    }
    // One byte per write.
    let request = command(&[b"SET", b"frag", b"value"]);
    for b in &request {
        c.send_raw(&[*b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(c.recv().await, Some(ok()));
    // A large value spread over many reads.
    let big = vec![b'x'; 512 * 1024];
    let request = command(&[b"SET", b"big", &big]);
    for chunk in request.chunks(7000) {
        c.send_raw(chunk).await;
    }
    assert_eq!(c.recv().await, Some(ok()));
    assert!(c
        .call(&["STRLEN", "big"])
        .await
        .is_error("ERR unknown command"));
    assert_eq!(c.call_bytes(&[b"GET", b"big"]).await, Value::Bulk(big));
}

#[tokio::test]
async fn inline_commands_as_typed_into_telnet() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    c.send_raw(b"PING\r\n").await;
    expect_bytes(&mut c, b"+PONG\r\n").await;
    c.send_raw(b"set greeting \"hello world\"\n").await;
    assert_eq!(c.recv().await, Some(ok()));
    c.send_raw(b"  get   greeting  \r\n").await;
    assert_eq!(c.recv().await, Some(Value::bulk("hello world")));
    c.send_raw(b"set bin \"\\x00\\x01\" \r\nget bin\r\n").await;
    assert_eq!(c.recv().await, Some(ok()));
    assert_eq!(c.recv().await, Some(Value::Bulk(vec![0, 1])));
    // Empty lines are ignored, not answered.
    c.send_raw(b"\r\n\n   \r\nPING\r\n").await;
    assert_eq!(c.recv().await, Some(Value::Simple("PONG".into())));
    // Inline and array requests mix.
    let mut mixed = b"ECHO a\r\n".to_vec();
    mixed.extend(command(&[b"ECHO", b"b"]));
    mixed.extend_from_slice(b"ECHO c\r\n");
    c.send_raw(&mixed).await;
    for want in ["a", "b", "c"] {
        assert_eq!(c.recv().await, Some(Value::bulk(want)));
    }
    // An unterminated quote is a protocol error: answered, then closed.
    c.send_raw(b"GET \"oops\r\n").await;
    assert_eq!(
        c.recv().await,
        Some(Value::Error(
            "ERR Protocol error: unbalanced quotes in request".into()
        ))
    );
    c.expect_closed().await;
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// Sends `bytes` on a fresh connection and asserts the reply is `error` and the connection
/// is then closed, while another connection keeps working.
async fn assert_fatal(daemon: &Daemon, bytes: &[u8], error: &str) {
    let mut bystander = daemon.resp_connect().await;
    assert_eq!(bystander.call(&["SET", "by", "v"]).await, ok());
    let mut c = daemon.resp_connect().await;
    c.send_raw(bytes).await;
    assert_eq!(
        c.recv().await,
        Some(Value::Error(error.into())),
        "for {:?}",
        String::from_utf8_lossy(bytes)
    );
    c.expect_closed().await;
    assert_eq!(bystander.call(&["GET", "by"]).await, Value::bulk("v"));
}

#[tokio::test]
async fn framing_errors_are_answered_then_closed() {
    let mut daemon = daemon();
    let cases: &[(&[u8], &str)] = &[
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"*99999999999\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n+k\r\n",
            "ERR Protocol error: expected '$', got '+'",
        ),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*1\r\n$99999999999999999\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$3\r\nGETxx",
            "ERR Protocol error: bulk string not terminated by CRLF",
        ),
    ];
    for (bytes, error) in cases {
        assert_fatal(&daemon, bytes, error).await;
    }
    let mut long = b"*1\r\n$".to_vec();
    long.resize(70 * 1024, b'1');
    assert_fatal(
        &daemon,
        &long,
        "ERR Protocol error: too big bulk count string",
    )
    .await;
    let mut long = b"*1".to_vec();
    long.resize(70 * 1024, b'1');
    assert_fatal(
        &daemon,
        &long,
        "ERR Protocol error: too big mbulk count string",
    )
    .await;
    let long = vec![b'a'; 70 * 1024];
    assert_fatal(&daemon, &long, "ERR Protocol error: too big inline request").await;
    // A declared multibulk count costs nothing until elements arrive.
    let mut c = daemon.resp_connect().await;
    c.send_raw(b"*1048576\r\n").await;
    let mut other = daemon.resp_connect().await;
    assert_eq!(other.call(&["PING"]).await, Value::Simple("PONG".into()));
    daemon.assert_running();
}

#[tokio::test]
async fn an_http_request_closes_the_connection() {
    let daemon = daemon();
    let mut c = daemon.resp_connect().await;
    c.send_raw(b"POST / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    c.expect_closed().await;
}

#[tokio::test]
async fn an_oversized_value_is_refused_without_buffering_and_the_connection_goes_on() {
    // Rejected by the limit, not by the protocol: the bytes are read and thrown away.
    let mut daemon = daemon_with("[limits]\nmax_value_bytes = 1024\n");
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["SET", "k", "small"]).await, ok());
    let baseline = daemon.rss_bytes();

    const DECLARED: usize = 100 << 20;
    c.send_raw(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${DECLARED}\r\n").as_bytes())
        .await;
    // Answered as soon as the header shows it is too large.
    let reply = c.recv().await.expect("an error reply");
    assert!(reply.is_error("ERR request too large"), "{reply:?}");
    let chunk = vec![b'x'; 64 * 1024];
    let mut peak = baseline;
    for i in 0..DECLARED / chunk.len() {
        c.send_raw(&chunk).await;
        if i % 64 == 0 {
            peak = peak.max(daemon.rss_bytes());
        }
    }
    c.send_raw(b"\r\n").await;
    assert_eq!(c.call(&["GET", "k"]).await, Value::bulk("small"));
    assert!(
        peak.saturating_sub(baseline) < 24 << 20,
        "RSS grew from {baseline} to {peak} while a {DECLARED}-byte value was skipped"
    );
    // Many small arguments that add up are refused the same way.
    let mut many = b"*2001\r\n$3\r\nDEL\r\n".to_vec();
    for i in 0..2000 {
        let key = format!("{i:0>1000}");
        many.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    c.send_raw(&many).await;
    assert!(c.recv().await.unwrap().is_error("ERR request too large"));
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
    daemon.assert_running();
}

#[tokio::test]
async fn random_garbage_never_takes_the_server_down() {
    let mut daemon = daemon();
    let mut rng = sessiond_tests::Rng::new(0x5eed_7e5b);
    let mut bystander = daemon.resp_connect().await;
    for round in 0..200 {
        let mut c = daemon.resp_connect().await;
        // Mostly RESP-shaped noise, so that it gets past the first byte.
        let mut bytes = match round % 3 {
            0 => b"*".to_vec(),
            1 => b"*2\r\n$".to_vec(),
            _ => Vec::new(),
        };
        bytes.extend(rng.bytes_below(300));
        if !c.send_raw_lossy(&bytes).await {
            continue;
        }
        drop(c);
    }
    assert_eq!(
        bystander.call(&["PING"]).await,
        Value::Simple("PONG".into())
    );
    daemon.assert_running();
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn both_listeners_share_the_connection_limit() {
    let daemon = daemon_with("[server]\nmax_connections = 1\n");
    let mut native: Conn = daemon.connect().await;
    native.ping(b"").await;
    let mut c = daemon.resp_connect().await;
    assert_eq!(
        c.recv().await,
        Some(Value::Error("ERR max number of clients reached".into()))
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn idle_resp_connections_are_closed() {
    let daemon = daemon_with("[server]\nidle_timeout = \"300ms\"\n");
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn shutdown_answers_what_was_received() {
    let mut daemon = daemon();
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(command(&[b"SET", format!("k{i}").as_bytes(), b"v"]));
    }
    c.send_raw(&batch).await;
    daemon.signal(libc::SIGTERM);
    for _ in 0..100 {
        assert_eq!(c.recv().await, Some(ok()));
    }
    c.expect_closed().await;
    let status = daemon.wait_timeout(Duration::from_secs(20)).expect("exit");
    assert!(status.success());
}

#[tokio::test]
async fn the_daemon_prints_the_resp_address() {
    let daemon = daemon();
    assert_ne!(daemon.resp_addr(), daemon.addr());
    assert_eq!(daemon.resp_addr().ip(), daemon.addr().ip());
}

#[tokio::test]
async fn mset_writes_every_pair_and_survives_a_restart_as_one_record() {
    let daemon = daemon_with("[aof]\nfsync = \"always\"\n");
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["MSET", "a", "1", "b", "2", "a", "3"]).await, ok());
    assert_eq!(
        c.call(&["MGET", "a", "b"]).await,
        Value::Array(vec![Value::bulk("3"), Value::bulk("2")])
    );
    // Like a SET without a TTL: the default one (a day).
    let Value::Integer(ttl) = c.call(&["PTTL", "b"]).await else {
        panic!("PTTL is an integer");
    };
    assert!(ttl > DAY_MS - 60_000 && ttl <= DAY_MS, "{ttl}");
    for bad in [&["MSET", "a"][..], &["MSET", "a", "1", "b"]] {
        assert_eq!(
            c.call(bad).await,
            Value::Error("ERR wrong number of arguments for 'mset' command".into())
        );
    }
    drop(c);
    let daemon = daemon.restart_with_args(&["--resp-listen", "127.0.0.1:0"]);
    let mut c = daemon.resp_connect().await;
    assert_eq!(
        c.call(&["MGET", "a", "b"]).await,
        Value::Array(vec![Value::bulk("3"), Value::bulk("2")])
    );
}
