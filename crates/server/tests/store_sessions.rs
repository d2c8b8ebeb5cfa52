//! Session semantics in the store: absolute lifetime under constant touching (paused and real
//! time), per-owner limits under 100 concurrent logins with both policies, rotation racing
//! an update, and an owner index that forgets sessions once they are gone.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sessiond::clock::Clock;
use sessiond::store::sweep::SweepCursor;
use sessiond::store::{
    Expiry, LimitPolicy, OwnerLimit, RotateOutcome, SessionDefaults, SessionError, SessionOptions,
    SessionSetOutcome,
};
use sessiond::Store;
use sessiond_proto::command::{GetReply, SetMode, SetOutcome, TouchReply};
use tokio::time::advance;

const SECOND: u64 = 1_000;

fn paused_store() -> Store {
    Store::with_parts(Clock::following_tokio(), None)
}

fn owned<'a>(owner: &'a [u8]) -> SessionOptions<'a> {
    SessionOptions {
        owner: Some(owner),
        ..SessionOptions::default()
    }
}

fn stored(outcome: Result<SessionSetOutcome, SessionError>) -> (u64, Vec<Bytes>) {
    match outcome {
        Ok(SessionSetOutcome::Stored { version, ended }) => (version, ended),
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn is_live(store: &Store, key: &[u8]) -> bool {
    matches!(store.get(key, None), GetReply::Hit(_))
}

#[tokio::test(start_paused = true)]
async fn touching_never_keeps_a_session_past_its_absolute_deadline() {
    let store = paused_store();
    let absolute = store.clock().now_ms() + 10 * SECOND;
    let options = SessionOptions {
        owner: Some(b"alice"),
        absolute_deadline: Some(absolute),
        owner_limit: None,
    };
    stored(store.set_session(
        b"s",
        b"v",
        Expiry::In(3 * SECOND),
        SetMode::Upsert,
        &options,
    ));
    // Touch every second with every kind of sliding write: GET with touch, TOUCH, an update
    // with a long TTL, EXPIREAT far away.
    for second in 1..10 {
        advance(Duration::from_secs(1)).await;
        let now = store.clock().now_ms();
        match second % 4 {
            0 => assert!(matches!(
                store.get(b"s", Some(60 * SECOND)),
                GetReply::Hit(_)
            )),
            1 => assert!(matches!(
                store.touch(b"s", 60 * SECOND),
                TouchReply::Touched { .. }
            )),
            2 => assert!(matches!(
                store.set(b"s", b"v2", 60 * SECOND, SetMode::UpdateOnly),
                SetOutcome::Stored { .. }
            )),
            _ => assert!(store.expire_at(b"s", now + 60 * SECOND)),
        }
        let GetReply::Hit(entry) = store.get(b"s", None) else {
            panic!("gone at second {second}")
        };
        assert_eq!(entry.ttl_ms, absolute - now, "second {second}");
    }
    advance(Duration::from_millis(999)).await;
    assert!(is_live(&store, b"s"));
    advance(Duration::from_millis(1)).await;
    assert!(!is_live(&store, b"s"), "alive at its absolute deadline");
    assert!(store.sessions_of(b"alice").is_empty());
    // An update cannot move the absolute deadline later, only earlier.
    let options = SessionOptions {
        absolute_deadline: Some(store.clock().now_ms() + 5 * SECOND),
        ..SessionOptions::default()
    };
    stored(store.set_session(
        b"t",
        b"v",
        Expiry::In(60 * SECOND),
        SetMode::Upsert,
        &options,
    ));
    let later = SessionOptions {
        absolute_deadline: Some(store.clock().now_ms() + 50 * SECOND),
        ..SessionOptions::default()
    };
    stored(store.set_session(b"t", b"v", Expiry::In(60 * SECOND), SetMode::Upsert, &later));
    advance(Duration::from_secs(5)).await;
    assert!(!is_live(&store, b"t"));
}

#[tokio::test(start_paused = true)]
async fn the_configured_lifetime_applies_to_every_session_created() {
    let store = paused_store();
    // A plain session from before the setting keeps sliding.
    store.set(b"before", b"v", 2 * SECOND, SetMode::Upsert);
    store.set_session_defaults(SessionDefaults {
        max_lifetime_ms: Some(5 * SECOND),
        owner_limit: None,
    });
    store.set(b"plain", b"v", 2 * SECOND, SetMode::Upsert);
    for _ in 0..4 {
        advance(Duration::from_secs(1)).await;
        assert!(matches!(
            store.touch(b"plain", 2 * SECOND),
            TouchReply::Touched { .. }
        ));
        assert!(matches!(
            store.touch(b"before", 2 * SECOND),
            TouchReply::Touched { .. }
        ));
    }
    advance(Duration::from_secs(1)).await;
    assert!(!is_live(&store, b"plain"));
    assert!(is_live(&store, b"before"));
    // A session may ask for an earlier absolute deadline, not a later one.
    let now = store.clock().now_ms();
    for (key, asked) in [
        (&b"earlier"[..], now + SECOND),
        (b"later", now + 60 * SECOND),
    ] {
        let options = SessionOptions {
            absolute_deadline: Some(asked),
            ..owned(b"kim")
        };
        stored(store.set_session(
            key,
            b"v",
            Expiry::In(60 * SECOND),
            SetMode::Upsert,
            &options,
        ));
    }
    let deadlines: Vec<_> = store
        .sessions_of(b"kim")
        .into_iter()
        .map(|s| (s.key, s.absolute_deadline_ms))
        .collect();
    assert!(deadlines.contains(&(Bytes::from_static(b"earlier"), Some(now + SECOND))));
    assert!(deadlines.contains(&(Bytes::from_static(b"later"), Some(now + 5 * SECOND))));
}

#[test]
fn absolute_lifetime_holds_in_real_time() {
    let store = Store::new();
    let started = Instant::now();
    let options = SessionOptions {
        absolute_deadline: Some(store.clock().now_ms() + 300),
        ..owned(b"bob")
    };
    stored(store.set_session(b"s", b"v", Expiry::In(200), SetMode::Upsert, &options));
    let mut last_hit = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(600) {
        if matches!(store.get(b"s", Some(200)), GetReply::Hit(_)) {
            last_hit = started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Touched every 20 ms with a 200 ms TTL, it would live for ever: the deadline ends it.
    assert!(last_hit > Duration::ZERO);
    assert!(last_hit < Duration::from_millis(300), "hit at {last_hit:?}");
    assert!(!is_live(&store, b"s"));
}

/// 100 threads log the same owner in at once, each with its own session, under a limit of 3.
fn hundred_logins(policy: LimitPolicy) -> (Store, Vec<Result<SessionSetOutcome, SessionError>>) {
    let store = Store::new();
    let barrier = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let options = SessionOptions {
                    owner: Some(b"carol"),
                    absolute_deadline: None,
                    owner_limit: Some(OwnerLimit { max: 3, policy }),
                };
                barrier.wait();
                store.set_session(
                    format!("session:{i}").as_bytes(),
                    b"v",
                    Expiry::In(60 * SECOND),
                    SetMode::CreateOnly,
                    &options,
                )
            })
        })
        .collect();
    let outcomes = threads
        .into_iter()
        .map(|thread| thread.join().expect("login thread"))
        .collect();
    (store, outcomes)
}

