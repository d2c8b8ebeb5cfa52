//! The tower-sessions store, through real HTTP: an axum app with tower-sessions'
//! `SessionManagerLayer` over `SessiondStore`, a real `sessiond`, and a client with a cookie
//! jar.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use sessiond_client::tower::{is_conflict, login, SessiondStore, VERSION_KEY};
use sessiond_client::{Client, SetMode, OWNER_KEY};
use sessiond_tests::Daemon;
use time::OffsetDateTime;
use tokio::sync::Barrier;
use tower_sessions::session::{Id, Record};
use tower_sessions::{Session, SessionManagerLayer, SessionStore};

/// Holds the handlers that race at a barrier until both have loaded the session.
#[derive(Clone)]
struct Race(Arc<Barrier>);

async fn set(session: Session) -> &'static str {
    session.insert("username", "Alice").await.unwrap();
    "Session data set!"
}

async fn read(session: Session) -> String {
    let name: Option<String> = session.get("username").await.unwrap();
    format!("Username: {}", name.as_deref().unwrap_or("not set"))
}

async fn count(session: Session) -> String {
    let n: Option<u64> = session.get("n").await.unwrap();
    n.unwrap_or(0).to_string()
}

/// Reads `n`, waits until the racing request has read it too, writes `n + 1`; the
/// middleware saves afterwards.
async fn race_increment(State(race): State<Race>, session: Session) -> String {
    let n: u64 = session.get("n").await.unwrap().unwrap_or(0);
    race.0.wait().await;
    session.insert("n", n + 1).await.unwrap();
    (n + 1).to_string()
}

