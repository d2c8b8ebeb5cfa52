//! End-to-end tests of the real `sessiond` binary's lifecycle: the connection limit, idle
//! timeouts, graceful shutdown on SIGTERM and SIGINT, `--check-config`, and the command-line
//! overrides of the config file.

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use sessiond_proto::command::{GetReply, SetMode};
use sessiond_proto::{Opcode, ResponseFrame, Status};
use sessiond_tests::{
    assert_error, binary, bounded, ping_request, run_to_completion, set_request, Conn, Daemon,
    Deadline, Finished, CONNECTION_OPCODE, IO_TIMEOUT,
};

const HOUR_MS: u64 = 60 * 60 * 1000;

/// Extra time a shutdown may take past `shutdown_timeout` on a busy machine before the test
/// calls it a hang.
const EXIT_SLACK: Duration = Duration::from_secs(5);

/// Asserts that `frame` is the unsolicited `BUSY` a connection over the limit receives.
fn assert_busy(frame: Option<ResponseFrame>) {
    let frame = frame.expect("the connection over the limit was closed without a BUSY frame");
    assert_eq!(
        (frame.opcode, frame.opaque),
        (CONNECTION_OPCODE, 0),
        "{frame:?}"
    );
    assert_error(&frame, Status::Busy);
}

/// Opens a connection and sends a `PING`: the connection if it was served, `None` if the
/// server turned it away (`BUSY`, or a close that may have overtaken the `BUSY` frame
/// because the `PING` was still unread).
async fn try_serve(daemon: &Daemon) -> Option<Conn> {
    let mut conn = daemon.connect().await;
    let mut ping = Vec::new();
    ping_request(b"").to_frame(9).encode(&mut ping);
    if !conn.send_raw_lossy(&ping).await {
        return None;
    }
    let frame = conn.recv().await?;
    if frame.opcode == CONNECTION_OPCODE {
        assert_busy(Some(frame));
        return None;
    }
    assert_eq!(
        (frame.opaque, frame.status()),
        (9, Some(Status::Ok)),
        "{frame:?}"
    );
    Some(conn)
}

/// A numeric stat.
fn stat(stats: &sessiond_proto::command::StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("STATS has no numeric {name}"))
}

#[tokio::test]
async fn connections_over_the_limit_get_busy_until_one_closes() {
    let mut daemon = Daemon::start_with_config("[server]\nmax_connections = 2\n");
    let mut first = daemon.connect().await;
    let mut second = daemon.connect().await;
    first.ping(b"").await;
    second.ping(b"").await;

    // Sends nothing, so nothing is unread when the server closes it.
    let mut third = daemon.connect().await;
    assert_busy(third.recv().await);
    third.expect_closed().await;
    second.ping(b"still served").await;

    drop(first);
    let deadline = Deadline::after(Duration::from_secs(5), "a slot frees after a close");
    let mut replacement = loop {
        if let Some(conn) = try_serve(&daemon).await {
            break conn;
        }
        deadline.tick().await;
    };
    replacement.put(b"k", b"v", HOUR_MS).await;
    assert!(stat(&replacement.stats().await, "connections_rejected") >= 1);
    second.ping(b"").await;
    daemon.assert_running();
}