#[test]
fn a_hundred_concurrent_logins_leave_three_sessions_when_refusing() {
    let (store, outcomes) = hundred_logins(LimitPolicy::Refuse);
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(SessionSetOutcome::Stored { .. })))
        .count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(SessionSetOutcome::OwnerLimitReached)))
        .count();
    assert_eq!((created, refused), (3, 97));
    assert_eq!(store.sessions_of(b"carol").len(), 3);
    assert_eq!(store.len(), 3, "a refused login left an entry behind");
}

#[test]
fn a_hundred_concurrent_logins_leave_three_sessions_when_ending_the_oldest() {
    let (store, outcomes) = hundred_logins(LimitPolicy::EndLeastRecentlyUsed);
    let mut ended = 0;
    for outcome in &outcomes {
        ended += stored(outcome.clone()).1.len();
    }
    assert_eq!(ended, 97);
    let live = store.sessions_of(b"carol");
    assert_eq!(live.len(), 3);
    assert_eq!(store.len(), 3);
    for session in live {
        assert!(is_live(&store, &session.key));
    }
}

#[test]
fn the_least_recently_used_session_is_the_one_ended() {
    let store = paused_store_blocking();
    let limit = SessionOptions {
        owner_limit: Some(OwnerLimit {
            max: 2,
            policy: LimitPolicy::EndLeastRecentlyUsed,
        }),
        ..owned(b"dave")
    };
    let set =
        |key: &[u8]| store.set_session(key, b"v", Expiry::In(60 * SECOND), SetMode::Upsert, &limit);
    stored(set(b"a"));
    store.clock().raise_to(store.clock().now_ms() + 10);
    stored(set(b"b"));
    store.clock().raise_to(store.clock().now_ms() + 10);
    // `a` is used again: `b` is now the least recently used.
    assert!(matches!(
        store.touch(b"a", 60 * SECOND),
        TouchReply::Touched { .. }
    ));
    store.clock().raise_to(store.clock().now_ms() + 10);
    let (_, ended) = stored(set(b"c"));
    assert_eq!(ended, vec![Bytes::from_static(b"b")]);
    let keys: Vec<_> = store
        .sessions_of(b"dave")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(
        keys,
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"c")]
    );
    // Updating a session the owner already has is not a new binding: nothing ends.
    let (_, ended) = stored(set(b"a"));
    assert!(ended.is_empty());
}

