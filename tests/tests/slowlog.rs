//! The slow-request log against the real daemon: what an entry holds (the command, its key's
//! length and duration, never the key), that the ring stays bounded, `RESET`, who may read and
//! clear it, over the native protocol, RESP (raw, `redis-cli` and redis-py's
//! `slowlog_get()`), and through `sessiond-cli slowlog` and `sessiond-cli stats --watch`.
//!
//! The daemons here log every request (`threshold = "0s"`) unless a test says otherwise, so
//! that which requests appear does not depend on how fast this machine is; what the threshold
//! filters is checked by the ring's unit tests (crates/server/src/slowlog.rs).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sessiond_proto::command::{
    Auth, ReplyError, Set, SetMode, Slowlog, SlowlogEntry, SlowlogLen, SlowlogReply,
};
use sessiond_proto::{Request, Status};
use sessiond_tests::resp::Value;
use sessiond_tests::users::{TestUsers, ADMIN_PASSWORD, APP_PASSWORD, MONITOR_PASSWORD};
use sessiond_tests::{binary, run_command, Conn, Daemon};

/// A session id: a bearer credential, which must never show in the slow log.
const SECRET_KEY: &str = "sess:7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4e6b8d0f2";

/// A daemon with a RESP listener whose slow log keeps every request, at most `max_len`.
fn daemon(max_len: usize, extra_config: &str) -> Daemon {
    let config = format!("{extra_config}\n[slowlog]\nthreshold = \"0s\"\nmax_len = {max_len}\n");
    Daemon::start_with_args(&config, &["--resp-listen", "127.0.0.1:0"])
}

async fn slowlog(conn: &mut Conn, request: Slowlog) -> Result<SlowlogReply, ReplyError> {
    let reply = conn.call(Request::Slowlog(request).to_frame(7)).await;
    SlowlogReply::from_frame(&reply, &request)
}

async fn entries(conn: &mut Conn, count: u32) -> Vec<SlowlogEntry> {
    match slowlog(conn, Slowlog::Get { count }).await {
        Ok(SlowlogReply::Entries(entries)) => entries,
        other => panic!("SLOWLOG GET answered {other:?}"),
    }
}

