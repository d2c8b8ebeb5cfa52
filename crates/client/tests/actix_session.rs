//! The actix-session store, through real HTTP: an actix-web app with actix-session's
//! `SessionMiddleware` over `SessiondStore`, a real `sessiond`, and a client with a cookie
//! jar.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_session::config::CookieContentSecurity;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;
use sessiond_client::actix::{current_id, login, SessiondStore, VERSION_KEY};
use sessiond_client::{Client, SessionConfig, SessionId, Sessions, OWNER_KEY};
use sessiond_tests::Daemon;
use tokio::sync::Barrier;

async fn set(session: Session) -> HttpResponse {
    session.insert("username", "Alice").unwrap();
    HttpResponse::Ok().body("Session data set!")
}

async fn read(session: Session) -> HttpResponse {
    let name: Option<String> = session.get("username").unwrap();
    HttpResponse::Ok().body(format!(
        "Username: {}",
        name.as_deref().unwrap_or("not set")
    ))
}

async fn count(session: Session) -> HttpResponse {
    let n: Option<u64> = session.get("n").unwrap();
    HttpResponse::Ok().body(n.unwrap_or(0).to_string())
}

/// Reads `n` (loaded by the middleware before the handler runs), waits until the racing
/// request has loaded it too, writes `n + 1`; the middleware saves afterwards.
async fn race(session: Session, race: web::Data<Arc<Barrier>>) -> HttpResponse {
    let n: u64 = session.get("n").unwrap().unwrap_or(0);
    race.wait().await;
    session.insert("n", n + 1).unwrap();
    HttpResponse::Ok().body((n + 1).to_string())
}

async fn renew(session: Session) -> HttpResponse {
    session.renew();
    HttpResponse::Ok().body("renewed")
}

/// Logs in as the user in the path, and answers with the session's id before the login.
async fn log_in(user: web::Path<String>, session: Session) -> HttpResponse {
    let before = current_id(&session).map(|id| id.to_string());
    login(&session, &user).unwrap();
    HttpResponse::Ok().body(before.unwrap_or_default())
}

/// Ends the user's other sessions, keeping this one.
async fn end_others(store: web::Data<SessiondStore>, session: Session) -> HttpResponse {
    let owner: String = session.get(OWNER_KEY).unwrap().unwrap();
    let ended = store
        .end_all(&owner, current_id(&session).as_ref())
        .await
        .unwrap();
    HttpResponse::Ok().body(ended.to_string())
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().body("logged out")
}

struct ActixApp {
    addr: SocketAddr,
    handle: ServerHandle,
    client: Client,
    _daemon: Daemon,
}

/// Starts the actix-web app on its own thread (actix runs its own runtime), sharing a
/// connected client with the test.
async fn app() -> ActixApp {
    let daemon = Daemon::start();
    // Connected here, so the connection's tasks run on the test's runtime; actix's workers
    // use it through channels.
    let client = Client::builder(daemon.addr().to_string())
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let app_client = client.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let store = SessiondStore::new(app_client.clone());
                App::new()
                    .wrap(
                        SessionMiddleware::builder(store, Key::from(&[7u8; 64]))
                            // Signed, not encrypted, so the test can see the session key.
                            .cookie_content_security(CookieContentSecurity::Signed)
                            .cookie_secure(false)
                            .build(),
                    )
                    .app_data(web::Data::new(barrier.clone()))
                    .app_data(web::Data::new(SessiondStore::new(app_client.clone())))
                    .route("/", web::get().to(set))
                    .route("/get", web::get().to(read))
                    .route("/n", web::get().to(count))
                    .route("/race", web::get().to(race))
                    .route("/renew", web::get().to(renew))
                    .route("/login/{user}", web::get().to(log_in))
                    .route("/end-others", web::get().to(end_others))
                    .route("/logout", web::get().to(logout))
            })
            .workers(2)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            handle_tx.send(server.handle()).unwrap();
            server.await.unwrap();
        })
    });
    let handle = handle_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    ActixApp {
        addr,
        handle,
        client,
        _daemon: daemon,
    }
}