/// A store with a wall clock (for tests that move time with `raise_to`).
fn paused_store_blocking() -> Store {
    Store::new()
}

#[test]
fn rotation_races_an_update_and_exactly_one_wins() {
    for round in 0..200 {
        let store = Store::new();
        let version = match store.set_session(
            b"old",
            b"v0",
            Expiry::In(60 * SECOND),
            SetMode::Upsert,
            &owned(b"erin"),
        ) {
            Ok(SessionSetOutcome::Stored { version, .. }) => version,
            other => panic!("{other:?}"),
        };
        let barrier = Arc::new(Barrier::new(2));
        let rotate = {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.rotate(b"old", b"new", Some(version), None)
            })
        };
        let update = {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.set(b"old", b"v1", 60 * SECOND, SetMode::IfVersion(version))
            })
        };
        let rotated = rotate.join().expect("rotate thread");
        let updated = update.join().expect("update thread");
        match (&rotated, &updated) {
            (Ok(RotateOutcome::Rotated { .. }), SetOutcome::NotFound) => {
                assert!(!is_live(&store, b"old"), "round {round}");
                let GetReply::Hit(entry) = store.get(b"new", None) else {
                    panic!("round {round}: the rotated session is missing")
                };
                assert_eq!(entry.value, Bytes::from_static(b"v0"));
            }
            (Ok(RotateOutcome::VersionMismatch { .. }), SetOutcome::Stored { .. }) => {
                assert!(!is_live(&store, b"new"), "round {round}");
                assert!(is_live(&store, b"old"), "round {round}");
            }
            other => panic!("round {round}: {other:?}"),
        }
        let listed: Vec<_> = store
            .sessions_of(b"erin")
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(listed.len(), 1, "round {round}: {listed:?}");
    }
}

#[test]
fn rotation_keeps_data_owner_and_times_and_never_brings_the_old_key_back() {
    let store = Store::new();
    let absolute = store.clock().now_ms() + 60 * SECOND;
    let options = SessionOptions {
        absolute_deadline: Some(absolute),
        ..owned(b"frank")
    };
    let (v1, _) = stored(store.set_session(
        b"a",
        b"data",
        Expiry::In(30 * SECOND),
        SetMode::Upsert,
        &options,
    ));
    let before = store.sessions_of(b"frank");
    let Ok(RotateOutcome::Rotated { version: v2, .. }) = store.rotate(b"a", b"b", Some(v1), None)
    else {
        panic!("rotation failed")
    };
    assert!(v2 > v1);
    let after = store.sessions_of(b"frank");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].key, Bytes::from_static(b"b"));
    assert_eq!(after[0].created_ms, before[0].created_ms);
    assert_eq!(after[0].last_access_ms, before[0].last_access_ms);
    assert_eq!(after[0].expires_at_ms, before[0].expires_at_ms);
    assert_eq!(after[0].absolute_deadline_ms, Some(absolute));
    assert!(!is_live(&store, b"a"));
    // The old key's version no longer rotates anything, and the new key is create-only.
    assert_eq!(
        store.rotate(b"a", b"c", Some(v1), None),
        Ok(RotateOutcome::NotFound)
    );
    store.set(b"taken", b"x", 60 * SECOND, SetMode::Upsert);
    assert_eq!(
        store.rotate(b"b", b"taken", None, None),
        Ok(RotateOutcome::Exists)
    );
    assert_eq!(
        store.rotate(b"b", b"b", None, None),
        Ok(RotateOutcome::Exists)
    );
    // Binding as it rotates (a login): the plain session becomes the owner's.
    assert!(matches!(
        store.rotate(b"taken", b"fresh", None, Some((&b"gina"[..], None))),
        Ok(RotateOutcome::Rotated { .. })
    ));
    assert_eq!(store.sessions_of(b"gina").len(), 1);
}

