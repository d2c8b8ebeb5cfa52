//! TLS on both listeners, against the real daemon, with clients we did not write where they
//! exist: `openssl s_client` on the native TLS port (a PING frame, in the bytes of
//! PROTOCOL.md 5.2), `redis-cli --tls` and redis-py with `ssl=True` (the Flask-Session and
//! redis-py suites of `tests/python`) on the RESP TLS port; and a rustls client of our own
//! where a test must hold a connection across an event (a certificate reload, shutdown).
//!
//! What is checked: a client without our CA refuses the server; TLS 1.1 and older are
//! refused; with `client_ca_file` a client certificate is verified, and required with
//! `require_client_cert`; SIGHUP serves the new certificate to new connections while an
//! established one carries on; a broken file at reload keeps the old certificate and logs an
//! error (without the file's contents); shutdown over TLS answers, sends SHUTTING_DOWN, and
//! ends with close_notify.
//!
//! Certificates come from `scripts/gen-certs` (so the script is tested too), which needs
//! `openssl`, as the `s_client` tests do; `redis-cli` comes with redis-tools and the Python
//! environments from `tests/python/setup-venvs.sh`, as for `resp_clients.rs`.

use std::ffi::OsStr;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use sessiond_tests::{bounded, run_command, Daemon, Finished, IO_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Bounds every external client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// PING with payload "hi" and its answer, as in PROTOCOL.md 5.2.
const PING: &[u8] = b"\xb5\x01\x01\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02hi";
const PONG: &[u8] = b"\xb6\x01\x01\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x02hi";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// Whether missing clients skip their tests instead of failing them (as in
/// `resp_clients.rs`).
fn allow_missing() -> bool {
    std::env::var("SESSIOND_TESTS_ALLOW_MISSING").is_ok_and(|v| v == "1")
}

/// The path of `name` on `PATH`, or `None` (skip) / a panic with `hint` if it is missing.
fn tool(name: &str, hint: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        if allow_missing() {
            eprintln!("skipped: {name} is not installed ({hint})");
        } else {
            panic!("{name} is not installed. Install it with: {hint}");
        }
    }
    found
}

/// A CA with a server and a client certificate, from `scripts/gen-certs`.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut command = Command::new(workspace().join("scripts/gen-certs"));
        command.arg(dir.path());
        let out = run_command(command, b"", CLIENT_TIMEOUT);
        assert!(out.status.success(), "gen-certs failed: {}", out.stderr);
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Copies the server's certificate and key (and the CA, as the client CA) to `dir`:
    /// the files a daemon reads, which a test may then replace.
    fn install(&self, dir: &Path) {
        for name in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(self.path(name), dir.join(name)).expect("copy certificate file");
        }
    }

    /// A rustls client that trusts this CA, presenting `client` (a `Certs` whose client
    /// certificate to use) if given.
    fn client(&self, client: Option<&Certs>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("read CA") {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(certs) => {
                let chain = CertificateDer::pem_file_iter(certs.path("client.pem"))
                    .expect("read client certificate")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificate PEM");
                let key =
                    PrivateKeyDer::from_pem_file(certs.path("client.key")).expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
        };
        TlsConnector::from(Arc::new(config))
    }
}

/// Whether a daemon asks clients for a certificate.
#[derive(Clone, Copy)]
enum ClientCerts {
    /// No `client_ca_file`.
    NotAsked,
    /// `client_ca_file`, `require_client_cert = false`.
    Optional,
    /// `client_ca_file`, `require_client_cert = true`.
    Required,
}

/// A daemon with both TLS listeners, reading its certificate files from `live` (a directory
/// the test owns), with `extra` (sections other than `[tls]`) in its config.
struct TlsDaemon {
    daemon: Daemon,
    native: SocketAddr,
    resp: SocketAddr,
    live: tempfile::TempDir,
}

impl TlsDaemon {
    fn start(certs: &Certs, extra: &str) -> TlsDaemon {
        TlsDaemon::start_with(certs, extra, ClientCerts::NotAsked)
    }

