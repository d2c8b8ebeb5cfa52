//! End-to-end tests of the real `sessiond` binary's lifecycle: the connection limit, idle
//! timeouts, graceful shutdown on SIGTERM and SIGINT, `--check-config`, and the command-line
//! overrides of the config file.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use sessiond_proto::command::{GetReply, SetMode};
use sessiond_proto::{ClientCodec, Opcode, ResponseFrame, Status};
use sessiond_tests::{
    assert_error, binary, bounded, get_request, ping_request, run_to_completion, set_request, Conn,
    Daemon, Deadline, Finished, CONNECTION_OPCODE, IO_TIMEOUT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::codec::Decoder;

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

/// Asserts that the server, shutting down, sends `conn` the unsolicited `SHUTTING_DOWN` frame
/// (after the responses to everything it executed) and then closes the connection.
async fn expect_shutting_down(conn: &mut Conn) {
    let frame = conn
        .recv()
        .await
        .expect("the connection was closed without SHUTTING_DOWN");
    assert_eq!(
        (frame.opcode, frame.opaque),
        (CONNECTION_OPCODE, 0),
        "{frame:?}"
    );
    assert_error(&frame, Status::ShuttingDown);
    conn.expect_closed().await;
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

#[tokio::test]
async fn timeouts_too_long_for_a_clock_mean_never() {
    // Past what an `Instant` can hold: deadlines this far off are never reached, and
    // computing them must not panic the connection's task.
    let forever = "\"300000000000y\"";
    let mut daemon = Daemon::start_with_config(&format!(
        "[server]\nidle_timeout = {forever}\nframe_timeout = {forever}\n\
         write_timeout = {forever}\nshutdown_timeout = {forever}\n"
    ));
    let mut conn = daemon.connect().await;
    conn.ping(b"").await;
    conn.ping(b"").await;
    // Shutdown still ends the quiet connection and exits.
    daemon.signal(libc::SIGTERM);
    assert_clean_exit(&mut daemon, Duration::from_secs(10));
    drop(conn);
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

/// A client that has written 20 000 `SET`s when SIGTERM arrives: the server answers, in
/// order, every one that had reached it, then `SHUTTING_DOWN`; and it executed exactly the
/// ones it answered (PROTOCOL.md 2.1), which a restart on the same data directory shows.
/// Requests still in the client's socket buffers had not been received: before the server
/// bounded the drain by what had arrived, a client that kept writing kept it running until
/// the shutdown timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_what_arrived_executes_nothing_later_and_exits_0() {
    const REQUESTS: u32 = 20_000;
    let mut daemon = Daemon::start_with_config("[server]\nshutdown_timeout = \"5s\"\n");
    let mut idle = daemon.connect().await;
    idle.ping(b"").await;

    let (mut writer, mut reader) = daemon.connect().await.into_split();
    let replies = tokio::spawn(async move {
        let mut answered = 0u32;
        while let Some(reply) = reader.recv().await {
            if reply.opcode == CONNECTION_OPCODE {
                assert_error(&reply, Status::ShuttingDown);
                assert!(reader.recv().await.is_none(), "a frame after SHUTTING_DOWN");
                break;
            }
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
    assert!(answered > 0, "nothing was answered");
    expect_shutting_down(&mut idle).await;
    assert_clean_exit(&mut daemon, Duration::from_secs(5));
    assert!(
        std::net::TcpStream::connect_timeout(&daemon.addr(), IO_TIMEOUT).is_err(),
        "the port still accepts connections after exit"
    );

    let daemon = daemon.restart();
    let mut conn = daemon.connect().await;
    let gets = (0..REQUESTS)
        .map(|i| get_request(format!("inflight:{i}").as_bytes()).to_frame(i))
        .collect();
    for (i, reply) in (0..REQUESTS).zip(conn.pipeline(gets).await) {
        let stored = reply.status() == Some(Status::Ok);
        assert_eq!(
            stored,
            i < answered,
            "SET {i} (of {answered} answered) stored: {stored}"
        );
    }
}

#[tokio::test]
async fn sigint_closes_idle_and_half_sent_connections_and_exits_0() {
    let mut daemon = Daemon::start_with_config("[server]\nshutdown_timeout = \"1s\"\n");
    let mut idle = daemon.connect().await;
    idle.ping(b"").await;
    let mut partial = daemon.connect().await;
    // Answered, so accepted: a connection still in the listen backlog when the signal comes
    // is never accepted and is reset by the kernel, which is not what this test is about (it
    // failed about 1 run in 20 that way).
    partial.ping(b"").await;
    let mut bytes = Vec::new();
    set_request(b"k", b"value", HOUR_MS, SetMode::Upsert)
        .to_frame(1)
        .encode(&mut bytes);
    partial.send_raw(&bytes[..bytes.len() - 2]).await;

    daemon.signal(libc::SIGINT);
    expect_shutting_down(&mut idle).await;
    // The incomplete SET was not received, so not executed.
    expect_shutting_down(&mut partial).await;
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

// ---------------------------------------------------------------------------------------------
// Shutdown under load: a client pipelining reads of large values when SIGTERM arrives
// ---------------------------------------------------------------------------------------------

/// Size of each value the loaded client reads: large enough that responses, not requests,
/// fill the socket buffers, as with real session blobs.
const LOAD_VALUE_LEN: usize = 100 * 1024;
/// Requests the loaded client keeps in flight at most.
const LOAD_IN_FLIGHT: usize = 64;
/// Keys the loaded client cycles through.
const LOAD_KEYS: usize = 16;

/// The wire protocol a loaded client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Native,
    Resp,
}

impl Wire {
    /// The bytes of the `i`-th `GET`.
    fn get(self, i: u32) -> Vec<u8> {
        let key = format!("big:{}", i as usize % LOAD_KEYS);
        match self {
            Wire::Native => {
                let mut out = Vec::new();
                get_request(key.as_bytes()).to_frame(i).encode(&mut out);
                out
            }
            Wire::Resp => format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).into_bytes(),
        }
    }

    /// Takes the next whole response out of `buf`: `Some(true)` for the answer to request
    /// `expected`, `Some(false)` for native `SHUTTING_DOWN` (unsolicited: nothing after it
    /// was executed), `None` if `buf` holds no whole response yet. Panics on anything else.
    fn take(self, buf: &mut BytesMut, expected: u32) -> Option<bool> {
        match self {
            Wire::Native => {
                let frame = ClientCodec::new()
                    .decode(buf)
                    .unwrap_or_else(|e| panic!("response {expected}: {e}"))?;
                if frame.opcode == CONNECTION_OPCODE {
                    assert_eq!(frame.opaque, 0, "{frame:?}");
                    assert_error(&frame, Status::ShuttingDown);
                    return Some(false);
                }
                assert_eq!(
                    (frame.opcode, frame.opaque, frame.status()),
                    (Opcode::Get.into(), expected, Some(Status::Ok)),
                    "response {expected}"
                );
                assert_eq!(frame.value.len(), LOAD_VALUE_LEN, "response {expected}");
                Some(true)
            }
            Wire::Resp => {
                let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
                let line = std::str::from_utf8(&buf[..line_end]).expect("RESP header line");
                let len: usize = line
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("response {expected}: unexpected {line:?}"));
                assert_eq!(len, LOAD_VALUE_LEN, "response {expected}");
                let total = line_end + 2 + len + 2;
                if buf.len() < total {
                    return None;
                }
                buf.advance(total);
                Some(true)
            }
        }
    }
}

/// What the loaded client saw.
#[derive(Debug)]
struct LoadOutcome {
    /// Requests whose write had completed before the test sent SIGTERM.
    written_before_signal: u32,
    /// Requests written in all.
    written: u32,
    /// Requests answered, in order.
    answered: u32,
    /// Whether a native `SHUTTING_DOWN` frame followed the last answer.
    shutting_down: bool,
    /// How the stream ended: `None` for a clean EOF, else the read error (a reset).
    error: Option<std::io::ErrorKind>,
    /// Bytes of an incomplete response left when the stream ended.
    partial: usize,
}

/// Pipelines `GET`s of large values over `wire` to `addr`, at most [`LOAD_IN_FLIGHT`] in
/// flight, reading while writing; once `before_signal` responses have arrived, sends
/// SIGTERM to `daemon` and reads until the connection ends.
async fn sigterm_mid_stream(
    daemon: &Daemon,
    addr: std::net::SocketAddr,
    wire: Wire,
    before_signal: u32,
) -> LoadOutcome {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut read, mut write) = stream.into_split();
    let written = Arc::new(AtomicU32::new(0));
    let slots = Arc::new(Semaphore::new(LOAD_IN_FLIGHT));
    let writer = {
        let (written, slots) = (written.clone(), slots.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let Ok(permit) = slots.acquire().await else {
                    return;
                };
                permit.forget();
                if write.write_all(&wire.get(i)).await.is_err() {
                    return;
                }
                written.store(i + 1, Ordering::SeqCst);
            }
        })
    };

    let mut buf = BytesMut::with_capacity(4 * LOAD_VALUE_LEN);
    let mut outcome = LoadOutcome {
        written_before_signal: 0,
        written: 0,
        answered: 0,
        shutting_down: false,
        error: None,
        partial: 0,
    };
    let mut signalled = false;
    let read_all = async {
        loop {
            while let Some(answer) = wire.take(&mut buf, outcome.answered) {
                assert!(!outcome.shutting_down, "a response after SHUTTING_DOWN");
                if answer {
                    outcome.answered += 1;
                    slots.add_permits(1);
                } else {
                    outcome.shutting_down = true;
                }
            }
            if !signalled && outcome.answered >= before_signal {
                outcome.written_before_signal = written.load(Ordering::SeqCst);
                daemon.signal(libc::SIGTERM);
                signalled = true;
            }
            match read.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    outcome.error = Some(e.kind());
                    break;
                }
            }
        }
    };
    bounded(
        Duration::from_secs(60),
        "the loaded connection ends",
        read_all,
    )
    .await;
    slots.close();
    writer.abort();
    let _ = writer.await;
    outcome.written = written.load(Ordering::SeqCst);
    outcome.partial = buf.len();
    assert!(
        signalled,
        "the connection ended before SIGTERM: {outcome:?}"
    );
    outcome
}

