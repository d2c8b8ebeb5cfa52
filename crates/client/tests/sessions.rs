//! The session layer against the real `sessiond` binary: cookies in, cookies out, and what
//! is stored in between.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use sessiond_client::{SessionConfig, SessionError, SessionId, Sessions, SetCookie, SetMode};
use sessiond_tests::Daemon;

mod support;

use support::{attribute, cookie_header, sessions, stale_session};

const KEY: &[u8] = b"an example signing key, 32+ byte";

fn cookie_value(set_cookie: &SetCookie) -> String {
    cookie_header(set_cookie)
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

#[tokio::test]
async fn a_new_session_is_stored_as_msgpack_under_a_256_bit_id() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;

    let mut session = sessions.load(None).await.unwrap();
    assert!(session.is_new());
    // An untouched new session stores nothing and sets no cookie.
    assert_eq!(sessions.save(&mut session).await.unwrap(), None);

    session.insert("username", "Alice").unwrap();
    let set_cookie = sessions.save(&mut session).await.unwrap().unwrap();
    let id = session.id().unwrap().clone();
    assert_eq!(cookie_value(&set_cookie), id.as_str());
    assert_eq!(id.as_str().len(), 43, "32 random bytes, URL-safe base64");
    assert_eq!(
        set_cookie.as_str(),
        format!(
            "session={id}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax",
            31 * 24 * 3600
        )
    );

    // Stored under the prefix, as the MessagePack map Flask-Session writes.
    let entry = client.get(format!("session:{id}")).await.unwrap().unwrap();
    let mut expected = vec![0x81, 0xa8];
    expected.extend_from_slice(b"username");
    expected.push(0xa5);
    expected.extend_from_slice(b"Alice");
    assert_eq!(&entry.value[..], &expected[..]);
    assert_eq!(Some(entry.version), session.version());

    let header = cookie_header(&set_cookie);
    let loaded = sessions
        .load(["theme=dark", header.as_str()])
        .await
        .unwrap();
    assert_eq!(loaded.id(), Some(&id));
    assert_eq!(
        loaded.get::<String>("username").unwrap().as_deref(),
        Some("Alice")
    );
    assert_eq!(loaded.get::<u64>("missing").unwrap(), None);
    assert!(
        loaded.get::<u64>("username").is_err(),
        "a type mismatch is an error"
    );
}

#[tokio::test]
async fn the_key_prefix_and_cookie_settings_apply() {
    let daemon = Daemon::start();
    let config = SessionConfig::default()
        .key_prefix("app1:")
        .cookie_name("sid")
        .permanent(false)
        .secure(true)
        .http_only(false)
        .same_site(Some(sessiond_client::SameSite::Strict))
        .path("/app")
        .domain(Some("example.com".into()));
    let (client, sessions) = sessions(&daemon, config).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("n", 1).unwrap();
    let set_cookie = sessions.save(&mut session).await.unwrap().unwrap();
    let id = session.id().unwrap();
    assert_eq!(
        set_cookie.as_str(),
        format!("sid={id}; Path=/app; Domain=example.com; Secure; SameSite=Strict"),
        "a browser-session cookie has no Max-Age"
    );
    assert!(client.get(format!("app1:{id}")).await.unwrap().is_some());
    assert_eq!(sessions.key(id), format!("app1:{id}"));
    // The stored session still expires (after the lifetime).
    let ttl = client
        .get(format!("app1:{id}"))
        .await
        .unwrap()
        .unwrap()
        .ttl_ms;
    assert!(ttl > 30 * 24 * 3600 * 1000);

    assert!(Sessions::new(client.clone(), SessionConfig::default().cookie_name("a b")).is_err());
    assert!(Sessions::new(client, SessionConfig::default().path("/;x")).is_err());
}

#[tokio::test]
async fn ttls_respect_the_servers_max_ttl() {
    let daemon = Daemon::start_with_config("[limits]\nmax_ttl = \"1h\"\n");
    // The default lifetime, 31 days, is far beyond the server's maximum.
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    assert_eq!(sessions.ttl().await.unwrap(), Duration::from_secs(3600));
    let mut session = sessions.load(None).await.unwrap();
    session.insert("n", 1).unwrap();
    let set_cookie = sessions.save(&mut session).await.unwrap().unwrap();
    let key = sessions.key(session.id().unwrap());
    assert!(client.get(&key).await.unwrap().unwrap().ttl_ms <= 3_600_000);
    // The cookie does not outlive the stored session.
    assert_eq!(attribute(&set_cookie, "Max-Age").as_deref(), Some("3600"));

    // Loads (which slide the expiry) and saves stay within it too.
    let header = cookie_header(&set_cookie);
    let mut session = sessions.load([header.as_str()]).await.unwrap();
    session.insert("n", 2).unwrap();
    sessions.save(&mut session).await.unwrap();
    assert!(client.get(&key).await.unwrap().unwrap().ttl_ms <= 3_600_000);
}