    fn start_with(certs: &Certs, extra: &str, client_certs: ClientCerts) -> TlsDaemon {
        let live = tempfile::tempdir().expect("temporary directory");
        certs.install(live.path());
        let native = free_addr();
        let resp = free_addr();
        let mut config = format!(
            "{extra}\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            live.path().join("server.pem"),
            live.path().join("server.key"),
        );
        let client_ca = format!("client_ca_file = {:?}\n", live.path().join("ca.pem"));
        match client_certs {
            ClientCerts::NotAsked => {}
            ClientCerts::Optional => config.push_str(&client_ca),
            ClientCerts::Required => {
                config.push_str(&client_ca);
                config.push_str("require_client_cert = true\n");
            }
        }
        let daemon = Daemon::start_with_args(
            &config,
            &[
                "--tls-listen",
                &native.to_string(),
                "--resp-tls-listen",
                &resp.to_string(),
            ],
        );
        TlsDaemon {
            daemon,
            native,
            resp,
            live,
        }
    }
}

/// An address on 127.0.0.1 whose port was free a moment ago: the TLS listeners' addresses
/// must be known before the daemon starts.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
}

/// Connects with `connector` and completes the handshake (from the client's side: in TLS
/// 1.3 the server checks a client certificate after that, and says so on the first read).
async fn connect(connector: &TlsConnector, addr: SocketAddr) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    bounded(IO_TIMEOUT, "TLS handshake", connector.connect(name, tcp)).await
}

/// Sends [`PING`] and reads the answer.
async fn ping(stream: &mut TlsStream<TcpStream>) -> io::Result<Vec<u8>> {
    stream.write_all(PING).await?;
    let mut reply = vec![0; PONG.len()];
    bounded(IO_TIMEOUT, "PING reply", stream.read_exact(&mut reply)).await?;
    Ok(reply)
}

/// Connects and pings: the reply, or the error of the handshake or the exchange.
async fn connect_and_ping(connector: &TlsConnector, addr: SocketAddr) -> io::Result<Vec<u8>> {
    ping(&mut connect(connector, addr).await?).await
}

/// `openssl s_client` against `addr` with `args`, sending `input`. It reads until the
/// server closes (the daemons of these tests close idle connections after a second).
fn s_client(openssl: &Path, addr: SocketAddr, args: &[&str], input: &[u8]) -> Finished {
    let mut command = Command::new(openssl);
    command
        .args(["s_client", "-connect", &addr.to_string(), "-quiet"])
        .args(args);
    run_command(command, input, CLIENT_TIMEOUT)
}

/// `openssl`, certificates, and a daemon that closes idle connections after a second (so
/// that `s_client -quiet`, which reads until the server closes, ends), with the CA file's
/// path; `None` to skip.
fn s_client_setup() -> Option<(PathBuf, Certs, TlsDaemon, String)> {
    let openssl = tool("openssl", "apt-get install -y openssl")?;
    let certs = Certs::new();
    let tls = TlsDaemon::start(&certs, "[server]\nidle_timeout = \"1s\"\n");
    let ca = certs
        .path("ca.pem")
        .to_str()
        .expect("UTF-8 path")
        .to_string();
    Some((openssl, certs, tls, ca))
}

/// Asserts that s_client printed exactly [`PONG`] (as lossy UTF-8, which is how the harness
/// reads a child's output).
fn assert_pong(out: &Finished, what: &str) {
    assert_eq!(
        out.stdout,
        String::from_utf8_lossy(PONG),
        "{what}: stderr:\n{}",
        out.stderr
    );
}

#[test]
fn openssl_s_client_pings_the_native_tls_port() {
    let Some((openssl, _certs, tls, ca)) = s_client_setup() else {
        return;
    };
    let args = [
        "-CAfile",
        &ca,
        "-verify_return_error",
        "-servername",
        "localhost",
    ];
    assert_pong(&s_client(&openssl, tls.native, &args, PING), "s_client");

    // Without our CA the client refuses the server: nothing is sent or answered.
    let out = s_client(&openssl, tls.native, &["-verify_return_error"], PING);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("verify"), "{}", out.stderr);
}

