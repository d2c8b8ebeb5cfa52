//! End-to-end tests of `MULTI`/`EXEC`/`DISCARD`/`WATCH`/`UNWATCH` on the RESP listener of
//! the real `sessiond` binary, in raw RESP: the queued replies and `EXEC`'s array in RESP2
//! and RESP3, `EXECABORT` after a queueing error, per-command errors inside `EXEC`, `WATCH`
//! aborts caused by another RESP connection, by expiry and by the native protocol, roles,
//! persistence, and atomicity against concurrent clients.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sessiond_tests::resp::{RespConn, Value};
use sessiond_tests::users::{TestUsers, ADMIN_PASSWORD, APP_PASSWORD, MONITOR_PASSWORD};
use sessiond_tests::{Daemon, Deadline};

const HOUR_MS: u64 = 60 * 60 * 1000;

/// A daemon with a RESP listener on an ephemeral port and `config` (TOML).
fn daemon_with(config: &str) -> Daemon {
    Daemon::start_with_args(config, &["--resp-listen", "127.0.0.1:0"])
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

fn queued() -> Value {
    Value::Simple("QUEUED".into())
}

/// An `EXEC` that a watched key aborted: Redis's null array in RESP2 (`*-1`).
fn is_aborted(reply: &Value) -> bool {
    *reply == Value::NullArray
}

/// Runs `MULTI`, each of `commands` (each must answer `QUEUED`), and `EXEC`.
async fn transaction(conn: &mut RespConn, commands: &[&[&str]]) -> Value {
    assert_eq!(conn.call(&["MULTI"]).await, ok());
    for command in commands {
        assert_eq!(conn.call(command).await, queued(), "{command:?}");
    }
    conn.call(&["EXEC"]).await
}

#[tokio::test]
async fn queued_replies_and_the_exec_array_in_resp2_and_resp3() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    // Pipelined, as clients send a transaction: every reply comes back, in order.
    c.send(&["MULTI"]).await;
    c.send(&["SET", "k", "v", "EX", "600"]).await;
    c.send(&["GET", "k"]).await;
    c.send(&["GET", "missing"]).await;
    c.send(&["TTL", "k"]).await;
    c.send(&["EXEC"]).await;
    assert_eq!(c.recv().await, Some(ok()));
    for _ in 0..4 {
        assert_eq!(c.recv().await, Some(queued()));
    }
    let reply = c.recv().await.expect("EXEC's reply");
    let items = reply.items();
    assert_eq!(&items[..3], &[ok(), Value::bulk("v"), Value::NullBulk]);
    assert!((599..=600).contains(&items[3].int()), "{items:?}");
    // An empty transaction is an empty array.
    assert_eq!(transaction(&mut c, &[]).await, Value::Array(Vec::new()));

    assert!(matches!(c.call(&["HELLO", "3"]).await, Value::Map(_)));
    let reply = transaction(&mut c, &[&["GET", "k"], &["GET", "missing"]]).await;
    assert_eq!(reply, Value::Array(vec![Value::bulk("v"), Value::Null]));
    c.call(&["WATCH", "k"]).await;
    let mut other = daemon.resp_connect().await;
    assert_eq!(other.call(&["SET", "k", "changed"]).await, ok());
    assert_eq!(transaction(&mut c, &[&["GET", "k"]]).await, Value::Null);
}

#[tokio::test]
async fn a_queueing_error_aborts_the_whole_transaction() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["MULTI"]).await, ok());
    assert_eq!(c.call(&["SET", "a", "1"]).await, queued());
    assert!(c
        .call(&["SET", "b"])
        .await
        .is_error("ERR wrong number of arguments"));
    assert!(c
        .call(&["NOSUCH", "b"])
        .await
        .is_error("ERR unknown command"));
    assert_eq!(
        c.call(&["SCAN", "0"]).await,
        Value::Error("ERR Command not allowed inside a transaction".into())
    );
    assert_eq!(c.call(&["SET", "c", "3"]).await, queued());
    assert_eq!(
        c.call(&["EXEC"]).await,
        Value::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(c.call(&["GET", "a"]).await, Value::NullBulk);
    assert_eq!(c.call(&["GET", "c"]).await, Value::NullBulk);
    assert_eq!(
        c.call(&["EXEC"]).await,
        Value::Error("ERR EXEC without MULTI".into())
    );
}

