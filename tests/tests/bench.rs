//! End-to-end tests of `sessiond-bench`: the real binary against a real sessiond, and its
//! RESP and memcached drivers against real `redis-server` and `memcached` processes.
//!
//! Each run is short and reported with `--json`; the tests check that nothing failed and
//! that the counts add up, and, where the server can tell, that the hits and misses the
//! benchmark counted are the ones the server saw. Nothing here asserts on speed.
//!
//! With `--addr NAME=ADDR,...` against three real sessiond nodes: keys are placed as
//! `sessiond-client` places them (by node name), each node's share is written to that node
//! only, a later run finds every key where the first put it, the per-node results add up to
//! the aggregate and match each server's own counters, and what cannot work over several
//! nodes is refused.
//!
//! With `--rate`: against each of the three real servers the open-loop schedule is kept (the
//! achieved rate is the requested one, within a few percent), and a server stopped in the
//! middle of a run shows in the latency of every request that fell due meanwhile, not only
//! of the few that were in flight.
//!
//! `sessiond-floor`, the load generator's floor server (canned replies, no store) that
//! `scripts/bench-compare cost` runs beside sessiond, with epoll and with io_uring: its
//! figures are only worth comparing if it answers every request the load generator sends,
//! pipelined or not, over many connections, as sessiond would; and like any server here, a
//! frame it cannot read closes that connection only. io_uring can be missing or forbidden
//! (Docker's default seccomp profile refuses it): the floor server must then say so and exit
//! 2 rather than serve.
//!
//! `redis-server` and `memcached` must be installed (`apt-get install -y redis-server
//! memcached`). Without them these tests fail, saying what to install, unless
//! `SESSIOND_TESTS_ALLOW_MISSING=1` is set, in which case they are skipped with a note.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use sessiond_proto::command::{Auth, Get, GetReply, Set, SetMode, Touch};
use sessiond_proto::{ClientCodec, Request, ResponseFrame, Status};
use sessiond_tests::certs::{free_port, TestCerts};
use sessiond_tests::users::{TestUsers, ADMIN_PASSWORD, MONITOR_PASSWORD};
use sessiond_tests::{binary, run_to_completion, Daemon, Finished};
use tokio_util::codec::{Decoder, Encoder};

/// Bounds a whole benchmark run; it does not measure anything.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Every operation kind, so each driver's encoding of each is exercised.
const ALL_KINDS: &str = "get=40,read=10,set=30,del=10,touch=10";

/// Runs `sessiond-bench --json` with `args` and returns its output.
fn bench(args: &[&str]) -> Finished {
    let mut argv = vec!["--json"];
    argv.extend_from_slice(args);
    run_to_completion(&binary("sessiond-bench"), &argv, RUN_TIMEOUT)
}

/// The JSON report of a run that must have succeeded.
#[track_caller]
fn report(out: &Finished) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "sessiond-bench failed; stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    parse(out)
}

#[track_caller]
fn parse(out: &Finished) -> Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}\nstderr: {}",
            out.stdout, out.stderr
        )
    })
}

#[track_caller]
fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not a count in {v}"))
}

/// Asserts that the per-operation counts add up to the totals, and returns the kinds.
#[track_caller]
fn assert_counts_add_up(report: &Value) -> Vec<String> {
    let by_op = report["by_op"]
        .as_object()
        .unwrap_or_else(|| panic!("no by_op object in {report}"));
    let (mut count, mut hits, mut misses, mut errors) = (0, 0, 0, 0);
    for (name, op) in by_op {
        assert_eq!(
            num(op, "count"),
            num(op, "hits") + num(op, "misses") + num(op, "errors"),
            "{name}: count is not hits + misses + errors in {report}"
        );
        count += num(op, "count");
        hits += num(op, "hits");
        misses += num(op, "misses");
        errors += num(op, "errors");
    }
    assert_eq!(num(report, "ops"), count, "ops vs by_op counts in {report}");
    assert_eq!(num(report, "hits"), hits, "hits in {report}");
    assert_eq!(num(report, "misses"), misses, "misses in {report}");
    assert_eq!(
        num(report, "errors"),
        errors + num(report, "connection_errors"),
        "errors in {report}"
    );
    by_op.keys().cloned().collect()
}

#[track_caller]
fn assert_no_errors(report: &Value) {
    assert_eq!(num(report, "errors"), 0, "errors in {report}");
    assert_eq!(num(report, "unmeasured_errors"), 0, "errors in {report}");
    assert_eq!(report["first_errors"], Value::Array(vec![]), "{report}");
}

