//! End-to-end tests of `sessiond-cli` against the real `sessiond`: the output and exit status
//! of each subcommand are a contract scripts rely on (see `sessiond-cli --help`).

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use sessiond_proto::command::{Get, GetReply, Ping, Set, SetMode, SetOutcome};
use sessiond_tests::certs::TestCerts;
use sessiond_tests::users::{TestUsers, ADMIN_PASSWORD, APP_PASSWORD, MONITOR_PASSWORD};
use sessiond_tests::{binary, Daemon};

/// Runs `sessiond-cli --addr ADDR ARGS..` with stdin closed and stdout/stderr captured.
fn cli_at(addr: &str, args: &[&OsStr]) -> Output {
    cli_command(addr)
        .args(args)
        .output()
        .expect("run sessiond-cli")
}

/// `sessiond-cli --addr ADDR`, with no credentials or address from the test's environment.
fn cli_command(addr: &str) -> Command {
    let mut command = Command::new(binary("sessiond-cli"));
    command
        .arg("--addr")
        .arg(addr)
        // Only --addr may decide where it connects, and only the test who it is.
        .env_remove("SESSIOND_ADDR")
        .env_remove("SESSIOND_USER")
        .env_remove("SESSIOND_PASSWORD")
        .stdin(Stdio::null());
    command
}

fn cli(daemon: &Daemon, args: &[&str]) -> Output {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    cli_at(&daemon.addr().to_string(), &args)
}

/// Asserts the exit code, showing the output when it is not the expected one.
#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stdout: {:?}, stderr: {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(out: &Output) -> &str {
    std::str::from_utf8(&out.stdout).expect("UTF-8 stdout")
}

fn stderr(out: &Output) -> &str {
    std::str::from_utf8(&out.stderr).expect("UTF-8 stderr")
}