#[test]
fn tls_1_1_and_older_are_refused() {
    let Some((openssl, _certs, tls, ca)) = s_client_setup() else {
        return;
    };
    // SECLEVEL=0: OpenSSL 3 would not even offer TLS 1.1 otherwise, and the test would
    // pass without the server having refused anything.
    for version in ["-tls1", "-tls1_1"] {
        for addr in [tls.native, tls.resp] {
            let out = s_client(
                &openssl,
                addr,
                &[version, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", &ca],
                PING,
            );
            assert!(!out.status.success(), "{version} on {addr}: {out:?}");
            assert!(out.stdout.is_empty(), "{version} on {addr}: {out:?}");
            assert!(
                out.stderr.contains("alert") || out.stderr.contains("handshake failure"),
                "{version} on {addr}: {}",
                out.stderr
            );
        }
    }
    for version in ["-tls1_2", "-tls1_3"] {
        let out = s_client(&openssl, tls.native, &[version, "-CAfile", &ca], PING);
        assert_pong(&out, version);
    }
    let mut daemon = tls.daemon;
    daemon.assert_running();
}

#[test]
fn redis_cli_over_tls() {
    let Some(cli) = tool("redis-cli", "apt-get install -y redis-tools") else {
        return;
    };
    let certs = Certs::new();
    let tls = TlsDaemon::start(&certs, "");
    let ca = certs.path("ca.pem");
    let redis_cli = |args: &[&str]| {
        let mut command = Command::new(&cli);
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &tls.resp.port().to_string(),
                "--tls",
            ])
            .args(args);
        run_command(command, b"", CLIENT_TIMEOUT)
    };
    let ca = ca.to_str().expect("UTF-8 path");
    let out = redis_cli(&["--cacert", ca, "SET", "tls:1", "over tls"]);
    assert_eq!(out.stdout.trim(), "OK", "{out:?}");
    let out = redis_cli(&["--cacert", ca, "GET", "tls:1"]);
    assert_eq!(out.stdout.trim(), "over tls", "{out:?}");
    let out = redis_cli(&["--cacert", ca, "-3", "PING"]);
    assert_eq!(out.stdout.trim(), "PONG", "{out:?}");

    // Without our CA, redis-cli refuses the server.
    let out = redis_cli(&["GET", "tls:1"]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("over tls"), "{all}");
    assert!(all.contains("certificate verify failed"), "{all}");
}

/// The Flask-Session and redis-py suites of `tests/python`, with `ssl=True` against the RESP
/// TLS port (conftest.py turns TLS on when `SESSIOND_RESP_TLS_CA` is set).
fn pytest_over_tls(flavour: &str) {
    let root = std::env::var_os("SESSIOND_PYENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyenv"));
    let python = root.join(flavour).join("bin/python");
    if !python.is_file() {
        assert!(
            allow_missing(),
            "the Python environment {} is missing: run tests/python/setup-venvs.sh",
            root.join(flavour).display()
        );
        return;
    }
    let certs = Certs::new();
    let tls = TlsDaemon::start(&certs, "");
    let mut command = Command::new(python);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "."])
        .current_dir(workspace().join("tests/python"))
        .env(
            "SESSIOND_RESP_ADDR",
            format!("localhost:{}", tls.resp.port()),
        )
        .env("SESSIOND_RESP_TLS_CA", certs.path("ca.pem"))
        .env("SESSIOND_ADDR", tls.daemon.addr().to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_command(command, b"", CLIENT_TIMEOUT);
    println!("{}", out.stdout);
    assert!(
        out.status.success(),
        "pytest over TLS with {flavour}: {out:?}"
    );
    assert!(out.stdout.contains(" passed"), "{}", out.stdout);
    tls.daemon.assert_no_panic();
}

#[test]
fn flask_session_and_redis_py_5_over_tls() {
    pytest_over_tls("redis5");
}

#[test]
fn flask_session_and_redis_py_8_over_tls() {
    pytest_over_tls("redis8");
}