/// The same checks for every target: a mix of every kind with pipelining on several
/// connections, then a load of 300 keys, then reads that must all hit. `extra` flags go
/// to every run (TLS, credentials).
fn check_driver(target: &str, addr: &str, extra: &[&str]) {
    let bench = |args: &[&str]| bench(&[args, extra].concat());
    let mixed = report(&bench(&[
        "--target",
        target,
        "--addr",
        addr,
        "--ops",
        "2000",
        "--connections",
        "4",
        "--pipeline",
        "8",
        "--warmup",
        "0s",
        "--mix",
        ALL_KINDS,
    ]));
    assert_no_errors(&mixed);
    assert_eq!(num(&mixed, "ops"), 2000, "{mixed}");
    assert_eq!(
        assert_counts_add_up(&mixed),
        ["del", "get", "read", "set", "touch"]
    );
    assert_eq!(mixed["target"], target);
    // Only sets can create keys, and every set is stored.
    assert_eq!(
        num(&mixed["by_op"]["set"], "hits"),
        num(&mixed["by_op"]["set"], "count")
    );

    let loaded = report(&bench(&[
        "--target",
        target,
        "--addr",
        addr,
        "--load",
        "300",
        "--keys",
        "300",
        "--connections",
        "3",
        "--pipeline",
        "4",
    ]));
    assert_no_errors(&loaded);
    assert_eq!(loaded["mode"], "load");
    assert_eq!(assert_counts_add_up(&loaded), ["set"]);
    assert_eq!(num(&loaded["by_op"]["set"], "hits"), 300, "{loaded}");

    // Every one of the 300 keys exists now, so every read and touch must hit.
    let reads = report(&bench(&[
        "--target",
        target,
        "--addr",
        addr,
        "--keys",
        "300",
        "--ops",
        "1000",
        "--connections",
        "2",
        "--pipeline",
        "16",
        "--warmup",
        "0s",
        "--mix",
        "get=2,read=1,touch=1",
    ]));
    assert_no_errors(&reads);
    assert_counts_add_up(&reads);
    assert_eq!(num(&reads, "hits"), 1000, "{reads}");
}

/// The script and transaction kinds, RESP only: phpredis's lock release (`EVAL`) and a
/// `MULTI` of three commands, mixed with sets so that some locks and sessions exist.
fn check_scripts_and_transactions(addr: &str) {
    let mixed = report(&bench(&[
        "--target",
        "resp",
        "--addr",
        addr,
        "--keys",
        "200",
        "--ops",
        "2000",
        "--connections",
        "4",
        "--pipeline",
        "8",
        "--warmup",
        "0s",
        "--mix",
        "unlock=2,multi=2,set=1",
    ]));
    assert_no_errors(&mixed);
    assert_eq!(num(&mixed, "ops"), 2000, "{mixed}");
    assert_eq!(assert_counts_add_up(&mixed), ["multi", "set", "unlock"]);
    // The lock holds the bench's value as its token, so a set key is released; every
    // transaction that found its session counts as a hit.
    assert!(num(&mixed["by_op"]["unlock"], "hits") > 0, "{mixed}");
    assert!(num(&mixed["by_op"]["multi"], "hits") > 0, "{mixed}");
    for native_or_memcached in ["native", "memcached"] {
        let refused = bench(&[
            "--target",
            native_or_memcached,
            "--addr",
            addr,
            "--mix",
            "unlock=1",
        ]);
        assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    }
}

#[test]
fn scripts_and_transactions_against_sessiond_and_redis_server() {
    let daemon = Daemon::start_with_args("", &["--resp-listen", "127.0.0.1:0"]);
    check_scripts_and_transactions(&daemon.resp_addr().to_string());
    daemon.assert_no_panic();
    let Some(redis) = redis_server() else {
        return;
    };
    check_scripts_and_transactions(&redis.addr);
}

/// The value of the numeric stat `name` in the server's `STATS`.
async fn server_stat(daemon: &Daemon, name: &str) -> u64 {
    stat(&daemon.connect().await.stats().await, name)
}

/// The value of the numeric stat `name` in `stats`.
fn stat(stats: &sessiond_proto::command::StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric `{name}` in {stats:?}"))
}

#[tokio::test]
async fn native_mix_counts_add_up_and_match_the_servers_counters() {
    let daemon = Daemon::start();
    let addr = daemon.addr().to_string();
    let out = bench(&[
        "--addr",
        &addr,
        "--ops",
        "2000",
        "--connections",
        "4",
        "--pipeline",
        "8",
        "--warmup",
        "0s",
    ]);
    let report = report(&out);
    assert_no_errors(&report);
    assert_eq!(num(&report, "ops"), 2000, "{report}");
    assert_eq!(num(&report, "ops_requested"), 2000, "{report}");
    assert_eq!(assert_counts_add_up(&report), ["del", "get", "set"]);
    assert!(report["ops_per_sec"].as_f64().is_some_and(|r| r > 0.0));
    for field in ["p50", "p99", "p999", "max"] {
        assert!(
            report["latency_us"][field]
                .as_f64()
                .is_some_and(|v| v > 0.0),
            "latency_us.{field} in {report}"
        );
    }

    // With no warm-up every request was measured, so the server saw exactly these.
    let get = &report["by_op"]["get"];
    assert_eq!(server_stat(&daemon, "get_hits").await, num(get, "hits"));
    assert_eq!(server_stat(&daemon, "get_misses").await, num(get, "misses"));
    let set = &report["by_op"]["set"];
    assert_eq!(server_stat(&daemon, "set_stored").await, num(set, "count"));
    let del = &report["by_op"]["del"];
    assert_eq!(server_stat(&daemon, "del_deleted").await, num(del, "hits"));
    assert_eq!(server_stat(&daemon, "del_misses").await, num(del, "misses"));
    daemon.assert_no_panic();
}