/// The N of a `version N` line on stdout.
#[track_caller]
fn version(out: &Output) -> u64 {
    assert_exit(out, 0);
    stdout(out)
        .strip_suffix('\n')
        .and_then(|line| line.strip_prefix("version "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected `version N`, got {:?}", stdout(out)))
}

/// The value of a `NAME N` line that `get --meta` printed on stderr.
#[track_caller]
fn meta(out: &Output, name: &str) -> u64 {
    stderr(out)
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{name} N` line on stderr: {:?}", stderr(out)))
}

/// A port that nothing listens on: bound once by this process, then released.
fn closed_port_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

#[test]
fn set_then_get_round_trips_the_value_without_a_newline() {
    let daemon = Daemon::start();
    let v = version(&cli(
        &daemon,
        &["set", "session:1", "hello world", "--ttl", "30s"],
    ));
    assert!(v >= 1);

    let out = cli(&daemon, &["get", "session:1"]);
    assert_exit(&out, 0);
    // stdout is a pipe here, so the bytes are exactly the value.
    assert_eq!(out.stdout, b"hello world");
    assert_eq!(stderr(&out), "");
}

#[test]
fn set_prints_a_new_larger_version_each_time() {
    let daemon = Daemon::start();
    let first = version(&cli(&daemon, &["set", "k", "a", "--ttl", "1m"]));
    let second = version(&cli(&daemon, &["set", "k", "b", "--ttl", "1m"]));
    assert!(second > first, "{second} > {first}");
}

#[test]
fn get_of_a_missing_key_exits_1_with_a_message() {
    let daemon = Daemon::start();
    let out = cli(&daemon, &["get", "nope"]);
    assert_exit(&out, 1);
    assert_eq!(out.stdout, b"");
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"nope\""), "{}", stderr(&out));
}

#[test]
fn get_meta_prints_version_and_ttl_on_stderr() {
    let daemon = Daemon::start();
    let v = version(&cli(&daemon, &["set", "k", "v", "--ttl", "1h"]));
    let out = cli(&daemon, &["get", "k", "--meta"]);
    assert_exit(&out, 0);
    assert_eq!(out.stdout, b"v");
    assert_eq!(meta(&out, "version"), v);
    let ttl = meta(&out, "ttl_ms");
    assert!(ttl > 0 && ttl <= 3_600_000, "ttl_ms {ttl}");
}

#[test]
fn set_nx_on_an_existing_key_exits_1() {
    let daemon = Daemon::start();
    version(&cli(&daemon, &["set", "k", "first", "--ttl", "1m", "--nx"]));
    let out = cli(&daemon, &["set", "k", "second", "--ttl", "1m", "--nx"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("EXISTS"), "{}", stderr(&out));
    assert_eq!(cli(&daemon, &["get", "k"]).stdout, b"first");
}

#[test]
fn set_xx_on_a_missing_key_exits_1() {
    let daemon = Daemon::start();
    let out = cli(&daemon, &["set", "k", "v", "--ttl", "1m", "--xx"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
    assert_exit(&cli(&daemon, &["get", "k"]), 1);

    version(&cli(&daemon, &["set", "k", "v", "--ttl", "1m"]));
    version(&cli(&daemon, &["set", "k", "w", "--ttl", "1m", "--xx"]));
    assert_eq!(cli(&daemon, &["get", "k"]).stdout, b"w");
}

#[test]
fn set_if_version_succeeds_with_the_current_version_only() {
    let daemon = Daemon::start();
    let v1 = version(&cli(&daemon, &["set", "k", "a", "--ttl", "1m"]));
    let v1_arg = v1.to_string();
    let v2 = version(&cli(
        &daemon,
        &["set", "k", "b", "--ttl", "1m", "--if-version", &v1_arg],
    ));
    assert!(v2 > v1);

    // v1 is stale now: the reply names the current version.
    let out = cli(
        &daemon,
        &["set", "k", "c", "--ttl", "1m", "--if-version", &v1_arg],
    );
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("VERSION_MISMATCH"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("version {v2}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(cli(&daemon, &["get", "k"]).stdout, b"b");

    let out = cli(
        &daemon,
        &[
            "set",
            "missing",
            "c",
            "--ttl",
            "1m",
            "--if-version",
            &v1_arg,
        ],
    );
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
}

#[test]
fn set_mode_flags_are_mutually_exclusive() {
    let daemon = Daemon::start();
    let out = cli(&daemon, &["set", "k", "v", "--ttl", "1m", "--nx", "--xx"]);
    assert_exit(&out, 2);
    let out = cli(
        &daemon,
        &["set", "k", "v", "--ttl", "1m", "--nx", "--if-version", "3"],
    );
    assert_exit(&out, 2);
}

#[test]
fn get_touch_extends_the_ttl_and_keeps_the_version() {
    let daemon = Daemon::start();
    let v = version(&cli(&daemon, &["set", "k", "v", "--ttl", "10s"]));
    let out = cli(&daemon, &["get", "k", "--touch", "2h", "--meta"]);
    assert_exit(&out, 0);
    assert_eq!(out.stdout, b"v");
    assert_eq!(meta(&out, "version"), v);
    // Far above the original 10 s, whatever time passed in between.
    assert!(meta(&out, "ttl_ms") > 3_600_000, "{}", stderr(&out));

    let out = cli(&daemon, &["get", "k", "--meta"]);
    assert!(meta(&out, "ttl_ms") > 3_600_000, "{}", stderr(&out));
}

#[test]
fn touch_resets_the_ttl_and_prints_the_unchanged_version() {
    let daemon = Daemon::start();
    let v = version(&cli(&daemon, &["set", "k", "v", "--ttl", "10s"]));
    assert_eq!(version(&cli(&daemon, &["touch", "k", "2h"])), v);
    let out = cli(&daemon, &["get", "k", "--meta"]);
    assert_eq!(meta(&out, "version"), v);
    assert!(meta(&out, "ttl_ms") > 3_600_000, "{}", stderr(&out));
}

#[test]
fn touch_of_a_missing_key_exits_1() {
    let daemon = Daemon::start();
    let out = cli(&daemon, &["touch", "nope", "30m"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
}

#[test]
fn del_removes_the_key_and_exits_1_when_it_is_missing() {
    let daemon = Daemon::start();
    version(&cli(&daemon, &["set", "k", "v", "--ttl", "1m"]));
    let out = cli(&daemon, &["del", "k"]);
    assert_exit(&out, 0);
    assert_eq!(out.stdout, b"");
    assert_exit(&cli(&daemon, &["get", "k"]), 1);

    let out = cli(&daemon, &["del", "k"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("NOT_FOUND"), "{}", stderr(&out));
}

#[test]
fn del_if_version_removes_only_the_matching_version() {
    let daemon = Daemon::start();
    let v1 = version(&cli(&daemon, &["set", "k", "a", "--ttl", "1m"]));
    let v2 = version(&cli(&daemon, &["set", "k", "b", "--ttl", "1m"]));

    let out = cli(&daemon, &["del", "k", "--if-version", &v1.to_string()]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("VERSION_MISMATCH"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("version {v2}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(cli(&daemon, &["get", "k"]).stdout, b"b");

    assert_exit(
        &cli(&daemon, &["del", "k", "--if-version", &v2.to_string()]),
        0,
    );
    assert_exit(&cli(&daemon, &["get", "k"]), 1);
}

#[test]
fn stats_prints_name_value_lines() {
    let daemon = Daemon::start();
    version(&cli(&daemon, &["set", "k", "v", "--ttl", "1m"]));
    let out = cli(&daemon, &["stats"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.ends_with('\n'), "{text:?}");
    for line in text.lines() {
        let (name, value) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(!name.is_empty() && !value.is_empty(), "{line:?}");
    }
    assert!(text.lines().any(|l| l == "entries 1"), "{text}");
}

#[test]
fn ping_prints_pong() {
    let daemon = Daemon::start();
    let out = cli(&daemon, &["ping"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "PONG\n");
}

#[test]
fn addr_defaults_to_the_sessiond_addr_variable() {
    let daemon = Daemon::start();
    let out = Command::new(binary("sessiond-cli"))
        .arg("ping")
        .env("SESSIOND_ADDR", daemon.addr().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "PONG\n");
}

#[test]
fn connection_refused_exits_2() {
    let out = cli_at(&closed_port_addr(), &[OsStr::new("ping")]);
    assert_exit(&out, 2);
    // The address and the cause, each said once (regression: the OS error was repeated).
    let err = stderr(&out);
    assert!(err.starts_with("error: connection to "), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
}

#[test]
fn a_server_that_never_answers_times_out_with_exit_2() {
    // Accepted by the kernel (backlog) but never read from or answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let args = ["--timeout", "200ms", "ping"].map(OsStr::new);
    let out = cli_at(&addr, &args);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no reply"), "{}", stderr(&out));
}

#[test]
fn invalid_durations_are_usage_errors() {
    let addr = closed_port_addr();
    for ttl in ["30", "30parsecs", "0s", "999us", ""] {
        let args = ["set", "k", "v", "--ttl", ttl].map(OsStr::new);
        let out = cli_at(&addr, &args);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains("--ttl"), "{ttl:?}: {}", stderr(&out));
    }
    let out = cli_at(&addr, &["touch", "k", "soon"].map(OsStr::new));
    assert_exit(&out, 2);
}

#[test]
fn server_errors_exit_2_with_the_servers_message() {
    let daemon = Daemon::start();
    // Above the default max_ttl of 400 days.
    let out = cli(&daemon, &["set", "k", "v", "--ttl", "500days"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("INVALID_ARGUMENT"),
        "{}",
        stderr(&out)
    );

    // Above the default max_key_bytes of 1024.
    let long_key = "k".repeat(2000);
    let out = cli(&daemon, &["get", &long_key]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("TOO_LARGE"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_binary_value_set_over_the_wire_is_printed_byte_exactly() {
    let daemon = Daemon::start();
    let value = Bytes::from_static(b"\xff\x00\xfe\n\x80 not utf-8 \r\n\x00");
    let mut conn = daemon.connect().await;
    let set = Set {
        key: Bytes::from_static(b"bin"),
        value: value.clone(),
        ttl_ms: 60_000,
        mode: SetMode::Upsert,
    };
    let reply = conn.call(set.to_frame(7)).await;
    assert!(
        matches!(
            SetOutcome::from_frame(&reply),
            Ok(SetOutcome::Stored { .. })
        ),
        "{reply:?}"
    );

    let out = cli(&daemon, &["get", "bin"]);
    assert_exit(&out, 0);
    assert_eq!(out.stdout, value);
}

#[tokio::test]
async fn non_utf8_arguments_are_stored_byte_exactly() {
    let daemon = Daemon::start();
    // argv cannot hold a NUL byte; everything else can.
    let (key, value) = (b"k\xff\x01", b"v\x80\xfe\nend");
    let args = [
        OsStr::new("set"),
        OsStr::from_bytes(key),
        OsStr::from_bytes(value),
        OsStr::new("--ttl"),
        OsStr::new("1m"),
    ];
    assert_exit(&cli_at(&daemon.addr().to_string(), &args), 0);

    let mut conn = daemon.connect().await;
    let get = Get {
        key: Bytes::from_static(key),
        touch_ttl_ms: None,
    };
    match GetReply::from_frame(&conn.call(get.to_frame(1)).await) {
        Ok(GetReply::Hit(entry)) => assert_eq!(entry.value, &value[..]),
        other => panic!("{other:?}"),
    }

    // And the miss message shows the key escaped rather than mangled.
    let args = [OsStr::new("get"), OsStr::from_bytes(b"x\xff")];
    let out = cli_at(&daemon.addr().to_string(), &args);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(r#""x\xff""#), "{}", stderr(&out));
}

#[tokio::test]
async fn a_server_at_its_connection_limit_exits_2_with_busy() {
    let daemon = Daemon::start_with_config("[server]\nmax_connections = 1\n");
    let mut conn = daemon.connect().await;
    // A round trip on it, so the server has surely counted this connection.
    conn.call(Ping::default().to_frame(1)).await;

    let out = cli(&daemon, &["ping"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("BUSY"), "{}", stderr(&out));
}

/// Runs `sessiond-cli --addr ADDR ARGS..` with `SESSIOND_PASSWORD` set to `password`.
fn cli_with_password(addr: &str, password: &str, args: &[&str]) -> Output {
    cli_command(addr)
        .args(args)
        .env("SESSIOND_PASSWORD", password)
        .output()
        .expect("run sessiond-cli")
}

#[test]
fn user_with_the_password_in_the_environment_or_a_file_authenticates() {
    let users = TestUsers::standard();
    let daemon = Daemon::start_with_config(users.config());
    let addr = daemon.addr().to_string();
    let out = cli_with_password(
        &addr,
        APP_PASSWORD,
        &["--user", "app", "set", "k", "v", "--ttl", "1m"],
    );
    version(&out);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{APP_PASSWORD}\n")).unwrap();
    let file = file.to_str().unwrap();
    let out = cli(
        &daemon,
        &["--user", "app", "--password-file", file, "get", "k"],
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "v");

    // The request goes out right behind the AUTH: a value larger than what the server
    // accepts before authentication must still be taken once the AUTH before it succeeded.
    let large = "x".repeat(10_000);
    let out = cli_with_password(
        &addr,
        APP_PASSWORD,
        &["--user", "app", "set", "big", &large, "--ttl", "1m"],
    );
    version(&out);

    // SESSIOND_USER works like --user.
    let out = cli_command(&addr)
        .args(["get", "k"])
        .env("SESSIOND_USER", "app")
        .env("SESSIOND_PASSWORD", APP_PASSWORD)
        .output()
        .unwrap();
    assert_exit(&out, 0);
}

#[test]
fn wrong_or_missing_credentials_exit_2_and_never_echo_the_password() {
    let users = TestUsers::standard();
    let daemon = Daemon::start_with_config(users.config());
    let addr = daemon.addr().to_string();
    let out = cli_with_password(&addr, "not-the-password", &["--user", "app", "get", "k"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("AUTH_FAILED"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("not-the-password"),
        "{}",
        stderr(&out)
    );

    let out = cli(&daemon, &["get", "k"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("AUTH_REQUIRED"), "{}", stderr(&out));

    // The app role may not read the server's counters.
    let out = cli_with_password(&addr, APP_PASSWORD, &["--user", "app", "stats"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("NO_PERMISSION"), "{}", stderr(&out));
    let out = cli_with_password(&addr, MONITOR_PASSWORD, &["--user", "monitor", "stats"]);
    assert_exit(&out, 0);
}

#[test]
fn a_user_without_a_password_and_a_password_flag_are_refused() {
    let addr = closed_port_addr();
    let out = cli_at(&addr, &["--user", "app", "ping"].map(OsStr::new));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("SESSIOND_PASSWORD"),
        "{}",
        stderr(&out)
    );
    // A password on the command line would be in every user's process list.
    let out = cli_at(
        &addr,
        &["--user", "app", "--password", "secret", "ping"].map(OsStr::new),
    );
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--password"), "{}", stderr(&out));
}

/// Runs the CLI against `addr` with `args` until the TLS listener, which the harness does
/// not wait for, accepts.
fn cli_tls(addr: &str, args: &[&str]) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = cli_at(addr, &args.iter().map(OsStr::new).collect::<Vec<_>>());
        let refused = stderr(&out).contains("refused");
        if !refused || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn tls_with_the_ca_works_and_another_ca_is_refused() {
    let certs = TestCerts::new("cli test CA");
    let (_daemon, tls_addr) = certs.daemon(false, "");
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let out = cli_tls(&tls_addr, &["--tls", "--cacert", ca, "ping"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "PONG\n");

    let other = TestCerts::new("another CA");
    let other_ca = other.ca();
    let out = cli_tls(
        &tls_addr,
        &["--tls", "--cacert", other_ca.to_str().unwrap(), "ping"],
    );
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));

    let out = cli_tls(
        &tls_addr,
        &[
            "--tls",
            "--cacert",
            ca,
            "--server-name",
            "sessiond.example",
            "ping",
        ],
    );
    assert_exit(&out, 2);

    // --tls needs a CA to verify the server with; --cacert alone does not turn TLS on.
    let out = cli_at(&tls_addr, &["--tls", "ping"].map(OsStr::new));
    assert_exit(&out, 2);
    let out = cli_at(&tls_addr, &["--cacert", ca, "ping"].map(OsStr::new));
    assert_exit(&out, 2);
}

#[test]
fn mutual_tls_with_a_client_certificate_and_credentials() {
    let certs = TestCerts::new("cli test CA");
    let users = TestUsers::standard();
    let (_daemon, tls_addr) = certs.daemon(true, users.config());
    let (ca, cert, key) = (certs.ca(), certs.client_cert(), certs.client_key());
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, ADMIN_PASSWORD).unwrap();
    let file = file.to_str().unwrap();
    let out = cli_tls(
        &tls_addr,
        &[
            "--tls",
            "--cacert",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "--user",
            "admin",
            "--password-file",
            file,
            "stats",
        ],
    );
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("entries "), "{}", stdout(&out));

    let out = cli_tls(
        &tls_addr,
        &[
            "--tls",
            "--cacert",
            ca,
            "--user",
            "admin",
            "--password-file",
            file,
            "stats",
        ],
    );
    assert_exit(&out, 2);
}

/// The keys `sessiond-cli sessions OWNER` lists, in its order.
#[track_caller]
fn listed_keys(out: &Output) -> Vec<String> {
    assert_exit(out, 0);
    stdout(out)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(
                fields.len(),
                6,
                "KEY VERSION CREATED LAST_ACCESS TTL DEADLINE: {line}"
            );
            fields[0].to_string()
        })
        .collect()
}

#[test]
fn owner_sessions_are_listed_rotated_and_ended() {
    let daemon = Daemon::start();
    let bind = ["--ttl", "30m", "--owner", "alice"];
    for key in ["s:1", "s:2"] {
        assert_exit(&cli(&daemon, &[&["set", key, "v"][..], &bind].concat()), 0);
    }
    let out = cli(
        &daemon,
        &[
            "set",
            "s:3",
            "v",
            "--ttl",
            "30m",
            "--owner",
            "alice",
            "--lifetime",
            "1h",
        ],
    );
    assert_exit(&out, 0);
    let mut keys = listed_keys(&cli(&daemon, &["sessions", "alice"]));
    keys.sort();
    assert_eq!(keys, ["s:1", "s:2", "s:3"]);
    let listing = stdout(&cli(&daemon, &["sessions", "alice"])).to_string();
    let deadline = |key: &str| {
        let line = listing
            .lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap();
        line.rsplit(' ').next().unwrap().to_string()
    };
    assert_eq!(deadline("s:1"), "-");
    assert!(deadline("s:3").parse::<u64>().is_ok());

    // A limit of 3 refusing the fourth: OWNER_LIMIT, exit 1; with --end-lru, the least
    // recently used one ends instead.
    let limited = ["--owner-limit", "3"];
    let out = cli(
        &daemon,
        &[&["set", "s:4", "v"][..], &bind, &limited].concat(),
    );
    assert_exit(&out, 1);
    assert!(stderr(&out).starts_with("OWNER_LIMIT"), "{}", stderr(&out));
    let out = cli(
        &daemon,
        &[&["set", "s:4", "v"][..], &bind, &limited, &["--end-lru"]].concat(),
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).lines().nth(1), Some("ended 1"));
    assert_eq!(listed_keys(&cli(&daemon, &["sessions", "alice"])).len(), 3);

    // Rotation: the old key is gone, the new one is still alice's; a taken new key or a
    // missing old one exits 1.
    let out = cli(&daemon, &["rotate", "s:4", "s:5"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).starts_with("version "));
    assert_exit(&cli(&daemon, &["get", "s:4"]), 1);
    assert!(listed_keys(&cli(&daemon, &["sessions", "alice"])).contains(&"s:5".to_string()));
    let out = cli(&daemon, &["rotate", "s:4", "s:6"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).starts_with("NOT_FOUND"), "{}", stderr(&out));
    assert_exit(&cli(&daemon, &["set", "taken", "x", "--ttl", "1m"]), 0);
    let out = cli(&daemon, &["rotate", "s:5", "taken"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).starts_with("EXISTS"), "{}", stderr(&out));

    // End all but s:5, then all.
    let out = cli(&daemon, &["end-all", "alice", "--except", "s:5"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "ended 2\n");
    assert_eq!(listed_keys(&cli(&daemon, &["sessions", "alice"])), ["s:5"]);
    assert_eq!(stdout(&cli(&daemon, &["end-all", "alice"])), "ended 1\n");
    assert_eq!(
        listed_keys(&cli(&daemon, &["sessions", "alice"])),
        Vec::<String>::new()
    );
}

#[test]
fn owner_options_are_checked_before_sending() {
    let daemon = Daemon::start();
    for args in [
        &["set", "k", "v", "--ttl", "1m", "--owner-limit", "2"][..],
        &["set", "k", "v", "--ttl", "1m", "--owner", "a", "--end-lru"],
        &[
            "set",
            "k",
            "v",
            "--ttl",
            "1m",
            "--owner",
            "a",
            "--owner-limit",
            "0",
        ],
        &["rotate", "a"],
        &["sessions"],
    ] {
        assert_exit(&cli(&daemon, args), 2);
    }
    let long = "o".repeat(257);
    let out = cli(&daemon, &["sessions", &long]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("owner"), "{}", stderr(&out));
}