/// Starts a daemon (with a RESP listener) holding the values the loaded client reads.
async fn loaded_daemon() -> Daemon {
    let daemon = Daemon::start_with_args(
        "[server]\nshutdown_timeout = \"10s\"\n",
        &["--resp-listen", "127.0.0.1:0"],
    );
    let mut conn = daemon.connect().await;
    let value = vec![b'v'; LOAD_VALUE_LEN];
    for i in 0..LOAD_KEYS {
        conn.put(format!("big:{i}").as_bytes(), &value, HOUR_MS)
            .await;
    }
    daemon
}

/// Shutdowns per test: the old failure showed in about half of the runs, and each round
/// takes well under a second.
const ROUNDS: usize = 4;

/// [`ROUNDS`] times: a daemon, a client pipelining over `wire`, SIGTERM mid-stream. Asserts
/// what PROTOCOL.md 2.1 promises that client: every request the server received is
/// answered, in order and whole; with the native protocol, `SHUTTING_DOWN` says that
/// nothing after the last answer was executed; the connection ends with an EOF, not a
/// reset; the daemon exits 0.
async fn assert_drained_under_load(wire: Wire) {
    for round in 0..ROUNDS {
        let mut daemon = loaded_daemon().await;
        let addr = match wire {
            Wire::Native => daemon.addr(),
            Wire::Resp => daemon.resp_addr(),
        };
        let outcome = sigterm_mid_stream(&daemon, addr, wire, 500).await;
        eprintln!("{wire:?} round {round}: {outcome:?}");
        let unanswered = outcome
            .written_before_signal
            .saturating_sub(outcome.answered);
        assert_eq!(
            unanswered, 0,
            "{unanswered} requests written before SIGTERM got no response: {outcome:?}"
        );
        assert_eq!(outcome.error, None, "the connection was reset: {outcome:?}");
        assert_eq!(
            outcome.partial, 0,
            "the stream ended inside a response: {outcome:?}"
        );
        assert_eq!(
            outcome.shutting_down,
            wire == Wire::Native,
            "SHUTTING_DOWN after the last response: {outcome:?}"
        );
        assert_clean_exit(&mut daemon, Duration::from_secs(10));
    }
}

