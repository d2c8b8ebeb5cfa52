//! Sessions with owners and absolute lifetimes against the real `sessiond` binary: logins
//! that bind and rotate, the devices of a user, "log out everywhere", per-user limits, and
//! an absolute lifetime that touching cannot extend.

use std::time::{Duration, Instant};

use sessiond_client::{
    Error, LimitPolicy, OwnerLimit, SessionConfig, SessionError, SessionOptions, Sessions,
    SetCookie, SetMode,
};
use sessiond_tests::Daemon;

mod support;

use support::{attribute, cookie_header, sessions, stale_session};

fn max_age(set_cookie: &SetCookie) -> u64 {
    attribute(set_cookie, "Max-Age").unwrap().parse().unwrap()
}

/// A browser that has logged in as `owner`: its `Cookie` header.
async fn logged_in(sessions: &Sessions, owner: &str) -> String {
    let mut session = sessions.load(None).await.unwrap();
    cookie_header(&sessions.login(&mut session, owner).await.unwrap())
}

#[tokio::test]
async fn login_binds_the_owner_and_the_old_id_no_longer_works() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;

    // An anonymous session, with something in its cart, as a planted id would be.
    let mut session = sessions.load(None).await.unwrap();
    session.insert("cart", 2).unwrap();
    let old_header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    let old_id = session.id().unwrap().clone();
    assert_eq!(session.owner(), None);

    let mut session = sessions.load([old_header.as_str()]).await.unwrap();
    session.insert("username", "alice").unwrap();
    let new_cookie = sessions.login(&mut session, "user:alice").await.unwrap();
    let new_id = session.id().unwrap().clone();
    assert_ne!(new_id, old_id);
    assert_eq!(session.owner(), Some("user:alice"));

    // The old id names nothing any more, on the wire and through a cookie.
    assert_eq!(client.get(sessions.key(&old_id)).await.unwrap(), None);
    assert!(sessions.load([old_header.as_str()]).await.unwrap().is_new());
    // The new one has the old data, this request's change and the owner.
    let moved = sessions
        .load([cookie_header(&new_cookie).as_str()])
        .await
        .unwrap();
    assert_eq!(moved.get::<u64>("cart").unwrap(), Some(2));
    assert_eq!(
        moved.get::<String>("username").unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(moved.owner(), Some("user:alice"));

    // The server knows whose it is.
    let devices = sessions.sessions_of("user:alice").await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, new_id);
    assert_eq!(devices[0].fingerprint(), new_id.fingerprint());
    assert!(!format!("{:?}", devices[0]).contains(new_id.as_str()));
    let listed = client.sessions_of("user:alice").await.unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(
        &listed.sessions[0].key[..],
        sessions.key(&new_id).as_bytes()
    );
}

#[tokio::test]
async fn a_login_that_lost_a_race_changes_nothing() {
    let daemon = Daemon::start();
    let (_client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let (mut stale, header) = stale_session(&sessions).await;
    assert!(matches!(
        sessions.login(&mut stale, "user:alice").await,
        Err(SessionError::Conflict { .. })
    ));
    assert!(sessions.sessions_of("user:alice").await.unwrap().is_empty());
    let kept = sessions.load([header.as_str()]).await.unwrap();
    assert_eq!(kept.get::<u64>("n").unwrap(), Some(2));
}

#[tokio::test]
async fn devices_and_ending_all_but_the_current_one() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let mut browsers = Vec::new();
    for _ in 0..3 {
        browsers.push(logged_in(&sessions, "user:alice").await);
    }
    let bob = logged_in(&sessions, "user:bob").await;
    // Another application's session of the same user is not one of this app's devices.
    let other_app = Sessions::new(
        client.clone(),
        SessionConfig::default().key_prefix("other:"),
    )
    .unwrap();
    logged_in(&other_app, "user:alice").await;

    let devices = sessions.sessions_of("user:alice").await.unwrap();
    assert_eq!(devices.len(), 3);
    assert_eq!(client.sessions_of("user:alice").await.unwrap().total, 4);
    let current = sessions.load([browsers[0].as_str()]).await.unwrap();
    assert!(devices.iter().any(|d| Some(&d.id) == current.id()));
    for device in &devices {
        assert!(device.expires_in > Duration::from_secs(30 * 24 * 3600));
        assert!(device.last_access >= device.created);
        assert_eq!(device.absolute_deadline, None);
    }

    // "Log out my other devices": everything of alice's but this browser, in this app and
    // the other one alike (the owner is the user, not the app).
    assert_eq!(
        sessions
            .end_all("user:alice", Some(&current))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        sessions.load([browsers[0].as_str()]).await.unwrap().id(),
        current.id()
    );
    for browser in &browsers[1..] {
        assert!(sessions.load([browser.as_str()]).await.unwrap().is_new());
    }
    assert!(!sessions.load([bob.as_str()]).await.unwrap().is_new());
    // And then everywhere.
    assert_eq!(sessions.end_all("user:alice", None).await.unwrap(), 1);
    assert!(sessions
        .load([browsers[0].as_str()])
        .await
        .unwrap()
        .is_new());
    assert_eq!(sessions.end_all("user:alice", None).await.unwrap(), 0);
}