async fn len(conn: &mut Conn) -> SlowlogLen {
    match slowlog(conn, Slowlog::Len).await {
        Ok(SlowlogReply::Len(len)) => len,
        other => panic!("SLOWLOG LEN answered {other:?}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

#[tokio::test]
async fn a_large_write_is_logged_with_its_duration_and_key_length_but_not_its_key() {
    let daemon = daemon(128, "");
    let mut conn = daemon.connect().await;
    let before = now_ms();
    let value = Bytes::from(vec![b'v'; 1 << 20]);
    let set = Set {
        key: Bytes::from_static(SECRET_KEY.as_bytes()),
        value,
        ttl_ms: 60_000,
        mode: SetMode::Upsert,
    };
    let reply = conn.call(Request::Set(set).to_frame(1)).await;
    assert_eq!(reply.status(), Some(Status::Ok));

    let raw = conn
        .call(Request::Slowlog(Slowlog::Get { count: 10 }).to_frame(2))
        .await;
    assert!(
        !contains(&raw.value, SECRET_KEY.as_bytes()),
        "the key is in the reply"
    );
    let got = match SlowlogReply::from_frame(&raw, &Slowlog::Get { count: 10 }) {
        Ok(SlowlogReply::Entries(entries)) => entries,
        other => panic!("{other:?}"),
    };
    let set = got
        .iter()
        .find(|e| e.command == "SET")
        .unwrap_or_else(|| panic!("no SET among {got:?}"));
    assert_eq!(set.protocol, "native");
    assert_eq!(set.key_len as usize, SECRET_KEY.len());
    // Storing a mebibyte takes well over a microsecond, even in an optimised build.
    assert!(set.duration_us > 0, "{set:?}");
    assert!(set.unix_ms >= before && set.unix_ms <= now_ms(), "{set:?}");
    assert!(set.client.starts_with("127.0.0.1:"), "{set:?}");
    // Newest first, ids decreasing.
    assert!(got.windows(2).all(|w| w[0].id > w[1].id), "{got:?}");
    daemon.assert_no_panic();
}

#[tokio::test]
async fn a_resp_mget_is_logged_with_all_its_keys_lengths_in_redis_shape() {
    let daemon = daemon(128, "");
    let mut resp = daemon.resp_connect().await;
    let keys = [SECRET_KEY, "k2", "key-3"];
    for key in keys {
        assert_eq!(resp.call(&["SET", key, "value"]).await.text(), "OK");
    }
    resp.call(&["MGET", keys[0], keys[1], keys[2]]).await;
    let reply = resp.call(&["SLOWLOG", "GET", "-1"]).await;
    let shown = format!("{reply:?}");
    assert!(!shown.contains(SECRET_KEY), "the key is in {shown}");
    let mget = reply
        .items()
        .iter()
        .find(|e| e.items()[3].items()[0].text() == "mget")
        .unwrap_or_else(|| panic!("no mget in {shown}"));
    let fields = mget.items();
    assert_eq!(fields.len(), 6, "{mget:?}");
    let key_len: usize = keys.iter().map(|k| k.len()).sum();
    assert_eq!(
        fields[3].items()[1].text(),
        format!("<key: {key_len} bytes>")
    );
    let seconds = fields[1].int();
    assert!(
        (seconds * 1000 - now_ms() as i64).abs() < 60_000,
        "{mget:?}"
    );
    assert!(fields[2].int() >= 0);
    assert!(fields[4].text().starts_with("127.0.0.1:"), "{mget:?}");
    assert_eq!(fields[5].text(), "");
    // The same entry over the native protocol.
    let native = entries(&mut daemon.connect().await, u32::MAX).await;
    let entry = native
        .iter()
        .find(|e| e.id == fields[0].int() as u64)
        .expect("the same id over the native protocol");
    assert_eq!(
        (entry.protocol.as_str(), entry.key_len as usize),
        ("resp", key_len)
    );

    assert!(resp.call(&["SLOWLOG", "LEN"]).await.int() >= 5);
    assert!(resp.call(&["SLOWLOG", "GET", "-2"]).await.is_error("ERR"));
    assert!(resp
        .call(&["SLOWLOG", "NOPE"])
        .await
        .is_error("ERR unknown subcommand"));
    assert_eq!(resp.call(&["SLOWLOG", "GET", "0"]).await.items().len(), 0);
    assert_eq!(resp.call(&["SLOWLOG", "RESET"]).await.text(), "OK");
    // Only the LEN that follows the reset has been logged since.
    assert!(resp.call(&["SLOWLOG", "LEN"]).await.int() <= 1);
    daemon.assert_no_panic();
}

#[tokio::test]
async fn the_ring_stays_bounded_under_many_slow_requests() {
    let daemon = daemon(8, "");
    let mut conn = daemon.connect().await;
    let ping = Request::Ping(sessiond_proto::command::Ping {
        payload: Bytes::from_static(b"x"),
    });
    for i in 0..500 {
        conn.feed(ping.to_frame(i)).await;
    }
    conn.flush().await;
    for _ in 0..500 {
        conn.recv().await.expect("a PONG");
    }
    let len = len(&mut conn).await;
    assert_eq!((len.len, len.max_len), (8, 8));
    assert!(len.recorded_total >= 500, "{len:?}");
    assert_eq!(len.threshold_us, Some(0));
    let got = entries(&mut conn, 1000).await;
    assert_eq!(got.len(), 8);
    assert!(got.windows(2).all(|w| w[0].id == w[1].id + 1), "{got:?}");
    daemon.assert_no_panic();
}

#[tokio::test]
async fn reset_empties_the_log_and_ids_carry_on() {
    let daemon = daemon(128, "");
    let mut conn = daemon.connect().await;
    let before = entries(&mut conn, 1).await;
    assert_eq!(
        slowlog(&mut conn, Slowlog::Reset).await,
        Ok(SlowlogReply::Reset)
    );
    let after = entries(&mut conn, 100).await;
    // Only the RESET itself was logged after it.
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].id > before.first().map_or(0, |e| e.id));
    daemon.assert_no_panic();
}

#[tokio::test]
async fn off_logs_nothing() {
    let daemon = Daemon::start_with_config("[slowlog]\nthreshold = \"off\"\n");
    let mut conn = daemon.connect().await;
    for _ in 0..20 {
        entries(&mut conn, 10).await;
    }
    let len = len(&mut conn).await;
    assert_eq!(len.threshold_us, None);
    assert_eq!((len.len, len.recorded_total), (0, 0));
}

async fn login(conn: &mut Conn, user: &str, password: &str) {
    let auth = Auth {
        user: user.to_string(),
        password: Bytes::copy_from_slice(password.as_bytes()),
    };
    let reply = conn.call(Request::Auth(auth).to_frame(3)).await;
    assert_eq!(reply.status(), Some(Status::Ok), "{}", reply.message());
}

fn denied<T: std::fmt::Debug>(reply: Result<T, ReplyError>) -> bool {
    matches!(
        reply,
        Err(ReplyError::Server {
            status: Status::NoPermission,
            ..
        })
    )
}

#[tokio::test]
async fn monitors_read_the_log_only_admins_reset_it_and_apps_see_nothing() {
    let users = TestUsers::standard();
    let daemon = daemon(128, users.config());
    let mut app = daemon.connect().await;
    login(&mut app, "app", APP_PASSWORD).await;
    assert!(denied(slowlog(&mut app, Slowlog::Get { count: 10 }).await));
    assert!(denied(slowlog(&mut app, Slowlog::Len).await));
    assert!(denied(slowlog(&mut app, Slowlog::Reset).await));

    let mut monitor = daemon.connect().await;
    login(&mut monitor, "monitor", MONITOR_PASSWORD).await;
    assert!(!entries(&mut monitor, 10).await.is_empty());
    assert!(len(&mut monitor).await.len > 0);
    assert!(denied(slowlog(&mut monitor, Slowlog::Reset).await));

    let mut admin = daemon.connect().await;
    login(&mut admin, "admin", ADMIN_PASSWORD).await;
    assert_eq!(
        slowlog(&mut admin, Slowlog::Reset).await,
        Ok(SlowlogReply::Reset)
    );

    // The same over RESP.
    let mut resp = daemon.resp_connect().await;
    assert_eq!(resp.call(&["AUTH", "app", APP_PASSWORD]).await.text(), "OK");
    assert!(resp.call(&["SLOWLOG", "GET"]).await.is_error("NOPERM"));
    assert_eq!(
        resp.call(&["AUTH", "monitor", MONITOR_PASSWORD])
            .await
            .text(),
        "OK"
    );
    assert!(matches!(
        resp.call(&["SLOWLOG", "GET"]).await,
        Value::Array(_)
    ));
    let refused = resp.call(&["SLOWLOG", "RESET"]).await;
    assert!(refused.is_error("NOPERM"), "{refused:?}");
    assert!(refused.text().contains("slowlog|reset"), "{refused:?}");
    assert_eq!(
        resp.call(&["AUTH", "admin", ADMIN_PASSWORD]).await.text(),
        "OK"
    );
    assert_eq!(resp.call(&["SLOWLOG", "RESET"]).await.text(), "OK");
    daemon.assert_no_panic();
}

// ---------------------------------------------------------------------------------------------
// Clients we did not write: redis-cli and redis-py (installed by .ci/run)
// ---------------------------------------------------------------------------------------------

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a missing client skips its test (`SESSIOND_TESTS_ALLOW_MISSING=1`) rather than
/// failing it, as in tests/resp_clients.rs.
fn skip_missing(what: &str) -> bool {
    let skip = std::env::var("SESSIOND_TESTS_ALLOW_MISSING").is_ok_and(|v| v == "1");
    assert!(
        skip,
        "{what} is not installed (.ci/run installs it; SESSIOND_TESTS_ALLOW_MISSING=1 skips)"
    );
    eprintln!("skipped: {what} is not installed");
    true
}

#[tokio::test]
async fn redis_cli_reads_the_slow_log() {
    let Some(redis_cli) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-cli"))
            .find(|path| path.is_file())
    }) else {
        skip_missing("redis-cli");
        return;
    };
    let daemon = daemon(128, "");
    let mut resp = daemon.resp_connect().await;
    resp.call(&["SET", SECRET_KEY, "v"]).await;
    let addr = daemon.resp_addr();
    let mut command = Command::new(redis_cli);
    command.args([
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
        "slowlog",
        "get",
        "-1",
    ]);
    let out = run_command(command, b"", CLIENT_TIMEOUT);
    assert!(out.status.success(), "{}", out.stderr);
    // redis-cli prints each field of each entry on a line of its own.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.contains(&"set"), "{}", out.stdout);
    assert!(
        lines.contains(&format!("<key: {} bytes>", SECRET_KEY.len()).as_str()),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(SECRET_KEY), "{}", out.stdout);
}