/// What redis-py's default pipeline (`transaction=True`) sends for a registered script
/// next to other commands: `MULTI`, `EVALSHA`, `SET`, `EXEC`. sessiond used to refuse the
/// `EVALSHA` and abort the whole transaction.
#[tokio::test]
async fn a_loaded_script_runs_inside_multi_exec() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let script =
        "local n = redis.call('get', KEYS[1]) + 1 redis.call('set', KEYS[1], n) redis.call('set', KEYS[2], ARGV[1]) return n";
    let Value::Bulk(sha) = c.call(&["SCRIPT", "LOAD", script]).await else {
        panic!("SCRIPT LOAD gave no name");
    };
    let sha = String::from_utf8_lossy(&sha).into_owned();
    assert_eq!(c.call(&["SET", "counter", "41"]).await, ok());
    let reply = transaction(
        &mut c,
        &[
            &["EVALSHA", &sha, "2", "counter", "seen", "yes"],
            &["SET", "plain", "v"],
            // A failing script: its own write is undone, the others' stand.
            &[
                "EVAL",
                "redis.call('set', KEYS[1], 'no') error('x')",
                "1",
                "plain",
            ],
            &["GET", "seen"],
        ],
    )
    .await;
    let Value::Array(replies) = reply else {
        panic!("EXEC answered {reply:?}");
    };
    assert_eq!(replies[0], Value::Integer(42));
    assert_eq!(replies[1], ok());
    assert!(
        replies[2].is_error("ERR user_script:1: x"),
        "{:?}",
        replies[2]
    );
    assert_eq!(replies[3], Value::bulk("yes"));
    assert_eq!(c.call(&["GET", "plain"]).await, Value::bulk("v"));
    assert_eq!(c.call(&["GET", "counter"]).await, Value::bulk("42"));
}

#[tokio::test]
async fn a_request_thrown_away_for_its_size_aborts_the_transaction() {
    let daemon = daemon_with("[limits]\nmax_value_bytes = 1024\n");
    let mut c = daemon.resp_connect().await;
    c.call(&["MULTI"]).await;
    assert_eq!(c.call(&["SET", "a", "1"]).await, queued());
    let big = "x".repeat(4096);
    let reply = c.call(&["SET", "b", &big]).await;
    assert!(reply.is_error("ERR request too large"), "{reply:?}");
    assert!(c.call(&["EXEC"]).await.is_error("EXECABORT"));
    assert_eq!(c.call(&["GET", "a"]).await, Value::NullBulk);
}

#[tokio::test]
async fn errors_inside_exec_are_reported_per_command() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    // `EX notanumber` passes the queueing checks (name, arity) and fails when it runs, as
    // INCR on a non-number does in Redis (sessiond has no INCR).
    let reply = transaction(
        &mut c,
        &[
            &["SET", "a", "1"],
            &["SET", "b", "2", "EX", "notanumber"],
            &["SET", "c", "3", "EX", "0"],
            &["SET", "d", "4"],
        ],
    )
    .await;
    assert_eq!(
        reply,
        Value::Array(vec![
            ok(),
            Value::Error("ERR value is not an integer or out of range".into()),
            Value::Error("ERR invalid expire time in 'set' command".into()),
            ok(),
        ])
    );
    let values = c.call(&["MGET", "a", "b", "c", "d"]).await;
    assert_eq!(
        values,
        Value::Array(vec![
            Value::bulk("1"),
            Value::NullBulk,
            Value::NullBulk,
            Value::bulk("4")
        ])
    );
}

#[tokio::test]
async fn nested_multi_watch_in_multi_and_discard() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    assert_eq!(
        c.call(&["DISCARD"]).await,
        Value::Error("ERR DISCARD without MULTI".into())
    );
    c.call(&["MULTI"]).await;
    assert_eq!(
        c.call(&["MULTI"]).await,
        Value::Error("ERR MULTI calls can not be nested".into())
    );
    assert_eq!(
        c.call(&["WATCH", "k"]).await,
        Value::Error("ERR WATCH inside MULTI is not allowed".into())
    );
    assert_eq!(c.call(&["SET", "k", "v"]).await, queued());
    assert_eq!(c.call(&["DISCARD"]).await, ok());
    assert_eq!(c.call(&["GET", "k"]).await, Value::NullBulk);
    // Neither error counted against the transaction.
    c.call(&["MULTI"]).await;
    c.call(&["MULTI"]).await;
    c.call(&["SET", "k", "v"]).await;
    assert_eq!(c.call(&["EXEC"]).await, Value::Array(vec![ok()]));
}

