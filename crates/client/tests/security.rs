//! The client against a real `sessiond` that requires authentication, serves TLS, or both:
//! credentials on every connection and reconnection, the typed errors for wrong or missing
//! credentials and for role violations, and TLS with and without the right CA and client
//! certificate.

use std::time::Duration;

use sessiond_client::{Client, ClientBuilder, Error, SetMode, TlsOptions};
use sessiond_tests::certs::TestCerts;
use sessiond_tests::users::{TestUsers, APP_PASSWORD, MONITOR_PASSWORD};
use sessiond_tests::{Daemon, Deadline};

const TTL: Duration = Duration::from_secs(60);

fn builder(addr: impl Into<String>) -> ClientBuilder {
    Client::builder(addr)
        .request_timeout(Duration::from_secs(10))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

/// A daemon with users; the returned [`TestUsers`] holds their password files.
fn daemon_with_users() -> (Daemon, TestUsers) {
    let users = TestUsers::standard();
    let daemon = Daemon::start_with_config(users.config());
    (daemon, users)
}

/// A connected client of `daemon` authenticated as `user`.
async fn login(daemon: &Daemon, user: &str, password: &str) -> Client {
    builder(daemon.addr().to_string())
        .credentials(user, password)
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn credentials_authenticate_the_connection() {
    let (daemon, _secrets) = daemon_with_users();
    let client = login(&daemon, "app", APP_PASSWORD).await;
    let version = client.set("k", "v", TTL, SetMode::Upsert).await.unwrap();
    let entry = client.get("k").await.unwrap().unwrap();
    assert_eq!((&entry.value[..], entry.version), (&b"v"[..], version));
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_or_unknown_user_is_auth_failed() {
    let (daemon, _secrets) = daemon_with_users();
    for (user, password) in [("app", "wrong"), ("nobody", APP_PASSWORD)] {
        let result = builder(daemon.addr().to_string())
            .credentials(user, password)
            .connect()
            .await;
        match result {
            Err(e @ Error::AuthFailed(_)) => {
                assert!(!e.is_transient());
                assert!(!e.to_string().contains(password), "{e}");
            }
            other => panic!("{user}: expected AuthFailed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn no_credentials_against_a_server_that_requires_them_is_auth_required() {
    let (daemon, _secrets) = daemon_with_users();
    let result = builder(daemon.addr().to_string()).connect().await;
    assert!(matches!(result, Err(Error::AuthRequired(_))), "{result:?}");
    // A lazily built client reports it on its first request.
    let client = builder(daemon.addr().to_string()).build();
    let result = client.get("k").await;
    assert!(matches!(result, Err(Error::AuthRequired(_))), "{result:?}");
}

#[tokio::test]
async fn a_role_violation_is_no_permission_and_the_connection_goes_on() {
    let (daemon, _secrets) = daemon_with_users();
    let app = login(&daemon, "app", APP_PASSWORD).await;
    let result = app.stats().await;
    assert!(matches!(result, Err(Error::NoPermission(_))), "{result:?}");
    app.set("k", "v", TTL, SetMode::Upsert).await.unwrap();

    let monitor = login(&daemon, "monitor", MONITOR_PASSWORD).await;
    assert!(monitor.stats().await.is_ok());
    let result = monitor.get("k").await;
    assert!(matches!(result, Err(Error::NoPermission(_))), "{result:?}");
}

#[tokio::test]
async fn credentials_are_accepted_by_a_server_without_users() {
    let daemon = Daemon::start();
    let client = login(&daemon, "app", "anything").await;
    client.set("k", "v", TTL, SetMode::Upsert).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_authenticates_again() {
    let users = TestUsers::standard();
    let config = users.config();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let mut first = Daemon::start_with_exact_args(
        config,
        data.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir],
    );
    let addr = first.addr().to_string();
    let client = builder(&addr)
        .credentials("app", APP_PASSWORD)
        .connect()
        .await
        .unwrap();
    let v1 = client.set("k", "kept", TTL, SetMode::Upsert).await.unwrap();

    first.terminate(Duration::from_secs(20));
    let _second = Daemon::start_with_exact_args(
        config,
        data.path(),
        &["--listen", &addr, "--data-dir", &data_dir],
    );
    // The new process knows nothing of the old connection: without a new AUTH every request
    // would be answered AUTH_REQUIRED.
    let deadline = Deadline::after(Duration::from_secs(10), "the client reconnects");
    let entry = loop {
        match client.get("k").await {
            Ok(entry) => break entry,
            Err(e) if e.is_transient() => deadline.tick().await,
            Err(e) => panic!("unexpected error after the restart: {e}"),
        }
    };
    assert_eq!(entry.map(|e| e.version), Some(v1));
}

#[test]
fn debug_output_never_shows_the_password() {
    let builder = Client::builder("127.0.0.1:1").credentials("app", APP_PASSWORD);
    let shown = format!("{builder:?} {:?}", builder.clone().build());
    assert!(!shown.contains(APP_PASSWORD), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

/// Retries while the TLS listener may still be starting (the harness waits for the plain
/// one only).
async fn connect_tls(builder: ClientBuilder) -> Result<Client, Error> {
    let deadline = Deadline::after(Duration::from_secs(10), "the TLS listener accepts");
    loop {
        match builder.clone().connect().await {
            Err(Error::Connection { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                deadline.tick().await
            }
            other => return other,
        }
    }
}

#[tokio::test]
async fn tls_with_the_servers_ca_works_and_without_it_is_refused() {
    let certs = TestCerts::new("sessiond test CA");
    let (_daemon, tls_addr) = certs.daemon(false, "");
    let tls = TlsOptions::ca_file(certs.ca()).unwrap();
    let client = connect_tls(builder(&tls_addr).tls(tls.clone()))
        .await
        .unwrap();
    client.set("k", "v", TTL, SetMode::Upsert).await.unwrap();
    assert_eq!(&client.get("k").await.unwrap().unwrap().value[..], b"v");

    // Another CA did not sign the server's certificate.
    let other = TestCerts::new("another CA");
    let result =
        connect_tls(builder(&tls_addr).tls(TlsOptions::ca_file(other.ca()).unwrap())).await;
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");

    // The certificate names localhost and 127.0.0.1, not this.
    let wrong_name = tls.server_name("sessiond.example").unwrap();
    let result = connect_tls(builder(&tls_addr).tls(wrong_name)).await;
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let certs = TestCerts::new("sessiond test CA");
    let (_daemon, tls_addr) = certs.daemon(true, "");
    let tls = TlsOptions::ca_file(certs.ca()).unwrap();
    let with_cert = tls
        .clone()
        .client_cert_files(certs.client_cert(), certs.client_key())
        .unwrap();
    let client = connect_tls(builder(&tls_addr).tls(with_cert))
        .await
        .unwrap();
    client.ping().await.unwrap();

    // Without one, TLS 1.3 finishes the client's side of the handshake before the server
    // refuses; the refusal then arrives as the HELLO exchange fails.
    let result = connect_tls(builder(&tls_addr).tls(tls)).await;
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
}

#[tokio::test]
async fn tls_and_credentials_together() {
    let certs = TestCerts::new("sessiond test CA");
    let users = TestUsers::standard();
    let (_daemon, tls_addr) = certs.daemon(false, users.config());
    let tls = TlsOptions::ca_file(certs.ca()).unwrap();
    let client = connect_tls(
        builder(&tls_addr)
            .tls(tls.clone())
            .credentials("app", APP_PASSWORD),
    )
    .await
    .unwrap();
    client.set("k", "v", TTL, SetMode::Upsert).await.unwrap();
    let result = connect_tls(builder(&tls_addr).tls(tls).credentials("app", "wrong")).await;
    assert!(matches!(result, Err(Error::AuthFailed(_))), "{result:?}");
}

/// Everything the session layer and the framework stores do is within the `app` role (one
/// key at a time, no enumeration, no STATS), so an application needs no stronger user.
#[tokio::test]
async fn the_session_layer_and_both_stores_need_only_the_app_role() {
    use std::collections::HashMap;

    use sessiond_client::{SessionConfig, Sessions};

    let (daemon, _users) = daemon_with_users();
    let client = login(&daemon, "app", APP_PASSWORD).await;

    // Sessions: create, load, modify, regenerate, destroy.
    let sessions = Sessions::new(client.clone(), SessionConfig::default()).unwrap();
    let mut session = sessions.load(None).await.unwrap();
    session.insert("username", "Alice").unwrap();
    let cookie = sessions.save(&mut session).await.unwrap().unwrap();
    let header = cookie.to_string();
    let header = header.split(';').next().unwrap();
    let mut loaded = sessions.load(Some(header)).await.unwrap();
    assert_eq!(
        loaded.get::<String>("username").unwrap().as_deref(),
        Some("Alice")
    );
    sessions.regenerate(&mut loaded).await.unwrap();
    sessions.destroy(&mut loaded).await.unwrap();

    // tower-sessions: create, load, save, delete.
    {
        use tower_sessions::session::Record;
        use tower_sessions::SessionStore;
        let store = sessiond_client::tower::SessiondStore::new(client.clone());
        let mut record = Record {
            id: Default::default(),
            data: HashMap::from([("username".to_string(), "Alice".into())]),
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
        };
        store.create(&mut record).await.unwrap();
        let mut record = store.load(&record.id).await.unwrap().unwrap();
        record.data.insert("n".into(), 1.into());
        store.save(&record).await.unwrap();
        store.delete(&record.id).await.unwrap();
    }

    // actix-session: save, load, update, update_ttl, delete.
    {
        use actix_session::storage::SessionStore;
        use actix_web::cookie::time::Duration as CookieDuration;
        let store = sessiond_client::actix::SessiondStore::new(client);
        let state = HashMap::from([("username".to_string(), "\"Alice\"".to_string())]);
        let ttl = CookieDuration::minutes(5);
        let key = store.save(state, &ttl).await.unwrap();
        let loaded = store.load(&key).await.unwrap().unwrap();
        let key = store.update(key, loaded, &ttl).await.unwrap();
        store.update_ttl(&key, &ttl).await.unwrap();
        store.delete(&key).await.unwrap();
    }
}