#[tokio::test]
async fn loading_slides_the_expiry_when_refresh_each_request_is_on() {
    let daemon = Daemon::start();
    let config = SessionConfig::default().lifetime(Duration::from_secs(3600));
    let (client, sessions) = sessions(&daemon, config.clone()).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("n", 1).unwrap();
    let header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    let key = sessions.key(session.id().unwrap());

    client.touch(&key, Duration::from_secs(10)).await.unwrap();
    let mut loaded = sessions.load([header.as_str()]).await.unwrap();
    assert!(client.get(&key).await.unwrap().unwrap().ttl_ms > 3_000_000);
    // An unchanged permanent session re-sends its cookie, so its expiry slides too.
    let refreshed = sessions.save(&mut loaded).await.unwrap().unwrap();
    assert_eq!(attribute(&refreshed, "Max-Age").as_deref(), Some("3600"));

    let static_sessions =
        Sessions::new(client.clone(), config.refresh_each_request(false)).unwrap();
    client.touch(&key, Duration::from_secs(10)).await.unwrap();
    let mut loaded = static_sessions.load([header.as_str()]).await.unwrap();
    assert!(client.get(&key).await.unwrap().unwrap().ttl_ms <= 10_000);
    assert_eq!(static_sessions.save(&mut loaded).await.unwrap(), None);
}

#[tokio::test]
async fn signed_cookies_reject_tampering() {
    let daemon = Daemon::start();
    let (client, sessions) =
        sessions(&daemon, SessionConfig::default().signing_key(KEY).unwrap()).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("username", "Alice").unwrap();
    let set_cookie = sessions.save(&mut session).await.unwrap().unwrap();
    let id = session.id().unwrap().clone();
    let value = cookie_value(&set_cookie);
    let (signed_id, _signature) = value.split_once('.').unwrap();
    assert_eq!(signed_id, id.as_str());

    let load = |cookie: String| {
        let sessions = sessions.clone();
        async move { sessions.load([cookie.as_str()]).await.unwrap() }
    };
    assert_eq!(load(format!("session={value}")).await.id(), Some(&id));
    // The bare id, a forged signature, another id under this signature: all new sessions.
    assert!(load(format!("session={id}")).await.is_new());
    let mut forged = value.clone();
    forged.replace_range(value.len() - 2.., "AA");
    assert!(load(format!("session={forged}")).await.is_new());
    let other = SessionId::generate().unwrap();
    let swapped = value.replacen(id.as_str(), other.as_str(), 1);
    assert!(load(format!("session={swapped}")).await.is_new());
    // A server with another key does not accept it either.
    let other_key = Sessions::new(
        client,
        SessionConfig::default()
            .signing_key(b"a different key, also 32+ bytes!")
            .unwrap(),
    )
    .unwrap();
    assert!(other_key
        .load([format!("session={value}").as_str()])
        .await
        .unwrap()
        .is_new());
}

#[tokio::test]
async fn a_concurrent_update_is_a_conflict_not_a_silent_overwrite() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("cart", json!([])).unwrap();
    let header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());

    // Two requests load the same session...
    let mut first = sessions.load([header.as_str()]).await.unwrap();
    let mut second = sessions.load([header.as_str()]).await.unwrap();
    first.insert("cart", json!(["apple"])).unwrap();
    second.insert("cart", json!(["pear"])).unwrap();
    // ...the first save wins...
    sessions.save(&mut first).await.unwrap();
    // ...and the second is refused, naming the version that beat it.
    match sessions.save(&mut second).await {
        Err(SessionError::Conflict { current }) => assert_eq!(Some(current), first.version()),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let stored = sessions.load([header.as_str()]).await.unwrap();
    assert_eq!(stored.get_value("cart"), Some(&json!(["apple"])));

    // The documented retry: load again, reapply, save.
    let mut retry = sessions.load([header.as_str()]).await.unwrap();
    let mut cart: Vec<String> = retry.get("cart").unwrap().unwrap();
    cart.push("pear".into());
    retry.insert("cart", cart).unwrap();
    sessions.save(&mut retry).await.unwrap();
    let stored = sessions.load([header.as_str()]).await.unwrap();
    assert_eq!(stored.get_value("cart"), Some(&json!(["apple", "pear"])));
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_reapplies_the_change_after_a_conflict() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("visits", 0).unwrap();
    let header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    let key = sessions.key(session.id().unwrap());

    let mut runs = 0;
    let (visits, _) = sessions
        .modify([header.as_str()], |session| {
            runs += 1;
            if runs == 1 {
                // Another request saves in between this load and this save.
                let mut data = BTreeMap::new();
                data.insert("visits", 10);
                let bytes = rmp_serde::to_vec(&data).unwrap();
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(client.set(
                        &key,
                        bytes,
                        Duration::from_secs(60),
                        SetMode::UpdateOnly,
                    ))
                })
                .unwrap();
            }
            let visits = session.get::<u64>("visits")?.unwrap_or(0) + 1;
            session.insert("visits", visits)?;
            Ok(visits)
        })
        .await
        .unwrap();
    assert_eq!(runs, 2, "the change ran again on the fresh data");
    assert_eq!(visits, 11, "the other request's update was kept");
}