/// The Python of the virtual environment with redis-py 8 that tests/python/setup-venvs.sh
/// builds.
fn redis_py() -> Option<PathBuf> {
    let root = std::env::var_os("SESSIOND_PYENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv"));
    Some(root.join("redis8/bin/python")).filter(|p| p.is_file())
}

/// What redis-py makes of the log: `slowlog_get()` parses Redis's entry shape into dicts.
const REDIS_PY_SCRIPT: &str = r#"
import os, sys, redis
host, port = os.environ["SESSIOND_RESP_ADDR"].rsplit(":", 1)
r = redis.Redis(host=host, port=int(port), decode_responses=True)
r.set(os.environ["SECRET_KEY"], "v")
log = r.slowlog_get(100)
# redis-py leaves the arguments undecoded in some versions: compare text.
text = lambda v: v.decode() if isinstance(v, bytes) else v
for e in log:
    e["command"], e["client_address"] = text(e["command"]), text(e["client_address"])
sets = [e for e in log if e["command"].startswith("set ")]
assert sets, log
entry = sets[0]
assert entry["command"] == "set <key: %d bytes>" % len(os.environ["SECRET_KEY"]), entry
assert isinstance(entry["duration"], int) and entry["duration"] >= 0, entry
assert entry["client_address"].startswith("127.0.0.1:"), entry
assert os.environ["SECRET_KEY"] not in repr(log)
assert r.slowlog_len() >= 2
assert r.slowlog_reset()
assert r.slowlog_len() <= 1
print("ok", len(log))
"#;