/// Regression test: SIGTERM used to close a busy connection with requests still unread in
/// its socket, so the kernel reset it, destroying responses on their way (the stream ended
/// inside a response, or in ECONNRESET), and a client could not tell which of its
/// outstanding requests had been executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_pipelining_native_client_without_a_reset() {
    assert_drained_under_load(Wire::Native).await;
}

/// The same over RESP, which has no unsolicited replies: the server answers what it
/// received, then closes its side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_pipelining_resp_client_without_a_reset() {
    assert_drained_under_load(Wire::Resp).await;
}

/// PROTOCOL.md 2.1: a connection whose client does not read its responses cannot finish;
/// at the shutdown timeout it is closed anyway and the server exits 0, without waiting
/// for it any longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_cut_off_at_the_shutdown_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let mut daemon = Daemon::start_with_config("[server]\nshutdown_timeout = \"1s\"\n");
    let mut conn = daemon.connect().await;
    let value = vec![b'v'; LOAD_VALUE_LEN];
    conn.put(b"big:0", &value, HOUR_MS).await;

    // Far more response bytes than the socket buffers hold, and never a read.
    let stream = TcpStream::connect(daemon.addr()).await.expect("connect");
    let (_read, mut write) = stream.into_split();
    let requests: Vec<u8> = (0..4000).flat_map(|i| Wire::Native.get(i * 16)).collect();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&requests).await;
        write
    });
    // Until the server's writes to it have stalled; other connections are still served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.ping(b"").await;

    let signalled = std::time::Instant::now();
    daemon.signal(libc::SIGTERM);
    assert_clean_exit(&mut daemon, TIMEOUT);
    let took = signalled.elapsed();
    assert!(
        took >= TIMEOUT - Duration::from_millis(100),
        "exited after {took:?}, before the shutdown timeout, with a connection unfinished"
    );
    daemon
        .wait_for_log("the timeout warning", |l| {
            l.contains("shutdown timeout passed")
        })
        .await;
    writer.abort();
}
