//! `limits.max_session_lifetime` turned on over sessions that already exist (PROTOCOL.md
//! 6.4), against the real daemon: sessions created without the limit, plain and bound to an
//! owner, through both protocols, are held to it once the server restarts with it, however
//! often they are touched; the deadline it gave them survives a further restart without the
//! setting; and a session created after the restart obeys it too.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sessiond_proto::command::{
    GetReply, ListSessions, SessionList, SessionWriteOutcome, SetMode, SetSession,
};
use sessiond_proto::Request;
use sessiond_tests::resp::{RespConn, Value};
use sessiond_tests::{Conn, Daemon};

const HOUR_MS: u64 = 3_600_000;
/// The lifetime the second run is configured with.
const LIFETIME: Duration = Duration::from_secs(3);
/// Every write acknowledged is on disk, and both listeners on ephemeral ports; the config file
/// the restarts reuse.
const BASE: &str = "[aof]\nfsync = \"always\"\n[resp]\nlisten = \"127.0.0.1:0\"\n";

/// The four sessions of the first run: (key, owner) over the native protocol and over RESP.
const NATIVE: [(&str, Option<&str>); 2] = [("n-plain", None), ("n-owned", Some("alice"))];
const RESP: [(&str, Option<&str>); 2] = [("r-plain", None), ("r-owned", Some("bob"))];
/// Created in the second run, under the limit.
const LATE: &str = "late";

/// Configures the daemon's next start with `limits` appended to [`BASE`], then stops it
/// cleanly and starts it again on the same data directory.
fn restart_with(mut daemon: Daemon, limits: &str) -> Daemon {
    std::fs::write(daemon.config_path(), format!("{BASE}{limits}")).expect("write config");
    daemon.terminate(Duration::from_secs(10));
    daemon.restart()
}

async fn list_native(conn: &mut Conn, owner: &str) -> Vec<Bytes> {
    let request = Request::ListSessions(ListSessions {
        owner: Bytes::copy_from_slice(owner.as_bytes()),
        max_sessions: 0,
    });
    let reply = conn.exchange(&request).await;
    let list = SessionList::from_frame(&reply).unwrap_or_else(|e| panic!("LIST_SESSIONS: {e}"));
    list.sessions.into_iter().map(|s| s.key).collect()
}

/// `SESSIOND.SESSIONS owner`'s `total`.
async fn total_resp(resp: &mut RespConn, owner: &str) -> Value {
    let listed = resp.call(&["SESSIOND.SESSIONS", owner]).await;
    listed.items()[..2][1].clone()
}

/// Touches every key with an hour's TTL through the protocol it was made with (the late one
/// through both) and returns which are still there. A TTL reported past `deadline` fails.
async fn touch_all(conn: &mut Conn, resp: &mut RespConn, deadline: Instant) -> Vec<String> {
    let mut alive = Vec::new();
    let remaining = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(50);
    for key in NATIVE.iter().map(|(k, _)| *k).chain([LATE]) {
        if let GetReply::Hit(entry) = conn.get_touch(key.as_bytes(), HOUR_MS).await {
            assert!(
                entry.ttl_ms <= remaining.as_millis() as u64,
                "{key}: TTL {} ms after a touch, past the cap",
                entry.ttl_ms
            );
            alive.push(key.to_string());
        }
    }
    for key in RESP.iter().map(|(k, _)| *k).chain([LATE]) {
        match resp.call(&["GETEX", key, "EX", "3600"]).await {
            Value::Bulk(_) => {
                let pttl = resp.call(&["PTTL", key]).await.int();
                assert!(
                    pttl < 0 || pttl as u128 <= remaining.as_millis(),
                    "{key}: PTTL {pttl} after a touch, past the cap"
                );
                // -2: it reached its deadline between the two requests.
                if pttl >= 0 {
                    alive.push(format!("resp:{key}"));
                }
            }
            Value::NullBulk | Value::Null => {}
            other => panic!("GETEX {key}: {other:?}"),
        }
    }
    alive
}

