//! Authentication, roles and protected mode, against the real binary, on both protocols.
//!
//! The users are those of [`users_config`]: one per role, their passwords from an environment
//! variable (`app`, `admin`) or a file (`monitor`). What each role may run is written out
//! here, independently of the server's table, and every cell is tried.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sessiond_proto::command::{Auth, AuthReply, Del, Get, HelloReply, Stats, StatsReply, Touch};
use sessiond_proto::{ClientCodec, Opcode, Request, ResponseFrame, Status};
use sessiond_tests::resp::{RespConn, Value};
use sessiond_tests::{binary, run_command, set_request, Conn, Daemon, IO_TIMEOUT};
use tokio::net::TcpSocket;
use tokio_util::codec::Framed;

const APP_PW: &str = "app-pw-7d1e";
const MONITOR_PW: &str = "monitor-pw-93b0";
const ADMIN_PW: &str = "admin-pw-c4f2";
const HOUR_MS: u64 = 60 * 60 * 1000;

/// A daemon with one user per role and a RESP listener, plus `extra` config.
struct Secured {
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

/// `[auth]` with `auth_extra` lines, and the three users.
fn users_config(dir: &Path, auth_extra: &str) -> String {
    let monitor_file = dir.join("monitor.pw");
    // A secrets manager's file ends with a newline, which is not part of the password.
    std::fs::write(&monitor_file, format!("{MONITOR_PW}\n")).expect("write password file");
    format!(
        "[resp]\nallow_flush = true\n\
         [auth]\n{auth_extra}\
         [[auth.users]]\nname = \"app\"\nrole = \"app\"\npassword_env = \"TEST_APP_PW\"\n\
         [[auth.users]]\nname = \"monitor\"\nrole = \"monitor\"\npassword_file = {monitor_file:?}\n\
         [[auth.users]]\nname = \"admin\"\nrole = \"admin\"\npassword_env = \"TEST_ADMIN_PW\"\n"
    )
}

fn secured(auth_extra: &str) -> Secured {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = users_config(dir.path(), auth_extra);
    let data = dir.path().join("data");
    let daemon = Daemon::start_in_with_env(
        &config,
        &data,
        &["--resp-listen", "127.0.0.1:0"],
        &[("TEST_APP_PW", APP_PW), ("TEST_ADMIN_PW", ADMIN_PW)],
    );
    Secured { daemon, _dir: dir }
}

fn password_of(user: &str) -> &'static str {
    match user {
        "app" => APP_PW,
        "monitor" => MONITOR_PW,
        _ => ADMIN_PW,
    }
}

fn auth_request(user: &str, password: &str) -> Request {
    Request::Auth(Auth {
        user: user.into(),
        password: Bytes::copy_from_slice(password.as_bytes()),
    })
}

/// A native connection authenticated as `user`.
async fn native_as(daemon: &Daemon, user: &str) -> Conn {
    let mut conn = daemon.connect().await;
    let reply = conn.exchange(&auth_request(user, password_of(user))).await;
    let role = AuthReply::from_frame(&reply).unwrap_or_else(|e| panic!("AUTH {user}: {e}"));
    assert_eq!(role.role, user, "each test user is named after its role");
    conn
}

/// A RESP connection authenticated as `user`.
async fn resp_as(daemon: &Daemon, user: &str) -> RespConn {
    let mut conn = daemon.resp_connect().await;
    let reply = conn.call(&["AUTH", user, password_of(user)]).await;
    assert_eq!(reply, Value::Simple("OK".into()), "AUTH {user}");
    conn
}

/// The daemon's counters, read as the admin.
async fn admin_stats(daemon: &Daemon) -> StatsReply {
    let mut conn = native_as(daemon, "admin").await;
    let reply = conn.exchange(&Request::Stats(Stats)).await;
    StatsReply::from_frame(&reply).expect("STATS as admin")
}

fn stat(stats: &StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
        .parse()
        .expect("a number")
}

fn status(reply: &ResponseFrame) -> Status {
    reply.status().expect("a known status")
}

