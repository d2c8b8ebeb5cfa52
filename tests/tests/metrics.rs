//! End-to-end tests of the metrics listener (`[metrics]`, docs/METRICS.md) on the real
//! `sessiond` binary: exact counters after a known sequence of requests over both
//! protocols, read with a Prometheus text parser we did not write; a real Prometheus server
//! scraping the daemon; `/health/ready` during a long replay and at shutdown; TLS and the
//! bearer token.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sessiond_proto::command::SetMode;
use sessiond_proto::Request;
use sessiond_tests::certs::{free_port, TestCerts};
use sessiond_tests::resp::{self, Value};
use sessiond_tests::{
    binary, get_request, ping_request, run_to_completion, set_request, Daemon, IO_TIMEOUT,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request latency bounds the daemon is configured with (crates/server/src/histogram.rs),
/// as they appear in `le` labels.
const REQUEST_BOUNDS: [f64; 16] = [
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A status code and body from one HTTP/1.1 request (`Connection: close`).
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// `GET path` over plain HTTP.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.expect("connect to metrics");
    http_get(stream, path, &[]).await
}

/// A daemon with a metrics listener on a port chosen now, and its address.
fn daemon_with_metrics(config: &str, args: &[&str]) -> (Daemon, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let config = format!("[metrics]\nlisten = \"{addr}\"\n{config}");
    (Daemon::start_with_args(&config, args), addr)
}

/// A scrape, parsed.
async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

fn parse(body: &str) -> prometheus_parse::Scrape {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("a valid exposition")
}

/// The value of the sample of `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        })
}

fn requests(
    scrape: &prometheus_parse::Scrape,
    protocol: &str,
    command: &str,
    outcome: &str,
) -> f64 {
    let labels = [
        ("protocol", protocol),
        ("command", command),
        ("outcome", outcome),
    ];
    value(scrape, "sessiond_requests_total", &labels).unwrap_or(0.0)
}

/// Sends RESP commands and reads one reply each.
async fn resp_calls(daemon: &Daemon, commands: &[&[&[u8]]]) -> Vec<Value> {
    let mut conn = daemon.resp_connect().await;
    let mut replies = Vec::new();
    for args in commands {
        replies.push(conn.call_bytes(args).await);
    }
    replies
}

/// The native requests of the known sequence: SET (stored) twice, SET create-only on an
/// existing key (exists), GET (hit), GET (miss).
async fn native_sequence(daemon: &Daemon) {
    let mut conn = daemon.connect().await;
    let requests: [Request; 5] = [
        set_request(b"user:1", b"a", 60_000, SetMode::Upsert),
        set_request(b"user:2", b"b", 60_000, SetMode::Upsert),
        set_request(b"user:1", b"c", 60_000, SetMode::CreateOnly),
        get_request(b"user:1"),
        get_request(b"nobody"),
    ];
    for (opaque, request) in requests.into_iter().enumerate() {
        conn.call(request.to_frame(opaque as u32)).await;
    }
}