#[tokio::test]
async fn a_save_after_logout_does_not_resurrect_the_session() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("user", "alice").unwrap();
    let header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    let key = sessions.key(session.id().unwrap());

    let mut late = sessions.load([header.as_str()]).await.unwrap();
    let mut logout = sessions.load([header.as_str()]).await.unwrap();
    let removal = sessions.destroy(&mut logout).await.unwrap();
    assert!(removal.is_removal());
    assert_eq!(
        removal.as_str(),
        "session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
    );
    assert_eq!(client.get(&key).await.unwrap(), None);

    late.insert("cart", 3).unwrap();
    assert!(matches!(
        sessions.save(&mut late).await,
        Err(SessionError::Gone)
    ));
    assert_eq!(client.get(&key).await.unwrap(), None, "still gone");
    // The old cookie now names nothing: a new session, whose empty save removes the cookie.
    let mut fresh = sessions.load([header.as_str()]).await.unwrap();
    assert!(fresh.is_new());
    assert!(sessions
        .save(&mut fresh)
        .await
        .unwrap()
        .unwrap()
        .is_removal());
}

#[tokio::test]
async fn an_emptied_session_is_deleted_with_its_cookie() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("a", 1).unwrap();
    session.insert("b", 2).unwrap();
    let header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    let key = sessions.key(session.id().unwrap());

    let mut session = sessions.load([header.as_str()]).await.unwrap();
    assert_eq!(session.remove("a"), Some(json!(1)));
    session.clear();
    assert!(session.is_empty() && session.is_modified());
    assert!(sessions
        .save(&mut session)
        .await
        .unwrap()
        .unwrap()
        .is_removal());
    assert_eq!(client.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn regenerate_moves_the_session_and_leaves_the_old_id_dead() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let mut session = sessions.load(None).await.unwrap();
    session.insert("cart", 2).unwrap();
    let old_header = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    let old_id = session.id().unwrap().clone();

    // Login: the new id gets the data, including what this request added.
    let mut session = sessions.load([old_header.as_str()]).await.unwrap();
    session.insert("user", "alice").unwrap();
    let new_cookie = sessions.regenerate(&mut session).await.unwrap().unwrap();
    let new_id = session.id().unwrap().clone();
    assert_ne!(new_id, old_id);
    assert_eq!(cookie_value(&new_cookie), new_id.as_str());
    assert!(!session.is_modified());

    assert_eq!(client.get(sessions.key(&old_id)).await.unwrap(), None);
    assert!(sessions.load([old_header.as_str()]).await.unwrap().is_new());
    let moved = sessions
        .load([cookie_header(&new_cookie).as_str()])
        .await
        .unwrap();
    assert_eq!(moved.get::<u64>("cart").unwrap(), Some(2));
    assert_eq!(
        moved.get::<String>("user").unwrap().as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn regenerate_after_a_concurrent_update_changes_nothing() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let (mut stale, header) = stale_session(&sessions).await;
    assert!(matches!(
        sessions.regenerate(&mut stale).await,
        Err(SessionError::Conflict { .. })
    ));
    // The old id still holds the other request's update, and no copy was left behind.
    let kept = sessions.load([header.as_str()]).await.unwrap();
    assert_eq!(kept.get::<u64>("n").unwrap(), Some(2));
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.get("entries"), Some("1"));
}

#[tokio::test]
async fn undecodable_data_starts_a_new_session() {
    let daemon = Daemon::start();
    let (client, sessions) = sessions(&daemon, SessionConfig::default()).await;
    let id = SessionId::generate().unwrap();
    client
        .set(
            sessions.key(&id),
            b"\xc1 not msgpack",
            Duration::from_secs(60),
            SetMode::Upsert,
        )
        .await
        .unwrap();
    let session = sessions
        .load([format!("session={id}").as_str()])
        .await
        .unwrap();
    assert!(session.is_new());
    let data: BTreeMap<String, Value> = session.data().clone();
    assert!(data.is_empty());
}