/// Touches everything every 100 ms until `deadline` plus a margin: all of it lives until a
/// little before the deadline (`late` may live longer, up to `late_deadline`) and none of it
/// after; the owners' listings on both protocols are empty then.
async fn touch_until_gone(daemon: &Daemon, deadline: Instant, late_deadline: Instant) {
    let mut conn = daemon.connect().await;
    let mut resp = daemon.resp_connect().await;
    let every = NATIVE.len() + RESP.len() + 2;
    loop {
        let now = Instant::now();
        let alive = touch_all(&mut conn, &mut resp, late_deadline.max(deadline)).await;
        // The server's deadline is at most the caller's (taken after the daemon printed
        // `listening`), give or take the daemon's millisecond clock.
        if now + Duration::from_millis(300) < deadline {
            assert_eq!(alive.len(), every, "gone before the cap: {alive:?}");
        }
        let finished = Instant::now();
        if finished > deadline + Duration::from_millis(100) {
            let early: Vec<_> = alive.iter().filter(|k| !k.ends_with(LATE)).collect();
            assert!(early.is_empty(), "alive past the cap: {early:?}");
        }
        if finished > late_deadline + Duration::from_millis(100) {
            assert!(alive.is_empty(), "alive past the cap: {alive:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, owner) in NATIVE.iter().chain(RESP.iter()) {
        if let Some(owner) = owner {
            assert_eq!(list_native(&mut conn, owner).await, Vec::<Bytes>::new());
            assert_eq!(total_resp(&mut resp, owner).await, Value::Integer(0));
        }
    }
}

#[tokio::test]
async fn existing_sessions_are_held_to_a_lifetime_turned_on_at_restart() {
    // First run: no limit, sessions meant to live an hour.
    let daemon = Daemon::start_with_config(BASE);
    let mut conn = daemon.connect().await;
    let mut resp = daemon.resp_connect().await;
    for (key, owner) in NATIVE {
        let request = Request::SetSession(SetSession {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"{}"),
            ttl_ms: HOUR_MS,
            mode: SetMode::CreateOnly,
            owner: owner.map(|o| Bytes::copy_from_slice(o.as_bytes())),
            lifetime_ms: None,
            owner_limit: None,
        });
        let reply = conn.exchange(&request).await;
        let outcome = SessionWriteOutcome::from_frame(&reply, sessiond_proto::Opcode::SetSession);
        assert!(
            matches!(outcome, Ok(SessionWriteOutcome::Stored { .. })),
            "{outcome:?}"
        );
    }
    assert_eq!(
        resp.call(&["SET", "r-plain", "v", "EX", "3600"]).await,
        Value::Simple("OK".into())
    );
    let owned = resp
        .call(&["SESSIOND.SET", "r-owned", "v", "EX", "3600", "OWNER", "bob"])
        .await;
    assert_eq!(owned.items().len(), 2, "{owned:?}");
    drop((conn, resp));

    // Second run, with the limit: the four are capped from the start, and held to it.
    let daemon = restart_with(daemon, "[limits]\nmax_session_lifetime = \"3s\"\n");
    let deadline = Instant::now() + LIFETIME;
    daemon
        .wait_for_log("the number of sessions capped", |l| {
            l.contains("max_session_lifetime") && l.contains("capped=4")
        })
        .await;
    let mut conn = daemon.connect().await;
    conn.put(LATE.as_bytes(), b"v", HOUR_MS).await;
    let late_deadline = Instant::now() + LIFETIME;
    let mut resp = daemon.resp_connect().await;
    assert_eq!(
        touch_all(&mut conn, &mut resp, late_deadline).await.len(),
        6
    );
    assert_eq!(
        list_native(&mut conn, "alice").await,
        vec![Bytes::from_static(b"n-owned")]
    );
    assert_eq!(total_resp(&mut resp, "bob").await, Value::Integer(1));
    drop((conn, resp));

    // Third run, without the setting: the deadlines given are on disk and still hold.
    let daemon = restart_with(daemon, "");
    daemon
        .wait_for_log("the start's report", |l| l.contains("listening"))
        .await;
    assert!(
        !daemon.logs().iter().any(|l| l.contains("capped=")),
        "capped without the setting"
    );
    touch_until_gone(&daemon, deadline, late_deadline).await;
}