#[tokio::test]
async fn the_owner_limit_refuses_or_ends_the_least_recently_used() {
    let daemon = Daemon::start();
    let refuse = OwnerLimit {
        max: 2,
        policy: LimitPolicy::Refuse,
    };
    let (_client, sessions) = sessions(&daemon, SessionConfig::default().owner_limit(refuse)).await;
    let first = logged_in(&sessions, "user:alice").await;
    // Apart by more than the millisecond the server's clock counts in, so that the first is
    // the least recently used below.
    tokio::time::sleep(Duration::from_millis(20)).await;
    logged_in(&sessions, "user:alice").await;
    let mut third = sessions.load(None).await.unwrap();
    third.insert("cart", 1).unwrap();
    assert!(matches!(
        sessions.login(&mut third, "user:alice").await,
        Err(SessionError::OwnerLimitReached)
    ));
    assert_eq!(sessions.sessions_of("user:alice").await.unwrap().len(), 2);

    let lru = OwnerLimit {
        max: 2,
        policy: LimitPolicy::EndLeastRecentlyUsed,
    };
    let (_client, sessions) =
        self::sessions(&daemon, SessionConfig::default().owner_limit(lru)).await;
    // The first browser is the least recently used: the new login ends it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let newest = logged_in(&sessions, "user:alice").await;
    assert_eq!(sessions.sessions_of("user:alice").await.unwrap().len(), 2);
    assert!(sessions.load([first.as_str()]).await.unwrap().is_new());
    assert!(!sessions.load([newest.as_str()]).await.unwrap().is_new());
}

