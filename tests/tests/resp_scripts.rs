//! End-to-end tests of `EVAL`, `EVALSHA` and `SCRIPT` against the real `sessiond` binary,
//! in raw RESP: phpredis's session-lock release, declared keys, all-or-nothing failures,
//! the time and memory limits (with other clients served meanwhile), the script cache,
//! roles inside scripts, and persistence of a script's writes across a restart.

use std::time::{Duration, Instant};

use sessiond_tests::resp::{RespConn, Value};
use sessiond_tests::users::{TestUsers, ADMIN_PASSWORD, APP_PASSWORD};
use sessiond_tests::Daemon;

/// phpredis's session lock release, as `redis_session.c` sends it (`LOCK_RELEASE_LUA_STR`).
const UNLOCK: &str = "if redis.call(\"get\",KEYS[1]) == ARGV[1] then return redis.call(\"del\",KEYS[1]) else return 0 end";

/// `redis-cli SCRIPT LOAD "return 1"`.
const RETURN_1_SHA: &str = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";

/// A daemon with a RESP listener and `config` (TOML).
fn daemon_with(config: &str) -> Daemon {
    Daemon::start_with_args(config, &["--resp-listen", "127.0.0.1:0"])
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

fn assert_error(reply: &Value, prefix: &str, containing: &str) {
    assert!(
        reply.is_error(prefix) && reply.text().contains(containing),
        "expected an error {prefix}... containing {containing:?}, got {reply:?}"
    );
}

#[tokio::test]
async fn phpredis_unlock_releases_only_the_holders_lock() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let lock = "PHPREDIS_SESSION:abc_LOCK";
    assert_eq!(
        c.call(&["SET", lock, "host|pid|token", "NX", "PX", "30000"])
            .await,
        ok()
    );
    // Someone else's token: nothing happens.
    let other = c.call(&["EVAL", UNLOCK, "1", lock, "other|token"]).await;
    assert_eq!(other, Value::Integer(0));
    assert_eq!(c.call(&["GET", lock]).await, Value::bulk("host|pid|token"));
    // The holder's token: the lock is gone.
    let mine = c.call(&["EVAL", UNLOCK, "1", lock, "host|pid|token"]).await;
    assert_eq!(mine, Value::Integer(1));
    assert_eq!(c.call(&["GET", lock]).await, Value::NullBulk);
    // Released again (already gone): 0.
    let again = c.call(&["EVAL", UNLOCK, "1", lock, "host|pid|token"]).await;
    assert_eq!(again, Value::Integer(0));
}

#[tokio::test]
async fn replies_are_converted_as_redis_converts_them() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["SET", "k", "v"]).await, ok());
    let reply = c
        .call(&[
            "EVAL",
            "return {1, 2.9, 'x', redis.call('get', KEYS[1]), redis.call('get', KEYS[2]), 'after a false'}",
            "2",
            "k",
            "missing",
        ])
        .await;
    // A null from GET is `false` in Lua, which ends nothing (only nil does) and comes back
    // as a null.
    assert_eq!(
        reply,
        Value::Array(vec![
            Value::Integer(1),
            Value::Integer(2),
            Value::bulk("x"),
            Value::bulk("v"),
            Value::NullBulk,
            Value::bulk("after a false"),
        ])
    );
    let status = c
        .call(&[
            "EVAL",
            "return redis.call('set', KEYS[1], ARGV[1])",
            "1",
            "k",
            "w",
        ])
        .await;
    assert_eq!(status, ok());
    let error = c
        .call(&["EVAL", "return redis.error_reply('MYERR custom')", "0"])
        .await;
    assert_eq!(error, Value::Error("MYERR custom".into()));
    let caught = c
        .call(&[
            "EVAL",
            "return redis.pcall('expire', KEYS[1], 'soon')",
            "1",
            "k",
        ])
        .await;
    assert_error(&caught, "ERR", "not an integer");
}

