//! Session semantics against the real daemon (PROTOCOL.md 5.10-5.13 and 6.4): per-owner
//! limits under a crowd of concurrent logins, rotation racing an update, the absolute
//! lifetime under constant touching, and the owner index across restarts and `kill -9`.
//! Each test speaks the native protocol on an ephemeral port through the protocol crate.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sessiond_proto::command::{
    Bind, EndAll, EndAllReply, GetReply, LimitPolicy, ListSessions, OwnerLimit, Rotate,
    SessionList, SessionWriteOutcome, SetMode, SetOutcome, SetSession,
};
use sessiond_proto::{Opcode, Request};
use sessiond_tests::{Conn, Daemon};

const MINUTE_MS: u64 = 60 * 1000;
/// Every acknowledged write is durable, also across `kill -9` (in the config file, which
/// restarts reuse).
const FSYNC_ALWAYS: &str = "[aof]\nfsync = \"always\"\n";
const HOUR_MS: u64 = 60 * MINUTE_MS;

/// `SET_SESSION` of `key` for `owner`, create-only, with a limit.
fn login(key: &[u8], owner: &[u8], limit: Option<OwnerLimit>) -> Request {
    Request::SetSession(SetSession {
        key: Bytes::copy_from_slice(key),
        value: Bytes::from_static(b"{}"),
        ttl_ms: HOUR_MS,
        mode: SetMode::CreateOnly,
        owner: Some(Bytes::copy_from_slice(owner)),
        lifetime_ms: None,
        owner_limit: limit,
    })
}

async fn set_session(conn: &mut Conn, request: &Request) -> SessionWriteOutcome {
    let reply = conn.exchange(request).await;
    SessionWriteOutcome::from_frame(&reply, Opcode::SetSession)
        .unwrap_or_else(|e| panic!("SET_SESSION: {e}"))
}

async fn rotate(conn: &mut Conn, rotate: Rotate) -> SessionWriteOutcome {
    let reply = conn.exchange(&Request::Rotate(rotate)).await;
    Rotate::reply(&reply).unwrap_or_else(|e| panic!("ROTATE: {e}"))
}

async fn list(conn: &mut Conn, owner: &[u8]) -> SessionList {
    let request = Request::ListSessions(ListSessions {
        owner: Bytes::copy_from_slice(owner),
        max_sessions: 0,
    });
    let reply = conn.exchange(&request).await;
    SessionList::from_frame(&reply).unwrap_or_else(|e| panic!("LIST_SESSIONS: {e}"))
}

/// The keys of `owner`'s live sessions, sorted.
async fn keys_of(conn: &mut Conn, owner: &[u8]) -> Vec<Bytes> {
    let list = list(conn, owner).await;
    assert_eq!(list.total, list.sessions.len() as u64, "a short listing");
    let mut keys: Vec<Bytes> = list.sessions.into_iter().map(|s| s.key).collect();
    keys.sort();
    keys
}

async fn end_all(conn: &mut Conn, owner: &[u8], except: Option<&[u8]>) -> u64 {
    let request = Request::EndAll(EndAll {
        owner: Bytes::copy_from_slice(owner),
        except: except.map(Bytes::copy_from_slice),
    });
    let reply = conn.exchange(&request).await;
    EndAllReply::from_frame(&reply)
        .unwrap_or_else(|e| panic!("END_ALL: {e}"))
        .ended
}

async fn is_live(conn: &mut Conn, key: &[u8]) -> bool {
    matches!(conn.get(key).await, GetReply::Hit(_))
}