#[test]
fn end_all_ends_every_session_but_the_one_kept() {
    let store = Store::new();
    for key in [&b"1"[..], b"2", b"3"] {
        stored(store.set_session(
            key,
            b"v",
            Expiry::In(60 * SECOND),
            SetMode::Upsert,
            &owned(b"hank"),
        ));
    }
    stored(store.set_session(
        b"other",
        b"v",
        Expiry::In(60 * SECOND),
        SetMode::Upsert,
        &owned(b"ida"),
    ));
    assert_eq!(store.end_all(b"hank", Some(b"2")), 2);
    assert!(is_live(&store, b"2") && !is_live(&store, b"1") && !is_live(&store, b"3"));
    assert!(is_live(&store, b"other"));
    assert_eq!(store.end_all(b"hank", None), 1);
    assert!(store.sessions_of(b"hank").is_empty());
    assert_eq!(store.end_all(b"nobody", None), 0);
}

/// The configured limit is the deployment's: a request may ask for a lower one, and a higher
/// one does not raise it.
#[test]
fn a_request_can_lower_the_configured_owner_limit_but_not_raise_it() {
    let store = Store::new();
    store.set_session_defaults(SessionDefaults {
        owner_limit: Some(OwnerLimit {
            max: 2,
            policy: LimitPolicy::Refuse,
        }),
        ..SessionDefaults::default()
    });
    let with_limit = |max| SessionOptions {
        owner_limit: Some(OwnerLimit {
            max,
            policy: LimitPolicy::Refuse,
        }),
        ..owned(b"kim")
    };
    let set = |key: &[u8], options: &SessionOptions<'_>| {
        store.set_session(key, b"v", Expiry::In(60 * SECOND), SetMode::Upsert, options)
    };
    stored(set(b"1", &with_limit(1)));
    assert_eq!(
        set(b"2", &with_limit(1)),
        Ok(SessionSetOutcome::OwnerLimitReached)
    );
    stored(set(b"2", &with_limit(10)));
    assert_eq!(
        set(b"3", &with_limit(10)),
        Ok(SessionSetOutcome::OwnerLimitReached)
    );
    assert_eq!(store.sessions_of(b"kim").len(), 2);
}