#[tokio::test]
async fn watch_then_another_connection_writes_aborts_exec() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let mut other = daemon.resp_connect().await;
    c.call(&["SET", "k", "v"]).await;
    assert_eq!(c.call(&["WATCH", "k"]).await, ok());
    assert_eq!(other.call(&["SET", "k", "theirs"]).await, ok());
    let reply = transaction(&mut c, &[&["SET", "k", "mine"], &["SET", "j", "mine"]]).await;
    assert!(is_aborted(&reply), "{reply:?}");
    assert_eq!(c.call(&["GET", "k"]).await, Value::bulk("theirs"));
    assert_eq!(c.call(&["GET", "j"]).await, Value::NullBulk, "nothing ran");

    // A deletion aborts too; EXEC unwatched, so it is watched again first.
    c.call(&["WATCH", "k"]).await;
    assert_eq!(other.call(&["DEL", "k"]).await, Value::Integer(1));
    let reply = transaction(&mut c, &[&["SET", "j", "mine"]]).await;
    assert!(is_aborted(&reply), "{reply:?}");

    // Unchanged: it runs.
    c.call(&["WATCH", "k", "j"]).await;
    let reply = transaction(&mut c, &[&["SET", "j", "mine"]]).await;
    assert_eq!(reply, Value::Array(vec![ok()]));
}

#[tokio::test]
async fn watch_then_the_key_expires_aborts_exec() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let mut other = daemon.resp_connect().await;
    assert_eq!(c.call(&["SET", "k", "v", "PX", "200"]).await, ok());
    c.call(&["WATCH", "k"]).await;
    // PTTL reads without touching: nothing but time changes the key.
    let deadline = Deadline::after(Duration::from_secs(5), "the key expires");
    while other.call(&["PTTL", "k"]).await != Value::Integer(-2) {
        deadline.tick().await;
    }
    let reply = transaction(&mut c, &[&["SET", "j", "mine"]]).await;
    assert!(is_aborted(&reply), "{reply:?}");
    assert_eq!(c.call(&["GET", "j"]).await, Value::NullBulk);
}

#[tokio::test]
async fn watch_then_a_native_write_aborts_exec() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let mut native = daemon.connect().await;
    native.put(b"sess", b"v1", HOUR_MS).await;
    c.call(&["WATCH", "sess"]).await;
    native.put(b"sess", b"v2", HOUR_MS).await;
    let reply = transaction(&mut c, &[&["SET", "sess", "mine"]]).await;
    assert!(is_aborted(&reply), "{reply:?}");
    assert_eq!(c.call(&["GET", "sess"]).await, Value::bulk("v2"));

    // A native delete, likewise.
    c.call(&["WATCH", "sess"]).await;
    native.del(b"sess", None).await;
    let reply = transaction(&mut c, &[&["SET", "sess", "mine"]]).await;
    assert!(is_aborted(&reply), "{reply:?}");
}

#[tokio::test]
async fn unwatch_forgets_the_watched_keys() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let mut other = daemon.resp_connect().await;
    c.call(&["WATCH", "k"]).await;
    other.call(&["SET", "k", "theirs"]).await;
    assert_eq!(c.call(&["UNWATCH"]).await, ok());
    let reply = transaction(&mut c, &[&["SET", "k", "mine"]]).await;
    assert_eq!(reply, Value::Array(vec![ok()]));
    assert_eq!(other.call(&["GET", "k"]).await, Value::bulk("mine"));
}

#[tokio::test]
async fn transactions_run_with_the_callers_role() {
    let users = TestUsers::standard();
    let daemon = daemon_with(users.config());
    let login = |user: &'static str, password: &'static str| {
        let daemon = &daemon;
        async move {
            let mut c = daemon.resp_connect().await;
            assert_eq!(c.call(&["AUTH", user, password]).await, ok(), "{user}");
            c
        }
    };
    let mut app = login("app", APP_PASSWORD).await;
    app.call(&["MULTI"]).await;
    assert_eq!(app.call(&["SET", "k", "v"]).await, queued());
    let denied = app.call(&["DBSIZE"]).await;
    assert!(denied.is_error("NOPERM"), "{denied:?}");
    assert!(app.call(&["EXEC"]).await.is_error("EXECABORT"));
    assert_eq!(app.call(&["GET", "k"]).await, Value::NullBulk);

    let mut monitor = login("monitor", MONITOR_PASSWORD).await;
    monitor.call(&["MULTI"]).await;
    assert!(monitor.call(&["SET", "k", "v"]).await.is_error("NOPERM"));
    assert!(monitor.call(&["EXEC"]).await.is_error("EXECABORT"));
    assert!(monitor.call(&["WATCH", "k"]).await.is_error("NOPERM"));

    let mut admin = login("admin", ADMIN_PASSWORD).await;
    let reply = transaction(&mut admin, &[&["SET", "k", "v"], &["DBSIZE"]]).await;
    assert_eq!(reply, Value::Array(vec![ok(), Value::Integer(1)]));

    // Before AUTH nothing can be queued.
    let mut anonymous = daemon.resp_connect().await;
    assert!(anonymous.call(&["MULTI"]).await.is_error("NOAUTH"));
}