/// 100 logins of one user, each on its own connection, all sent at once under a limit of 3:
/// exactly 3 sessions are live afterwards. Under refuse, exactly 3 logins succeed and 97 are
/// answered `OWNER_LIMIT`; under end-LRU every login succeeds and the 97 sessions they
/// pushed out are ended (counted in the replies' `ended`), whichever order they ran in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_logins_leave_exactly_the_limit() {
    const LOGINS: usize = 100;
    let daemon = Daemon::start();
    for policy in [LimitPolicy::Refuse, LimitPolicy::EndLeastRecentlyUsed] {
        let owner = format!("user-{policy:?}").into_bytes();
        let limit = Some(OwnerLimit { max: 3, policy });
        let mut conns = Vec::new();
        for _ in 0..LOGINS {
            conns.push(daemon.connect().await);
        }
        // Every connection is open before the first request goes out.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(LOGINS));
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                let (owner, start) = (owner.clone(), start.clone());
                tokio::spawn(async move {
                    let key = format!("login:{policy:?}:{i}").into_bytes();
                    start.wait().await;
                    let outcome = set_session(&mut conn, &login(&key, &owner, limit)).await;
                    (key, outcome)
                })
            })
            .collect();
        let mut stored = Vec::new();
        let (mut refused, mut ended) = (0, 0);
        for task in tasks {
            let (key, outcome) = task.await.expect("login task");
            match outcome {
                SessionWriteOutcome::Stored { ended: e, .. } => {
                    stored.push(key);
                    ended += e;
                }
                SessionWriteOutcome::OwnerLimit => refused += 1,
                other => panic!("login answered {other:?}"),
            }
        }
        let mut conn = daemon.connect().await;
        let live = keys_of(&mut conn, &owner).await;
        assert_eq!(live.len(), 3, "{policy:?}: live sessions {live:?}");
        let mut hits = 0;
        for i in 0..LOGINS {
            hits +=
                usize::from(is_live(&mut conn, format!("login:{policy:?}:{i}").as_bytes()).await);
        }
        assert_eq!(hits, 3, "{policy:?}: GET finds exactly the listed sessions");
        match policy {
            LimitPolicy::Refuse => {
                assert_eq!((stored.len(), refused), (3, LOGINS - 3));
                let mut stored: Vec<Bytes> = stored.into_iter().map(Bytes::from).collect();
                stored.sort();
                assert_eq!(live, stored);
            }
            LimitPolicy::EndLeastRecentlyUsed => {
                assert_eq!((stored.len(), refused), (LOGINS, 0));
                assert_eq!(ended, (LOGINS - 3) as u64);
            }
        }
    }
}

/// A rotation and an if-version update of the same session race, many times: exactly one
/// of them wins each time, and when the rotation wins the old id never works again: not for
/// reads, updates or another rotation, and not after a restart that replays the AOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_racing_an_update_has_one_winner_and_the_old_id_stays_dead() {
    const ROUNDS: usize = 200;
    let mut daemon = Daemon::start_with_config(FSYNC_ALWAYS);
    let (mut rotations, mut updates) = (0, 0);
    let mut dead = Vec::new();
    let mut moved = Vec::new();
    {
        let mut a = daemon.connect().await;
        let mut b = daemon.connect().await;
        for round in 0..ROUNDS {
            let old = format!("race:{round}").into_bytes();
            let new = format!("race:{round}:rotated").into_bytes();
            let version = a.put(&old, b"v1", HOUR_MS).await;
            let rotation = Rotate {
                old_key: Bytes::from(old.clone()),
                new_key: Bytes::from(new.clone()),
                if_version: Some(version),
                bind: None,
            };
            let (rotated, updated) = tokio::join!(
                rotate(&mut a, rotation),
                b.set(&old, b"v2", HOUR_MS, SetMode::IfVersion(version))
            );
            match (rotated, updated) {
                (SessionWriteOutcome::Stored { .. }, SetOutcome::NotFound) => {
                    rotations += 1;
                    assert!(!is_live(&mut b, &old).await);
                    assert_eq!(
                        b.set(&old, b"late", HOUR_MS, SetMode::UpdateOnly).await,
                        SetOutcome::NotFound,
                        "a late update resurrected the old id"
                    );
                    dead.push(old);
                    moved.push(new);
                }
                (SessionWriteOutcome::VersionMismatch { .. }, SetOutcome::Stored { .. }) => {
                    updates += 1;
                    assert!(!is_live(&mut b, &new).await);
                }
                other => panic!("round {round}: both or neither won: {other:?}"),
            }
        }
    }
    assert_eq!(rotations + updates, ROUNDS);
    assert!(rotations > 0, "no rotation ever won");
    // A clean shutdown, then kill -9: each restart replays the rotations from the AOF.
    daemon.terminate(Duration::from_secs(10));
    for _ in 0..2 {
        daemon = daemon.restart();
        let mut conn = daemon.connect().await;
        for (old, new) in dead.iter().zip(&moved) {
            assert!(!is_live(&mut conn, old).await, "{old:?} came back");
            assert!(is_live(&mut conn, new).await, "{new:?} was lost");
        }
        daemon.kill9();
    }
}