// ---------------------------------------------------------------------------------------------
// The role table, on both protocols
// ---------------------------------------------------------------------------------------------

/// Whether a user may run a command: `None` is a connection that has not authenticated.
/// The expected answers, written from the specification (PROTOCOL.md 5.8, docs/RESP.md).
struct Row {
    user: Option<&'static str>,
    native: [bool; 13],
    resp: [bool; 15],
}

const RESP_CMDS: [&[&str]; 15] = [
    &["PING"],
    &["GET", "k"],
    &["SET", "k", "v"],
    &["EXPIRE", "k", "100"],
    &["TTL", "k"],
    &["DEL", "k"],
    &["INFO", "stats"],
    &["SCAN", "0"],
    &["DBSIZE"],
    &["CONFIG", "GET", "maxmemory"],
    &["FLUSHDB"],
    &["SELECT", "0"],
    &["CLIENT", "ID"],
    &["SESSIOND.SET", "k", "v", "OWNER", "u"],
    &["SESSIOND.SESSIONS", "u"],
];

const TABLE: [Row; 4] = [
    Row {
        user: None,
        //       HELLO PING   GET    SET    TOUCH  DEL    STATS  SLOWLOG SET_SESSION LIST_SESSIONS END_ALL ROTATE SCAN
        native: [
            true, true, false, false, false, false, false, false, false, false, false, false, false,
        ],
        //     PING  GET    SET    EXPIRE TTL    DEL    INFO   SCAN   DBSIZE CONFIG FLUSH  SELECT CLIENT S.SET S.SESSIONS
        resp: [
            true, false, false, false, false, false, false, false, false, false, false, false,
            false, false, false,
        ],
    },
    Row {
        user: Some("app"),
        native: [
            true, true, true, true, true, true, false, false, true, true, true, true, false,
        ],
        resp: [
            true, true, true, true, true, true, false, false, false, false, false, true, true,
            true, true,
        ],
    },
    Row {
        user: Some("monitor"),
        native: [
            true, true, false, false, false, false, true, true, false, false, false, false, false,
        ],
        resp: [
            true, false, false, false, false, false, true, false, false, false, false, true, true,
            false, false,
        ],
    },
    Row {
        user: Some("admin"),
        native: [true; 13],
        resp: [true; 15],
    },
];

fn native_request(op: Opcode) -> Request {
    match op {
        Opcode::Hello => Request::Hello(sessiond_proto::command::Hello {
            min_version: 1,
            max_version: 1,
            client_name: Bytes::new(),
        }),
        Opcode::Ping => sessiond_tests::ping_request(b"x"),
        Opcode::Get => Request::Get(Get {
            key: Bytes::from_static(b"k"),
            touch_ttl_ms: None,
        }),
        Opcode::Set => set_request(
            b"k",
            b"v",
            HOUR_MS,
            sessiond_proto::command::SetMode::Upsert,
        ),
        Opcode::Touch => Request::Touch(Touch {
            key: Bytes::from_static(b"k"),
            ttl_ms: HOUR_MS,
        }),
        Opcode::Del => Request::Del(Del {
            key: Bytes::from_static(b"k"),
            if_version: None,
        }),
        Opcode::Stats => Request::Stats(Stats),
        Opcode::Auth => unreachable!("AUTH is tested on its own"),
        // GET: a monitor may read the slow log; RESET's stricter rule is tests/slowlog.rs's.
        Opcode::Slowlog => Request::Slowlog(sessiond_proto::command::Slowlog::Get { count: 10 }),
        Opcode::SetSession => Request::SetSession(sessiond_proto::command::SetSession {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ttl_ms: HOUR_MS,
            mode: sessiond_proto::command::SetMode::Upsert,
            owner: Some(Bytes::from_static(b"u")),
            lifetime_ms: None,
            owner_limit: None,
        }),
        Opcode::ListSessions => Request::ListSessions(sessiond_proto::command::ListSessions {
            owner: Bytes::from_static(b"u"),
            max_sessions: 0,
        }),
        Opcode::EndAll => Request::EndAll(sessiond_proto::command::EndAll {
            owner: Bytes::from_static(b"u"),
            except: None,
        }),
        Opcode::Rotate => Request::Rotate(sessiond_proto::command::Rotate {
            old_key: Bytes::from_static(b"k"),
            new_key: Bytes::from_static(b"k2"),
            if_version: None,
            bind: None,
        }),
        // Enumerates every session id: the admin role's alone.
        Opcode::Scan => Request::Scan(sessiond_proto::command::Scan {
            cursor: 0,
            max_entries: 10,
        }),
    }
}