#[tokio::test]
async fn a_client_without_the_ca_is_refused() {
    let certs = Certs::new();
    let other = Certs::new();
    let tls = TlsDaemon::start(&certs, "");
    assert_eq!(
        connect_and_ping(&certs.client(None), tls.native)
            .await
            .unwrap(),
        PONG
    );
    for addr in [tls.native, tls.resp] {
        let err = connect(&other.client(None), addr).await.unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }
    // The plain listener is unaffected by TLS beside it.
    let mut conn = sessiond_tests::Conn::connect(tls.daemon.addr()).await;
    conn.ping(b"plain").await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_signed_by_the_ca() {
    let certs = Certs::new();
    let other = Certs::new();
    let tls = TlsDaemon::start_with(&certs, "", ClientCerts::Required);
    let with_cert = certs.client(Some(&certs));
    let without = certs.client(None);
    let foreign_cert = certs.client(Some(&other));
    for addr in [tls.native, tls.resp] {
        let mut stream = connect(&with_cert, addr).await.unwrap();
        if addr == tls.native {
            assert_eq!(ping(&mut stream).await.unwrap(), PONG);
        } else {
            stream.write_all(b"PING\r\n").await.unwrap();
            let mut reply = [0; 7];
            stream.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"+PONG\r\n");
        }
        for (what, connector) in [("no certificate", &without), ("foreign", &foreign_cert)] {
            // TLS 1.3: the client's handshake completes before the server has checked its
            // certificate; the refusal arrives as an alert on the first read.
            let result = match connect(connector, addr).await {
                Ok(mut stream) => ping(&mut stream).await,
                Err(e) => Err(e),
            };
            assert!(result.is_err(), "{what} on {addr}: {result:?}");
        }
    }
    tls.daemon
        .wait_for_log("a handshake refused for want of a certificate", |l| {
            l.contains("TLS handshake failed") && l.contains("peer sent no certificates")
        })
        .await;
    tls.daemon
        .wait_for_log("a handshake refused for a foreign certificate", |l| {
            l.contains("TLS handshake failed") && l.contains("UnknownIssuer")
        })
        .await;
}

#[tokio::test]
async fn mutual_tls_optional_lets_clients_without_a_certificate_in() {
    let certs = Certs::new();
    let other = Certs::new();
    let tls = TlsDaemon::start_with(&certs, "", ClientCerts::Optional);
    let without = connect_and_ping(&certs.client(None), tls.native).await;
    assert_eq!(without.unwrap(), PONG);
    let with = connect_and_ping(&certs.client(Some(&certs)), tls.native).await;
    assert_eq!(with.unwrap(), PONG);
    // A certificate that is presented is verified all the same.
    let foreign = connect_and_ping(&certs.client(Some(&other)), tls.native).await;
    assert!(foreign.is_err(), "{foreign:?}");
}

#[tokio::test]
async fn sighup_serves_the_new_certificate_while_old_connections_continue() {
    let old = Certs::new();
    let new = Certs::new();
    let tls = TlsDaemon::start(&old, "");
    let mut established = connect(&old.client(None), tls.native).await.unwrap();
    assert_eq!(ping(&mut established).await.unwrap(), PONG);

    new.install(tls.live.path());
    tls.daemon.signal(libc::SIGHUP);
    tls.daemon
        .wait_for_log("the reload", |l| l.contains("TLS certificates reloaded"))
        .await;

    // New connections get the new certificate: a client trusting only the old CA refuses it.
    for addr in [tls.native, tls.resp] {
        let err = connect(&old.client(None), addr).await.unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{addr}: {err}");
        connect(&new.client(None), addr).await.unwrap();
    }
    assert_eq!(
        connect_and_ping(&new.client(None), tls.native)
            .await
            .unwrap(),
        PONG
    );
    // The connection made before the reload carries on.
    for _ in 0..3 {
        assert_eq!(ping(&mut established).await.unwrap(), PONG);
    }
}

