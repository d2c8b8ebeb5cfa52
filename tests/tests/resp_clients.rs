//! Real Redis clients that we did not write, against the real daemon's RESP listener:
//! `redis-cli` (commands, RESP3, and its interactive start-up, which sends `COMMAND DOCS`),
//! `redis-benchmark` (`-t set,get` without errors; every other default test either passes
//! or stops at a clean "unknown command" error, never a hang or a dropped connection), and
//! Flask-Session 0.8 on redis-py 5 (RESP2) and redis-py 8 (RESP3), through the pytest files
//! in `tests/python/`.
//!
//! The clients are installed by `.ci/run`: `apt-get install redis-tools` and
//! `tests/python/setup-venvs.sh` (which builds `target/pyenv/redis5` and
//! `target/pyenv/redis8`). A missing client fails its test with that hint, unless
//! `SESSIOND_TESTS_ALLOW_MISSING=1`, which skips it instead.

use std::path::Path;
use std::process::Command;

use sessiond_tests::clients::{self, assert_success, run_client as run, PytestTarget};
use sessiond_tests::{Daemon, Finished};

fn daemon() -> Daemon {
    Daemon::start_with_args("", &["--resp-listen", "127.0.0.1:0"])
}

/// The path of `name`, one of the programs of Debian's redis-tools.
fn tool(name: &str) -> Option<std::path::PathBuf> {
    clients::tool(name, "apt-get install -y redis-tools")
}

/// `redis-cli -h HOST -p PORT` for the daemon, plus `args`.
fn redis_cli(cli: &Path, daemon: &Daemon, args: &[&str]) -> Command {
    let addr = daemon.resp_addr();
    let mut command = Command::new(cli);
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args);
    command
}

fn cli_output(cli: &Path, daemon: &Daemon, args: &[&str]) -> String {
    let out = run(redis_cli(cli, daemon, args), b"");
    assert_success(&out, &format!("redis-cli {args:?}"));
    assert!(
        out.stderr.is_empty(),
        "redis-cli wrote to stderr: {}",
        out.stderr
    );
    out.stdout
}

