//! Session libraries that we did not write, against the real daemon's RESP listener, doing
//! what web applications do with them:
//!
//! - PHP's own session functions on phpredis (`session.save_handler = redis`), served by
//!   PHP's built-in web server running `tests/php/session.php`. With
//!   `redis.session.locking_enabled = 1`, two overlapping requests of one session each add a
//!   key and both keys survive (phpredis takes its lock with `SET key_LOCK token NX EX` and
//!   releases it with `EVALSHA`, falling back to `EVAL`, of a compare-and-delete script);
//!   without locking, the same two requests lose one key, which shows that the first result
//!   is the lock's doing. Then `session_regenerate_id(true)` and `session_destroy()`; no
//!   request may see a PHP warning, and the error log stays empty.
//! - redis-py pipelines with and without `transaction=True`, `WATCH` conflicts retried by
//!   `Redis.transaction()`, and Django 5.2's cache sessions on its `RedisCache`
//!   (`tests/python/test_transactions.py`, `test_django_sessions.py`), on redis-py 5 and 8,
//!   with `aof.fsync = "always"`. (`resp_clients.rs` and `tls.rs` run the same files again
//!   with the rest of the Python suite, as an `app` user and over TLS.)
//!
//! The clients are installed by `.ci/run` (`apt-get install php-cli php-redis`,
//! `tests/python/setup-venvs.sh`). With `SESSIOND_TESTS_REFERENCE=redis-server` these tests
//! run against redis-server instead, to check the tests themselves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sessiond_tests::clients::{self, PytestTarget};
use sessiond_tests::reference::{RespServer, ServerSettings};
use sessiond_tests::resp::{RespConn, Value};
use sessiond_tests::IO_TIMEOUT;

/// How long PHP's built-in server may take to start.
const PHP_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long each of two overlapping requests holds its session open. The second starts
/// [`OVERLAP_DELAY`] after the first, so without a lock both read the session before either
/// writes it.
const HOLD_MS: u64 = 600;
const OVERLAP_DELAY: Duration = Duration::from_millis(150);

/// phpredis's prefix for session keys (`redis.session.prefix` is not set here).
const SESSION_PREFIX: &str = "PHPREDIS_SESSION:";

/// A server to test against, the user the application logs in as, and the directory that
/// holds the server's data.
struct Target {
    server: RespServer,
    user: Option<(String, String)>,
    _data: tempfile::TempDir,
}

impl Target {
    fn start(settings: &ServerSettings) -> Target {
        let data = tempfile::tempdir().expect("temporary directory");
        Target {
            server: RespServer::start(settings, &data.path().join("data")),
            user: settings.app_user.clone(),
            _data: data,
        }
    }