#[tokio::test]
async fn a_broken_file_at_reload_keeps_the_old_certificate() {
    let certs = Certs::new();
    let other = Certs::new();
    let tls = TlsDaemon::start(&certs, "");
    let key = tls.live.path().join("server.key");

    // Not PEM at all, then a key of another certificate: each reload fails, says which file
    // and why, shows none of the file's contents, and leaves the old certificate in use.
    let broken = [
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n".to_string(),
        std::fs::read_to_string(other.path("server.key")).unwrap(),
    ];
    for (attempt, contents) in broken.iter().enumerate() {
        std::fs::write(&key, contents).unwrap();
        tls.daemon.signal(libc::SIGHUP);
        let failures = |l: &str| l.contains("TLS reload failed");
        let deadline = sessiond_tests::Deadline::after(IO_TIMEOUT, "the failed reload is logged");
        while tls.daemon.logs().iter().filter(|l| failures(l)).count() <= attempt {
            deadline.tick().await;
        }
        assert_eq!(
            connect_and_ping(&certs.client(None), tls.native)
                .await
                .unwrap(),
            PONG,
            "after broken file {attempt}"
        );
    }
    let logs = tls.daemon.logs().join("\n");
    assert!(logs.contains("server.key"), "{logs}");
    assert!(
        !logs.contains("c2VjcmV0"),
        "the key file's contents were logged:\n{logs}"
    );
    let other_key = broken[1].lines().nth(1).unwrap();
    assert!(!logs.contains(other_key), "the key was logged:\n{logs}");

    // Fixing the file and reloading again works.
    other.install(tls.live.path());
    tls.daemon.signal(libc::SIGHUP);
    tls.daemon
        .wait_for_log("the reload", |l| l.contains("TLS certificates reloaded"))
        .await;
    assert_eq!(
        connect_and_ping(&other.client(None), tls.native)
            .await
            .unwrap(),
        PONG
    );
}

#[test]
fn a_missing_certificate_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        dir.path().join("nope.pem"),
        dir.path().join("nope.key"),
    );
    let native = free_addr().to_string();
    let data = dir.path().join("data");
    let finished = Daemon::try_start_in(&config, &data, &["--tls-listen", &native])
        .err()
        .expect("the daemon started without its certificate");
    assert_eq!(finished.status.code(), Some(1), "{finished:?}");
    assert!(
        finished.stderr.contains("nope.pem") && finished.stderr.contains("certificate file"),
        "{}",
        finished.stderr
    );
}