#[test]
fn native_driver_handles_every_operation_kind() {
    let daemon = Daemon::start();
    check_driver("native", &daemon.addr().to_string(), &[]);
    daemon.assert_no_panic();
}

#[tokio::test]
async fn native_load_writes_each_key_once() {
    let daemon = Daemon::start();
    let report = report(&bench(&[
        "--addr",
        &daemon.addr().to_string(),
        "--load",
        "500",
        "--connections",
        "4",
        "--pipeline",
        "8",
    ]));
    assert_no_errors(&report);
    assert_eq!(num(&report, "ops"), 500);
    assert_eq!(server_stat(&daemon, "entries").await, 500);
    assert_eq!(server_stat(&daemon, "set_stored").await, 500);
}

#[test]
fn misses_are_not_errors() {
    let daemon = Daemon::start();
    let report = report(&bench(&[
        "--addr",
        &daemon.addr().to_string(),
        "--ops",
        "300",
        "--connections",
        "2",
        "--warmup",
        "0s",
        "--mix",
        "get=1,read=1,touch=1,del=1",
    ]));
    assert_no_errors(&report);
    assert_counts_add_up(&report);
    assert_eq!(num(&report, "misses"), 300, "{report}");
}

#[test]
fn server_errors_are_counted_printed_and_set_exit_status_1() {
    let daemon = Daemon::start_with_config("[limits]\nmax_value_bytes = 100\n");
    let out = bench(&[
        "--addr",
        &daemon.addr().to_string(),
        "--ops",
        "50",
        "--connections",
        "2",
        "--pipeline",
        "4",
        "--warmup",
        "0s",
        "--value-size",
        "200",
        "--mix",
        "set=1",
    ]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", out.stderr);
    let report = parse(&out);
    assert_counts_add_up(&report);
    // TOO_LARGE is not fatal: every request was answered, and every answer was an error.
    assert_eq!(num(&report, "ops"), 50, "{report}");
    assert_eq!(num(&report, "errors"), 50, "{report}");
    assert_eq!(num(&report, "connection_errors"), 0, "{report}");
    let first = report["first_errors"].as_array().expect("first_errors");
    assert!(!first.is_empty() && first.len() <= 5, "{report}");
    assert!(first[0].as_str().unwrap().contains("TOO_LARGE"), "{report}");
    assert!(out.stderr.contains("TOO_LARGE"), "stderr: {}", out.stderr);
}

#[test]
fn timed_run_with_prefill_and_warm_up() {
    let daemon = Daemon::start();
    let report = report(&bench(&[
        "--addr",
        &daemon.addr().to_string(),
        "--keys",
        "1000",
        "--prefill",
        "--warmup",
        "200ms",
        "--duration",
        "300ms",
        "--connections",
        "3",
        "--pipeline",
        "2",
    ]));
    assert_no_errors(&report);
    assert_counts_add_up(&report);
    assert_eq!(num(&report, "prefilled"), 1000, "{report}");
    assert!(num(&report, "ops") > 0, "{report}");
    assert_eq!(report["ops_requested"], Value::Null);
}

#[test]
fn connection_refused_exits_2() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let out = bench(&["--addr", &addr, "--ops", "10"]);
    assert_eq!(out.status.code(), Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("cannot connect"), "{}", out.stderr);
}

/// A `redis-server` without persistence, or `None` when it is missing and that is allowed.
fn redis_server() -> Option<ExternalServer> {
    ExternalServer::start("redis-server", "redis-server", |port, dir| {
        vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
        ]
    })
}

#[test]
fn resp_driver_against_redis_server() {
    let Some(redis) = redis_server() else {
        return;
    };
    check_driver("resp", &redis.addr, &[]);
}

#[test]
fn memcached_driver_against_memcached() {
    let Some(memcached) = memcached() else {
        return;
    };
    check_driver("memcached", &memcached.addr, &[]);
}

/// A `memcached` with 64 MiB, or `None` when it is missing and that is allowed.
fn memcached() -> Option<ExternalServer> {
    ExternalServer::start("memcached", "memcached", |port, _| {
        let mut args: Vec<String> = ["-l", "127.0.0.1", "-U", "0", "-m", "64", "-p"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(port.to_string());
        // memcached refuses to run as root unless told which user to run as.
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            args.extend(["-u".to_string(), "root".to_string()]);
        }
        args
    })
}