#[tokio::test]
async fn undeclared_keys_are_refused_and_nothing_is_applied() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let reply = c
        .call(&[
            "EVAL",
            "redis.call('set', KEYS[1], 'x') return redis.call('set', 'elsewhere', 'y')",
            "1",
            "declared",
        ])
        .await;
    assert_error(&reply, "ERR", "non-declared key");
    assert_eq!(c.call(&["GET", "declared"]).await, Value::NullBulk);
    assert_eq!(c.call(&["GET", "elsewhere"]).await, Value::NullBulk);
}

#[tokio::test]
async fn a_script_that_fails_after_writing_leaves_nothing() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["SET", "a", "before", "EX", "100"]).await, ok());
    for (script, error) in [
        // A Lua error.
        ("redis.call('set', KEYS[1], 'x') redis.call('del', KEYS[2]) error('boom')", "boom"),
        // An uncaught command error.
        (
            "redis.call('set', KEYS[1], 'x') redis.call('del', KEYS[2]) return redis.call('expire', KEYS[1], 'x')",
            "not an integer",
        ),
        // A runtime error.
        ("redis.call('set', KEYS[1], 'x') redis.call('del', KEYS[2]) return nil + 1", "arithmetic"),
    ] {
        assert_eq!(c.call(&["SET", "b", "kept"]).await, ok());
        let reply = c.call(&["EVAL", script, "2", "a", "b"]).await;
        assert_error(&reply, "ERR", error);
        assert_eq!(c.call(&["GET", "a"]).await, Value::bulk("before"), "{script}");
        assert_eq!(c.call(&["GET", "b"]).await, Value::bulk("kept"), "{script}");
        let ttl = c.call(&["TTL", "a"]).await.int();
        assert!((90..=100).contains(&ttl), "{ttl}");
    }
    // A script that returns an error reply has not failed: its writes stand.
    let reply = c
        .call(&[
            "EVAL",
            "redis.call('set', KEYS[1], 'x') return redis.error_reply('NO')",
            "1",
            "a",
        ])
        .await;
    assert_eq!(reply, Value::Error("ERR NO".into()));
    assert_eq!(c.call(&["GET", "a"]).await, Value::bulk("x"));
}