#[test]
fn owners_are_bounded_and_limits_at_least_one() {
    let store = Store::new();
    let long = vec![b'x'; 257];
    let set = |options: &SessionOptions<'_>| {
        store.set_session(b"k", b"v", Expiry::In(SECOND), SetMode::Upsert, options)
    };
    assert_eq!(set(&owned(&long)), Err(SessionError::InvalidOwner(257)));
    assert_eq!(set(&owned(b"")), Err(SessionError::InvalidOwner(0)));
    let zero = SessionOptions {
        owner_limit: Some(OwnerLimit {
            max: 0,
            policy: LimitPolicy::Refuse,
        }),
        ..owned(b"jo")
    };
    assert_eq!(set(&zero), Err(SessionError::InvalidLimit));
    assert!(store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_index_forgets_sessions_that_expire_are_deleted_or_rebound() {
    let store = paused_store();
    for i in 0..1000 {
        let owner = format!("user:{}", i % 100);
        stored(store.set_session(
            format!("s{i}").as_bytes(),
            b"v",
            Expiry::In(SECOND),
            SetMode::Upsert,
            &owned(owner.as_bytes()),
        ));
    }
    assert_eq!(store.owner_count(), 100);
    advance(Duration::from_secs(2)).await;
    // Nobody asks about them again: the sweep alone must clean the index.
    store.sweep(&mut SweepCursor::default(), Duration::MAX);
    assert_eq!(store.len(), 0);
    assert_eq!(store.owner_count(), 0);
    // The index counts in the memory in use, and gives all of it back.
    assert_eq!(store.memory().used(), 0);

    stored(store.set_session(
        b"a",
        b"v",
        Expiry::In(SECOND),
        SetMode::Upsert,
        &owned(b"x"),
    ));
    stored(store.set_session(
        b"b",
        b"v",
        Expiry::In(SECOND),
        SetMode::Upsert,
        &owned(b"x"),
    ));
    store.del(b"a", None);
    // Rebinding `b` moves it from one owner to the other.
    stored(store.set_session(
        b"b",
        b"v",
        Expiry::In(SECOND),
        SetMode::Upsert,
        &owned(b"y"),
    ));
    assert_eq!(store.owner_count(), 1);
    assert!(store.sessions_of(b"x").is_empty());
    assert_eq!(store.sessions_of(b"y").len(), 1);
    // A plain update keeps the binding.
    store.set(b"b", b"v2", SECOND, SetMode::Upsert);
    assert_eq!(store.sessions_of(b"y").len(), 1);
    // A plain create over the expired session does not inherit it.
    advance(Duration::from_secs(2)).await;
    store.set(b"b", b"v3", SECOND, SetMode::Upsert);
    assert!(store.sessions_of(b"y").is_empty());
    assert_eq!(store.owner_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn eviction_takes_evicted_sessions_out_of_their_owners_lists() {
    use sessiond::memory::Policy;
    let store = paused_store();
    // Ten owners with 100 sessions each, deadlines 1 to 1000 minutes in a scrambled order.
    for i in 0..1000u64 {
        let owner = format!("user:{}", i % 10);
        stored(store.set_session(
            format!("s{i}").as_bytes(),
            &[b'v'; 100],
            Expiry::In((1 + (i * 7919) % 1000) * 60 * SECOND),
            SetMode::Upsert,
            &owned(owner.as_bytes()),
        ));
    }
    let used = store.memory().used();
    store
        .memory()
        .set_limit(Some(used), Policy::EvictSoonestExpiring);
    let stopped = tokio_util::sync::CancellationToken::new();
    store.evict_down_to(used / 2, &stopped).await;
    let evicted = store.memory().evicted();
    assert!(evicted > 100, "{evicted} evicted");
    let mut listed = 0;
    for owner in 0..10 {
        for session in store.sessions_of(format!("user:{owner}").as_bytes()) {
            assert!(is_live(&store, &session.key));
            listed += 1;
        }
    }
    assert_eq!(
        listed,
        store.len(),
        "every live session listed, and only those"
    );
    assert_eq!(listed as u64, 1000 - evicted);
}

#[tokio::test(start_paused = true)]
async fn at_the_memory_cap_session_writes_ask_only_for_what_they_add() {
    use sessiond::memory::Policy;
    use sessiond::store::OutOfMemory;
    let store = paused_store();
    let value = [b'v'; 100];
    let minute = Expiry::In(60 * SECOND);
    stored(store.set_session(b"s1", &value, minute, SetMode::Upsert, &owned(b"alice")));
    stored(store.set_session(b"s2", &value, minute, SetMode::Upsert, &owned(b"alice")));
    assert!(matches!(
        store.set(b"plain", &value, 60 * SECOND, SetMode::Upsert),
        SetOutcome::Stored { .. }
    ));
    // The cap is exactly what is in use: any byte more is refused, none less is asked for.
    let used = store.memory().used();
    store.memory().set_limit(Some(used), Policy::RefuseNew);
    let oom = SessionError::OutOfMemory(OutOfMemory);

    // Re-saving a session with its owner changes no size: served, as a plain SET would be.
    let same = [b'w'; 100];
    stored(store.set_session(b"s1", &same, minute, SetMode::Upsert, &owned(b"alice")));
    assert!(matches!(
        store.set_limited(b"s2", &same, minute, SetMode::UpdateOnly, None),
        Ok(SetOutcome::Stored { .. })
    ));
    // Rotating to a key of the same length, keeping the owner, adds nothing either.
    assert!(matches!(
        store.rotate(b"s1", b"s3", None, None),
        Ok(RotateOutcome::Rotated { .. })
    ));
    assert_eq!(store.memory().used(), used);

    // Binding the plain entry grows it by the session fields and the owner: refused, by a
    // write and by a rotation alike, and neither leaves a trace.
    assert_eq!(
        store.set_session(b"plain", &value, minute, SetMode::Upsert, &owned(b"alice")),
        Err(oom)
    );
    assert_eq!(
        store.rotate(b"plain", b"bound", None, Some((b"alice", None))),
        Err(oom)
    );
    // So does a new session, and an absolute deadline given to the plain entry.
    assert_eq!(
        store.set_session(b"s4", &value, minute, SetMode::Upsert, &owned(b"alice")),
        Err(oom)
    );
    let absolute = SessionOptions {
        absolute_deadline: Some(3_600 * SECOND),
        ..SessionOptions::default()
    };
    assert_eq!(
        store.set_session(b"plain", &value, minute, SetMode::Upsert, &absolute),
        Err(oom)
    );
    assert!(is_live(&store, b"plain"));
    assert!(!is_live(&store, b"bound"));
    assert_eq!(store.sessions_of(b"alice").len(), 2);
    assert_eq!(store.memory().used(), used);

    // Once a session is gone there is room, and the binding rotation fits.
    assert_eq!(store.end_all(b"alice", Some(b"s3")), 1);
    assert!(matches!(
        store.rotate(b"plain", b"bound", None, Some((b"alice", None))),
        Ok(RotateOutcome::Rotated { .. })
    ));
    assert!(store.memory().used() <= used);
    let keys: Vec<Bytes> = store
        .sessions_of(b"alice")
        .into_iter()
        .map(|info| info.key)
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&Bytes::from_static(b"bound")));
}