impl ActixApp {
    async fn get(&self, browser: &reqwest::Client, path: &str) -> (u16, String, Option<String>) {
        let response = browser
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        (status, response.text().await.unwrap(), cookie)
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The `id=VALUE` pair of a `Set-Cookie` header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

/// The session key inside a signed actix-session cookie: the signature comes first, the
/// value (one of our 43-character ids) last.
fn session_key(set_cookie: &str) -> SessionId {
    let pair = pair(set_cookie);
    let value = pair.split_once('=').unwrap().1;
    SessionId::parse(&value[value.len() - SessionId::LEN..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_set_by_one_request_is_read_by_the_next() {
    let app = app().await;
    let browser = browser();
    let (status, body, cookie) = app.get(&browser, "/").await;
    assert_eq!((status, body.as_str()), (200, "Session data set!"));
    let id = session_key(&cookie.unwrap());
    let (_, body, _) = app.get(&browser, "/get").await;
    assert_eq!(body, "Username: Alice");

    // Stored as a MessagePack map of values (not of JSON strings), without the version entry.
    let entry = app
        .client
        .get(format!("session:{id}"))
        .await
        .unwrap()
        .unwrap();
    let stored: HashMap<String, Value> = rmp_serde::from_slice(&entry.value).unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored["username"], "Alice");
    assert!(!stored.contains_key(VERSION_KEY));

    // The same format as the session layer's: it reads the actix app's session.
    let sessions = Sessions::new(app.client.clone(), SessionConfig::default()).unwrap();
    let shared = sessions.load_id(&id).await.unwrap().unwrap();
    assert_eq!(
        shared.get::<String>("username").unwrap().as_deref(),
        Some("Alice")
    );

    let (_, body, _) = app.get(&self::browser(), "/get").await;
    assert_eq!(body, "Username: not set");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_report_a_conflict_and_lose_nothing_silently() {
    let app = app().await;
    let browser = browser();
    app.get(&browser, "/").await;

    let (a, b) = tokio::join!(app.get(&browser, "/race"), app.get(&browser, "/race"));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 500],
        "one update wins, the other is reported as failed: {a:?} {b:?}"
    );
    let (_, n, _) = app.get(&browser, "/n").await;
    assert_eq!(n, "1", "the successful request's update is what is stored");
    // The session is intact and usable afterwards.
    let (_, body, _) = app.get(&browser, "/get").await;
    assert_eq!(body, "Username: Alice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_the_session_leaves_the_old_key_dead() {
    let app = app().await;
    let browser = browser();
    let (_, _, cookie) = app.get(&browser, "/").await;
    let old_cookie = cookie.unwrap();
    let old = session_key(&old_cookie);
    assert!(app
        .client
        .get(format!("session:{old}"))
        .await
        .unwrap()
        .is_some());

    let (_, _, cookie) = app.get(&browser, "/renew").await;
    let new = session_key(&cookie.unwrap());
    assert_ne!(new, old);
    assert_eq!(
        app.client.get(format!("session:{old}")).await.unwrap(),
        None
    );
    let (_, body, _) = app.get(&browser, "/get").await;
    assert_eq!(body, "Username: Alice", "the data moved to the new key");

    // A browser replaying the old cookie gets nothing.
    let replay = reqwest::Client::new()
        .get(format!("http://{}/get", app.addr))
        .header("cookie", pair(&old_cookie))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(replay, "Username: not set");

    app.get(&browser, "/logout").await;
    assert_eq!(
        app.client.get(format!("session:{new}")).await.unwrap(),
        None
    );
    app.stop().await;
}

/// The store's other operations, called directly (the middleware uses them less often).
#[tokio::test]
async fn store_operations_map_to_conditional_commands() {
    use actix_session::storage::{SessionKey, SessionStore};
    use actix_web::cookie::time::Duration as CookieDuration;

    let daemon = Daemon::start_with_config("[limits]\nmax_ttl = \"1h\"\n");
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let store = SessiondStore::new(client.clone()).with_key_prefix("a:");
    let state = HashMap::from([("username".to_string(), "\"Alice\"".to_string())]);

    // A new session: a fresh 256-bit id, its TTL capped to the server's maximum.
    let key = store
        .save(state.clone(), &CookieDuration::days(14))
        .await
        .unwrap();
    assert!(SessionId::parse(key.as_ref()).is_some());
    let stored_key = store.key(key.as_ref());
    assert!(stored_key.starts_with("a:"));
    assert!(client.get(&stored_key).await.unwrap().unwrap().ttl_ms <= 3_600_000);

    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded["username"], "\"Alice\"");
    assert!(loaded.contains_key(VERSION_KEY));

    store
        .update_ttl(&key, &CookieDuration::seconds(30))
        .await
        .unwrap();
    assert!(client.get(&stored_key).await.unwrap().unwrap().ttl_ms <= 30_000);

    // An update based on the loaded version succeeds once; a second update based on the
    // same (now stale) load is refused.
    let mut changed = loaded.clone();
    changed.insert("n".into(), "1".into());
    let key = store
        .update(key, changed.clone(), &CookieDuration::minutes(5))
        .await
        .unwrap();
    let again = store
        .update(
            SessionKey::try_from(key.as_ref().to_string()).unwrap(),
            changed,
            &CookieDuration::minutes(5),
        )
        .await;
    assert!(again.is_err(), "a stale update is refused");

    store.delete(&key).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), None);
    // Extending a session that is gone is not an error; updating it does not re-create it.
    store
        .update_ttl(&key, &CookieDuration::minutes(5))
        .await
        .unwrap();
    assert!(store
        .update(
            SessionKey::try_from(key.as_ref().to_string()).unwrap(),
            state,
            &CookieDuration::minutes(5)
        )
        .await
        .is_err());
    assert_eq!(client.get(&stored_key).await.unwrap(), None);

    // A key that is not one of our ids is never looked up.
    let misses = client
        .stats()
        .await
        .unwrap()
        .get("get_misses")
        .map(String::from);
    let foreign = SessionKey::try_from("../../not-an-id".to_string()).unwrap();
    assert_eq!(store.load(&foreign).await.unwrap(), None);
    assert_eq!(
        client
            .stats()
            .await
            .unwrap()
            .get("get_misses")
            .map(String::from),
        misses
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_binds_the_owner_under_a_new_id_and_end_all_keeps_the_current_one() {
    let app = app().await;
    let store = SessiondStore::new(app.client.clone());
    let (laptop, phone) = (browser(), browser());
    let anonymous = session_key(&app.get(&laptop, "/").await.2.unwrap());
    let (status, before, cookie) = app.get(&laptop, "/login/alice").await;
    assert_eq!(status, 200);
    assert_eq!(
        before,
        anonymous.as_str(),
        "current_id names the loaded session"
    );
    let laptop_id = session_key(&cookie.unwrap());
    assert_ne!(laptop_id, anonymous);
    assert_eq!(
        app.client.get(store.key(anonymous.as_str())).await.unwrap(),
        None
    );
    app.get(&phone, "/login/alice").await;

    let devices = store.sessions_of("alice").await.unwrap();
    assert_eq!(devices.len(), 2);
    assert!(devices.iter().any(|d| d.id == laptop_id));

    let (status, ended, _) = app.get(&laptop, "/end-others").await;
    assert_eq!((status, ended.as_str()), (200, "1"));
    assert_eq!(app.get(&phone, "/get").await.1, "Username: not set");
    assert_eq!(app.get(&laptop, "/get").await.1, "Username: Alice");
    app.stop().await;
}
