//! `limits.max_memory` and its two policies, against the real binary.
//!
//! Each test fills a daemon with a small cap well past it and checks what a user sees: with
//! `refuse-new`, creates are refused with `OUT_OF_MEMORY` (`-OOM` over RESP) while the
//! sessions already held keep working, and creates succeed again after deletions; with
//! `evict-soonest-expiring`, creates keep succeeding and the sessions with the earliest
//! deadlines are the ones evicted. Every fill also measures the daemon's resident set size
//! (`/proc/PID/status`) against the cap: it may pass the cap by 5% of it plus [`RSS_SLACK`]
//! with `refuse-new`, [`EVICT_RSS_SLACK`] with eviction (run with `--nocapture` for the
//! figures).

use std::time::{Duration, Instant};

use sessiond_proto::command::{GetReply, SetMode, SetOutcome, TouchReply};
use sessiond_proto::{RequestFrame, ResponseFrame, Status};
use sessiond_tests::resp::Value;
use sessiond_tests::{set_request, Daemon};

const MIB: u64 = 1024 * 1024;
const HOUR_MS: u64 = 60 * 60 * 1000;
/// The cap the tests run with.
const CAP: u64 = 32 * MIB;
/// What the process may hold beyond the cap and its empty-process size whatever it holds: the
/// allocator's partly filled pages and per-thread caches, and the table's growth between two
/// counts (measured at about 2 MiB for this cap). The daemon watches its resident set and
/// holds it to the cap too (`Part::ResidentExcess` in `memory.rs`), so this covers what
/// grows between two looks. Documented in `config/sessiond.toml` and `docs/MEMORY.md`.
const RSS_SLACK: u64 = 4 * MIB;
/// How far the resident set may grow with `refuse-new`: the cap, 5%, and [`RSS_SLACK`].
const RSS_BOUND: u64 = CAP + CAP / 20 + RSS_SLACK;
/// What eviction on two worker threads may hold beyond the cap and its empty-process size:
/// blocks freed by the evicting thread stay in its heap while the other thread's creates take
/// new pages (docs/MEMORY.md measured 4 to 10 MiB; a CI run on a fresh machine reached 6.5
/// MiB over this cap). The daemon evicts more to make up for it, but only after it shows in
/// the resident set. Documented in `docs/MEMORY.md`.
const EVICT_RSS_SLACK: u64 = 10 * MIB;
/// How far the resident set may grow with `evict-soonest-expiring`.
const EVICT_RSS_BOUND: u64 = CAP + CAP / 20 + EVICT_RSS_SLACK;
/// Value size of the sessions the tests write.
const VALUE_LEN: usize = 1024;

fn config(policy: &str) -> String {
    format!(
        "[limits]\nmax_memory = \"{}MiB\"\nmemory_policy = \"{policy}\"\n\n[aof]\nenabled = false\n",
        CAP / MIB
    )
}

fn key(i: u64) -> Vec<u8> {
    format!("session:{i:010}").into_bytes()
}

fn stat(stats: &sessiond_proto::command::StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .unwrap_or_else(|| panic!("STATS has no {name}"))
        .parse()
        .unwrap_or_else(|_| panic!("STATS {name} is not a number"))
}

/// Sends `count` create-only SETs from `first` on, TTL `ttl(i)`, pipelined; returns the
/// replies' statuses.
async fn create_batch(
    conn: &mut sessiond_tests::Conn,
    first: u64,
    count: u64,
    ttl: impl Fn(u64) -> u64,
) -> Vec<ResponseFrame> {
    let value = vec![b'v'; VALUE_LEN];
    let frames: Vec<RequestFrame> = (first..first + count)
        .map(|i| {
            set_request(&key(i), &value, ttl(i), SetMode::CreateOnly)
                .to_frame(u32::try_from(i % u64::from(u32::MAX)).unwrap_or(0))
        })
        .collect();
    conn.pipeline(frames).await
}

/// The sessions of `0..count` the daemon holds, with their TTLs at creation.
async fn held(
    conn: &mut sessiond_tests::Conn,
    count: u64,
    ttl: &impl Fn(u64) -> u64,
) -> Vec<(u64, u64)> {
    let mut held = Vec::new();
    for i in 0..count {
        if let GetReply::Hit(_) = conn.get(&key(i)).await {
            held.push((i, ttl(i)));
        }
    }
    held
}