#[tokio::test]
async fn the_absolute_lifetime_holds_under_constant_touching() {
    let daemon = Daemon::start();
    let config = SessionConfig::default()
        .lifetime(Duration::from_secs(60))
        .absolute_lifetime(Duration::from_secs(2));
    let (client, sessions) = sessions(&daemon, config).await;
    let mut session = sessions.load(None).await.unwrap();
    let cookie = sessions.login(&mut session, "user:alice").await.unwrap();
    // The server set the deadline before this reply came back: it is at most 2 s from here.
    let logged_in = Instant::now();
    // The cookie does not outlive the deadline either.
    assert!(max_age(&cookie) <= 2, "{cookie:?}");
    let header = cookie_header(&cookie);
    let key = sessions.key(session.id().unwrap());
    let device = &sessions.sessions_of("user:alice").await.unwrap()[0];
    assert!(device.absolute_deadline.is_some());

    // Every load slides the 60 s idle expiry, every save writes with a 60 s TTL, and a
    // direct TOUCH asks for 60 s too; none of them reaches past the 2 s deadline.
    let mut last_alive = logged_in;
    let mut n = 0;
    while logged_in.elapsed() < Duration::from_secs(4) {
        let asked = Instant::now();
        let mut loaded = sessions.load([header.as_str()]).await.unwrap();
        if loaded.is_new() {
            break;
        }
        // The server found it alive after `asked`.
        last_alive = asked;
        let ttl = client.get(&key).await.unwrap().map(|e| e.ttl_ms);
        assert!(ttl.is_none_or(|ttl| ttl <= 2_000), "ttl {ttl:?}");
        n += 1;
        loaded.insert("n", n).unwrap();
        match sessions.save(&mut loaded).await {
            Ok(Some(refreshed)) => assert!(max_age(&refreshed) <= 2, "{refreshed:?}"),
            // It reached its deadline between the load and the save.
            Err(SessionError::Gone) => {}
            other => panic!("save: {other:?}"),
        }
        let _ = client.touch(&key, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lived = last_alive.duration_since(logged_in);
    // A few milliseconds of slack: the server counts in whole milliseconds.
    assert!(lived < Duration::from_millis(2_010), "lived {lived:?}");
    assert!(lived > Duration::from_millis(1_000), "lived {lived:?}");
    assert!(sessions.load([header.as_str()]).await.unwrap().is_new());
    assert!(sessions.sessions_of("user:alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn regenerate_keeps_the_owner_and_the_deadline() {
    let daemon = Daemon::start();
    let config = SessionConfig::default().absolute_lifetime(Duration::from_secs(3600));
    let (_client, sessions) = sessions(&daemon, config).await;
    let header = logged_in(&sessions, "user:alice").await;
    let before = sessions.sessions_of("user:alice").await.unwrap().remove(0);

    let mut session = sessions.load([header.as_str()]).await.unwrap();
    let cookie = sessions.regenerate(&mut session).await.unwrap().unwrap();
    assert!(sessions.load([header.as_str()]).await.unwrap().is_new());
    let after = sessions.sessions_of("user:alice").await.unwrap().remove(0);
    assert_ne!(after.id, before.id);
    assert_eq!(Some(&after.id), session.id());
    assert_eq!(after.created, before.created);
    assert_eq!(after.absolute_deadline, before.absolute_deadline);
    assert!(max_age(&cookie) <= 3600);
}

#[tokio::test]
async fn client_session_commands_are_typed() {
    let daemon = Daemon::start();
    let (client, _) = sessions(&daemon, SessionConfig::default()).await;
    let ttl = Duration::from_secs(60);
    let alice = SessionOptions::new().owner("alice");
    let written = client
        .set_session("s:1", "v", ttl, SetMode::CreateOnly, &alice)
        .await
        .unwrap();
    assert_eq!(written.ended, 0);
    assert!(matches!(
        client
            .set_session("s:1", "v", ttl, SetMode::CreateOnly, &alice)
            .await,
        Err(Error::Exists)
    ));

    // Rotation: version-checked, create-only at the new key, the old key gone.
    client
        .set("s:taken", "x", ttl, SetMode::Upsert)
        .await
        .unwrap();
    assert!(matches!(
        client
            .rotate("s:1", "s:taken", None, &SessionOptions::new())
            .await,
        Err(Error::Exists)
    ));
    assert!(matches!(
        client
            .rotate("s:1", "s:2", Some(written.version + 100), &SessionOptions::new())
            .await,
        Err(Error::VersionMismatch { current }) if current == written.version
    ));
    let rotated = client
        .rotate("s:1", "s:2", Some(written.version), &SessionOptions::new())
        .await
        .unwrap();
    assert!(rotated.version > written.version);
    assert_eq!(client.get("s:1").await.unwrap(), None);
    assert_eq!(&client.get("s:2").await.unwrap().unwrap().value[..], b"v");
    assert!(matches!(
        client
            .rotate("s:1", "s:3", None, &SessionOptions::new())
            .await,
        Err(Error::NotFound)
    ));

    // A limit of one, refusing: the second session of alice is refused.
    let limited = alice.clone().owner_limit(OwnerLimit {
        max: 1,
        policy: LimitPolicy::Refuse,
    });
    assert!(matches!(
        client
            .set_session("s:4", "v", ttl, SetMode::CreateOnly, &limited)
            .await,
        Err(Error::OwnerLimitReached)
    ));
    assert!(Error::OwnerLimitReached.is_declined());

    // A login as an owner the wire cannot carry changes nothing.
    let (_, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let mut session = sessions.load(None).await.unwrap();
    assert!(matches!(
        sessions.login(&mut session, "").await,
        Err(SessionError::Client(Error::InvalidArgument(_)))
    ));
    assert!(session.is_new() && !session.is_modified() && session.owner().is_none());

    // Arguments the wire cannot carry are refused before sending.
    for bad in ["", &"o".repeat(257)] {
        assert!(matches!(
            client.sessions_of(bad).await,
            Err(Error::InvalidArgument(_))
        ));
    }
    let list = client.sessions_of("alice").await.unwrap();
    assert_eq!(list.total, 1);
    assert_eq!(&list.sessions[0].key[..], b"s:2");
    assert_eq!(client.end_all("alice", Some(b"s:2")).await.unwrap(), 0);
    assert_eq!(client.end_all("alice", None).await.unwrap(), 1);
    assert_eq!(client.get("s:2").await.unwrap(), None);
}