#[tokio::test]
async fn idle_connections_are_closed_and_active_ones_kept() {
    let mut daemon = Daemon::start_with_config("[server]\nidle_timeout = \"300ms\"\n");
    let mut silent = daemon.connect().await;
    let mut idle = daemon.connect().await;
    idle.ping(b"").await;

    // Requests keep a connection alive well past the timeout.
    let mut active = daemon.connect().await;
    for _ in 0..20 {
        active.ping(b"").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    active.ping(b"").await;

    // Closed without a response; IO_TIMEOUT bounds the wait.
    idle.expect_closed().await;
    silent.expect_closed().await;
    daemon.assert_running();
}

#[tokio::test]
async fn idle_timeout_of_zero_disables_it() {
    let daemon = Daemon::start_with_config("[server]\nidle_timeout = \"0s\"\n");
    let mut conn = daemon.connect().await;
    conn.ping(b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.ping(b"").await;
}

/// Waits for the daemon to exit after a signal and asserts it exited 0 without panicking.
fn assert_clean_exit(daemon: &mut Daemon, shutdown_timeout: Duration) {
    let status = daemon
        .wait_timeout(shutdown_timeout + EXIT_SLACK)
        .unwrap_or_else(|| {
            panic!(
                "sessiond still running {:?} after the signal",
                shutdown_timeout + EXIT_SLACK
            )
        });
    daemon.assert_no_panic();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; stderr:\n{}",
        daemon.logs().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_sent_before_it_then_exits_0() {
    const REQUESTS: u32 = 20_000;
    let mut daemon = Daemon::start_with_config("[server]\nshutdown_timeout = \"5s\"\n");
    let mut idle = daemon.connect().await;
    idle.ping(b"").await;

    let (mut writer, mut reader) = daemon.connect().await.into_split();
    let replies = tokio::spawn(async move {
        let mut answered = 0u32;
        while let Some(reply) = reader.recv().await {
            assert_eq!(
                (reply.opcode, reply.opaque, reply.status()),
                (Opcode::Set.into(), answered, Some(Status::Ok)),
                "reply {answered}: {reply:?}"
            );
            answered += 1;
        }
        answered
    });
    let value = [b'v'; 100];
    for i in 0..REQUESTS {
        let key = format!("inflight:{i}");
        writer
            .feed(set_request(key.as_bytes(), &value, HOUR_MS, SetMode::Upsert).to_frame(i))
            .await;
    }
    writer.flush().await;
    daemon.signal(libc::SIGTERM);

    let answered = bounded(Duration::from_secs(30), "replies after SIGTERM", replies)
        .await
        .expect("reader task");
    assert_eq!(
        answered, REQUESTS,
        "requests sent before SIGTERM went unanswered"
    );
    idle.expect_closed().await;
    assert_clean_exit(&mut daemon, Duration::from_secs(5));
    assert!(
        std::net::TcpStream::connect_timeout(&daemon.addr(), IO_TIMEOUT).is_err(),
        "the port still accepts connections after exit"
    );
}

#[tokio::test]
async fn sigint_closes_idle_and_half_sent_connections_and_exits_0() {
    let mut daemon = Daemon::start_with_config("[server]\nshutdown_timeout = \"1s\"\n");
    let mut idle = daemon.connect().await;
    idle.ping(b"").await;
    let mut partial = daemon.connect().await;
    let mut bytes = Vec::new();
    set_request(b"k", b"value", HOUR_MS, SetMode::Upsert)
        .to_frame(1)
        .encode(&mut bytes);
    partial.send_raw(&bytes[..bytes.len() - 2]).await;

    daemon.signal(libc::SIGINT);
    idle.expect_closed().await;
    partial.expect_closed().await;
    assert_clean_exit(&mut daemon, Duration::from_secs(1));
}

#[tokio::test]
async fn sigterm_with_no_connections_exits_0() {
    let mut daemon = Daemon::start();
    daemon.connect().await.ping(b"").await;
    daemon.signal(libc::SIGTERM);
    assert_clean_exit(&mut daemon, Duration::from_secs(10));
}

/// Runs `sessiond --check-config` on a file holding `config`.
fn check_config(config: &str) -> Finished {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sessiond.toml");
    std::fs::write(&path, config).expect("write config");
    let path = path.to_str().expect("UTF-8 temp path");
    run_to_completion(&binary("sessiond"), &["--check-config", path], IO_TIMEOUT)
}

/// Asserts that `--check-config` refuses `config` with exit 1 and a message naming `key`.
fn assert_config_error(config: &str, key: &str) {
    let out = check_config(config);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check-config accepted (or crashed on) {config:?}: {out:?}"
    );
    assert!(
        out.stderr.contains(key),
        "the error for {config:?} does not name {key:?}: {:?}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{out:?}");
}

const FULL_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:7878"
data_dir = "data"
max_connections = 10000
idle_timeout = "5m"
shutdown_timeout = "10s"

[limits]
max_key_bytes = 1024
max_value_bytes = 1048576
max_ttl = "400d"

[expiry]
sweep_interval = "100ms"
sweep_budget = "1ms"

[log]
format = "json"
level = "info"
"#;

#[test]
fn check_config_accepts_good_files() {
    for config in [
        FULL_CONFIG,
        "",
        "[server]\nidle_timeout = \"0s\"\n[log]\nformat = \"text\"\n",
    ] {
        let out = check_config(config);
        assert_eq!(out.status.code(), Some(0), "{config:?}: {out:?}");
        let line = out.stdout.lines().next().unwrap_or("");
        assert!(line.starts_with("config OK: "), "stdout {:?}", out.stdout);
        assert!(
            line.ends_with("sessiond.toml"),
            "the OK line names the file: {line:?}"
        );
    }
}

#[test]
fn check_config_names_unknown_keys() {
    assert_config_error(
        "[server]\nlisten_address = \"127.0.0.1:1\"\n",
        "listen_address",
    );
    assert_config_error("[limits]\nmax_keys = 5\n", "max_keys");
    assert_config_error("[cache]\nsize = 5\n", "cache");
    assert_config_error("verbose = true\n", "verbose");
}

#[test]
fn check_config_names_keys_with_bad_values() {
    let cases = [
        ("[server]\nmax_connections = -1\n", "max_connections"),
        ("[server]\nmax_connections = \"many\"\n", "max_connections"),
        ("[server]\nlisten = \"nope\"\n", "listen"),
        ("[server]\nidle_timeout = \"soon\"\n", "idle_timeout"),
        ("[server]\nshutdown_timeout = 10\n", "shutdown_timeout"),
        ("[limits]\nmax_key_bytes = 0\n", "max_key_bytes"),
        ("[limits]\nmax_key_bytes = 70000\n", "max_key_bytes"),
        ("[limits]\nmax_value_bytes = 20000000\n", "max_value_bytes"),
        ("[limits]\nmax_ttl = \"20years\"\n", "max_ttl"),
        ("[expiry]\nsweep_interval = \"often\"\n", "sweep_interval"),
        ("[log]\nformat = \"xml\"\n", "format"),
    ];
    for (config, key) in cases {
        assert_config_error(config, key);
    }
}

#[test]
fn check_config_reports_a_missing_file() {
    let out = run_to_completion(
        &binary("sessiond"),
        &["--check-config", "/nonexistent/sessiond.toml"],
        IO_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/sessiond.toml"), "{out:?}");
}

#[test]
fn a_bad_config_file_stops_the_daemon_from_starting() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sessiond.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_conections = 5\n",
    )
    .unwrap();
    let out = run_to_completion(
        &binary("sessiond"),
        &[Path::new("--config"), path.as_path()],
        IO_TIMEOUT,
    );
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("max_conections"), "{out:?}");
    assert!(!out.stdout.contains("listening on"), "{out:?}");
}