#[tokio::test]
async fn a_scrape_counts_each_request_of_both_protocols_exactly() {
    let (daemon, metrics) = daemon_with_metrics("", &["--resp-listen", "127.0.0.1:0"]);
    native_sequence(&daemon).await;
    let replies = resp_calls(
        &daemon,
        &[
            &[b"SET", b"r:1", b"x"],
            &[b"GET", b"r:1"],
            &[b"GET", b"r:none"],
            &[b"DEL", b"r:1"],
            &[b"DEL", b"r:1"],
            &[b"NOSUCHCOMMAND"],
        ],
    )
    .await;
    assert!(replies[5].is_error("ERR unknown command"), "{replies:?}");

    let s = scrape(metrics).await;
    assert_eq!(requests(&s, "native", "set", "stored"), 2.0);
    assert_eq!(requests(&s, "native", "set", "exists"), 1.0);
    assert_eq!(requests(&s, "native", "get", "hit"), 1.0);
    assert_eq!(requests(&s, "native", "get", "miss"), 1.0);
    assert_eq!(requests(&s, "resp", "set", "stored"), 1.0);
    assert_eq!(requests(&s, "resp", "get", "hit"), 1.0);
    assert_eq!(requests(&s, "resp", "get", "miss"), 1.0);
    assert_eq!(requests(&s, "resp", "del", "deleted"), 1.0);
    assert_eq!(requests(&s, "resp", "del", "miss"), 1.0);
    assert_eq!(requests(&s, "resp", "unknown", "error"), 1.0);

    // Every latency histogram has exactly the configured buckets, and counts every request.
    let histograms: Vec<_> = s
        .samples
        .iter()
        .filter(|s| s.metric == "sessiond_request_duration_seconds")
        .collect();
    assert!(!histograms.is_empty(), "no latency histogram");
    for h in &histograms {
        let prometheus_parse::Value::Histogram(buckets) = &h.value else {
            panic!("{h:?} is not a histogram");
        };
        let bounds: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
        let mut expected = REQUEST_BOUNDS.to_vec();
        expected.push(f64::INFINITY);
        assert_eq!(bounds, expected, "{:?}", h.labels);
    }
    let native_get = histograms
        .iter()
        .find(|h| {
            h.labels.get("protocol") == Some("native") && h.labels.get("command") == Some("get")
        })
        .expect("a histogram of native GET");
    let prometheus_parse::Value::Histogram(buckets) = &native_get.value else {
        unreachable!()
    };
    assert_eq!(
        buckets.last().map(|b| b.count),
        Some(2.0),
        "+Inf counts both GETs"
    );

    // Numbers read from the rest of the server at scrape time.
    assert_eq!(
        value(&s, "sessiond_sessions", &[]),
        Some(2.0),
        "user:1, user:2"
    );
    assert_eq!(value(&s, "sessiond_sessions_deleted_total", &[]), Some(1.0));
    assert_eq!(
        value(&s, "sessiond_owners", &[]),
        Some(0.0),
        "no session has an owner"
    );
    assert_eq!(
        value(
            &s,
            "sessiond_connections_accepted_total",
            &[("listener", "native")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "sessiond_connections_accepted_total",
            &[("listener", "resp")]
        ),
        Some(1.0)
    );
    let build = s
        .samples
        .iter()
        .find(|s| s.metric == "sessiond_build_info")
        .expect("build info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(build
        .labels
        .get("git_sha")
        .is_some_and(|sha| !sha.is_empty()));
    assert_eq!(value(&s, "sessiond_ready", &[]), Some(1.0));
    assert!(value(&s, "sessiond_resident_memory_bytes", &[]).is_some_and(|rss| rss > 0.0));

    // OpenMetrics when asked for it, as Prometheus does.
    let stream = TcpStream::connect(metrics).await.expect("connect");
    let (status, body) = http_get(
        stream,
        "/metrics",
        &[("Accept", "application/openmetrics-text")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(get(metrics, "/health/live").await.0, 200);
    assert_eq!(get(metrics, "/nothing").await.0, 404);
}

#[tokio::test]
async fn the_aof_metrics_count_fsyncs() {
    let (daemon, metrics) = daemon_with_metrics("[aof]\nenabled = true\nfsync = \"always\"\n", &[]);
    native_sequence(&daemon).await;
    let s = scrape(metrics).await;
    let fsyncs = s
        .samples
        .iter()
        .find(|s| s.metric == "sessiond_aof_fsync_duration_seconds")
        .expect("fsync histogram");
    let prometheus_parse::Value::Histogram(buckets) = &fsyncs.value else {
        panic!("{fsyncs:?}")
    };
    assert!(
        buckets.last().is_some_and(|b| b.count >= 1.0),
        "{buckets:?}"
    );
    assert!(value(&s, "sessiond_aof_size_bytes", &[]).is_some_and(|b| b > 0.0));
    assert_eq!(value(&s, "sessiond_aof_writable", &[]), Some(1.0));
    assert!(value(&s, "sessiond_aof_last_fsync_age_seconds", &[]).is_some_and(|age| age < 60.0));
}

/// A Prometheus server (Debian's `prometheus` package, installed by .ci/run) scrapes the
/// daemon, and its HTTP API answers with the value the daemon counted: proof of the format
/// by the reference implementation, not only by our parser.
#[tokio::test]
async fn a_real_prometheus_server_scrapes_the_daemon() {
    let Some(prometheus) = find_prometheus() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the prometheus binary is missing: .ci/run installs Debian's prometheus package"
        );
        eprintln!("SKIPPED: no prometheus binary (apt-get install prometheus)");
        return;
    };
    let (daemon, metrics) = daemon_with_metrics("", &[]);
    native_sequence(&daemon).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sessiond\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let api: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={api}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prometheus = KillOnDrop(child);

    let query = "sessiond_requests_total%7Bprotocol%3D%22native%22%2Ccommand%3D%22set%22%2Coutcome%3D%22stored%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(stream) = TcpStream::connect(api).await {
            let (status, body) =
                http_get(stream, &format!("/api/v1/query?query={query}"), &[]).await;
            if status == 200 {
                let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                if let Some(sample) = json["data"]["result"].get(0) {
                    assert_eq!(sample["metric"]["job"], "sessiond", "{body}");
                    assert_eq!(sample["value"][1], "2", "{body}");
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had sessiond_requests_total for the two native SETs"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn find_prometheus() -> Option<&'static str> {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `count` sessions over RESP, pipelined, so that the AOF has that many records.
async fn fill(daemon: &Daemon, count: usize) {
    let mut stream = TcpStream::connect(daemon.resp_addr())
        .await
        .expect("connect");
    let value = [b'v'; 200];
    let batch = 1000;
    let mut buf = BytesMut::new();
    for start in (0..count).step_by(batch) {
        let mut out = Vec::new();
        for i in start..(start + batch).min(count) {
            let key = format!("session:{i:08}");
            out.extend(resp::command(&[b"SET", key.as_bytes(), &value]));
        }
        stream.write_all(&out).await.expect("send");
        let mut replies = 0;
        while replies < (start + batch).min(count) - start {
            if let Some(reply) = resp::parse(&mut buf) {
                assert_eq!(reply, Value::Simple("OK".into()));
                replies += 1;
                continue;
            }
            let n = tokio::time::timeout(IO_TIMEOUT, stream.read_buf(&mut buf))
                .await
                .expect("replies in time")
                .expect("read");
            assert!(n > 0, "the daemon closed the connection");
        }
    }
}

/// `/health/ready` says 503 while the AOF is replayed, 200 once the daemon serves, and 503
/// again as soon as shutdown begins (while a connection still holds the drain open); the
/// listener itself is up before the replay starts.
#[tokio::test]
async fn ready_is_503_during_replay_and_at_shutdown() {
    let data = tempfile::tempdir().expect("temporary directory");
    let config = "[aof]\nenabled = true\nfsync = \"no\"\n[server]\nshutdown_timeout = \"20s\"\n";
    let filler = Daemon::start_in(config, data.path(), &["--resp-listen", "127.0.0.1:0"]);
    fill(&filler, 300_000).await;
    let mut filler = filler;
    filler.terminate(Duration::from_secs(30));

    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let config_path = data.path().join("restart.toml");
    std::fs::write(
        &config_path,
        format!("{config}[metrics]\nlisten = \"{metrics}\"\n"),
    )
    .expect("config");
    let mut child = Command::new(binary("sessiond"))
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sessiond");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let child = KillOnDrop(child);
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("first line");
    assert_eq!(line, format!("metrics listening on {metrics}"));

    // The replay of 300,000 records is under way: not ready, but alive.
    let (status, body) = get(metrics, "/health/ready").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: replaying the append-only file\n")
    );
    assert_eq!(get(metrics, "/health/live").await.0, 200);
    let (_, during) = get(metrics, "/metrics").await;
    assert_eq!(value(&parse(&during), "sessiond_ready", &[]), Some(0.0));

    let line = lines
        .recv_timeout(Duration::from_secs(120))
        .expect("listening line");
    let addr: SocketAddr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(
        get(metrics, "/health/ready").await,
        (200, "ready\n".to_string())
    );
    let s = scrape(metrics).await;
    assert_eq!(value(&s, "sessiond_sessions", &[]), Some(300_000.0));
    assert!(value(&s, "sessiond_aof_replay_duration_seconds", &[]).is_some_and(|d| d > 0.0));

    // A client that keeps sending holds the drain open after SIGTERM (the server reads and
    // discards its input until it goes quiet or shutdown_timeout passes).
    let mut open = TcpStream::connect(addr).await.expect("connect");
    let mut ping = Vec::new();
    ping_request(b"").to_frame(1).encode(&mut ping);
    let pinger = tokio::spawn(async move {
        while open.write_all(&ping).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    terminate(child.0.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(metrics, "/health/ready").await;
        if status == 503 {
            assert_eq!(body, "not ready: shutting down\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready after SIGTERM: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pinger.abort();
}

/// Sends SIGTERM to `pid` through the `kill` command (the tests deny `unsafe`).
fn terminate(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}: {status}");
}

/// With `metrics.tls` the listener speaks TLS with the `[tls]` certificate, and with
/// `metrics.token_file` `/metrics` wants the bearer token (the health endpoints do not).
#[tokio::test]
async fn tls_and_the_bearer_token_protect_the_metrics() {
    let certs = TestCerts::new("metrics");
    let dir = tempfile::tempdir().expect("temporary directory");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("write token");
    let (_daemon, metrics) = daemon_with_metrics(
        &format!(
            "tls = true\ntoken_file = {token_file:?}\n{}",
            certs.server_config(false)
        ),
        &[],
    );
    let connector = connector(&certs.ca());
    let tls_get = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(metrics).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let stream = connector.connect(name, tcp).await.expect("TLS handshake");
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http_get(stream, path, &headers).await
        }
    };
    assert_eq!(tls_get("/metrics", vec![]).await.0, 401);
    let wrong = vec![("Authorization", "Bearer s3cret-tokem".to_string())];
    assert_eq!(tls_get("/metrics", wrong).await.0, 401);
    let right = vec![("Authorization", "Bearer s3cret-token".to_string())];
    let (status, body) = tls_get("/metrics", right).await;
    assert_eq!(status, 200);
    assert!(
        value(&parse(&body), "sessiond_ready", &[]) == Some(1.0),
        "{body}"
    );
    assert_eq!(tls_get("/health/ready", vec![]).await.0, 200);

    // Plain HTTP gets no answer from a TLS listener.
    let mut plain = TcpStream::connect(metrics).await.expect("connect");
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(IO_TIMEOUT, plain.read_to_end(&mut reply)).await;
    assert!(
        !reply.starts_with(b"HTTP/1.1 200"),
        "served metrics in clear text"
    );
}

fn connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Without a token, a metrics listener on a non-loopback address is refused like the other
/// listeners without authentication.
#[test]
fn an_exposed_metrics_listener_needs_a_token() {
    let data = tempfile::tempdir().expect("temporary directory");
    let result = Daemon::try_start_in(
        &format!("[metrics]\nlisten = \"0.0.0.0:{}\"\n", free_port()),
        data.path(),
        &[],
    );
    let Err(finished) = result else {
        panic!("started with an exposed metrics listener and no token");
    };
    assert!(
        finished.stderr.contains("metrics.token_file"),
        "{}",
        finished.stderr
    );
}

/// `sessiond health`, the container's HEALTHCHECK: exit 0 and the body when ready, 1 when
/// nothing answers.
#[test]
fn sessiond_health_asks_the_metrics_listener() {
    let (_daemon, metrics) = daemon_with_metrics("", &[]);
    let addr = metrics.to_string();
    let ready = run_to_completion(
        &binary("sessiond"),
        &["health", "--addr", &addr],
        Duration::from_secs(10),
    );
    assert!(ready.status.success(), "{ready:?}");
    assert_eq!(ready.stdout, "ready\n");
    let live = run_to_completion(
        &binary("sessiond"),
        &["health", "--addr", &addr, "--path", "/health/live"],
        Duration::from_secs(10),
    );
    assert!(live.status.success(), "{live:?}");

    let closed = format!("127.0.0.1:{}", free_port());
    let down = run_to_completion(
        &binary("sessiond"),
        &["health", "--addr", &closed, "--timeout", "1s"],
        Duration::from_secs(10),
    );
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert!(down.stderr.contains(&closed), "{down:?}");
}