    /// Runs one command on a fresh connection, logged in as the application's user.
    fn call(&self, args: &[&str]) -> Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let mut conn = RespConn::connect(self.server.resp_addr()).await;
            if let Some((name, password)) = &self.user {
                let reply = conn.call(&["AUTH", name, password]).await;
                assert_eq!(reply, Value::Simple("OK".into()), "AUTH {name}");
            }
            conn.call(args).await
        })
    }

    /// The stored session `id` (phpredis's serialized form), or `None`.
    fn stored_session(&self, id: &str) -> Option<String> {
        let key = format!("{SESSION_PREFIX}{id}");
        match self.call(&["GET", &key]) {
            Value::Bulk(data) => Some(String::from_utf8_lossy(&data).into_owned()),
            Value::NullBulk | Value::Null => None,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// Whether the lock key of session `id` exists.
    fn lock_held(&self, id: &str) -> bool {
        let key = format!("{SESSION_PREFIX}{id}_LOCK");
        self.call(&["EXISTS", &key]).int() == 1
    }
}

// ---------------------------------------------------------------------------------------------
// PHP sessions on phpredis
// ---------------------------------------------------------------------------------------------

/// PHP's built-in web server serving `tests/php`, with its sessions in `resp` through
/// phpredis. Dropping it kills the server and its workers.
struct PhpServer {
    child: Child,
    addr: SocketAddr,
    error_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PhpServer {
    /// `user`: the name and password phpredis logs in with (`?auth[]=user&auth[]=password`
    /// in the save path).
    fn start(
        php: &Path,
        resp: SocketAddr,
        locking: bool,
        user: Option<&(String, String)>,
    ) -> PhpServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let error_log = dir.path().join("php-errors.log");
        let settings = [
            "session.save_handler=redis".to_string(),
            // Quoted: `-d` values are ini syntax, where `[`, `]` and `&` are special.
            format!("session.save_path=\"tcp://{resp}{}\"", auth_query(user)),
            // Reject session ids the store does not know (phpredis checks with EXISTS),
            // as a careful application does.
            "session.use_strict_mode=1".to_string(),
            format!("redis.session.locking_enabled={}", u8::from(locking)),
            // Wait up to 10 s for the lock (1000 tries, 10 ms apart), since the other request
            // holds it for HOLD_MS; the lock itself expires after 30 s if its holder dies.
            "redis.session.lock_retries=1000".to_string(),
            "redis.session.lock_wait_time=10000".to_string(),
            "redis.session.lock_expire=30".to_string(),
            "display_errors=0".to_string(),
            "log_errors=1".to_string(),
            format!("error_log={}", error_log.display()),
            "error_reporting=-1".to_string(),
        ];
        let mut command = Command::new(php);
        for setting in &settings {
            command.arg("-d").arg(setting);
        }
        command
            .args(["-S", "127.0.0.1:0", "-t"])
            .arg(clients::workspace().join("tests/php"))
            // Several worker processes, so that two requests run at the same time.
            .env("PHP_CLI_SERVER_WORKERS", "4")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own process group, so that dropping it also ends the workers it forks.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("spawn php -S");
        let stderr = child.stderr.take().expect("piped stderr");
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // "[pid] [date] PHP 8.2.x Development Server (http://127.0.0.1:PORT) started";
            // then one line per request, which are read and dropped so the pipe never fills.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let addr = line
                    .split_once("(http://")
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .and_then(|(addr, _)| addr.parse::<SocketAddr>().ok());
                if let Some(addr) = addr {
                    let _ = addr_tx.send(addr);
                }
            }
        });
        let mut server = PhpServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            error_log,
            _dir: dir,
        };
        server.addr = addr_rx
            .recv_timeout(PHP_START_TIMEOUT)
            .expect("php -S printed its address");
        server
    }

    /// `GET /session.php?QUERY` with the session cookie `PHPSESSID=id` if given.
    fn get(&self, query: &str, session: Option<&str>) -> HttpReply {
        http_get(self.addr, &format!("/session.php?{query}"), session)
    }

    /// Like [`PhpServer::get`], and the request must succeed with a JSON body.
    fn step(&self, query: &str, session: Option<&str>) -> (Json, Option<String>) {
        let reply = self.get(query, session);
        assert_eq!(
            reply.status,
            200,
            "{query}: {}\n(PHP's error log: {})",
            reply.body,
            self.errors()
        );
        let json = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{query}: not JSON ({e}): {}", reply.body));
        (json, reply.session)
    }

    /// What PHP logged (warnings raised after a script ended, where the script's own error
    /// handler no longer turns them into a 500).
    fn errors(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

impl Drop for PhpServer {
    fn drop(&mut self) {
        // The group id is the server's pid (process_group(0) above).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

/// The query string of a phpredis save path that logs in as `user`.
fn auth_query(user: Option<&(String, String)>) -> String {
    user.map_or(String::new(), |(name, password)| {
        format!("?auth[]={name}&auth[]={password}")
    })
}

/// An HTTP response: its status, the session id of a `Set-Cookie: PHPSESSID=...`, the body.
#[derive(Debug)]
struct HttpReply {
    status: u16,
    session: Option<String>,
    body: String,
}

/// A minimal HTTP/1.0 GET: one request per connection, the response read to its end.
fn http_get(addr: SocketAddr, path: &str, session: Option<&str>) -> HttpReply {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to php -S");
    // Generous: a request may wait for the other's session lock.
    let limit = Some(Duration::from_secs(30));
    stream.set_read_timeout(limit).expect("read timeout");
    stream.set_write_timeout(limit).expect("write timeout");
    let cookie = session.map_or(String::new(), |id| format!("Cookie: PHPSESSID={id}\r\n"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{cookie}\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("read the response to {path}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let session = head.lines().find_map(|line| {
        let cookie = line.strip_prefix("Set-Cookie: PHPSESSID=")?;
        Some(cookie.split(';').next()?.to_string())
    });
    HttpReply {
        status,
        session,
        body: body.to_string(),
    }
}

/// The `php` binary, with the redis extension loaded.
fn php() -> Option<PathBuf> {
    let php = clients::tool("php", "apt-get install -y php-cli php-redis")?;
    let probe = Command::new(&php)
        .args(["-r", "echo phpversion('redis');"])
        .output()
        .expect("run php");
    if !probe.status.success() || probe.stdout.is_empty() {
        return clients::missing("PHP's redis extension", "apt-get install -y php-redis");
    }
    eprintln!(
        "phpredis {} on PHP {}",
        String::from_utf8_lossy(&probe.stdout),
        php_version(&php)
    );
    Some(php)
}

fn php_version(php: &Path) -> String {
    let out = Command::new(php)
        .args(["-r", "echo PHP_VERSION;"])
        .output()
        .expect("run php");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two requests of session `id` that overlap: each adds its own key after holding the
/// session open for [`HOLD_MS`]. Returns the time each began its work (as PHP's
/// `microtime(true)`), in the order they were sent.
fn overlapping_adds(php: &PhpServer, id: &str) -> [f64; 2] {
    std::thread::scope(|scope| {
        let requests = ["a", "b"].map(|key| {
            let query = format!("do=add&key={key}&sleep_ms={HOLD_MS}");
            let handle = scope.spawn(move || php.step(&query, Some(id)).0);
            std::thread::sleep(OVERLAP_DELAY);
            handle
        });
        requests.map(|handle| {
            let json = handle.join().expect("request thread");
            json["began"].as_f64().expect("began is a number")
        })
    })
}

/// The keys of a session as `read` prints them.
fn session_keys(json: &Json) -> Vec<String> {
    let mut keys: Vec<String> = json["session"]
        .as_object()
        .map(|session| session.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[test]
fn phpredis_sessions_with_locking() {
    phpredis_sessions_with_locking_on(ServerSettings::default());
}

/// The same as an application user: phpredis logs in with `auth[]` in its save path, and
/// its lock release (`EVALSHA`/`EVAL`) runs with the `app` role.
#[test]
fn phpredis_sessions_with_locking_as_an_app_user() {
    phpredis_sessions_with_locking_on(ServerSettings {
        app_user: Some(("app".into(), "app-password-for-php".into())),
        ..ServerSettings::default()
    });
}

fn phpredis_sessions_with_locking_on(settings: ServerSettings) {
    let Some(php_bin) = php() else { return };
    let target = Target::start(&settings);
    let php = PhpServer::start(
        &php_bin,
        target.server.resp_addr(),
        true,
        target.user.as_ref(),
    );

    let (json, cookie) = php.step("do=start", None);
    let id = json["id"].as_str().expect("id").to_string();
    assert_eq!(cookie.as_deref(), Some(id.as_str()), "the session cookie");
    let stored = target
        .stored_session(&id)
        .expect("the new session is stored");
    assert!(stored.starts_with("created|i:"), "{stored}");

    // Each waited for the other's lock: the second began only once the first had written
    // the session and released the lock, so neither overwrote the other.
    let started = Instant::now();
    let [first, second] = overlapping_adds(&php, &id);
    let held = HOLD_MS as f64 / 1000.0;
    assert!(
        (second - first).abs() >= held * 0.9,
        "the requests did not take turns (began {first} and {second}), yet took {:?}",
        started.elapsed()
    );
    let (json, _) = php.step("do=read", Some(&id));
    assert_eq!(session_keys(&json), ["a", "b", "created"], "{json}");
    assert!(!target.lock_held(&id), "a released lock is deleted");

    // A login: the data moves to a new id and the old session is deleted.
    let (json, cookie) = php.step("do=regenerate", Some(&id));
    let new_id = json["new"].as_str().expect("new id").to_string();
    assert_eq!(json["old"].as_str(), Some(id.as_str()));
    assert_ne!(new_id, id);
    assert_eq!(cookie.as_deref(), Some(new_id.as_str()));
    assert_eq!(target.stored_session(&id), None, "the old session is gone");
    let (json, _) = php.step("do=read", Some(&new_id));
    assert_eq!(
        session_keys(&json),
        ["a", "b", "created", "regenerated"],
        "{json}"
    );
    // Strict mode: the old id is not taken back; PHP makes a new, empty session instead.
    let (json, cookie) = php.step("do=read", Some(&id));
    assert_ne!(json["id"].as_str(), Some(id.as_str()), "{json}");
    assert_eq!(session_keys(&json), Vec::<String>::new(), "{json}");
    assert!(cookie.is_some(), "a new cookie for the new session");

    // A logout.
    let (json, _) = php.step("do=destroy", Some(&new_id));
    assert_eq!(json["destroyed"].as_str(), Some(new_id.as_str()));
    assert_eq!(target.stored_session(&new_id), None);
    assert!(!target.lock_held(&new_id));
    assert!(!target.lock_held(&id));

    assert_eq!(php.errors(), "", "PHP logged warnings");
}

/// The control for the test above: without the lock, the second request's write replaces
/// the first one's, so the test above does detect a missing lock.
#[test]
fn phpredis_sessions_without_locking_lose_an_overlapping_write() {
    let Some(php_bin) = php() else { return };
    let target = Target::start(&ServerSettings::default());
    let php = PhpServer::start(&php_bin, target.server.resp_addr(), false, None);
    let (json, _) = php.step("do=start", None);
    let id = json["id"].as_str().expect("id").to_string();
    let [first, second] = overlapping_adds(&php, &id);
    assert!(
        (second - first).abs() < HOLD_MS as f64 / 1000.0,
        "the requests did not overlap (began {first} and {second})"
    );
    let (json, _) = php.step("do=read", Some(&id));
    assert_eq!(session_keys(&json), ["b", "created"], "{json}");
    assert!(!target.lock_held(&id), "no lock without locking");
    assert_eq!(php.errors(), "", "PHP logged warnings");
}

// ---------------------------------------------------------------------------------------------
// redis-py pipelines and transactions, Django cache sessions
// ---------------------------------------------------------------------------------------------

/// The transaction and Django tests with `flavour`'s redis-py, against a server that fsyncs
/// every write before acknowledging it (so a transaction's reply waits for its record).
fn python_libraries(flavour: &str) {
    let mut target = Target::start(&ServerSettings {
        fsync_always: true,
        ..ServerSettings::default()
    });
    let addrs = PytestTarget {
        resp: target.server.resp_addr(),
        native: target.server.native_addr(),
    };
    let files = ["test_transactions.py", "test_django_sessions.py"];
    if clients::pytest(flavour, addrs, &files, &[]) {
        target.server.assert_running();
    }
}

#[test]
fn redis_py_5_transactions_and_django_sessions() {
    python_libraries("redis5");
}

#[test]
fn redis_py_8_transactions_and_django_sessions() {
    python_libraries("redis8");
}