/// The same race, handled as the store's docs say: save in the handler and, on a conflict,
/// reload and apply the change again.
async fn race_increment_with_retry(
    State(race): State<Race>,
    session: Session,
) -> Result<String, StatusCode> {
    let mut first = true;
    loop {
        let n: u64 = session.get("n").await.unwrap().unwrap_or(0);
        if first {
            race.0.wait().await;
            first = false;
        }
        session.insert("n", n + 1).await.unwrap();
        match session.save().await {
            Ok(()) => return Ok((n + 1).to_string()),
            Err(e) if is_conflict(&e) => session.load().await.unwrap(),
            Err(_) => return Err(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

async fn cycle(session: Session) -> &'static str {
    session.cycle_id().await.unwrap();
    "cycled"
}

/// Logs in as the user in the path: binds the owner and cycles the id.
async fn log_in(Path(user): Path<String>, session: Session) -> &'static str {
    login(&session, &user).await.unwrap();
    "logged in"
}

async fn logout(session: Session) -> &'static str {
    session.flush().await.unwrap();
    "logged out"
}

struct App {
    addr: SocketAddr,
    client: Client,
    store: SessiondStore,
    _daemon: Daemon,
}

async fn app() -> App {
    let daemon = Daemon::start();
    let client = Client::builder(daemon.addr().to_string())
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let store = SessiondStore::new(client.clone());
    let router = Router::new()
        .route("/", get(set))
        .route("/get", get(read))
        .route("/n", get(count))
        .route("/race", get(race_increment))
        .route("/race-retry", get(race_increment_with_retry))
        .route("/cycle", get(cycle))
        .route("/login/{user}", get(log_in))
        .route("/logout", get(logout))
        .with_state(Race(Arc::new(Barrier::new(2))))
        .layer(SessionManagerLayer::new(store.clone()).with_secure(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    App {
        addr,
        client,
        store,
        _daemon: daemon,
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

impl App {
    async fn get(
        &self,
        browser: &reqwest::Client,
        path: &str,
    ) -> (StatusCode, String, Option<String>) {
        let response = browser
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let cookie = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        (status, response.text().await.unwrap(), cookie)
    }

    /// The stored data of the session in `set_cookie` (tower-sessions' cookie is `id=ID`).
    async fn stored(&self, id: &str) -> Option<HashMap<String, Value>> {
        let id: Id = id.parse().unwrap();
        let entry = self.client.get(self.store.key(&id)).await.unwrap()?;
        Some(rmp_serde::from_slice(&entry.value).unwrap())
    }
}

fn id_of(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "id");
    value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_set_by_one_request_is_read_by_the_next() {
    let app = app().await;
    let browser = browser();
    let (status, body, cookie) = app.get(&browser, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Session data set!")
    );
    let id = id_of(&cookie.unwrap());
    let (_, body, _) = app.get(&browser, "/get").await;
    assert_eq!(body, "Username: Alice");

    // Stored as a plain MessagePack map, without the store's version entry.
    let stored = app.stored(&id).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored["username"], "Alice");
    assert!(!stored.contains_key(VERSION_KEY));

    // Another browser has no session.
    let (_, body, _) = app.get(&self::browser(), "/get").await;
    assert_eq!(body, "Username: not set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_report_a_conflict_and_lose_nothing_silently() {
    let app = app().await;
    let browser = browser();
    app.get(&browser, "/").await;

    // Two requests with the same cookie both read n = 0, then both write n = 1.
    let (a, b) = tokio::join!(app.get(&browser, "/race"), app.get(&browser, "/race"));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR],
        "one save wins, the other is reported as failed: {a:?} {b:?}"
    );
    let (_, n, _) = app.get(&browser, "/n").await;
    assert_eq!(n, "1", "the successful request's update is what is stored");

    // Handled in the handler (save, reload on conflict, reapply): both increments land.
    let (a, b) = tokio::join!(
        app.get(&browser, "/race-retry"),
        app.get(&browser, "/race-retry")
    );
    assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{a:?} {b:?}");
    let mut results = [a.1, b.1];
    results.sort();
    assert_eq!(results, ["2", "3"]);
    let (_, n, _) = app.get(&browser, "/n").await;
    assert_eq!(n, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycling_the_id_leaves_the_old_id_dead() {
    let app = app().await;
    let browser = browser();
    let (_, _, cookie) = app.get(&browser, "/").await;
    let old = id_of(&cookie.unwrap());
    assert!(app.stored(&old).await.is_some());

    let (_, _, cookie) = app.get(&browser, "/cycle").await;
    let new = id_of(&cookie.unwrap());
    assert_ne!(new, old);
    assert_eq!(app.stored(&old).await, None);
    assert_eq!(app.stored(&new).await.unwrap()["username"], "Alice");
    let (_, body, _) = app.get(&browser, "/get").await;
    assert_eq!(body, "Username: Alice");

    // A browser still holding the old id gets nothing.
    let replay = reqwest::Client::new()
        .get(format!("http://{}/get", app.addr))
        .header("cookie", format!("id={old}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(replay, "Username: not set");

    app.get(&browser, "/logout").await;
    assert_eq!(app.stored(&new).await, None);
}

#[tokio::test]
async fn create_never_takes_over_an_existing_id() {
    let daemon = Daemon::start();
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let store = SessiondStore::new(client.clone()).with_key_prefix("t:");
    let taken = Id::default();
    client
        .set(
            store.key(&taken),
            b"someone else's",
            Duration::from_secs(60),
            SetMode::Upsert,
        )
        .await
        .unwrap();

    let mut record = Record {
        id: taken,
        data: HashMap::from([("k".to_string(), Value::from(1))]),
        expiry_date: OffsetDateTime::now_utc() + time::Duration::minutes(5),
    };
    store.create(&mut record).await.unwrap();
    assert_ne!(record.id, taken, "a fresh id after the collision");
    let untouched = client.get(store.key(&taken)).await.unwrap().unwrap();
    assert_eq!(&untouched.value[..], b"someone else's");

    // The record's expiry became the entry's TTL.
    let stored = client.get(store.key(&record.id)).await.unwrap().unwrap();
    assert!(stored.ttl_ms > 290_000 && stored.ttl_ms <= 300_000);
    let loaded = store.load(&record.id).await.unwrap().unwrap();
    assert_eq!(loaded.data["k"], 1);
    let expires_in = loaded.expiry_date - OffsetDateTime::now_utc();
    assert!(expires_in > time::Duration::minutes(4));

    // Two requests load the session. Saving one loaded record twice is not a conflict
    // with itself (a handler's explicit save followed by the middleware's)...
    let mut first = loaded;
    let second = store.load(&record.id).await.unwrap().unwrap();
    first.data.insert("k".into(), Value::from(2));
    store.save(&first).await.unwrap();
    first.data.insert("k".into(), Value::from(3));
    store.save(&first).await.unwrap();
    // ...but saving the other request's record, loaded before those saves, is.
    let err = store.save(&second).await.unwrap_err();
    assert!(
        is_conflict(&tower_sessions::session::Error::Store(err)),
        "a stale record is refused"
    );
    assert_eq!(store.load(&record.id).await.unwrap().unwrap().data["k"], 3);
}

#[tokio::test]
async fn ttls_follow_the_expiry_date_within_the_servers_max_ttl() {
    let daemon = Daemon::start_with_config("[limits]\nmax_ttl = \"1h\"\n");
    let client = Client::connect(daemon.addr().to_string()).await.unwrap();
    let store = SessiondStore::new(client.clone());
    // tower-sessions' default expiry is two weeks.
    let mut record = Record {
        id: Id::default(),
        data: HashMap::from([("k".to_string(), Value::from(1))]),
        expiry_date: OffsetDateTime::now_utc() + time::Duration::weeks(2),
    };
    store.create(&mut record).await.unwrap();
    let entry = client.get(store.key(&record.id)).await.unwrap().unwrap();
    assert!(entry.ttl_ms <= 3_600_000 && entry.ttl_ms > 3_500_000);
    let loaded = store.load(&record.id).await.unwrap().unwrap();
    assert!(loaded.expiry_date - OffsetDateTime::now_utc() <= time::Duration::hours(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_binds_the_owner_under_a_new_id_and_end_all_ends_the_others() {
    let app = app().await;
    let (laptop, phone) = (browser(), browser());
    let anonymous = id_of(&app.get(&laptop, "/").await.2.unwrap());
    let (status, _, cookie) = app.get(&laptop, "/login/alice").await;
    assert_eq!(status, StatusCode::OK);
    let laptop_id = id_of(&cookie.unwrap());
    assert_ne!(laptop_id, anonymous);
    assert_eq!(app.stored(&anonymous).await, None, "the old id is dead");
    let stored = app.stored(&laptop_id).await.unwrap();
    assert_eq!(stored["username"], "Alice");
    assert_eq!(stored[OWNER_KEY], "alice");
    let phone_id = id_of(&app.get(&phone, "/login/alice").await.2.unwrap());

    let mut devices: Vec<String> = app
        .store
        .sessions_of("alice")
        .await
        .unwrap()
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    devices.sort();
    let mut expected = vec![laptop_id.clone(), phone_id];
    expected.sort();
    assert_eq!(devices, expected);

    let keep: Id = laptop_id.parse().unwrap();
    assert_eq!(app.store.end_all("alice", Some(keep)).await.unwrap(), 1);
    assert_eq!(app.get(&phone, "/get").await.1, "Username: not set");
    assert_eq!(app.get(&laptop, "/get").await.1, "Username: Alice");
}
