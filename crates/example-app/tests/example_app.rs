//! The example app as its users run it: real processes, a real `sessiond`, and a browser-like
//! client with a cookie jar.
//!
//! Having an integration test here also makes `cargo test --workspace` build the
//! `sessiond-example-app` binary (cargo builds a package's binaries only for its own
//! integration tests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sessiond_tests::certs::TestCerts;
use sessiond_tests::users::TestUsers;
use sessiond_tests::Daemon;

const SECRET: &str = "a signing key of at least 32 bytes, for tests";

/// A running example app; killed on drop.
struct ExampleApp {
    child: Child,
    addr: SocketAddr,
}

impl ExampleApp {
    fn start(sessiond: SocketAddr, secret: Option<&str>) -> ExampleApp {
        ExampleApp::start_with_env(&sessiond.to_string(), secret, &[])
    }

    /// Starts the app against `sessiond` with `env` set (credentials, TLS) and no other
    /// sessiond settings from the test's environment.
    fn start_with_env(sessiond: &str, secret: Option<&str>, env: &[(&str, &Path)]) -> ExampleApp {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sessiond-example-app"));
        command
            .args(["--listen", "127.0.0.1:0", "--sessiond", sessiond])
            .env_remove("SESSION_SECRET_KEY")
            .env_remove("SESSIOND_USER")
            .env_remove("SESSIOND_PASSWORD")
            .env_remove("SESSIOND_PASSWORD_FILE")
            .env_remove("SESSIOND_TLS_CA")
            .env_remove("SESSIOND_NODES")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(secret) = secret {
            command.env("SESSION_SECRET_KEY", secret);
        }
        let mut child = command.spawn().expect("spawn sessiond-example-app");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the app prints its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        ExampleApp { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for ExampleApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get(browser: &reqwest::Client, url: String) -> (u16, String) {
    let response = browser.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_flask_session_example_works() {
    let daemon = Daemon::start();
    let app = ExampleApp::start(daemon.addr(), None);
    let browser = browser();
    assert_eq!(
        get(&browser, app.url("/get")).await,
        (200, "Username: not set".into())
    );
    assert_eq!(
        get(&browser, app.url("/")).await,
        (200, "Session data set!".into())
    );
    assert_eq!(
        get(&browser, app.url("/get")).await,
        (200, "Username: Alice".into())
    );
    assert_eq!(get(&browser, app.url("/logout")).await.0, 200);
    assert_eq!(
        get(&browser, app.url("/get")).await,
        (200, "Username: not set".into())
    );
}

#[tokio::test]
async fn two_instances_share_sessions_through_one_sessiond() {
    let daemon = Daemon::start();
    let a = ExampleApp::start(daemon.addr(), None);
    let b = ExampleApp::start(daemon.addr(), None);
    let browser = browser();
    // Cookies are not per port, so the browser sends the one A set to B as well.
    assert_eq!(get(&browser, a.url("/")).await.1, "Session data set!");
    assert_eq!(get(&browser, b.url("/get")).await.1, "Username: Alice");
    // Logging out on B ends the session on A too.
    get(&browser, b.url("/logout")).await;
    assert_eq!(get(&browser, a.url("/get")).await.1, "Username: not set");
    // Another browser has its own session.
    assert_eq!(
        get(&self::browser(), b.url("/get")).await.1,
        "Username: not set"
    );
}

#[tokio::test]
async fn signed_instances_share_sessions_only_with_the_same_key() {
    let daemon = Daemon::start();
    let a = ExampleApp::start(daemon.addr(), Some(SECRET));
    let b = ExampleApp::start(daemon.addr(), Some(SECRET));
    let other = ExampleApp::start(
        daemon.addr(),
        Some("another key, also at least 32 bytes long"),
    );
    let browser = browser();
    get(&browser, a.url("/")).await;
    assert_eq!(get(&browser, b.url("/get")).await.1, "Username: Alice");
    assert_eq!(
        get(&browser, other.url("/get")).await.1,
        "Username: not set"
    );
}

#[tokio::test]
async fn an_unreachable_sessiond_is_a_503_not_a_crash() {
    let nothing = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let app = ExampleApp::start(nothing, None);
    assert_eq!(get(&browser(), app.url("/")).await.0, 503);
}

#[test]
fn help_and_bad_keys() {
    let exe = env!("CARGO_BIN_EXE_sessiond-example-app");
    let help = Command::new(exe).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for option in ["--listen", "--sessiond", "--secret-key", "SESSIOND_ADDR"] {
        assert!(
            text.contains(option),
            "--help does not mention {option}:\n{text}"
        );
    }
    let short = Command::new(exe)
        .args(["--listen", "127.0.0.1:0", "--secret-key", "short"])
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least 32 bytes"),
        "{short:?}"
    );
}

#[tokio::test]
async fn the_example_logs_in_to_sessiond_over_tls() {
    let (certs, users) = (TestCerts::new("example CA"), TestUsers::standard());
    let (_daemon, tls_addr) = certs.daemon(false, users.config());
    let (ca, app_password) = (certs.ca(), users.password_file("app"));
    let env = [
        ("SESSIOND_USER", Path::new("app")),
        ("SESSIOND_PASSWORD_FILE", &app_password),
        ("SESSIOND_TLS_CA", &ca),
    ];
    let app = ExampleApp::start_with_env(&tls_addr, None, &env);
    let browser = browser();
    assert_eq!(get(&browser, app.url("/")).await.1, "Session data set!");
    assert_eq!(get(&browser, app.url("/get")).await.1, "Username: Alice");

    // With the monitor's password the app cannot log in: its requests fail with a 500 (a
    // misconfiguration, not the 503 of a store that is down), and it stays up.
    let monitor_password = users.password_file("monitor");
    let env = [
        ("SESSIOND_USER", Path::new("app")),
        ("SESSIOND_PASSWORD_FILE", &monitor_password),
        ("SESSIOND_TLS_CA", &ca),
    ];
    let refused = ExampleApp::start_with_env(&tls_addr, None, &env);
    assert_eq!(get(&browser, refused.url("/get")).await.0, 500);
    assert_eq!(get(&browser, app.url("/get")).await.1, "Username: Alice");
}

/// The `session` cookie a response sets, if any.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .cookies()
        .find(|c| c.name() == "session")
        .map(|c| c.value().to_string())
}

/// A request carrying exactly `cookie` as the session cookie, with no cookie jar.
async fn get_with_cookie(url: String, cookie: &str) -> String {
    reqwest::Client::new()
        .get(url)
        .header("Cookie", format!("session={cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn login_moves_the_session_to_a_new_id() {
    let daemon = Daemon::start();
    let app = ExampleApp::start(daemon.addr(), None);
    let browser = browser();
    let before = session_cookie(&browser.get(app.url("/")).send().await.unwrap()).unwrap();
    let login = browser.get(app.url("/login/alice")).send().await.unwrap();
    let after = session_cookie(&login).unwrap();
    assert_eq!(login.text().await.unwrap(), "Logged in as alice");
    assert_ne!(before, after);
    // The id from before the login (one an attacker could have planted) is dead; the new
    // one is alice's.
    assert_eq!(
        get_with_cookie(app.url("/get"), &before).await,
        "Username: not set"
    );
    assert_eq!(
        get_with_cookie(app.url("/get"), &after).await,
        "Username: alice"
    );
    // A browser that is not logged in has no devices to list.
    assert_eq!(get(&self::browser(), app.url("/devices")).await.0, 401);
    // An owner the store cannot take is the client's mistake.
    let long = "u".repeat(300);
    assert_eq!(
        get(&self::browser(), app.url(&format!("/login/{long}")))
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn logout_everywhere_from_one_replica_logs_out_every_browser_on_both() {
    let daemon = Daemon::start();
    let replicas = [
        ExampleApp::start(daemon.addr(), None),
        ExampleApp::start(daemon.addr(), None),
    ];
    // Three browsers (cookie jars) of alice, logging in through either replica, and bob.
    let jars = [browser(), browser(), browser()];
    for (n, jar) in jars.iter().enumerate() {
        let replica = &replicas[n % 2];
        assert_eq!(
            get(jar, replica.url("/login/alice")).await,
            (200, "Logged in as alice".into())
        );
    }
    let bob = browser();
    assert_eq!(get(&bob, replicas[1].url("/login/bob")).await.0, 200);

    // Every browser sees alice's three sessions from either replica, itself marked once.
    for replica in &replicas {
        for jar in &jars {
            let (status, body) = get(jar, replica.url("/devices")).await;
            assert_eq!(status, 200, "{body}");
            let lines: Vec<&str> = body.lines().collect();
            assert_eq!(lines[0], "3 sessions of alice", "{body}");
            assert_eq!(lines.len(), 4, "{body}");
            let marked = lines.iter().filter(|l| l.ends_with(", this device"));
            assert_eq!(marked.count(), 1, "{body}");
        }
    }

    assert_eq!(
        get(&jars[1], replicas[1].url("/logout-everywhere")).await,
        (200, "Ended 3 sessions of alice".into())
    );
    for replica in &replicas {
        for jar in &jars {
            assert_eq!(
                get(jar, replica.url("/get")).await,
                (200, "Username: not set".into())
            );
            assert_eq!(get(jar, replica.url("/devices")).await.0, 401);
        }
    }
    // Bob was not alice.
    assert_eq!(
        get(&bob, replicas[0].url("/get")).await,
        (200, "Username: bob".into())
    );
}

#[tokio::test]
async fn with_two_nodes_users_spread_over_both_and_a_dead_node_is_a_503_for_its_users_only() {
    let mut daemons = [Daemon::start(), Daemon::start()];
    let nodes = format!("a={},b={}", daemons[0].addr(), daemons[1].addr());
    // The node list goes in as an environment value (the helper takes paths).
    let nodes = std::path::PathBuf::from(nodes);
    let app = ExampleApp::start_with_env("127.0.0.1:1", None, &[("SESSIOND_NODES", &nodes)]);

    let mut browsers = Vec::new();
    for i in 0..12 {
        let jar = browser();
        let user = format!("user{i}");
        assert_eq!(
            get(&jar, app.url(&format!("/login/{user}"))).await,
            (200, format!("Logged in as {user}"))
        );
        assert_eq!(get(&jar, app.url("/devices")).await.0, 200);
        browsers.push((jar, user));
    }
    let (on_a, on_b) = (entries(&daemons[0]).await, entries(&daemons[1]).await);
    assert_eq!(on_a + on_b, 12);
    assert!(on_a > 0 && on_b > 0, "{on_a} and {on_b}");

    // Node b stops: its users get 503, node a's keep being served.
    daemons[1].kill9();
    let (mut served, mut unavailable) = (0, 0);
    for (jar, user) in &browsers {
        match get(jar, app.url("/get")).await {
            (200, body) => {
                assert_eq!(body, format!("Username: {user}"));
                served += 1;
            }
            (503, _) => unavailable += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((served, unavailable), (on_a, on_b));
}

/// How many entries `daemon` holds.
async fn entries(daemon: &Daemon) -> u64 {
    let stats = daemon.stats().await;
    stats.get("entries").unwrap().parse().unwrap()
}