/// Each role can do exactly what its row says, on both protocols: allowed commands get
/// their ordinary answer, the others `AUTH_REQUIRED`/`NO_PERMISSION` (native) or
/// `-NOAUTH`/`-NOPERM` (RESP), and the connection carries on after each refusal.
#[tokio::test]
async fn each_role_can_run_exactly_its_row_on_both_protocols() {
    let s = secured("");
    let daemon = &s.daemon;
    for row in &TABLE {
        let who = row.user.unwrap_or("nobody");
        let mut native = match row.user {
            Some(user) => native_as(daemon, user).await,
            None => daemon.connect().await,
        };
        // Every opcode but AUTH, in numeric order, like the row.
        let ops: Vec<_> = Opcode::ALL
            .iter()
            .filter(|op| **op != Opcode::Auth)
            .collect();
        assert_eq!(ops.len(), row.native.len(), "a column for every opcode");
        for (op, allowed) in ops.into_iter().zip(row.native) {
            let reply = native.exchange(&native_request(*op)).await;
            let refused = match row.user {
                None => Status::AuthRequired,
                Some(_) => Status::NoPermission,
            };
            if allowed {
                assert!(
                    !matches!(status(&reply), Status::AuthRequired | Status::NoPermission),
                    "{who} may run {op:?}, got {reply:?}"
                );
            } else {
                assert_eq!(status(&reply), refused, "{who} may not run {op:?}");
            }
        }

        let mut resp = match row.user {
            Some(user) => resp_as(daemon, user).await,
            None => daemon.resp_connect().await,
        };
        for (cmd, allowed) in RESP_CMDS.iter().zip(row.resp) {
            let reply = resp.call(cmd).await;
            let refused = reply.is_error("NOAUTH") || reply.is_error("NOPERM");
            assert_eq!(!refused, allowed, "{who} running {cmd:?}: {reply:?}");
            if refused && row.user.is_some() {
                let expected = format!(
                    "NOPERM User {who} has no permissions to run the '{}' command",
                    cmd[0].to_ascii_lowercase()
                );
                assert_eq!(reply, Value::Error(expected));
            }
            if refused && row.user.is_none() {
                assert_eq!(
                    reply,
                    Value::Error("NOAUTH Authentication required.".into())
                );
            }
        }
    }
    daemon_alive(&s);
}

fn daemon_alive(s: &Secured) {
    s.daemon.assert_no_panic();
}

/// `INFO` shows the monitor everything but the keyspace section, which counts keys.
#[tokio::test]
async fn info_hides_the_keyspace_from_the_monitor_but_not_the_admin() {
    let s = secured("");
    let mut admin = resp_as(&s.daemon, "admin").await;
    assert_eq!(
        admin.call(&["SET", "session:1", "v"]).await,
        Value::Simple("OK".into())
    );
    let all = admin.call(&["INFO"]).await.text();
    assert!(
        all.contains("# Keyspace") && all.contains("db0:keys=1"),
        "{all}"
    );
    let mut monitor = resp_as(&s.daemon, "monitor").await;
    let info = monitor.call(&["INFO"]).await.text();
    assert!(info.contains("# Stats"), "{info}");
    assert!(
        !info.contains("Keyspace") && !info.contains("db0"),
        "{info}"
    );
    let keyspace = monitor.call(&["INFO", "keyspace"]).await.text();
    assert!(!keyspace.contains("db0"), "{keyspace}");
}