/// Runs 2 s at `rate` requests per second over 4 connections against `addr` and checks that
/// the schedule was kept: every request answered without error, and the requests measured
/// and the rate achieved within 5 % of what was scheduled.
fn check_rate(target: &str, addr: &str) {
    let rate = 2000.0;
    let run = report(&bench(&[
        "--target",
        target,
        "--addr",
        addr,
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--connections",
        "4",
        "--keys",
        "1000",
        "--mix",
        ALL_KINDS,
    ]));
    assert_no_errors(&run);
    assert_counts_add_up(&run);
    assert_eq!(run["rate"].as_f64(), Some(rate), "{run}");
    let achieved = run["ops_per_sec"].as_f64().unwrap();
    assert!(
        (achieved - rate).abs() <= 0.05 * rate,
        "{target}: achieved {achieved} requests/s of {rate}: {run}"
    );
    let ops = num(&run, "ops") as f64;
    assert!(
        (ops - 2.0 * rate).abs() <= 0.05 * 2.0 * rate,
        "{target}: {ops} requests in 2 s at {rate}/s: {run}"
    );
    // Latency counts from the due time, which is never after the send.
    let lag = &run["send_lag_us"];
    assert!(
        lag["p50"].as_f64().unwrap() <= run["latency_us"]["p50"].as_f64().unwrap(),
        "{run}"
    );
}

#[test]
fn rate_keeps_its_schedule_against_sessiond_redis_and_memcached() {
    let daemon = Daemon::start();
    check_rate("native", &daemon.addr().to_string());
    let Some(redis) = redis_server() else {
        return;
    };
    check_rate("resp", &redis.addr);
    let Some(memcached) = memcached() else {
        return;
    };
    check_rate("memcached", &memcached.addr);
}

/// The point of the open loop: a server that stops answering for 600 ms delays every request
/// that fell due in those 600 ms (about 600 of them at 1000/s, a fifth of the run), so p99
/// shows the stall. A closed loop would have sent nothing meanwhile and counted only the two
/// requests in flight, leaving p99 untouched.
#[test]
fn rate_counts_a_stall_against_every_request_due_during_it() {
    let daemon = Daemon::start();
    let addr = daemon.addr().to_string();
    let run = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            bench(&[
                "--addr",
                &addr,
                "--rate",
                "1000",
                "--duration",
                "3s",
                "--warmup",
                "0s",
                "--connections",
                "2",
                "--keys",
                "1000",
            ])
        });
        std::thread::sleep(Duration::from_millis(1200));
        daemon.signal(libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(600));
        daemon.signal(libc::SIGCONT);
        run.join().unwrap()
    });
    let run = report(&run);
    assert_no_errors(&run);
    assert!(
        run["latency_us"]["max"].as_f64().unwrap() >= 500_000.0,
        "the stall is missing: {run}"
    );
    // About 600 of 3000 requests were due during the stall, waiting 0 to 600 ms for it.
    assert!(
        run["latency_us"]["p99"].as_f64().unwrap() >= 200_000.0,
        "p99 does not show the stall: {run}"
    );
    // They were sent late only because the window was full, and that is reported too.
    assert!(
        run["send_lag_us"]["max"].as_f64().unwrap() >= 400_000.0,
        "{run}"
    );
}

