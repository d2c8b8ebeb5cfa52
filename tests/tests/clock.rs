//! Time never runs backwards relative to the data (AOF.md, CLOCK records; `clock.rs`).
//!
//! sessiond reads the system's wall clock once, at startup. Started with that clock behind
//! (a host whose clock was reset, a VM restored from a snapshot, a container on a machine
//! that has not synchronized yet), a server that trusted it would bring back every session
//! that had expired within the offset. The AOF records how far the clock had got, and replay
//! continues from there.
//!
//! The daemon's wall clock is set back with libfaketime (Debian's `faketime` package, which
//! `.ci/run` installs), preloaded into the real binary. Without it the tests fail, loudly,
//! unless `SESSIOND_TESTS_ALLOW_MISSING=1` is set, in which case they print why and pass.

use std::path::Path;
use std::time::Duration;

use sessiond_proto::command::GetReply;
use sessiond_tests::Daemon;

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const CONFIG: &str = "[aof]\nfsync = \"everysec\"\n";
const HOUR_MS: u64 = 60 * 60 * 1000;
const SESSIONS: usize = 100;

/// The environment that starts the daemon with its wall clock `offset` away (libfaketime's
/// syntax, e.g. `-1h`); monotonic clocks are left alone. `None` if libfaketime is missing and
/// the tests may skip.
fn shifted_clock(offset: &str) -> Option<Vec<(&'static str, String)>> {
    if !Path::new(FAKETIME_LIB).exists() {
        let why = format!("{FAKETIME_LIB} is missing: apt-get install faketime");
        if std::env::var("SESSIOND_TESTS_ALLOW_MISSING").as_deref() == Ok("1") {
            println!("SKIPPED: {why}");
            return None;
        }
        panic!("{why} (or set SESSIOND_TESTS_ALLOW_MISSING=1 to skip)");
    }
    Some(vec![
        ("LD_PRELOAD", FAKETIME_LIB.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_NO_CACHE", "1".to_string()),
    ])
}

fn start_shifted(data_dir: &Path, env: &[(&'static str, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start_in_with_env(CONFIG, data_dir, &[], &env)
}

fn key(i: usize) -> Vec<u8> {
    format!("short-lived-{i}").into_bytes()
}

/// A daemon on a data directory of its own, holding [`SESSIONS`] sessions that expire after
/// `ttl_ms`; the connection that wrote them stays open.
async fn daemon_with_short_lived_sessions(
    ttl_ms: u64,
) -> (tempfile::TempDir, Daemon, sessiond_tests::Conn) {
    let data = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(CONFIG, data.path(), &[]);
    let mut conn = daemon.connect().await;
    for i in 0..SESSIONS {
        conn.put(&key(i), b"v", ttl_ms).await;
    }
    (data, daemon, conn)
}

async fn count_present(daemon: &Daemon) -> usize {
    let mut conn = daemon.connect().await;
    let mut present = 0;
    for i in 0..SESSIONS {
        if let GetReply::Hit(_) = conn.get(&key(i)).await {
            present += 1;
        }
    }
    present
}

/// The preload really moves the daemon's wall clock: a session written under a clock an hour
/// behind expires an hour earlier than its TTL says once the clock is right again. Without
/// this check the tests below could pass because the preload did nothing.
#[tokio::test]
async fn the_preload_sets_the_daemons_wall_clock_back() {
    let Some(env) = shifted_clock("-1h") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mut daemon = start_shifted(data.path(), &env);
    daemon.connect().await.put(b"k", b"v", 3 * HOUR_MS).await;
    daemon.terminate(Duration::from_secs(30));
    drop(daemon);
    let daemon = Daemon::start_in(CONFIG, data.path(), &[]);
    let GetReply::Hit(entry) = daemon.connect().await.get(b"k").await else {
        panic!("the session is gone");
    };
    // Written at (real - 1 h) with 3 h to live: 2 h left in real time.
    assert!(
        (2 * HOUR_MS - 60_000..=2 * HOUR_MS + 60_000).contains(&entry.ttl_ms),
        "{} ms left: the daemon's clock was not an hour behind",
        entry.ttl_ms
    );
}

/// Regression: started with the system clock one hour behind, a restarted server brought back
/// every session that had expired before its shutdown.
#[tokio::test]
async fn sessions_that_expired_before_a_shutdown_stay_expired_with_the_clock_set_back() {
    let Some(env) = shifted_clock("-1h") else {
        return;
    };
    let (data, mut daemon, mut conn) = daemon_with_short_lived_sessions(500).await;
    conn.put(b"long-lived", b"v", 3 * HOUR_MS).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(count_present(&daemon).await, 0);
    daemon.terminate(Duration::from_secs(30));
    drop(daemon);

    let daemon = start_shifted(data.path(), &env);
    assert_eq!(
        count_present(&daemon).await,
        0,
        "expired sessions came back after a restart with the clock an hour behind"
    );
    let GetReply::Hit(entry) = daemon.connect().await.get(b"long-lived").await else {
        panic!("a live session was lost");
    };
    assert!(entry.ttl_ms <= 3 * HOUR_MS);
}

/// The same after a crash: the CLOCK records written while clients were writing are enough,
/// with no shutdown to record the last time.
#[tokio::test]
async fn sessions_that_expired_before_a_crash_stay_expired_with_the_clock_set_back() {
    let Some(env) = shifted_clock("-1h") else {
        return;
    };
    let (data, mut daemon, mut conn) = daemon_with_short_lived_sessions(300).await;
    // Other clients keep writing for a while after those sessions expired.
    for round in 0..25 {
        conn.put(b"busy", format!("{round}").as_bytes(), HOUR_MS)
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everysec: let the last second's records reach the file before the crash.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    daemon.kill9();
    drop(daemon);

    let daemon = start_shifted(data.path(), &env);
    assert_eq!(
        count_present(&daemon).await,
        0,
        "expired sessions came back after a crash and a restart with the clock behind"
    );
}