/// HELLO tells a client that the server requires AUTH; the role comes back in AUTH's reply;
/// a second AUTH switches users.
#[tokio::test]
async fn hello_announces_auth_and_auth_can_switch_users() {
    let s = secured("");
    let mut conn = s.daemon.connect().await;
    let hello = HelloReply::from_frame(&conn.hello(1, 1).await).expect("HELLO");
    assert!(hello.auth_required());
    let reply = conn.exchange(&auth_request("monitor", MONITOR_PW)).await;
    assert_eq!(AuthReply::from_frame(&reply).unwrap().role, "monitor");
    let get = conn.exchange(&native_request(Opcode::Get)).await;
    assert_eq!(status(&get), Status::NoPermission);
    let reply = conn.exchange(&auth_request("app", APP_PW)).await;
    assert_eq!(AuthReply::from_frame(&reply).unwrap().role, "app");
    let get = conn.exchange(&native_request(Opcode::Get)).await;
    assert_eq!(status(&get), Status::NotFound);
    // A failed switch keeps the user.
    let reply = conn.exchange(&auth_request("admin", "nope")).await;
    assert_eq!(status(&reply), Status::AuthFailed);
    let get = conn.exchange(&native_request(Opcode::Get)).await;
    assert_eq!(status(&get), Status::NotFound);

    // RESP: HELLO 3 AUTH, and the deprecated form with a user of its own.
    let mut resp = s.daemon.resp_connect().await;
    let hello = resp.call(&["HELLO", "3", "AUTH", "app", APP_PW]).await;
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    assert_eq!(resp.call(&["GET", "k"]).await, Value::Null);
}

// ---------------------------------------------------------------------------------------------
// Wrong credentials
// ---------------------------------------------------------------------------------------------

/// A wrong password and an unknown user get the same answer, on both protocols; the
/// connection stays usable and unauthenticated, and every failure is counted.
#[tokio::test]
async fn wrong_password_and_unknown_user_are_answered_alike_and_counted() {
    let s = secured("");
    let mut conn = s.daemon.connect().await;
    let wrong = conn.exchange(&auth_request("app", "not-it")).await;
    let unknown = conn.exchange(&auth_request("mallory", APP_PW)).await;
    assert_eq!(status(&wrong), Status::AuthFailed);
    assert_eq!(
        (status(&unknown), unknown.value.clone()),
        (status(&wrong), wrong.value.clone())
    );
    let get = conn.exchange(&native_request(Opcode::Get)).await;
    assert_eq!(status(&get), Status::AuthRequired);

    let mut resp = s.daemon.resp_connect().await;
    let wrongpass =
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(resp.call(&["AUTH", "app", "not-it"]).await, wrongpass);
    assert_eq!(resp.call(&["AUTH", "mallory", APP_PW]).await, wrongpass);
    // `AUTH password` is the user `default`, which only resp.password defines.
    assert_eq!(resp.call(&["AUTH", APP_PW]).await, wrongpass);
    assert_eq!(
        resp.call(&["GET", "k"]).await,
        Value::Error("NOAUTH Authentication required.".into())
    );

    let stats = admin_stats(&s.daemon).await;
    assert_eq!(stat(&stats, "auth_failures"), 5);
    assert_eq!(stat(&stats, "auth_throttled"), 0);
}

// ---------------------------------------------------------------------------------------------
// Pre-authentication limits
// ---------------------------------------------------------------------------------------------

/// A connection that does not authenticate within auth.timeout is closed, without a frame,
/// on both protocols; one that did stays open.
#[tokio::test]
async fn the_auth_deadline_closes_unauthenticated_connections() {
    let s = secured("timeout = \"400ms\"\n");
    let mut silent = s.daemon.connect().await;
    let mut chatty = s.daemon.connect().await;
    let mut resp = s.daemon.resp_connect().await;
    let mut authenticated = native_as(&s.daemon, "app").await;
    // PING does not count as authenticating.
    chatty.ping(b"still here").await;
    let started = Instant::now();
    silent.expect_closed().await;
    chatty.expect_closed().await;
    resp.expect_closed().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    authenticated.ping(b"").await;
    assert_eq!(stat(&admin_stats(&s.daemon).await, "auth_timeouts"), 3);
}