/// A `redis-server` or `memcached` process on a free loopback port, killed on drop.
struct ExternalServer {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl ExternalServer {
    /// Starts `program` with the arguments `args(port, dir)` builds, or returns `None` (the
    /// test is skipped) if it is not installed and SESSIOND_TESTS_ALLOW_MISSING=1.
    fn start(
        program: &str,
        package: &str,
        args: impl Fn(u16, &std::path::Path) -> Vec<String>,
    ) -> Option<ExternalServer> {
        let Some(path) = find_in_path(program) else {
            if std::env::var("SESSIOND_TESTS_ALLOW_MISSING").as_deref() == Ok("1") {
                eprintln!(
                    "SKIPPED: {program} is not installed (SESSIOND_TESTS_ALLOW_MISSING=1); \
                     install it with `apt-get install -y {package}`"
                );
                return None;
            }
            panic!(
                "{program} is not installed, and this test drives a real one: install it with \
                 `apt-get install -y {package}` (or set SESSIOND_TESTS_ALLOW_MISSING=1 to skip)"
            );
        };
        // The port is found free and then released, so another process may take it first;
        // a server that cannot bind exits, and a new port is tried.
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            };
            let log_path = dir.path().join("server.log");
            let log = File::create(&log_path).unwrap();
            let mut child = Command::new(&path)
                .args(args(port, dir.path()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
            let addr = format!("127.0.0.1:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect(&addr).is_ok() {
                    return Some(ExternalServer {
                        child,
                        addr,
                        _dir: dir,
                    });
                }
                if child.try_wait().ok().flatten().is_some() || std::time::Instant::now() > deadline
                {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{program} did not start; its log:\n{last_log}");
    }
}

impl Drop for ExternalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The flags that make sessiond-bench connect with TLS to a server with `certs`'s
/// certificate and log in as `user`.
fn tls_and_user_flags(certs: &TestCerts, users: &TestUsers, user: &str) -> Vec<String> {
    let mut flags = vec!["--tls".to_string(), "--cacert".into()];
    flags.push(certs.ca().display().to_string());
    flags.extend(["--user".into(), user.into(), "--password-file".into()]);
    flags.push(users.password_file(user).display().to_string());
    flags
}

#[test]
fn native_driver_over_tls_with_credentials() {
    let (certs, users) = (TestCerts::new("bench CA"), TestUsers::standard());
    let (daemon, tls_addr) = certs.daemon(false, users.config());
    let flags = tls_and_user_flags(&certs, &users, "app");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    check_driver("native", &tls_addr, &flags);

    let run = report(&bench(
        &[&["--addr", &tls_addr, "--ops", "100"], &flags[..]].concat(),
    ));
    assert_eq!(run["tls"], true, "{run}");
    assert_eq!(run["user"], "app", "{run}");
    assert!(
        run["connects_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{run}"
    );
    daemon.assert_no_panic();
}

#[test]
fn resp_driver_over_tls_with_credentials() {
    let (certs, users) = (TestCerts::new("bench CA"), TestUsers::standard());
    let resp_tls = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[resp]\ntls_listen = \"{resp_tls}\"\n{}{}",
        certs.server_config(false),
        users.config()
    );
    let daemon = Daemon::start_with_config(&config);
    let flags = tls_and_user_flags(&certs, &users, "app");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    check_driver("resp", &resp_tls, &flags);
    daemon.assert_no_panic();
}

#[test]
fn wrong_credentials_or_a_foreign_ca_exit_2() {
    let (certs, users) = (TestCerts::new("bench CA"), TestUsers::standard());
    let (_daemon, tls_addr) = certs.daemon(false, users.config());
    // The monitor's password is not the app's.
    let mut flags = tls_and_user_flags(&certs, &users, "app");
    let last = flags.len() - 1;
    flags[last] = users.password_file("monitor").display().to_string();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let out = bench(&[&["--addr", &tls_addr, "--ops", "10"], &flags[..]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("AUTH"), "{}", out.stderr);
    assert!(!out.stderr.contains(MONITOR_PASSWORD), "{}", out.stderr);

    let other = TestCerts::new("another CA");
    let other_ca = other.ca().display().to_string();
    let out = bench(&[
        "--addr", &tls_addr, "--ops", "10", "--tls", "--cacert", &other_ca,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
}

#[tokio::test]
async fn reconnect_opens_a_new_tls_connection_for_every_request() {
    let (certs, users) = (TestCerts::new("bench CA"), TestUsers::standard());
    let (daemon, tls_addr) = certs.daemon(false, users.config());
    let before = admin_stat(&daemon, "connections_total").await;
    let flags = tls_and_user_flags(&certs, &users, "app");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let args = [
        "--addr",
        &tls_addr,
        "--ops",
        "60",
        "--connections",
        "3",
        "--warmup",
        "0s",
    ];
    let run = report(&bench(&[&args[..], &["--reconnect"], &flags[..]].concat()));
    assert_no_errors(&run);
    assert_eq!(num(&run, "ops"), 60, "{run}");
    assert_eq!(run["reconnect"], true, "{run}");
    // Three connections to start with, then one more for each request after each one's
    // first (and at most one more each at the end); the first STATS connection too.
    let opened = admin_stat(&daemon, "connections_total").await - before;
    assert!(
        (60..=65).contains(&opened),
        "{opened} connections for 60 requests"
    );

    let pipelined = bench(&[&args[..], &["--reconnect", "--pipeline", "4"]].concat());
    assert_eq!(pipelined.status.code(), Some(2), "{}", pipelined.stderr);
}

/// [`server_stat`] on a server that requires authentication, as the `admin` user.
async fn admin_stat(daemon: &Daemon, name: &str) -> u64 {
    let mut conn = daemon.connect().await;
    let auth = Auth {
        user: "admin".into(),
        password: ADMIN_PASSWORD.into(),
    };
    let reply = conn.exchange(&Request::Auth(auth)).await;
    assert_eq!(reply.status(), Some(Status::Ok), "{reply:?}");
    stat(&conn.stats().await, name)
}

/// `sessiond-0=ADDR,sessiond-1=ADDR,...` for `daemons`, the names in `order`.
fn node_list(daemons: &[Daemon], order: &[usize]) -> String {
    order
        .iter()
        .enumerate()
        .map(|(name, &d)| format!("sessiond-{name}={}", daemons[d].addr()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The per-node entries of `report`, in the order of `--addr`.
fn nodes(report: &Value) -> Vec<Value> {
    report["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes in {report}"))
        .clone()
}

#[tokio::test]
async fn load_places_each_key_on_its_node_and_a_mix_finds_it_there() {
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start()).collect();
    let list = node_list(&daemons, &[0, 1, 2]);
    let common = ["--connections", "2", "--pipeline", "8", "--keys", "3000"];
    let load = report(&bench(
        &[&["--addr", &list, "--load", "3000"][..], &common].concat(),
    ));
    assert_eq!(
        (num(&load, "ops"), num(&load, "errors")),
        (3000, 0),
        "{load}"
    );
    let per_node = nodes(&load);
    assert_eq!(per_node.len(), 3);
    let mut total = 0;
    for (i, node) in per_node.iter().enumerate() {
        assert_eq!(node["name"], format!("sessiond-{i}"));
        assert_eq!(node["addr"], daemons[i].addr().to_string());
        let keys = num(node, "keys");
        // Rendezvous hashing over three names: about a third each.
        assert!((800..1200).contains(&keys), "{node}");
        // Every key of the node's share written once, to that node and no other.
        assert_eq!(num(node, "ops"), keys, "{node}");
        assert_eq!(server_stat(&daemons[i], "entries").await, keys, "node {i}");
        total += keys;
    }
    assert_eq!(total, 3000);

    // A read-only mix finds every key on the node placement names for it: no misses.
    let reads = report(&bench(
        &[
            &[
                "--addr", &list, "--mix", "read=1", "--ops", "3000", "--warmup", "0s",
            ][..],
            &common,
        ]
        .concat(),
    ));
    assert_eq!(num(&reads, "misses"), 0, "{reads}");
    assert_eq!(num(&reads, "hits"), 3000, "{reads}");
    let per_node = nodes(&reads);
    let sum: u64 = per_node.iter().map(|n| num(n, "ops")).sum();
    assert_eq!(sum, 3000, "{reads}");
    // (Not every node need get some of a fixed count of requests: the first connections
    // may take them all. The timed run below has every node take part.)
    for (i, node) in per_node.iter().enumerate() {
        // Each node counted exactly the reads the report gives it (no warm-up).
        assert_eq!(
            server_stat(&daemons[i], "get_hits").await,
            num(node, "ops"),
            "node {i}"
        );
    }

    // Placement follows names, not addresses: with the names of the first two nodes
    // swapped between their addresses, every read of their keys goes to the node that
    // holds the other name's keys and misses, while the third node's reads all hit.
    // For a time rather than a count of requests: the count is shared by every connection,
    // and the first node's could take all of a small one before the others start.
    let swapped = node_list(&daemons, &[1, 0, 2]);
    let swapped = report(&bench(
        &[
            &[
                "--addr",
                &swapped,
                "--mix",
                "read=1",
                "--duration",
                "1s",
                "--warmup",
                "0s",
            ][..],
            &common,
        ]
        .concat(),
    ));
    let per_node = nodes(&swapped);
    let (first_two, third) = (
        num(&per_node[0], "ops") + num(&per_node[1], "ops"),
        num(&per_node[2], "ops"),
    );
    assert!(first_two > 0 && third > 0, "{swapped}");
    assert_eq!(num(&swapped, "misses"), first_two, "{swapped}");
    assert_eq!(num(&swapped, "hits"), third, "{swapped}");
    for daemon in &daemons {
        daemon.assert_no_panic();
    }
}

#[test]
fn owner_operations_and_duplicate_names_are_refused_over_several_nodes() {
    let daemons: Vec<Daemon> = (0..2).map(|_| Daemon::start()).collect();
    let list = node_list(&daemons, &[0, 1]);
    let out = bench(&["--addr", &list, "--mix", "get=1,login=1", "--ops", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("need one node"), "{}", out.stderr);

    let (a, b) = (daemons[0].addr(), daemons[1].addr());
    let out = bench(&["--addr", &format!("x={a},x={b}"), "--ops", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("two nodes are named \"x\""),
        "{}",
        out.stderr
    );
    let out = bench(&["--addr", &format!("{a},"), "--ops", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("is not [NAME=]HOST:PORT"),
        "{}",
        out.stderr
    );
}

/// A running floor server, killed on drop.
struct Floor {
    child: Child,
    addr: String,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sessiond-floor --io IO` on a free port; `Err` with its error output if it exits
/// instead of listening.
fn start_floor(io: &str) -> Result<Floor, String> {
    let mut child = Command::new(binary("sessiond-floor"))
        .args(["--io", io, "--listen", "127.0.0.1:0", "--value-size", "300"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sessiond-floor");
    let stdout = child.stdout.take().expect("piped stdout");
    // Its first line, read on a thread so that a floor server that hangs fails the test.
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = line_tx.send(first);
    });
    let Ok(first) = line_rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("sessiond-floor printed nothing within 30 s");
    };
    match first.trim().strip_prefix("listening on ") {
        Some(addr) => Ok(Floor {
            addr: addr.to_string(),
            child,
        }),
        None => {
            let status = child.wait().expect("wait for sessiond-floor");
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            Err(format!("exited {status}: {stderr}"))
        }
    }
}

fn floor_bench_report(addr: &str, args: &[&str]) -> Value {
    let mut argv = vec!["--target", "native", "--addr", addr, "--warmup", "0s"];
    argv.extend_from_slice(args);
    report(&bench(&argv))
}

/// The load generator's default mix, unpipelined over many connections and pipelined: every
/// request answered, without error, each GET a hit.
fn check_serves_the_load_generator(addr: &str) {
    for (connections, pipeline) in [("64", "1"), ("4", "16")] {
        let report = floor_bench_report(
            addr,
            &[
                "--ops",
                "4000",
                "--connections",
                connections,
                "--pipeline",
                pipeline,
                "--value-size",
                "300",
            ],
        );
        assert_eq!(report["ops"], 4000, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        let get = &report["by_op"]["get"];
        assert!(get["count"].as_u64().unwrap_or(0) > 0, "{report}");
        assert_eq!(get["hits"], get["count"], "{report}");
    }
}

/// Raw frames: a request in pieces with a large value, an opcode the floor does not serve,
/// then a frame with a bad magic, which closes the connection.
fn check_frames(addr: &str) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut codec = ClientCodec::new();
    let mut out = BytesMut::new();
    let big = Request::Set(Set {
        key: Bytes::from_static(b"big"),
        value: Bytes::from(vec![7u8; 200 * 1024]),
        ttl_ms: 60_000,
        mode: SetMode::Upsert,
    });
    codec.encode(&big.to_frame(11), &mut out).unwrap();
    let get = Request::Get(Get {
        key: Bytes::from_static(b"big"),
        touch_ttl_ms: None,
    });
    codec.encode(&get.to_frame(12), &mut out).unwrap();
    let touch = Request::Touch(Touch {
        key: Bytes::from_static(b"big"),
        ttl_ms: 1000,
    });
    codec.encode(&touch.to_frame(13), &mut out).unwrap();
    for piece in out.chunks(7_000) {
        stream.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut replies = Vec::new();
    let mut input = BytesMut::new();
    let mut buf = [0u8; 4096];
    while replies.len() < 3 {
        if let Some(frame) = codec.decode(&mut input).unwrap() {
            replies.push(frame);
            continue;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} replies", replies.len());
        input.extend_from_slice(&buf[..n]);
    }
    let opaques: Vec<u32> = replies.iter().map(|r: &ResponseFrame| r.opaque).collect();
    assert_eq!(opaques, [11, 12, 13]);
    assert_eq!(replies[0].status(), Some(Status::Ok));
    match GetReply::from_frame(&replies[1]).unwrap() {
        GetReply::Hit(entry) => assert_eq!(entry.value.len(), 300),
        GetReply::Miss => panic!("the floor server's GET is always a hit"),
    }
    assert_eq!(replies[2].status(), Some(Status::UnknownOpcode));
    assert_eq!(replies[2].opcode, u8::from(touch.opcode()));

    // Not a request: the connection is closed, without a reply.
    stream.write_all(&[0x42; 16]).unwrap();
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed after a bad magic, got {other:?}"),
    }

    // The server itself goes on.
    let mut again = TcpStream::connect(addr).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = BytesMut::new();
    codec.encode(&get.to_frame(14), &mut out).unwrap();
    again.write_all(&out).unwrap();
    let mut input = BytesMut::new();
    let reply = loop {
        if let Some(frame) = codec.decode(&mut input).unwrap() {
            break frame;
        }
        let n = again.read(&mut buf).unwrap();
        assert!(n > 0, "closed without a reply");
        input.extend_from_slice(&buf[..n]);
    };
    assert_eq!(reply.opaque, 14);
}

/// A `GET` with a 10-byte key, encoded, `count` times over.
fn floor_gets(count: usize) -> Vec<u8> {
    let get = Request::Get(Get {
        key: Bytes::from_static(b"session:01"),
        touch_ttl_ms: None,
    });
    let mut codec = ClientCodec::new();
    let mut out = BytesMut::new();
    for opaque in 0..count {
        codec
            .encode(&get.to_frame(opaque as u32), &mut out)
            .unwrap();
    }
    out.to_vec()
}

/// How many descriptors the process `pid` has open.
fn open_descriptors(pid: u32) -> usize {
    let count = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert!(count > 0, "cannot read /proc/{pid}/fd");
    count
}

/// The resident memory of the process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    assert!(kib > 0, "cannot read VmRSS of {pid}");
    kib
}

/// Waits until the open descriptors of `pid` stop changing (connections closed by earlier
/// checks are released), and returns their count.
fn settled_descriptors(pid: u32) -> usize {
    let mut last = open_descriptors(pid);
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        let now = open_descriptors(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Writes `bytes` until done or until a write blocks for `timeout`; the bytes written.
fn write_until_blocked(stream: &mut TcpStream, bytes: &[u8], timeout: Duration) -> usize {
    stream.set_write_timeout(Some(timeout)).unwrap();
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    sent
}

/// Connections that end every way a client can end one: reset with replies unread (a few,
/// and so many that the server's sends are stuck in flight and its reading has stopped),
/// half-closed after one request and after a megabyte of them (every reply must still come),
/// after a bad frame, and in the middle of a frame. Every one of them must be released: the
/// server's open descriptors come back to what they were.
fn check_connections_are_released(floor: &Floor) {
    let pid = floor.child.id();
    let before = settled_descriptors(pid);
    let one_get = floor_gets(1);
    let mut streams = Vec::new();
    for i in 0..60 {
        let mut stream = TcpStream::connect(&floor.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        match i % 6 {
            // Closed with replies unread: the close resets the connection.
            0 => stream.write_all(&floor_gets(10)).unwrap(),
            // So many unread that the server's send waits for room when the reset comes.
            1 => {
                write_until_blocked(&mut stream, &floor_gets(80_000), Duration::from_millis(300));
            }
            2 => {
                stream.write_all(&one_get).unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply).unwrap();
                let mut codec = ClientCodec::new();
                let mut reply = BytesMut::from(&reply[..]);
                let frame = codec.decode(&mut reply).unwrap();
                assert_eq!(
                    frame.map(|f| f.opaque),
                    Some(0),
                    "a half-closed connection still gets its reply"
                );
            }
            3 => stream.write_all(&[0x42; 16]).unwrap(),
            4 => stream.write_all(&one_get[..one_get.len() - 3]).unwrap(),
            _ if i == 5 => {
                // A megabyte of requests, then the close, read to the end on another thread:
                // more than one turn of reads, and the close must still be seen.
                let count = 40_000;
                let mut reader = stream.try_clone().unwrap();
                let replies = std::thread::spawn(move || {
                    let mut codec = ClientCodec::new();
                    let mut input = BytesMut::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut frames = 0;
                    loop {
                        while codec.decode(&mut input).unwrap().is_some() {
                            frames += 1;
                        }
                        match reader.read(&mut buf) {
                            Ok(0) => return frames,
                            Ok(n) => input.extend_from_slice(&buf[..n]),
                            Err(e) => panic!("reading the replies: {e}"),
                        }
                    }
                });
                stream.write_all(&floor_gets(count)).unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                assert_eq!(replies.join().unwrap(), count, "replies before the close");
            }
            // Opened and closed without a request.
            _ => {}
        }
        streams.push(stream);
    }
    let opened = open_descriptors(pid);
    drop(streams);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = open_descriptors(pid);
        if now <= before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "descriptors: {before} before, {opened} with the connections, {now} 20 s after \
             they all closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that sends without reading, and one that reads slowly: the server stops
/// reading each once its replies back up, so the client's writes block and the server's
/// memory stays bounded (each request here gets a reply 12 times its size).
fn check_unread_replies_are_bounded(floor: &Floor) {
    let pid = floor.child.id();
    let before = resident_kib(pid);
    let batch = floor_gets(1000);

    // Never reads.
    let mut stream = TcpStream::connect(&floor.addr).unwrap();
    let mut sent = 0usize;
    let mut blocked = false;
    for _ in 0..2_000 {
        let n = write_until_blocked(&mut stream, &batch, Duration::from_secs(2));
        sent += n;
        if n < batch.len() {
            blocked = true;
            break;
        }
    }
    assert!(
        blocked,
        "{sent} bytes of requests went without the server pushing back"
    );
    assert!(
        sent >= 256 * 1024,
        "only {sent} bytes of requests went before the writes blocked"
    );

    // Reads 4 KiB every 10 ms while requests keep coming for 3 s.
    let mut slow = TcpStream::connect(&floor.addr).unwrap();
    let mut reader = slow.try_clone().unwrap();
    let reading = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            if reader.read(&mut buf).unwrap_or(0) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        write_until_blocked(&mut slow, &batch, Duration::from_millis(200));
    }
    reading.join().unwrap();

    let grown_mib = resident_kib(pid).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 48,
        "the server grew by {grown_mib} MiB for two clients that do not keep up"
    );
}

#[test]
fn floor_server_with_epoll_answers_every_request() {
    let floor = start_floor("epoll").expect("sessiond-floor --io epoll");
    check_serves_the_load_generator(&floor.addr);
    check_frames(&floor.addr);
    check_connections_are_released(&floor);
    check_unread_replies_are_bounded(&floor);
}

#[test]
fn floor_server_with_io_uring_answers_every_request_or_says_it_cannot() {
    match start_floor("uring") {
        Ok(floor) => {
            check_serves_the_load_generator(&floor.addr);
            check_frames(&floor.addr);
            check_connections_are_released(&floor);
            check_unread_replies_are_bounded(&floor);
        }
        Err(failure) => {
            assert!(
                failure.contains("io_uring is not available here"),
                "sessiond-floor --io uring failed otherwise: {failure}"
            );
            assert!(failure.contains("exit status: 2"), "{failure}");
            eprintln!("io_uring is not available on this machine: {failure}");
        }
    }
}