#[tokio::test]
async fn an_endless_script_is_stopped_while_other_clients_are_served() {
    let daemon = daemon_with("[resp]\nmax_script_time_ms = 400\n");
    let mut looping = daemon.resp_connect().await;
    let mut other = daemon.resp_connect().await;
    assert_eq!(other.call(&["SET", "busy", "before"]).await, ok());

    let started = Instant::now();
    looping
        .send(&[
            "EVAL",
            "redis.call('set', KEYS[1], 'x') while true do end",
            "1",
            "busy",
        ])
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Meanwhile: other keys are read and written at once, on both workers' connections.
    for i in 0..5 {
        let asked = Instant::now();
        let key = format!("free{i}");
        assert_eq!(other.call(&["SET", &key, "v"]).await, ok());
        assert_eq!(other.call(&["GET", &key]).await, Value::bulk("v"));
        assert!(
            asked.elapsed() < Duration::from_millis(200),
            "a request on another key waited {:?} for the script",
            asked.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_millis(400));
    // A read of the script's key waits for the script, and never sees its write.
    let mut reader = daemon.resp_connect().await;
    reader.send(&["GET", "busy"]).await;
    let early = tokio::time::timeout(Duration::from_millis(100), reader.recv()).await;
    assert!(
        early.is_err(),
        "a read of the script's key was answered while the script ran: {early:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(400));

    let reply = looping.recv().await.expect("the script's reply");
    let read = reader.recv().await.expect("the read's reply");
    assert_eq!(read, Value::bulk("before"));
    let took = started.elapsed();
    assert_error(&reply, "ERR", "max_script_time_ms (400 ms)");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Its write was undone, and both connections carry on.
    assert_eq!(other.call(&["GET", "busy"]).await, Value::bulk("before"));
    assert_eq!(
        looping.call(&["EVAL", "return 7", "0"]).await,
        Value::Integer(7)
    );
    // pcall cannot catch its way past the limit.
    let reply = looping
        .call(&[
            "EVAL",
            "while true do pcall(function() while true do end end) end",
            "0",
        ])
        .await;
    assert_error(&reply, "ERR", "Script killed");
}

/// Regression: Lua's pattern matcher backtracks in C, out of the time limit's reach; this
/// script held its key's gate for ever and, through the requests queued behind it, froze the
/// daemon. The pattern is now refused before it runs.
#[tokio::test]
async fn a_backtracking_pattern_is_refused_and_the_daemon_keeps_answering() {
    let daemon = daemon_with("");
    let mut script = daemon.resp_connect().await;
    let mut other = daemon.resp_connect().await;
    let started = Instant::now();
    script
        .send(&[
            "EVAL",
            "local s=string.rep('a',3000); return string.find(s,'.-.-.-.-.-.-.-b')",
            "1",
            "held",
        ])
        .await;
    // Readers of the script's key and PING on another connection, all answered promptly.
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut reader = daemon.resp_connect().await;
        reader.send(&["GET", "held"]).await;
        readers.push(reader);
    }
    for _ in 0..5 {
        let ping = tokio::time::timeout(Duration::from_secs(2), other.call(&["PING"])).await;
        assert_eq!(ping.ok(), Some(Value::Simple("PONG".into())));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = tokio::time::timeout(Duration::from_secs(2), script.recv())
        .await
        .expect("the script answers within 2 s")
        .expect("the script's reply");
    assert_error(&reply, "ERR", "pattern too costly");
    for mut reader in readers {
        let read = tokio::time::timeout(Duration::from_secs(2), reader.recv()).await;
        assert_eq!(read.ok().flatten(), Some(Value::NullBulk));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_and_the_server_carries_on() {
    let daemon = daemon_with("[resp]\nmax_script_memory_bytes = 8388608\n");
    let mut c = daemon.resp_connect().await;
    // Each string distinct: Lua interns strings, so the same `string.rep('x', 1e6)` stored
    // again and again is one string, and that loop is a CPU bomb (stopped below).
    let bomb = "redis.call('set', KEYS[1], 'x') local t = {} while true do t[#t+1] = string.rep('x', 1e6) .. #t end";
    let reply = c.call(&["EVAL", bomb, "1", "k"]).await;
    assert_error(&reply, "ERR", "max_script_memory_bytes (8388608 bytes)");
    assert_eq!(c.call(&["GET", "k"]).await, Value::NullBulk);
    // Again, so that a state that did not give its memory back would show.
    for _ in 0..5 {
        let reply = c.call(&["EVAL", bomb, "1", "k"]).await;
        assert_error(&reply, "ERR", "Script killed");
    }
    let same_string = "local t={} while true do t[#t+1]=string.rep('x',1e6) end";
    let reply = c.call(&["EVAL", same_string, "0"]).await;
    assert_error(&reply, "ERR", "Script killed");
    let reply = c.call(&["EVAL", "return #string.rep('x', 1e6)", "0"]).await;
    assert_eq!(reply, Value::Integer(1_000_000));
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
}

#[tokio::test]
async fn evalsha_and_the_script_cache_behave_like_redis() {
    let daemon = daemon_with("[resp]\nmax_cached_scripts = 2\n");
    let mut c = daemon.resp_connect().await;
    assert_eq!(
        c.call(&["SCRIPT", "LOAD", "return 1"]).await,
        Value::bulk(RETURN_1_SHA)
    );
    assert_eq!(
        c.call(&["SCRIPT", "EXISTS", RETURN_1_SHA, "0000", &"f".repeat(40)])
            .await,
        Value::Array(vec![
            Value::Integer(1),
            Value::Integer(0),
            Value::Integer(0)
        ])
    );
    assert_eq!(
        c.call(&["EVALSHA", RETURN_1_SHA, "0"]).await,
        Value::Integer(1)
    );
    // Either case names the script.
    let upper = RETURN_1_SHA.to_ascii_uppercase();
    assert_eq!(c.call(&["EVALSHA", &upper, "0"]).await, Value::Integer(1));
    // Unknown: NOSCRIPT, word for word (clients match on it and fall back to EVAL).
    let unknown = c.call(&["EVALSHA", &"f".repeat(40), "0"]).await;
    assert_eq!(
        unknown,
        Value::Error("NOSCRIPT No matching script. Please use EVAL.".into())
    );
    let malformed = c.call(&["EVALSHA", "nope", "0"]).await;
    assert!(malformed.is_error("NOSCRIPT"), "{malformed:?}");

    // EVAL caches what it runs; the cache holds two, so the least recently used goes.
    let two = c.call(&["EVAL", "return 2", "0"]).await;
    assert_eq!(two, Value::Integer(2));
    let two_sha = c.call(&["SCRIPT", "LOAD", "return 2"]).await.text();
    assert_eq!(c.call(&["EVALSHA", &two_sha, "0"]).await, Value::Integer(2));
    assert_eq!(
        c.call(&["SCRIPT", "LOAD", "return 3"]).await.text().len(),
        40
    );
    assert!(c
        .call(&["EVALSHA", RETURN_1_SHA, "0"])
        .await
        .is_error("NOSCRIPT"));
    assert_eq!(c.call(&["EVALSHA", &two_sha, "0"]).await, Value::Integer(2));

    // FLUSH forgets them all.
    assert_eq!(c.call(&["SCRIPT", "FLUSH", "ASYNC"]).await, ok());
    assert_eq!(
        c.call(&["SCRIPT", "EXISTS", &two_sha]).await,
        Value::Array(vec![Value::Integer(0)])
    );
    assert!(c
        .call(&["EVALSHA", &two_sha, "0"])
        .await
        .is_error("NOSCRIPT"));
    assert!(c.call(&["SCRIPT", "FLUSH", "LATER"]).await.is_error("ERR"));
    assert!(c.call(&["SCRIPT", "KILL"]).await.is_error("NOTBUSY"));
    assert!(c
        .call(&["SCRIPT", "NOPE"])
        .await
        .is_error("ERR unknown subcommand"));
}

#[tokio::test]
async fn bad_eval_arguments_are_refused() {
    let daemon = daemon_with("");
    let mut c = daemon.resp_connect().await;
    let cases: [(&[&str], &str); 6] = [
        (
            &["EVAL", "return 1", "-1"],
            "ERR Number of keys can't be negative",
        ),
        (
            &["EVAL", "return 1", "2", "only-one"],
            "ERR Number of keys can't be greater than number of args",
        ),
        (&["EVAL", "return 1", "x"], "ERR value is not an integer"),
        (&["EVAL", "return 1"], "ERR wrong number of arguments"),
        (&["EVAL", "return (", "0"], "ERR Error compiling script"),
        (&["EVAL", "\x1bLua", "0"], "ERR Error compiling script"),
    ];
    for (args, error) in cases {
        let reply = c.call(args).await;
        assert!(reply.is_error(error), "{args:?}: {reply:?}");
    }
    // A script reaching for what the sandbox leaves out.
    for global in ["os", "io", "loadstring", "require", "debug"] {
        let reply = c.call(&["EVAL", &format!("return {global}"), "0"]).await;
        assert_error(&reply, "ERR", "nonexistent global variable");
    }
    let reply = c.call(&["EVAL", "leak = 1", "0"]).await;
    assert_error(
        &reply,
        "ERR",
        "Script attempted to create global variable 'leak'",
    );
}

#[tokio::test]
async fn scripts_run_with_the_callers_role() {
    let users = TestUsers::standard();
    let daemon = daemon_with(users.config());
    let mut app = daemon.resp_connect().await;
    assert_eq!(app.call(&["AUTH", "app", APP_PASSWORD]).await, ok());
    // Session commands work, enumeration does not.
    assert_eq!(app.call(&["SET", "lock", "t"]).await, ok());
    assert_eq!(
        app.call(&["EVAL", UNLOCK, "1", "lock", "t"]).await,
        Value::Integer(1)
    );
    for command in [
        "'scan', '0'",
        "'dbsize'",
        "'info', 'keyspace'",
        "'config', 'get', '*'",
    ] {
        let reply = app
            .call(&["EVAL", &format!("return redis.call({command})"), "0"])
            .await;
        assert!(
            reply.is_error("NOPERM")
                || reply.is_error("ERR This Redis command is not allowed from script"),
            "{command}: {reply:?}"
        );
    }
    // redis.pcall hands the refusal to the script, which cannot get past it either.
    let reply = app
        .call(&[
            "EVAL",
            "local r = redis.pcall('scan', '0') return r.err",
            "0",
        ])
        .await;
    assert!(reply.text().starts_with("NOPERM"), "{reply:?}");
    // Flushing the script cache is the admin's.
    assert!(app.call(&["SCRIPT", "FLUSH"]).await.is_error("NOPERM"));
    let mut admin = daemon.resp_connect().await;
    assert_eq!(admin.call(&["AUTH", "admin", ADMIN_PASSWORD]).await, ok());
    assert_eq!(admin.call(&["SCRIPT", "FLUSH"]).await, ok());
    // Before AUTH, nothing.
    let mut anonymous = RespConn::connect(daemon.resp_addr()).await;
    assert!(anonymous
        .call(&["EVAL", "return 1", "0"])
        .await
        .is_error("NOAUTH"));
}

#[tokio::test]
async fn a_scripts_writes_survive_a_restart_and_a_failed_ones_do_not() {
    let mut daemon = daemon_with("[aof]\nfsync = \"always\"\n");
    {
        let mut c = daemon.resp_connect().await;
        let write_both = "redis.call('set', KEYS[1], ARGV[1], 'EX', 3600) redis.call('set', KEYS[2], ARGV[2]) return redis.call('del', KEYS[3])";
        assert_eq!(c.call(&["SET", "gone", "v"]).await, ok());
        let reply = c
            .call(&["EVAL", write_both, "3", "a", "b", "gone", "1", "2"])
            .await;
        assert_eq!(reply, Value::Integer(1));
        let reply = c
            .call(&[
                "EVAL",
                "redis.call('set', KEYS[1], 'x') error('no')",
                "1",
                "c",
            ])
            .await;
        assert!(reply.is_error("ERR"), "{reply:?}");
    }
    daemon.terminate(Duration::from_secs(20));
    let daemon = daemon.restart_with_args(&["--resp-listen", "127.0.0.1:0"]);
    let mut c = daemon.resp_connect().await;
    assert_eq!(c.call(&["GET", "a"]).await, Value::bulk("1"));
    assert_eq!(c.call(&["GET", "b"]).await, Value::bulk("2"));
    assert_eq!(c.call(&["GET", "gone"]).await, Value::NullBulk);
    assert_eq!(c.call(&["GET", "c"]).await, Value::NullBulk);
    let ttl = c.call(&["TTL", "a"]).await.int();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
}

/// INFO's `used_memory`: what the server's memory accounting counts.
async fn used_memory(c: &mut sessiond_tests::resp::RespConn) -> u64 {
    let info = c.call(&["INFO", "memory"]).await;
    info.text()
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `Threads:` from `/proc/<pid>/status`.
fn threads_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

/// Regression: each concurrent long script took a thread of its own and kept a Lua state of
/// up to max_script_memory_bytes on it for good (40 such EVALs: 44 threads, 34 MB -> 678 MB
/// resident, still 678 MB when idle), none of it in the memory accounting. Now at most one
/// script per core (at least 2) runs, up to 32 per running one wait (a thread each, no Lua
/// state), the rest are refused with BUSY, and a state left holding more than 1 MiB is
/// dropped after its run.
#[tokio::test]
async fn concurrent_long_scripts_leave_threads_and_memory_bounded() {
    const CLIENTS: usize = 100;
    let daemon = daemon_with("[resp]\nmax_script_time_ms = 300\n");
    let pid = daemon.pid();
    let mut probe = daemon.resp_connect().await;
    assert_eq!(
        probe.call(&["EVAL", "return 1", "0"]).await,
        Value::Integer(1)
    );
    let (threads_before, rss_before) = (threads_of(pid), daemon.rss_bytes());

    // The review's script: 14 MB of strings, then a loop until the time limit.
    let script = "local t={} for i=1,100 do t[i]=string.rep('x',140000)..i end \
                  local x=0 while true do x=x+1 end";
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = daemon.resp_connect().await;
        c.send(&["EVAL", script, "0"]).await;
        conns.push(c);
    }
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let (mut threads, mut rss) = (0, 0);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                threads = threads.max(threads_of(pid));
                rss = rss.max(sessiond_tests::rss_of(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            (threads, rss)
        })
    };
    // The running scripts' Lua memory is counted as the server's (INFO, STATS, max_memory).
    let mut used = 0;
    for _ in 0..25 {
        used = used.max(used_memory(&mut probe).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        used > 10 << 20,
        "used_memory at most {used} while scripts held 14 MB each"
    );
    let (mut killed, mut busy) = (0, 0);
    for c in &mut conns {
        let reply = tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .expect("every script is answered")
            .expect("a reply");
        if reply.is_error("BUSY") {
            busy += 1;
        } else {
            assert_error(&reply, "ERR", "Script killed");
            killed += 1;
        }
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (threads_peak, rss_peak) = watcher.join().expect("the watcher");
    // Idle again: the states those scripts grew were dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (threads_after, rss_after) = (threads_of(pid), daemon.rss_bytes());
    eprintln!(
        "killed {killed}, busy {busy}; threads {threads_before} -> peak {threads_peak} -> {threads_after}; \
         RSS {} -> peak {} -> {} MiB",
        rss_before >> 20,
        rss_peak >> 20,
        rss_after >> 20
    );
    assert!(killed >= 2, "no script ran: {killed} killed, {busy} busy");
    assert_eq!(killed + busy, CLIENTS);
    // Bounds (2 cores here): 2 running and 64 waiting scripts hold a thread each, on top of
    // tokio's workers; before the fix every one of the 100 did.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2)) as u64;
    assert!(
        threads_peak <= threads_before + 33 * cores + 4,
        "{threads_peak} threads at the peak, {threads_before} before"
    );
    // Each script that ran grew the heap of the thread it ran on by its state (up to 16
    // MiB), which the allocator keeps for reuse, and each waiting thread its stack; measured
    // here (2 cores, debug build): 4 or 5 ran, 65 threads, +140 MiB. Before the fix all 100
    // would have run at once, ~16 MiB each.
    let grown = rss_peak.saturating_sub(rss_before);
    assert!(
        grown < (killed as u64 + 2) * (32 << 20),
        "RSS grew by {} MiB for {killed} scripts",
        grown >> 20
    );
    // Idle, the states are gone from the accounting.
    let used = used_memory(&mut probe).await;
    assert!(used < 4 << 20, "used_memory {used} when idle");
    // And the daemon serves scripts as before.
    assert_eq!(
        probe.call(&["EVAL", "return 2", "0"]).await,
        Value::Integer(2)
    );
}