/// Before authentication a frame over 4096 bytes is answered TOO_LARGE and the connection
/// closed; after it, the same frame is an ordinary write. (RESP's limits before AUTH are
/// Redis's, tested in resp.rs.)
#[tokio::test]
async fn an_oversized_frame_before_auth_closes_the_connection() {
    let s = secured("");
    let big = set_request(
        b"k",
        &[b'v'; 5000],
        HOUR_MS,
        sessiond_proto::command::SetMode::Upsert,
    );
    let mut conn = s.daemon.connect().await;
    let reply = conn.exchange(&big).await;
    assert_eq!(status(&reply), Status::TooLarge);
    conn.expect_closed().await;

    let mut conn = native_as(&s.daemon, "app").await;
    let reply = conn.exchange(&big).await;
    assert_eq!(status(&reply), Status::Ok);
}

// ---------------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------------

/// A native connection from a source address of our choosing (any 127.0.0.0/8 address
/// reaches a server on 127.0.0.1), so that the server sees two different clients.
async fn connect_from(
    source: [u8; 4],
    server: SocketAddr,
) -> Framed<tokio::net::TcpStream, ClientCodec> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the source address");
    let stream = socket.connect(server).await.expect("connect");
    Framed::new(stream, ClientCodec::new())
}

async fn timed_auth(
    conn: &mut Framed<tokio::net::TcpStream, ClientCodec>,
    password: &str,
) -> (Status, Duration) {
    let started = Instant::now();
    conn.send(auth_request("app", password).to_frame(1))
        .await
        .expect("send AUTH");
    let reply = tokio::time::timeout(IO_TIMEOUT, conn.next())
        .await
        .expect("an answer in time")
        .expect("a frame")
        .expect("a readable frame");
    (status(&reply), started.elapsed())
}

/// Beyond max_failures_per_minute, an address's failed AUTHs are answered after a delay and
/// counted; meanwhile another address fails at full speed, and an authenticated client's
/// requests are not slowed at all.
#[tokio::test]
async fn failed_attempts_from_one_address_are_slowed_and_others_are_not() {
    let s = secured("max_failures_per_minute = 3\n");
    let addr = s.daemon.addr();
    let mut guesser = connect_from([127, 0, 0, 1], addr).await;
    for i in 0..3 {
        let (status, took) = timed_auth(&mut guesser, "guess").await;
        assert_eq!(status, Status::AuthFailed);
        assert!(
            took < Duration::from_millis(500),
            "failure {i} took {took:?}"
        );
    }

    // An authenticated client keeps working while the guesser is held.
    let mut worker = native_as(&s.daemon, "app").await;
    let held = tokio::spawn(async move {
        let mut took = Vec::new();
        for _ in 0..2 {
            took.push(timed_auth(&mut guesser, "guess").await);
        }
        took
    });
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let started = Instant::now();
        worker.ping(b"").await;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_millis(300),
        "a PING took {slowest:?}"
    );

    // Another address is not throttled.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    let (status, took) = timed_auth(&mut other, "guess").await;
    assert_eq!(status, Status::AuthFailed);
    assert!(
        took < Duration::from_millis(500),
        "the other address waited {took:?}"
    );
    // Nor is the right password from it.
    let (status, _) = timed_auth(&mut other, APP_PW).await;
    assert_eq!(status, Status::Ok);

    for (status, took) in held.await.expect("guesser task") {
        assert_eq!(status, Status::AuthFailed);
        assert!(
            took >= Duration::from_millis(900),
            "a throttled failure took {took:?}"
        );
    }
    let stats = admin_stats(&s.daemon).await;
    assert_eq!(stat(&stats, "auth_failures"), 6);
    assert_eq!(stat(&stats, "auth_throttled"), 2);
}

// ---------------------------------------------------------------------------------------------
// Password sources
// ---------------------------------------------------------------------------------------------