/// A session with a 1.5-second absolute lifetime, touched every 50 ms with a 1-second TTL:
/// it lives until its deadline and not a moment after, and no reply ever reports a TTL that
/// reaches past the deadline.
#[tokio::test]
async fn the_absolute_lifetime_holds_under_constant_touching() {
    const LIFETIME: Duration = Duration::from_millis(1500);
    let daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    let created = Instant::now();
    let request = Request::SetSession(SetSession {
        key: Bytes::from_static(b"short"),
        value: Bytes::from_static(b"{}"),
        ttl_ms: 1000,
        mode: SetMode::CreateOnly,
        owner: Some(Bytes::from_static(b"u1")),
        lifetime_ms: Some(LIFETIME.as_millis() as u64),
        owner_limit: None,
    });
    assert!(matches!(
        set_session(&mut conn, &request).await,
        SessionWriteOutcome::Stored { .. }
    ));
    // The server set the deadline between `created` and `stored`: it is at least LIFETIME
    // after the one and at most LIFETIME after the other (give or take its 1 ms clock).
    let stored = Instant::now();
    let tolerance = Duration::from_millis(2);
    let mut last_hit = Duration::ZERO;
    loop {
        let before = stored.elapsed();
        let reply = conn.get_touch(b"short", 1000).await;
        let after = created.elapsed();
        match reply {
            GetReply::Hit(entry) => {
                let remaining = LIFETIME.saturating_sub(before) + tolerance;
                assert!(
                    entry.ttl_ms <= remaining.as_millis() as u64,
                    "TTL {} ms at {before:?} reaches past the deadline",
                    entry.ttl_ms
                );
                assert!(before < LIFETIME + tolerance, "alive at {before:?}");
                last_hit = after;
            }
            GetReply::Miss => {
                assert!(after + tolerance >= LIFETIME, "ended early, at {after:?}");
                break;
            }
        }
        assert!(created.elapsed() < LIFETIME * 3, "never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last_hit >= LIFETIME - Duration::from_millis(300),
        "last seen at {last_hit:?}"
    );
    // Gone from the owner's listing too, and it stays gone.
    assert_eq!(keys_of(&mut conn, b"u1").await, Vec::<Bytes>::new());
    assert_eq!(
        conn.touch(b"short", 1000).await,
        sessiond_proto::command::TouchReply::NotFound
    );
}

/// The owner index after a mix of logins, rotations, plain writes and deletions, an
/// `END_ALL` with an exception and an expiry, is exactly the same after a clean restart and
/// after `kill -9` (fsync always: every acknowledged write is durable).
#[tokio::test]
async fn the_owner_index_survives_restarts_and_kill_9() {
    let mut daemon = Daemon::start_with_config(FSYNC_ALWAYS);
    let mut expected: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    {
        let mut conn = daemon.connect().await;
        for key in [&b"a1"[..], b"a2", b"a3", b"a4"] {
            set_session(&mut conn, &login(key, b"alice", None)).await;
        }
        for key in [&b"b1"[..], b"b2"] {
            set_session(&mut conn, &login(key, b"bob", None)).await;
        }
        // A session that expires: it must not come back from the log.
        let short = Request::SetSession(SetSession {
            ttl_ms: 100,
            ..match login(b"b3", b"bob", None) {
                Request::SetSession(s) => s,
                _ => unreachable!(),
            }
        });
        set_session(&mut conn, &short).await;
        // Alice logs in on an anonymous session, by rotation; a plain SET keeps the owner.
        conn.put(b"anon", b"cart", HOUR_MS).await;
        let rotated = rotate(
            &mut conn,
            Rotate {
                old_key: Bytes::from_static(b"anon"),
                new_key: Bytes::from_static(b"a5"),
                if_version: None,
                bind: Some(Bind {
                    owner: Bytes::from_static(b"alice"),
                    limit: None,
                }),
            },
        )
        .await;
        assert!(matches!(rotated, SessionWriteOutcome::Stored { .. }));
        conn.put(b"a5", b"cart+", HOUR_MS).await;
        // A DEL and an END_ALL that keeps one.
        conn.del(b"a1", None).await;
        assert_eq!(end_all(&mut conn, b"alice", Some(b"a5")).await, 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        expected.push((b"alice", vec![b"a5"]));
        expected.push((b"bob", vec![b"b1", b"b2"]));
        check_owners(&mut conn, &expected).await;
    }
    daemon.terminate(Duration::from_secs(10));
    daemon = daemon.restart();
    check_owners(&mut daemon.connect().await, &expected).await;
    {
        let mut conn = daemon.connect().await;
        // One more change after the restart, then the process dies without warning.
        set_session(&mut conn, &login(b"b4", b"bob", None)).await;
        expected[1].1.push(b"b4");
        daemon.kill9();
    }
    daemon = daemon.restart();
    let mut conn = daemon.connect().await;
    check_owners(&mut conn, &expected).await;
    for dead in [&b"anon"[..], b"a1", b"a2", b"a3", b"a4", b"b3"] {
        assert!(!is_live(&mut conn, dead).await, "{dead:?} came back");
    }
}

async fn check_owners(conn: &mut Conn, expected: &[(&[u8], Vec<&[u8]>)]) {
    for (owner, keys) in expected {
        let want: HashSet<&[u8]> = keys.iter().copied().collect();
        let got = keys_of(conn, owner).await;
        let got: HashSet<&[u8]> = got.iter().map(|k| &k[..]).collect();
        assert_eq!(
            got,
            want,
            "sessions of {:?}",
            String::from_utf8_lossy(owner)
        );
    }
}

/// Plain commands on an owned session keep their version-1 meaning: `SET` replaces the
/// value and keeps the owner, `TOUCH` cannot pass the deadline, `DEL` removes the session
/// from its owner's listing.
#[tokio::test]
async fn plain_commands_on_owned_sessions() {
    let daemon = Daemon::start();
    let mut conn = daemon.connect().await;
    let request = Request::SetSession(SetSession {
        lifetime_ms: Some(10 * MINUTE_MS),
        ..match login(b"s1", b"carol", None) {
            Request::SetSession(s) => s,
            _ => unreachable!(),
        }
    });
    set_session(&mut conn, &request).await;
    set_session(&mut conn, &login(b"s2", b"carol", None)).await;
    let version = conn.put(b"s1", b"new", HOUR_MS).await;
    let listed = list(&mut conn, b"carol").await;
    let s1 = listed
        .sessions
        .iter()
        .find(|s| &s.key[..] == b"s1")
        .expect("s1 still carol's after a plain SET");
    assert_eq!(s1.version, version);
    let deadline = s1.deadline_ms.expect("s1 keeps its deadline");
    assert!(
        s1.ttl_ms <= 10 * MINUTE_MS,
        "SET's TTL was cut at the deadline"
    );
    assert!(deadline >= s1.created_ms + 10 * MINUTE_MS - 1000);
    conn.touch(b"s1", HOUR_MS).await;
    match conn.get(b"s1").await {
        GetReply::Hit(entry) => assert!(entry.ttl_ms <= 10 * MINUTE_MS, "{entry:?}"),
        GetReply::Miss => panic!("s1 is gone"),
    }
    conn.del(b"s2", None).await;
    assert_eq!(
        keys_of(&mut conn, b"carol").await,
        vec![Bytes::from_static(b"s1")]
    );
}

/// The two protocols run the same operations on the same sessions: a login by
/// `SESSIOND.ROTATE` on RESP is listed by the native `LIST_SESSIONS`, a native login counts
/// against the limit a RESP `SESSIOND.SET` asks for, and `SESSIOND.ENDALL` ends both.
#[tokio::test]
async fn resp_and_native_share_owners() {
    use sessiond_tests::resp::Value;
    let daemon = Daemon::start_with_args("", &["--resp-listen", "127.0.0.1:0"]);
    let mut native = daemon.connect().await;
    let mut resp = daemon.resp_connect().await;
    native.put(b"anon", b"cart", HOUR_MS).await;
    let rotated = resp
        .call(&["SESSIOND.ROTATE", "anon", "r1", "OWNER", "dave"])
        .await;
    assert_eq!(rotated.items().len(), 2, "{rotated:?}");
    set_session(&mut native, &login(b"n1", b"dave", None)).await;
    assert_eq!(
        keys_of(&mut native, b"dave").await,
        vec![Bytes::from_static(b"n1"), Bytes::from_static(b"r1")]
    );
    let refused = resp
        .call(&["SESSIOND.SET", "r2", "{}", "OWNER", "dave", "LIMIT", "2"])
        .await;
    assert!(refused.is_error("OWNERLIMIT"), "{refused:?}");
    let listed = resp.call(&["SESSIOND.SESSIONS", "dave"]).await;
    // RESP2: the map is a flat array, `total` first.
    assert_eq!(
        listed.items()[..2],
        [Value::bulk("total"), Value::Integer(2)]
    );
    assert_eq!(
        resp.call(&["SESSIOND.ENDALL", "dave"]).await,
        Value::Integer(2)
    );
    assert!(!is_live(&mut native, b"r1").await && !is_live(&mut native, b"n1").await);
    assert_eq!(list(&mut native, b"dave").await.total, 0);
}