#[test]
fn redis_cli_commands() {
    let Some(cli) = tool("redis-cli") else { return };
    let daemon = daemon();
    assert_eq!(
        cli_output(&cli, &daemon, &["set", "greeting", "hi"]),
        "OK\n"
    );
    assert_eq!(cli_output(&cli, &daemon, &["get", "greeting"]), "hi\n");
    assert_eq!(
        cli_output(&cli, &daemon, &["set", "sess:1", "v", "ex", "90"]),
        "OK\n"
    );
    // TTL rounds to the nearest second, so a loaded machine that takes over half a second
    // between the commands sees one second less.
    let ttl = |key: &str| cli_output(&cli, &daemon, &["ttl", key]);
    assert!(["90\n", "89\n"].contains(&ttl("sess:1").as_str()));
    // No TTL given: the default (a day).
    assert!(["86400\n", "86399\n"].contains(&ttl("greeting").as_str()));
    let info = cli_output(&cli, &daemon, &["info"]);
    assert!(info.contains("redis_version:"), "{info}");
    assert!(info.contains("# Keyspace"), "{info}");
    // SCAN, and redis-cli's own --scan, which loops over SCAN.
    let scan = cli_output(
        &cli,
        &daemon,
        &["scan", "0", "match", "sess:*", "count", "1000"],
    );
    assert!(scan.lines().any(|l| l == "sess:1"), "{scan}");
    let keys = cli_output(&cli, &daemon, &["--scan", "--pattern", "*"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["greeting", "sess:1"]);
    assert_eq!(cli_output(&cli, &daemon, &["dbsize"]), "2\n");
    assert_eq!(
        cli_output(&cli, &daemon, &["del", "greeting", "nope"]),
        "1\n"
    );
    // An unknown command: redis-cli prints Redis's error and exits 0, as with Redis.
    let out = cli_output(&cli, &daemon, &["lpush", "l", "x"]);
    assert!(out.starts_with("ERR unknown command 'lpush'"), "{out}");
}

#[test]
fn redis_cli_resp3() {
    let Some(cli) = tool("redis-cli") else { return };
    let daemon = daemon();
    assert_eq!(cli_output(&cli, &daemon, &["-3", "set", "k", "v"]), "OK\n");
    assert_eq!(cli_output(&cli, &daemon, &["-3", "get", "k"]), "v\n");
    let hello = cli_output(&cli, &daemon, &["-3", "hello", "3"]);
    // redis-cli prints a RESP3 map one "key value" pair per line.
    assert!(hello.contains("proto 3\n"), "{hello}");
}

/// redis-cli started without a command is interactive: it first sends `COMMAND DOCS` and
/// builds its help and hints from the reply (falling back to a built-in table on an
/// error). Its stdin here is a pipe, which takes the same start-up path as a terminal.
#[test]
fn redis_cli_interactive_start_up() {
    let Some(cli) = tool("redis-cli") else { return };
    let daemon = daemon();
    let script = b"set sess:2 alice EX 120\nget sess:2\nttl sess:2\nhelp getex\nquit\n";
    let out = run(redis_cli(&cli, &daemon, &[]), script);
    assert_success(&out, "interactive redis-cli");
    assert!(
        out.stderr.is_empty(),
        "redis-cli complained: {}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..3], ["OK", "alice", "120"], "{}", out.stdout);
    // `help` is answered from our COMMAND DOCS: the summary and arguments are ours.
    assert!(
        out.stdout.contains("PERSIST keeps the TTL"),
        "help did not come from COMMAND DOCS:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("EX seconds"), "{}", out.stdout);
}

/// Runs redis-benchmark against the daemon with `args` (plus `-q`).
fn benchmark(tool: &Path, daemon: &Daemon, args: &[&str]) -> Finished {
    let addr = daemon.resp_addr();
    let mut command = Command::new(tool);
    command
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-q",
        ])
        .args(args);
    run(command, b"")
}

#[test]
fn redis_benchmark_set_get_has_no_errors() {
    let Some(bench) = tool("redis-benchmark") else {
        return;
    };
    let mut daemon = daemon();
    for extra in [&[][..], &["-P", "16"][..]] {
        let mut args = vec![
            "-t", "set,get", "-n", "5000", "-c", "20", "-d", "1024", "-r", "1000",
        ];
        args.extend_from_slice(extra);
        let out = benchmark(&bench, &daemon, &args);
        assert_success(&out, &format!("redis-benchmark {args:?}"));
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains("rror"),
            "redis-benchmark reported errors:\n{all}"
        );
        assert!(all.contains("SET:") && all.contains("GET:"), "{all}");
    }
    // Every SET was stored (as the native STATS see it).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stats = rt.block_on(daemon.stats());
    let stored: u64 = stats
        .get("set_stored")
        .expect("set_stored")
        .parse()
        .unwrap();
    assert!(stored >= 10_000, "set_stored = {stored}");
    daemon.assert_running();
}

/// redis-benchmark stops at the first error reply with "Error from server: ...": the
/// default tests sessiond does not support end there, cleanly, and each supported one
/// passes. None may hang or find its connection dropped.
#[test]
fn redis_benchmark_default_tests_pass_or_fail_cleanly() {
    let Some(bench) = tool("redis-benchmark") else {
        return;
    };
    let mut daemon = daemon();
    let supported = ["ping_inline", "ping_mbulk", "set", "get", "mset"];
    let unsupported = [
        "incr", "lpush", "rpush", "lpop", "rpop", "sadd", "hset", "spop", "zadd", "zpopmin",
        "lrange",
    ];
    for test in supported.iter().chain(&unsupported) {
        let out = benchmark(&bench, &daemon, &["-t", test, "-n", "1000", "-c", "5"]);
        let all = format!("{}{}", out.stdout, out.stderr);
        if supported.contains(test) {
            assert_success(&out, &format!("redis-benchmark -t {test}"));
            assert!(!all.contains("rror"), "{test}: {all}");
        } else {
            assert!(
                all.contains("Error from server: ERR unknown command"),
                "{test} did not end with a clean unknown-command error:\n{all}"
            );
            assert!(
                !all.contains("Connection reset") && !all.contains("Server closed"),
                "{test}: {all}"
            );
        }
    }
    daemon.assert_running();
}

/// Runs the pytest files in `tests/python` with the environment's redis-py.
fn pytest(flavour: &str) {
    pytest_against(flavour, &daemon(), &[]);
}