#[tokio::test]
async fn a_transactions_writes_survive_a_restart() {
    let daemon = daemon_with("[aof]\nfsync = \"always\"\n");
    let mut c = daemon.resp_connect().await;
    let reply = transaction(
        &mut c,
        &[
            &["SET", "a", "1"],
            &["SET", "b", "2"],
            &["DEL", "a"],
            &["SET", "c", "3"],
        ],
    )
    .await;
    assert_eq!(
        reply,
        Value::Array(vec![ok(), ok(), Value::Integer(1), ok()])
    );
    drop(c);
    // SIGKILL: with fsync = "always" an acknowledged EXEC is on disk.
    let daemon = daemon.restart_with_args(&["--resp-listen", "127.0.0.1:0"]);
    let mut c = daemon.resp_connect().await;
    assert_eq!(
        c.call(&["MGET", "a", "b", "c"]).await,
        Value::Array(vec![Value::NullBulk, Value::bulk("2"), Value::bulk("3")])
    );
}

/// Writers set `a` and `b` to the same new value in one transaction, over and over, while
/// readers read both in a transaction of their own. A reader's `EXEC` holds both keys for
/// its whole run, so it sees the state before some writer's `EXEC` or after it: if a
/// writer's two `SET`s could interleave with other commands, some reader would land between
/// them and see `a != b`. (`MGET a b` would not do as the reader: sessiond reads its keys
/// one at a time, so it may legitimately see two different transactions' values.)
#[tokio::test]
async fn concurrent_transactions_are_atomic() {
    const WRITERS: u64 = 4;
    const READERS: usize = 4;
    const ROUNDS: u64 = 300;
    let daemon = daemon_with("");
    let mut setup = daemon.resp_connect().await;
    transaction(&mut setup, &[&["SET", "a", "0"], &["SET", "b", "0"]]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut c = daemon.resp_connect().await;
        let (stop, reads) = (stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = transaction(&mut c, &[&["GET", "a"], &["GET", "b"]]).await;
                let items = reply.items();
                assert_eq!(items[0], items[1], "a partial transaction was visible");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = daemon.resp_connect().await;
        writers.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let x = (w * ROUNDS + round + 1).to_string();
                let reply = transaction(&mut c, &[&["SET", "a", &x], &["SET", "b", &x]]).await;
                assert_eq!(reply, Value::Array(vec![ok(), ok()]));
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("reader");
    }
    assert!(
        reads.load(Ordering::Relaxed) >= READERS as u64,
        "the readers ran"
    );
    let last = transaction(&mut setup, &[&["GET", "a"], &["GET", "b"]]).await;
    assert_eq!(last.items()[0], last.items()[1]);
}

/// The classic optimistic-locking loop (`WATCH`, read, `MULTI`, write, `EXEC`, retry on
/// null) from several connections at once loses no increment.
#[tokio::test]
async fn watch_retry_loops_lose_no_update() {
    const CLIENTS: usize = 4;
    const INCREMENTS: usize = 50;
    let daemon = daemon_with("");
    let mut setup = daemon.resp_connect().await;
    setup.call(&["SET", "counter", "0"]).await;
    let retries = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = daemon.resp_connect().await;
        let retries = retries.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                loop {
                    c.call(&["WATCH", "counter"]).await;
                    let n: u64 = c.call(&["GET", "counter"]).await.text().parse().expect("n");
                    let next = (n + 1).to_string();
                    let reply = transaction(&mut c, &[&["SET", "counter", &next]]).await;
                    if reply == Value::Array(vec![ok()]) {
                        break;
                    }
                    assert!(is_aborted(&reply), "{reply:?}");
                    retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let total = (CLIENTS * INCREMENTS).to_string();
    assert_eq!(
        setup.call(&["GET", "counter"]).await,
        Value::bulk(&total),
        "after {} retries",
        retries.load(Ordering::Relaxed)
    );
}