#[tokio::test]
async fn redis_py_parses_the_slow_log() {
    let Some(python) = redis_py() else {
        skip_missing("the redis-py 8 environment (tests/python/setup-venvs.sh)");
        return;
    };
    let daemon = daemon(128, "");
    let mut command = Command::new(python);
    command
        .args(["-c", REDIS_PY_SCRIPT])
        .env("SESSIOND_RESP_ADDR", daemon.resp_addr().to_string())
        .env("SECRET_KEY", SECRET_KEY);
    let out = run_command(command, b"", CLIENT_TIMEOUT);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("ok "), "{}", out.stdout);
}

// ---------------------------------------------------------------------------------------------
// sessiond-cli
// ---------------------------------------------------------------------------------------------

fn cli(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(binary("sessiond-cli"))
        .arg("--addr")
        .arg(daemon.addr().to_string())
        .args(args)
        .env_remove("SESSIOND_ADDR")
        .env_remove("SESSIOND_USER")
        .env_remove("SESSIOND_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run sessiond-cli")
}

#[track_caller]
fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

#[tokio::test]
async fn the_cli_gets_counts_and_resets_the_log() {
    let daemon = daemon(128, "");
    let mut conn = daemon.connect().await;
    let set = Set {
        key: Bytes::from_static(SECRET_KEY.as_bytes()),
        value: Bytes::from_static(b"v"),
        ttl_ms: 60_000,
        mode: SetMode::Upsert,
    };
    conn.call(Request::Set(set).to_frame(1)).await;

    let out = stdout_of(&cli(&daemon, &["slowlog", "get", "50"]));
    assert!(!out.contains(SECRET_KEY), "{out}");
    let set_line = out
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields[4] == "SET")
        .unwrap_or_else(|| panic!("no SET line in {out}"));
    // ID UNIX_MS DURATION_US PROTOCOL COMMAND KEY_LEN CLIENT
    assert_eq!(set_line.len(), 7, "{set_line:?}");
    assert_eq!(set_line[3], "native");
    assert_eq!(set_line[5], SECRET_KEY.len().to_string());
    assert!(set_line[6].starts_with("127.0.0.1:"));

    let out = stdout_of(&cli(&daemon, &["slowlog", "len"]));
    assert!(out.contains("\nmax_len 128\nthreshold_us 0\n"), "{out}");
    assert_eq!(stdout_of(&cli(&daemon, &["slowlog", "reset"])), "");
    // The default is `get 10`: after the reset, at most the reset itself and this GET's
    // predecessor.
    let out = stdout_of(&cli(&daemon, &["slowlog"]));
    assert!(out.lines().count() <= 2, "{out}");
}

#[tokio::test]
async fn the_cli_watch_prints_a_header_and_one_line_per_interval() {
    let daemon = daemon(128, "");
    let started = std::time::Instant::now();
    let out = cli(
        &daemon,
        &["stats", "--watch", "--interval", "200ms", "--count", "3"],
    );
    let elapsed = started.elapsed();
    let out = stdout_of(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header[0], "sessions");
    assert!(header.contains(&"req/s"), "{out}");
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), header.len(), "{line}");
        // The watch's own STATS requests are requests: the rate is never zero.
        let rate: f64 = fields[4].parse().expect("a rate");
        assert!(rate > 0.0, "{line}");
    }
    // Three intervals, not three immediate samples.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
}

#[test]
fn the_cli_refuses_a_watch_option_without_watch() {
    let daemon = Daemon::start();
    let out = cli(&daemon, &["stats", "--count", "3"]);
    assert_eq!(out.status.code(), Some(2));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