/// A port on which something else is listening, held for as long as the listener lives.
fn occupied_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    (listener, port)
}

#[tokio::test]
async fn listen_and_data_dir_options_override_the_config_file() {
    // If the daemon used the config's address it could not bind: the port is taken.
    let (_taken, taken_port) = occupied_port();
    let (free, free_port) = occupied_port();
    drop(free);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config_data = dir.path().join("from-config");
    let cli_data = dir.path().join("from-cli");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{taken_port}\"\ndata_dir = {:?}\n",
        config_data.display().to_string()
    );
    let listen = format!("127.0.0.1:{free_port}");
    let cli_data_arg = cli_data.display().to_string();
    let mut daemon = Daemon::start_with_exact_args(
        &config,
        &cli_data,
        &["--listen", &listen, "--data-dir", &cli_data_arg],
    );
    assert_eq!(daemon.addr().port(), free_port);

    let mut conn = daemon.connect().await;
    conn.put(b"k", b"v", HOUR_MS).await;
    assert!(matches!(conn.get(b"k").await, GetReply::Hit(_)));
    assert!(
        !config_data.exists(),
        "the config file's data_dir was used despite --data-dir"
    );
    daemon.assert_running();
}

#[tokio::test]
async fn config_file_listen_address_is_used_without_override() {
    let (free, free_port) = occupied_port();
    drop(free);
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{free_port}\"\ndata_dir = {:?}\n",
        data.display().to_string()
    );
    let daemon = Daemon::start_with_exact_args(&config, &data, &[]);
    assert_eq!(daemon.addr().port(), free_port);
    daemon.connect().await.ping(b"").await;
}