/// Regression guard for the shutdown drain over TLS: a TLS connection at shutdown gets the
/// answers to what it sent, then SHUTTING_DOWN, then close_notify (a clean end, which rustls
/// tells apart from a connection cut short).
#[tokio::test]
async fn shutdown_over_tls_answers_then_sends_close_notify() {
    let certs = Certs::new();
    let mut tls = TlsDaemon::start(&certs, "");
    let mut stream = connect(&certs.client(None), tls.native).await.unwrap();
    let batch: Vec<u8> = PING.repeat(100);
    stream.write_all(&batch).await.unwrap();
    let mut replies = vec![0; PONG.len() * 100];
    bounded(
        IO_TIMEOUT,
        "the batch's replies",
        stream.read_exact(&mut replies),
    )
    .await
    .unwrap();
    assert!(replies.chunks(PONG.len()).all(|r| r == PONG));

    tls.daemon.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    let read = bounded(
        IO_TIMEOUT,
        "the end of the connection",
        stream.read_to_end(&mut rest),
    )
    .await;
    // `read_to_end` fails with UnexpectedEof if the TCP connection ends without close_notify.
    read.unwrap_or_else(|e| panic!("not a clean TLS close: {e}; read {rest:02x?}"));
    // One frame: SHUTTING_DOWN (status 0x0091), unsolicited (opcode 0xFF, opaque 0).
    assert!(rest.len() >= 16, "{rest:02x?}");
    assert_eq!(
        &rest[..8],
        b"\xb6\x01\xff\x00\x00\x00\x00\x00",
        "{rest:02x?}"
    );
    assert_eq!(&rest[8..10], b"\x00\x91", "{rest:02x?}");
    let value_len = u32::from_be_bytes(rest[12..16].try_into().unwrap()) as usize;
    assert_eq!(rest.len(), 16 + value_len, "{rest:02x?}");
    tls.daemon.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn a_tls_connection_over_the_limit_is_refused() {
    let certs = Certs::new();
    let tls = TlsDaemon::start(&certs, "[server]\nmax_connections = 1\n");
    let connector = certs.client(None);
    let mut first = connect(&connector, tls.native).await.unwrap();
    assert_eq!(ping(&mut first).await.unwrap(), PONG);
    // The limit is shared with every listener; over it, the handshake fails (no BUSY frame:
    // a TLS client could not read one).
    let refused = connect_and_ping(&connector, tls.native).await;
    assert!(refused.is_err(), "{refused:?}");
    drop(first);
    let deadline = sessiond_tests::Deadline::after(IO_TIMEOUT, "the slot is free again");
    while connect_and_ping(&connector, tls.native).await.is_err() {
        deadline.tick().await;
    }
}

#[tokio::test]
async fn a_client_that_never_completes_the_handshake_is_closed() {
    let certs = Certs::new();
    let tls = TlsDaemon::start(&certs, "");
    let started = std::time::Instant::now();
    let mut tcp = TcpStream::connect(tls.native).await.unwrap();
    let mut buf = [0; 64];
    // The server waits 10 s for a ClientHello, then closes without a word.
    let read = bounded(Duration::from_secs(30), "the close", tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    tls.daemon
        .wait_for_log("the timeout", |l| l.contains("TLS handshake timed out"))
        .await;
}

#[tokio::test]
async fn a_connection_stuck_in_its_handshake_gives_its_slot_to_a_new_one() {
    let certs = Certs::new();
    let tls = TlsDaemon::start(&certs, "[server]\nmax_connections = 1\n");
    let started = std::time::Instant::now();
    // Takes the only slot and never sends a ClientHello.
    let mut silent = TcpStream::connect(tls.native).await.unwrap();
    // Lets the daemon enter it in the table before the next one arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The table is full, and a connection that has never been served is the first to be
    // displaced, in the middle of its handshake too: the newcomer gets its slot at once
    // instead of waiting out the 10 s handshake timeout (and being refused meanwhile).
    let connector = certs.client(None);
    let mut newcomer = connect(&connector, tls.native).await.unwrap();
    assert_eq!(ping(&mut newcomer).await.unwrap(), PONG);
    let mut buf = [0; 64];
    let read = bounded(Duration::from_secs(30), "the close", silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn check_config_loads_the_certificate_and_key() {
    let certs = Certs::new();
    let other = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("sessiond.toml");
    // No tls_listen in the file: it may come from --tls-listen, so the files are read anyway.
    let config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        certs.path("server.pem"),
        dir.path().join("server.key"),
    );
    std::fs::write(&config_path, config).unwrap();
    let check = || {
        let args = [OsStr::new("--check-config"), config_path.as_os_str()];
        sessiond_tests::run_to_completion(&sessiond_tests::binary("sessiond"), &args, IO_TIMEOUT)
    };

    std::fs::copy(certs.path("server.key"), dir.path().join("server.key")).unwrap();
    let out = check();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("config OK"), "{out:?}");

    // The key of another certificate: refused, naming both files, showing neither.
    std::fs::copy(other.path("server.key"), dir.path().join("server.key")).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("server.pem") && out.stderr.contains("server.key"),
        "{}",
        out.stderr
    );
    let key = std::fs::read_to_string(other.path("server.key")).unwrap();
    assert!(
        !out.stderr.contains(key.lines().nth(1).unwrap()),
        "{}",
        out.stderr
    );
}

/// SIGHUP's default action ends a process; a daemon without TLS must shrug it off, since
/// operators (and tools like logrotate set-ups) send it routinely.
#[tokio::test]
async fn sighup_without_tls_leaves_the_daemon_running() {
    let mut daemon = Daemon::start();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_for_log("the SIGHUP", |l| l.contains("SIGHUP: no TLS listener"))
        .await;
    daemon.assert_running();
    let mut conn = daemon.connect().await;
    conn.ping(b"still here").await;
}

#[tokio::test]
async fn sighup_reloads_the_client_ca_too() {
    let old = Certs::new();
    let new = Certs::new();
    let tls = TlsDaemon::start_with(&old, "", ClientCerts::Required);
    let old_client = old.client(Some(&old));
    assert_eq!(
        connect_and_ping(&old_client, tls.native).await.unwrap(),
        PONG
    );
    new.install(tls.live.path());
    tls.daemon.signal(libc::SIGHUP);
    tls.daemon
        .wait_for_log("the reload", |l| l.contains("TLS certificates reloaded"))
        .await;
    // A client that trusts the new server certificate but presents the old CA's client
    // certificate is refused; one with the new CA's is let in.
    let stale = connect_and_ping(&new.client(Some(&old)), tls.native).await;
    assert!(stale.is_err(), "{stale:?}");
    assert_eq!(
        connect_and_ping(&new.client(Some(&new)), tls.native)
            .await
            .unwrap(),
        PONG
    );
}