/// `sessiond hash-password` prints a hash that the server then accepts the password for
/// (and no other), and that does not contain the password.
#[tokio::test]
async fn hash_password_prints_a_hash_the_server_verifies() {
    let password = "correct horse battery";
    let mut command = Command::new(binary("sessiond"));
    command.arg("hash-password");
    let out = run_command(command, format!("{password}\n").as_bytes(), IO_TIMEOUT);
    assert!(out.status.success(), "{}", out.stderr);
    let hash = out.stdout.trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(password) && !out.stderr.contains(password));

    let config =
        format!("[[auth.users]]\nname = \"ops\"\nrole = \"admin\"\npassword_hash = {hash:?}\n");
    let daemon = Daemon::start_with_config(&config);
    for _ in 0..2 {
        // The second time from the digest kept after the first verification.
        let mut conn = daemon.connect().await;
        let reply = conn.exchange(&auth_request("ops", password)).await;
        assert_eq!(AuthReply::from_frame(&reply).unwrap().role, "admin");
        let reply = conn.exchange(&auth_request("ops", "correct horse")).await;
        assert_eq!(status(&reply), Status::AuthFailed);
    }

    // No password on stdin: refused.
    let mut command = Command::new(binary("sessiond"));
    command.arg("hash-password");
    let out = run_command(command, b"\n", IO_TIMEOUT);
    assert!(!out.status.success());
}