/// Runs the pytest files against `daemon`, with `env` added (the credentials).
fn pytest_against(flavour: &str, daemon: &Daemon, env: &[(&str, &str)]) {
    let target = PytestTarget {
        resp: daemon.resp_addr(),
        native: Some(daemon.addr()),
    };
    if clients::pytest(flavour, target, &["."], env) {
        daemon.assert_no_panic();
    }
}

#[test]
fn flask_session_with_redis_py_5() {
    pytest("redis5");
}

#[test]
fn flask_session_with_redis_py_8() {
    pytest("redis8");
}

// ---------------------------------------------------------------------------------------------
// With authentication: the same clients, logging in as users of [auth]
// ---------------------------------------------------------------------------------------------

const APP_PASSWORD: &str = "app-pw-for-real-clients";
const ADMIN_PASSWORD: &str = "admin-pw-for-real-clients";

/// A daemon with an `app` and an `admin` user (passwords from the environment), and its data
/// directory.
fn daemon_with_users() -> (Daemon, tempfile::TempDir) {
    let config = "[[auth.users]]\nname = \"app\"\nrole = \"app\"\npassword_env = \"RC_APP_PW\"\n\
                  [[auth.users]]\nname = \"admin\"\nrole = \"admin\"\npassword_env = \"RC_ADMIN_PW\"\n";
    let data = tempfile::tempdir().expect("temporary directory");
    let daemon = Daemon::start_in_with_env(
        config,
        &data.path().join("data"),
        &["--resp-listen", "127.0.0.1:0"],
        &[("RC_APP_PW", APP_PASSWORD), ("RC_ADMIN_PW", ADMIN_PASSWORD)],
    );
    (daemon, data)
}

/// `redis-cli --user app --pass ...`: the app user reads and writes, is refused SCAN with
/// Redis's NOPERM, and a wrong password is Redis's WRONGPASS.
#[test]
fn redis_cli_with_user_and_password() {
    let Some(cli) = tool("redis-cli") else { return };
    let (daemon, _data) = daemon_with_users();
    let as_user = |user: &str, password: &str, args: &[&str]| {
        let mut all = vec!["--no-auth-warning", "--user", user, "--pass", password];
        all.extend_from_slice(args);
        run(redis_cli(&cli, &daemon, &all), b"")
    };
    let out = as_user("app", APP_PASSWORD, &["set", "cli:s1", "v"]);
    assert_success(&out, "redis-cli --user app set");
    assert_eq!(out.stdout, "OK\n");
    let out = as_user("app", APP_PASSWORD, &["get", "cli:s1"]);
    assert_eq!(out.stdout, "v\n", "{}", out.stderr);
    let out = as_user("app", APP_PASSWORD, &["scan", "0"]);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("NOPERM User app has no permissions to run the 'scan' command"),
        "{said}"
    );
    let out = as_user("admin", ADMIN_PASSWORD, &["scan", "0"]);
    assert!(out.stdout.contains("cli:s1"), "{}", out.stdout);
    let out = as_user("app", "wrong", &["get", "cli:s1"]);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("WRONGPASS"), "{said}");
    assert!(
        !said.contains("cli:s1") || said.contains("NOAUTH"),
        "{said}"
    );
    daemon.assert_no_panic();
}

/// The Python suite with authentication on: Flask-Session logs in as `app` with redis-py's
/// `username=`/`password=`, the tests that inspect the keyspace as `admin`, and
/// test_auth.py checks the roles as redis-py reports them.
fn pytest_with_users(flavour: &str) {
    let (daemon, _data) = daemon_with_users();
    pytest_against(
        flavour,
        &daemon,
        &[
            ("SESSIOND_RESP_APP_USER", "app"),
            ("SESSIOND_RESP_APP_PASSWORD", APP_PASSWORD),
            ("SESSIOND_RESP_ADMIN_USER", "admin"),
            ("SESSIOND_RESP_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    );
}

#[test]
fn flask_session_as_an_app_user_with_redis_py_5() {
    pytest_with_users("redis5");
}

#[test]
fn flask_session_as_an_app_user_with_redis_py_8() {
    pytest_with_users("redis8");
}