/// The resident set of the daemon after start, with its tables and runtime in place.
async fn baseline(daemon: &Daemon) -> u64 {
    // One request, so that the connection path's allocations are made.
    daemon.stats().await;
    daemon.rss_bytes()
}

/// Checks that the daemon's resident set has grown by at most `bound` since `base`.
fn check_rss(daemon: &Daemon, base: u64, bound: u64, what: &str) -> u64 {
    let rss = daemon.rss_bytes();
    let grown = rss.saturating_sub(base);
    println!(
        "{what}: RSS {:.1} MiB, {:.1} MiB over the empty daemon ({:.1}% of the {} MiB cap)",
        rss as f64 / MIB as f64,
        grown as f64 / MIB as f64,
        grown as f64 * 100.0 / CAP as f64,
        CAP / MIB
    );
    assert!(
        grown <= bound,
        "{what}: RSS grew by {grown} bytes, past {bound}"
    );
    grown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_new_refuses_creates_at_the_cap_and_keeps_sessions_working() {
    let daemon = Daemon::start_with_config(&config("refuse-new"));
    let base = baseline(&daemon).await;
    let mut conn = daemon.connect().await;

    // Fill to twice the cap's worth of sessions: the second half must be refused.
    let wanted = 2 * CAP / VALUE_LEN as u64;
    let (mut stored, mut refused, mut first_refused) = (0, 0, None);
    let mut i = 0;
    while i < wanted {
        for (n, reply) in create_batch(&mut conn, i, 1000, |_| HOUR_MS)
            .await
            .iter()
            .enumerate()
        {
            match reply.status() {
                Some(Status::Ok) => stored += 1,
                Some(Status::OutOfMemory) => {
                    refused += 1;
                    first_refused.get_or_insert(i + n as u64);
                }
                other => panic!("SET answered {other:?}"),
            }
        }
        i += 1000;
    }
    let stats = conn.stats().await;
    let (used, limit) = (
        stat(&stats, "memory_used_bytes"),
        stat(&stats, "memory_limit_bytes"),
    );
    println!(
        "refuse-new: {stored} stored, {refused} refused; used {used} of {limit}; entries {}",
        stat(&stats, "entries")
    );
    assert_eq!(limit, CAP);
    // The tables are counted every 100 ms, so a doubling may show a little late. What the
    // resident set holds past the cap counts too, but refusing cannot give it back: the
    // parts a write can grow are what must stay under the cap.
    let counted = used - stat(&stats, "memory_resident_excess_bytes");
    assert!(
        counted <= CAP + CAP / 100,
        "accounted memory {counted} passed the cap {CAP}"
    );
    assert!(
        stored > wanted / 3,
        "only {stored} sessions fit in {CAP} bytes"
    );
    assert!(refused > 0, "nothing was refused");
    assert_eq!(stat(&stats, "memory_refused"), refused);
    assert_eq!(stat(&stats, "memory_evicted"), 0);
    check_rss(&daemon, base, RSS_BOUND, "refuse-new, filled to 2x");

    // The sessions held keep working: read, touch, same-size update, delete.
    let first = key(0);
    assert!(matches!(conn.get(&first).await, GetReply::Hit(_)));
    assert!(matches!(
        conn.touch(&first, HOUR_MS).await,
        TouchReply::Touched { .. }
    ));
    let same_size = vec![b'w'; VALUE_LEN];
    assert!(matches!(
        conn.set(&first, &same_size, HOUR_MS, SetMode::UpdateOnly)
            .await,
        SetOutcome::Stored { .. }
    ));
    // An update that grows the session is a write that needs memory: refused.
    let reply = conn
        .exchange(&set_request(
            &first,
            &vec![b'x'; 4 * VALUE_LEN],
            HOUR_MS,
            SetMode::Upsert,
        ))
        .await;
    assert_eq!(reply.status(), Some(Status::OutOfMemory));
    // ... and a create, over RESP too, in Redis's words.
    let refused_key = key(first_refused.expect("a refused create"));
    let reply = conn
        .exchange(&set_request(&refused_key, b"v", HOUR_MS, SetMode::Upsert))
        .await;
    assert_eq!(reply.status(), Some(Status::OutOfMemory));

    // After deletions, creates succeed again.
    for i in 0..2000 {
        conn.del(&key(i), None).await;
    }
    assert!(matches!(
        conn.set(&refused_key, b"v", HOUR_MS, SetMode::CreateOnly)
            .await,
        SetOutcome::Stored { .. }
    ));
    daemon.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_new_reclaims_expired_sessions_before_refusing() {
    let daemon = Daemon::start_with_config(&config("refuse-new"));
    let mut conn = daemon.connect().await;
    // Fill with sessions that expire in 1 s, until refused.
    let mut i = 0;
    loop {
        let replies = create_batch(&mut conn, i, 1000, |_| 1000).await;
        i += 1000;
        if replies
            .iter()
            .any(|r| r.status() == Some(Status::OutOfMemory))
        {
            break;
        }
        assert!(i < 4 * CAP / VALUE_LEN as u64, "never refused");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Every one has expired: a create at the cap reclaims them first, and is not refused.
    let started = Instant::now();
    let replies = create_batch(&mut conn, i, 1000, |_| HOUR_MS).await;
    let refused = replies
        .iter()
        .filter(|r| r.status() == Some(Status::OutOfMemory))
        .count();
    println!(
        "after expiry: {refused} of 1000 refused, {:?}",
        started.elapsed()
    );
    assert_eq!(
        refused, 0,
        "creates refused while expired sessions held the memory"
    );
    daemon.assert_no_panic();
}

/// A daemon with the `refuse-new` cap and a RESP listener.
fn refuse_new_with_resp() -> Daemon {
    Daemon::start_with_config(&format!(
        "{}\n[resp]\nlisten = \"127.0.0.1:0\"\n",
        config("refuse-new")
    ))
}

/// Creates 1 KiB sessions, a thousand at a time, until one is refused `OUT_OF_MEMORY`.
async fn fill_to_the_cap(conn: &mut sessiond_tests::Conn) {
    let mut i = 0;
    while !create_batch(conn, i, 1000, |_| HOUR_MS)
        .await
        .iter()
        .any(|r| r.status() == Some(Status::OutOfMemory))
    {
        i += 1000;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_writes_at_the_cap_are_refused_with_redis_oom_error() {
    let daemon = refuse_new_with_resp();
    let mut conn = daemon.connect().await;
    fill_to_the_cap(&mut conn).await;
    let mut resp = daemon.resp_connect().await;
    let reply = resp.call(&["SET", "brand-new", "value"]).await;
    assert_eq!(
        reply,
        Value::Error("OOM command not allowed when used memory > 'maxmemory'.".into())
    );
    // Reads and deletes still work.
    let held = String::from_utf8(key(0)).expect("ASCII");
    assert!(matches!(resp.call(&["GET", &held]).await, Value::Bulk(_)));
    assert_eq!(resp.call(&["DEL", &held]).await, Value::Integer(1));
    let info = resp.call(&["INFO", "memory"]).await;
    let Value::Bulk(info) = info else {
        panic!("INFO: {info:?}")
    };
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains(&format!("maxmemory:{CAP}\r\n")), "{info}");
    assert!(info.contains("maxmemory_policy:noeviction\r\n"), "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_soonest_expiring_evicts_the_nearest_deadlines_and_keeps_creating() {
    let daemon = Daemon::start_with_config(&config("evict-soonest-expiring"));
    let base = baseline(&daemon).await;
    let mut conn = daemon.connect().await;
    // Deadlines in a scrambled order (not the order of creation): 1 h plus up to 10 h.
    let ttl = |i: u64| HOUR_MS + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % (10 * HOUR_MS);
    let wanted = 2 * CAP / VALUE_LEN as u64;
    let (mut stored, mut refused) = (0u64, 0u64);
    let mut i = 0;
    let mut max_rss_growth = 0;
    while i < wanted {
        for reply in create_batch(&mut conn, i, 1000, ttl).await {
            match reply.status() {
                Some(Status::Ok) => stored += 1,
                // While eviction catches up, past the cap's overshoot allowance.
                Some(Status::OutOfMemory) => refused += 1,
                other => panic!("SET answered {other:?}"),
            }
        }
        i += 1000;
        if i % 8000 == 0 {
            let stats = conn.stats().await;
            println!(
                "  {i} created: used {} evicted {} entries {} table {}",
                stat(&stats, "memory_used_bytes"),
                stat(&stats, "memory_evicted"),
                stat(&stats, "entries"),
                stat(&stats, "memory_table_bytes")
            );
            max_rss_growth =
                max_rss_growth.max(check_rss(&daemon, base, EVICT_RSS_BOUND, "evict, filling"));
        }
    }
    // Let the last eviction finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = conn.stats().await;
    let used = stat(&stats, "memory_used_bytes");
    let evicted = stat(&stats, "memory_evicted");
    println!(
        "evict: {stored} stored, {refused} refused, {evicted} evicted, used {used}, \
         entries {}",
        stat(&stats, "entries")
    );
    assert!(
        used <= CAP + CAP / 100,
        "accounted memory {used} passed the cap"
    );
    assert!(evicted > wanted / 3, "only {evicted} evicted");
    assert!(
        refused * 20 <= wanted,
        "{refused} of {wanted} creates refused under the evicting policy"
    );
    check_rss(&daemon, base, EVICT_RSS_BOUND, "evict, filled to 2x");

    // Which ones go: sessions that outlive every other one, created now, make room by
    // evicting among those held. Every one evicted in this round expires no later than any
    // one kept, to within the eviction histogram's resolution (1/16 of the remaining
    // lifetime; the test allows 1/8 for the time the round takes).
    let created = i;
    let held_before = held(&mut conn, created, &ttl).await;
    let longest = |_| 20 * HOUR_MS;
    let extra = 8000; // about a quarter of the cap, in whole batches
    let mut longer = Vec::new();
    for first in (created..created + extra).step_by(1000) {
        let replies = create_batch(&mut conn, first, 1000, longest).await;
        for (n, reply) in replies.iter().enumerate() {
            match reply.status() {
                Some(Status::Ok) => longer.push(first + n as u64),
                Some(Status::OutOfMemory) => {}
                other => panic!("SET answered {other:?}"),
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held_after = held(&mut conn, created, &ttl).await;
    let evicted: Vec<u64> = held_before
        .iter()
        .filter(|(i, _)| !held_after.iter().any(|(j, _)| j == i))
        .map(|&(_, ttl)| ttl)
        .collect();
    let latest_evicted = evicted.iter().copied().max().unwrap_or(0);
    let earliest_kept = held_after
        .iter()
        .map(|&(_, ttl)| ttl)
        .min()
        .unwrap_or(u64::MAX);
    println!(
        "{} evicted for {} longer sessions ({} refused); latest deadline evicted \
         {latest_evicted} ms, earliest kept {earliest_kept} ms",
        evicted.len(),
        longer.len(),
        extra - longer.len() as u64
    );
    // Refusals while eviction catches up are the first fill's concern; here enough must
    // be stored to make eviction choose.
    let refused = extra - longer.len() as u64;
    assert!(refused * 2 <= extra, "{refused} of {extra} refused");
    assert!(
        evicted.len() >= longer.len() / 2,
        "too few evicted: {}",
        evicted.len()
    );
    assert!(
        latest_evicted <= earliest_kept + earliest_kept / 8,
        "evicted a session expiring in {latest_evicted} ms, kept one expiring in \
         {earliest_kept} ms"
    );
    for &i in &longer {
        assert!(
            matches!(conn.get(&key(i)).await, GetReply::Hit(_)),
            "the longest-lived session {i} was evicted"
        );
    }
    daemon.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_file_larger_than_the_cap_starts_and_reports_it() {
    let daemon = Daemon::start_with_config("[limits]\nmax_memory = \"64MiB\"\n");
    let mut conn = daemon.connect().await;
    let sessions = 24 * MIB / VALUE_LEN as u64;
    let mut i = 0;
    while i < sessions {
        for reply in create_batch(&mut conn, i, 1000, |_| HOUR_MS).await {
            assert_eq!(reply.status(), Some(Status::Ok));
        }
        i += 1000;
    }
    drop(conn);
    let mut daemon = daemon;
    // A clean shutdown, so that every acknowledged write is in the file.
    daemon.terminate(Duration::from_secs(10));
    std::fs::write(daemon.config_path(), "[limits]\nmax_memory = \"8MiB\"\n")
        .expect("rewrite config");
    let daemon = daemon.restart();
    daemon
        .wait_for_log("the over-the-cap warning", |line| {
            line.contains("exceeds limits.max_memory")
        })
        .await;
    let mut conn = daemon.connect().await;
    let stats = conn.stats().await;
    assert_eq!(stat(&stats, "entries"), i, "replay lost sessions");
    assert!(stat(&stats, "memory_used_bytes") > stat(&stats, "memory_limit_bytes"));
    // Every session is there and readable; a create is refused.
    assert!(matches!(conn.get(&key(i - 1)).await, GetReply::Hit(_)));
    let reply = conn
        .exchange(&set_request(b"new", b"v", HOUR_MS, SetMode::CreateOnly))
        .await;
    assert_eq!(reply.status(), Some(Status::OutOfMemory));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_sessions_stay_evicted_after_a_restart() {
    let config = format!(
        "[limits]\nmax_memory = \"{}MiB\"\nmemory_policy = \"evict-soonest-expiring\"\n",
        CAP / MIB
    );
    let daemon = Daemon::start_with_config(&config);
    let mut conn = daemon.connect().await;
    let ttl = |i: u64| HOUR_MS + i * 1000;
    let mut i = 0;
    while i < 2 * CAP / VALUE_LEN as u64 {
        create_batch(&mut conn, i, 1000, ttl).await;
        i += 1000;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held_before = held(&mut conn, i, &ttl).await;
    let evicted = stat(&conn.stats().await, "memory_evicted");
    assert!(evicted > 0, "nothing evicted");
    drop(conn);
    let mut daemon = daemon;
    daemon.terminate(Duration::from_secs(10));
    // Without a cap after the restart: whatever comes back was in the file.
    std::fs::write(
        daemon.config_path(),
        "[limits]\nmax_memory = \"unlimited\"\n",
    )
    .expect("rewrite config");
    let daemon = daemon.restart();
    let mut conn = daemon.connect().await;
    let held_after = held(&mut conn, i, &ttl).await;
    println!(
        "{evicted} evicted; {} held before the restart, {} after",
        held_before.len(),
        held_after.len()
    );
    assert_eq!(
        held_after, held_before,
        "evicted sessions came back, or held ones were lost"
    );
}

/// At the cap, a session write is held to what it adds: re-saving an owned session with a
/// value of the same size is served (as a plain `SET` is), while a rotation that binds a
/// plain session to an owner grows it and is refused like a create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_session_updates_are_served_and_binding_rotations_refused() {
    let daemon = refuse_new_with_resp();
    let mut conn = daemon.connect().await;
    let mut resp = daemon.resp_connect().await;
    save_owned_and_plain(&mut resp, &"v".repeat(VALUE_LEN)).await;
    // Fill with 1 KiB sessions until refused, then close the gap with tiny ones: what is left
    // under the cap is then smaller than one tiny entry.
    fill_to_the_cap(&mut conn).await;
    let mut tiny = 0;
    loop {
        let reply = resp.call(&["SET", &format!("t{tiny}"), "x"]).await;
        if reply.is_error("OOM") {
            break;
        }
        assert_eq!(reply, Value::Simple("OK".into()));
        tiny += 1;
        assert!(tiny < 100_000, "tiny SETs never reached the cap");
    }
    // A long owner makes the binding grow the entry by far more than a tiny entry's size.
    let owner = "o".repeat(256);
    let rotated = resp
        .call(&["SESSIOND.ROTATE", "plain", "bound", "OWNER", &owner])
        .await;
    assert!(rotated.is_error("OOM"), "{rotated:?}");
    assert_eq!(
        resp.call(&["EXISTS", "plain", "bound"]).await,
        Value::Integer(1)
    );
    let listed = resp.call(&["SESSIOND.SESSIONS", &owner]).await;
    assert_eq!(
        listed.items()[..2],
        [Value::bulk("total"), Value::Integer(0)]
    );
    // Re-saving the owned session, and a plain SET of the same size, are served.
    let same = "w".repeat(VALUE_LEN);
    save_owned_and_plain(&mut resp, &same).await;
    assert_eq!(resp.call(&["GET", "owned"]).await, Value::bulk(&same));
}

/// Writes `value` to the session "owned" of alice and to the plain entry "plain", both for an
/// hour; both must be stored.
async fn save_owned_and_plain(resp: &mut sessiond_tests::resp::RespConn, value: &str) {
    let owned = resp
        .call(&[
            "SESSIOND.SET",
            "owned",
            value,
            "EX",
            "3600",
            "OWNER",
            "alice",
        ])
        .await;
    assert_eq!(owned.items().len(), 2, "{owned:?}");
    assert_eq!(
        resp.call(&["SET", "plain", value, "EX", "3600"]).await,
        Value::Simple("OK".into())
    );
}