/// A password file's trailing newline is not part of the password; a missing variable
/// stops the start with its name.
#[tokio::test]
async fn password_files_and_variables() {
    let s = secured("");
    let mut conn = s.daemon.connect().await;
    let reply = conn
        .exchange(&auth_request("monitor", &format!("{MONITOR_PW}\n")))
        .await;
    assert_eq!(status(&reply), Status::AuthFailed);
    native_as(&s.daemon, "monitor").await;
    native_as(&s.daemon, "app").await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let config = users_config(dir.path(), "");
    let finished = match Daemon::try_start_in(&config, &dir.path().join("data"), &[]) {
        Ok(_) => panic!("started without TEST_APP_PW"),
        Err(finished) => finished,
    };
    assert_eq!(finished.status.code(), Some(1));
    assert!(
        finished.stderr.contains("TEST_APP_PW"),
        "{}",
        finished.stderr
    );

    // A missing password file stops the start too, naming the file, with the OS error said
    // once (regression: it was repeated).
    let config = "[[auth.users]]\nname = \"app\"\nrole = \"app\"\n\
                  password_file = \"/nonexistent/sessiond-password\"\n";
    let finished = match Daemon::try_start_in(config, &dir.path().join("data"), &[]) {
        Ok(_) => panic!("started without its password file"),
        Err(finished) => finished,
    };
    assert_eq!(finished.status.code(), Some(1));
    assert!(
        finished.stderr.contains("/nonexistent/sessiond-password"),
        "{}",
        finished.stderr
    );
    assert_eq!(
        finished.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        finished.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Protected mode
// ---------------------------------------------------------------------------------------------

fn run_sessiond(config: &str, args: &[&str]) -> sessiond_tests::Finished {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sessiond.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = Command::new(binary("sessiond"));
    command
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args);
    run_command(command, b"", IO_TIMEOUT)
}

/// A listener on a non-loopback address without authentication refuses to start, naming the
/// address, the key and the three ways out; with the override it starts and warns.
#[tokio::test]
async fn protected_mode_refuses_a_network_listener_without_auth() {
    for (args, key) in [
        (&["--listen", "0.0.0.0:0"][..], "server.listen"),
        (
            &["--listen", "127.0.0.1:0", "--resp-listen", "0.0.0.0:0"][..],
            "resp.listen",
        ),
    ] {
        let out = run_sessiond("", args);
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        let expected = format!(
            "refusing to listen on 0.0.0.0:0 ({key}) without authentication: define users in \
             [auth] (see `sessiond hash-password`), bind a loopback address, or set \
             auth.allow_unauthenticated_network = true"
        );
        assert!(out.stderr.contains(&expected), "{}", out.stderr);
        assert!(!out.stdout.contains("listening on"), "{}", out.stdout);
    }

    let daemon = Daemon::start_with_args(
        "[auth]\nallow_unauthenticated_network = true\n",
        &["--resp-listen", "0.0.0.0:0"],
    );
    let warning = daemon
        .wait_for_log("the protected-mode warning", |line| {
            line.contains("WARN") && line.contains("WITHOUT AUTHENTICATION")
        })
        .await;
    assert!(warning.contains("0.0.0.0:0"), "{warning}");
    daemon.connect().await.ping(b"").await;

    // With users, a network address is fine and nothing is said about it.
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = users_config(dir.path(), "");
    let daemon = Daemon::start_in_with_env(
        &config,
        &dir.path().join("data"),
        &["--resp-listen", "0.0.0.0:0"],
        &[("TEST_APP_PW", APP_PW), ("TEST_ADMIN_PW", ADMIN_PW)],
    );
    native_as(&daemon, "app").await;
    assert!(
        !daemon
            .logs()
            .iter()
            .any(|l| l.contains("WITHOUT AUTHENTICATION")),
        "{:?}",
        daemon.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets stay secret
// ---------------------------------------------------------------------------------------------

/// Passwords, right or wrong, never appear in the daemon's log (at debug level), in STATS,
/// INFO or any error message; nor does a password hash, even one the config refuses.
#[tokio::test]
async fn secrets_never_appear_in_logs_stats_info_or_errors() {
    let wrong = "wrong-guess-5e77";
    let s = secured("max_failures_per_minute = 1\n");
    let mut seen = Vec::<String>::new();
    let mut conn = s.daemon.connect().await;
    for password in [wrong, wrong, APP_PW] {
        let reply = conn.exchange(&auth_request("app", password)).await;
        seen.push(reply.message());
    }
    let mut resp = s.daemon.resp_connect().await;
    for args in [
        &["AUTH", "app", wrong][..],
        &["HELLO", "3", "AUTH", "admin", wrong],
        &["AUTH", wrong],
        &["AUTH", "admin", ADMIN_PW],
        &["INFO"],
        &["CONFIG", "GET", "*"],
    ] {
        seen.push(format!("{:?}", resp.call(args).await));
    }
    let stats = admin_stats(&s.daemon).await;
    seen.push(format!("{stats:?}"));
    // Let the log lines of the last requests arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    seen.extend(s.daemon.logs());
    assert!(
        seen.iter().any(|l| l.contains("authentication failed")),
        "the failures are logged: {seen:#?}"
    );
    for secret in [wrong, APP_PW, ADMIN_PW, MONITOR_PW] {
        for line in &seen {
            assert!(!line.contains(secret), "{secret:?} appears in {line:?}");
        }
    }

    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$SECRETHASHxxxxxxxxxx";
    let out = run_sessiond(
        &format!(
            "[[auth.users]]\nname = \"a\"\nrole = \"app\"\npassword_hash = \"{hash}broken$\"\n"
        ),
        &["--listen", "127.0.0.1:0"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("auth.users.password_hash"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("SECRETHASH"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// A server without [auth]
// ---------------------------------------------------------------------------------------------

/// Without users nothing changes: HELLO does not ask for AUTH, every command runs, and an
/// AUTH (from a client configured with credentials) succeeds as admin.
#[tokio::test]
async fn a_server_without_users_serves_everyone_as_before() {
    let daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    let hello = HelloReply::from_frame(&conn.hello(1, 1).await).expect("HELLO");
    assert_eq!(hello.flags, 0);
    conn.stats().await;
    let reply = conn.exchange(&auth_request("anyone", "anything")).await;
    assert_eq!(AuthReply::from_frame(&reply).unwrap().role, "admin");
    conn.put(b"k", b"v", HOUR_MS).await;
    // A big frame is fine: there is no pre-auth limit without auth.
    let mut fresh = daemon.connect().await;
    let big = set_request(
        b"k2",
        &[b'v'; 5000],
        HOUR_MS,
        sessiond_proto::command::SetMode::Upsert,
    );
    assert_eq!(status(&fresh.exchange(&big).await), Status::Ok);
}
