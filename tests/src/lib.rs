//! End-to-end test harness: starts the real `sessiond` binary and talks to it over TCP.
//!
//! Nothing here stands in for the server. [`Daemon::start`] runs the binary that
//! `cargo test --workspace` built, on an ephemeral loopback port, with its data directory in
//! a fresh temporary directory, and waits for the `listening on ADDR` line the daemon prints
//! on stdout once it accepts connections. Dropping a [`Daemon`] kills it.
//!
//! For persistence tests a daemon can also run on a data directory the test owns
//! ([`Daemon::start_in`]), be stopped gracefully ([`Daemon::terminate`]) or crashed
//! ([`Daemon::kill9`]), and be started again on the same directory ([`Daemon::restart`],
//! [`Daemon::restart_with_args`]); [`Daemon::try_start_in`] returns the exit status and
//! output of a daemon that refuses to start.
//!
//! A daemon started with `--resp-listen 127.0.0.1:0` (or `[resp] listen`) also prints
//! `resp listening on ADDR`; [`Daemon::resp_addr`] returns that address and
//! [`Daemon::resp_connect`] opens a [`resp::RespConn`] to it.
//!
//! [`Conn`] speaks the native protocol through the protocol crate's client codec: raw frames
//! ([`Conn::call`], [`Conn::feed`]), typed requests whose replies are checked against their
//! opaque and opcode ([`Conn::get`], [`Conn::set`], ...), raw bytes for malformed input
//! ([`Conn::send_raw`]), and a concurrent writer/reader split for deep pipelining
//! ([`Conn::pipeline`], [`Conn::into_split`]). Every wait is bounded, so a misbehaving server
//! fails a test instead of hanging it.
//!
//! The tests themselves live in `tests/*.rs` beside this crate.

use std::ffi::OsStr;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sessiond_proto::command::{
    Del, DelOutcome, Get, GetReply, Hello, Ping, PingReply, Set, SetMode, SetOutcome, Stats,
    StatsReply, Touch, TouchReply,
};
use sessiond_proto::{ClientCodec, FrameError, Request, RequestFrame, ResponseFrame, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub mod certs;
pub mod clients;
pub mod reference;
pub mod resp;
pub mod seed;
pub mod users;

/// How long a daemon may take to start before a test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long any single network step (connect, write, one response) may take. Generous: the
/// machine is shared with other builds, and this bounds hangs, it does not measure speed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole pipelined batch may take to be written and answered.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(120);

/// The name of the append-only file in a daemon's data directory.
pub const AOF_FILE_NAME: &str = "appendonly.aof";

/// The opcode of frames that answer no request (`BUSY`, `PROTOCOL_ERROR` after bad magic,
/// `SHUTTING_DOWN` after the last response at shutdown).
pub const CONNECTION_OPCODE: u8 = 0xFF;

/// Runs `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn bounded<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A bound on polling for a condition the server reaches eventually (an expiry, a closed
/// connection being noticed): the bound only keeps a broken server from hanging the test,
/// it does not measure speed.
///
/// ```ignore
/// let deadline = Deadline::after(Duration::from_secs(5), "the entry expires");
/// while conn.get(b"k").await != GetReply::Miss {
///     deadline.tick().await;
/// }
/// ```
#[derive(Debug)]
pub struct Deadline {
    at: Instant,
    limit: Duration,
    what: String,
}

impl Deadline {
    /// A deadline `limit` from now for reaching `what`.
    pub fn after(limit: Duration, what: &str) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            what: what.to_string(),
        }
    }

    /// Sleeps 20 ms before the next poll, or panics if the deadline has passed.
    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.at,
            "{}: not reached within {:?}",
            self.what,
            self.limit
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The path of a binary built from this workspace (`sessiond` or `sessiond-cli`).
///
/// Test executables live in `target/<profile>/deps/`; the workspace's binaries one level up.
/// `cargo test --workspace` builds a package's binaries only for that package's own
/// integration tests, so every package with a binary keeps at least one (e.g.
/// `crates/cli/tests/usage.rs`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} does not exist: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// What a finished process printed, and how it exited.
#[derive(Debug)]
pub struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything written to stderr (lossy UTF-8).
    pub stderr: String,
}

/// Runs `program` with `args` to completion, killing it and panicking after `timeout`.
pub fn run_to_completion<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    timeout: Duration,
) -> Finished {
    let mut command = Command::new(program);
    command.args(args);
    run_command(command, &[], timeout)
}

/// Runs `command` with `input` on its stdin to completion, killing it and panicking after
/// `timeout` (so a hanging client fails its test instead of blocking CI).
pub fn run_command(mut command: Command, input: &[u8], timeout: Duration) -> Finished {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(if input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        })
    });
    // Drain both pipes on their own threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let Some(status) = wait_child(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not exit within {timeout:?}");
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Finished {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `sessiond` process.
pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    /// Set by the stdout reader when the daemon prints `resp listening on ADDR`.
    resp_addr: Arc<OnceLock<SocketAddr>>,
    data_dir: PathBuf,
    config_path: PathBuf,
    /// Lines arrive on the receiver; [`Daemon::logs`] moves them into the vector so that every
    /// call sees the whole log, not just what arrived since the last one.
    stderr: Mutex<(mpsc::Receiver<String>, Vec<String>)>,
    // Held so the directory outlives the process; removed on drop.
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon with the default configuration on an ephemeral port.
    pub fn start() -> Daemon {
        Daemon::start_with_config("")
    }

    /// Starts a daemon whose config file is `config` (TOML). The listen address and data
    /// directory are always overridden on the command line.
    pub fn start_with_config(config: &str) -> Daemon {
        Daemon::start_with_args(config, &[])
    }

    /// Starts a daemon with extra command-line arguments after the usual ones.
    pub fn start_with_args(config: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("sessiond.toml");
        std::fs::write(&config_path, config).expect("write config");
        let data_dir = dir.path().join("data");
        let mut argv = overrides(&data_dir);
        argv.extend(args.iter().map(|a| a.to_string()));
        Daemon::spawn(dir, config_path, data_dir, &argv)
    }

    /// Starts a daemon with `--config FILE` followed by exactly `args`: unlike the other
    /// constructors it adds no `--listen`/`--data-dir`, for tests of those options and of the
    /// config file's own values. The config must make the daemon listen on a free port
    /// (e.g. `listen = "127.0.0.1:0"`) unless `args` do. [`Daemon::data_dir`] reports
    /// `data_dir` as given.
    pub fn start_with_exact_args(config: &str, data_dir: &Path, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("sessiond.toml");
        std::fs::write(&config_path, config).expect("write config");
        let argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Daemon::spawn(dir, config_path, data_dir.to_path_buf(), &argv)
    }

    /// Starts a new daemon process on the same config and data directory as this one, after
    /// this one has exited. Used by restart tests.
    pub fn restart(self) -> Daemon {
        let mut this = self;
        if this.child.try_wait().ok().flatten().is_none() {
            let _ = this.child.kill();
            let _ = this.child.wait();
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let old = std::mem::replace(&mut this._dir, dir);
        let (config_path, data_dir) = (this.config_path.clone(), this.data_dir.clone());
        drop(this);
        let argv = overrides(&data_dir);
        Daemon::spawn(old, config_path, data_dir, &argv)
    }

    /// Starts a daemon whose data directory is `data_dir`, which the caller owns (it
    /// outlives the daemon, for tests that damage its files between runs or that put it on a
    /// special filesystem). `args` follow the usual `--listen`/`--data-dir`.
    pub fn start_in(config: &str, data_dir: &Path, args: &[&str]) -> Daemon {
        match Daemon::try_start_in(config, data_dir, args) {
            Ok(daemon) => daemon,
            Err(finished) => panic!(
                "sessiond exited before listening ({}); stderr:\n{}",
                finished.status, finished.stderr
            ),
        }
    }

    /// Like [`Daemon::start_in`], but a daemon that exits instead of listening (e.g. because
    /// its append-only file is corrupt) is not a panic: its exit status and output are
    /// returned.
    pub fn try_start_in(config: &str, data_dir: &Path, args: &[&str]) -> Result<Daemon, Finished> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("sessiond.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut argv = overrides(data_dir);
        argv.extend(args.iter().map(|a| a.to_string()));
        Daemon::try_spawn(dir, config_path, data_dir.to_path_buf(), &argv)
    }

    /// Like [`Daemon::restart`], with extra command-line arguments (e.g. `--repair-aof`).
    pub fn restart_with_args(self, args: &[&str]) -> Daemon {
        let mut this = self;
        this.kill9();
        let dir = tempfile::tempdir().expect("temporary directory");
        let old = std::mem::replace(&mut this._dir, dir);
        let (config_path, data_dir) = (this.config_path.clone(), this.data_dir.clone());
        drop(this);
        let mut argv = overrides(&data_dir);
        argv.extend(args.iter().map(|a| a.to_string()));
        Daemon::spawn(old, config_path, data_dir, &argv)
    }

    /// Kills the process with `SIGKILL` (a crash: nothing is flushed) and reaps it. Does
    /// nothing if it has already exited.
    pub fn kill9(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // `Child::kill` sends SIGKILL on Unix.
        let _ = self.child.kill();
        if wait_child(&mut self.child, START_TIMEOUT).is_none() {
            panic!("sessiond did not die within {START_TIMEOUT:?} of SIGKILL");
        }
    }

    /// Stops the daemon with `SIGTERM` and asserts it exits with status 0 within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal(libc::SIGTERM);
        match self.wait_timeout(timeout) {
            Some(status) => assert!(
                status.success(),
                "sessiond exited with {status} after SIGTERM; stderr:\n{}",
                self.logs().join("\n")
            ),
            None => panic!(
                "sessiond did not exit within {timeout:?} of SIGTERM; stderr:\n{}",
                self.logs().join("\n")
            ),
        }
    }

    /// Waits until a stderr line satisfies `matches`, and returns it; panics with the log if
    /// none does within [`IO_TIMEOUT`]. Needed even for lines logged before `listening on`:
    /// stdout and stderr are read by different threads, so their lines arrive in any order.
    pub async fn wait_for_log(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| matches(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} within {IO_TIMEOUT:?}; stderr:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The config file the daemon was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The daemon's append-only file, `DATA_DIR/appendonly.aof`.
    pub fn aof_path(&self) -> PathBuf {
        self.data_dir.join(AOF_FILE_NAME)
    }

    fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        data_dir: PathBuf,
        args: &[String],
    ) -> Daemon {
        match Daemon::try_spawn(dir, config_path, data_dir, args) {
            Ok(daemon) => daemon,
            Err(finished) => panic!(
                "sessiond exited before listening ({}); stderr:\n{}",
                finished.status, finished.stderr
            ),
        }
    }

    /// Runs the daemon until it prints `listening on ADDR`, or returns how it exited if it
    /// exits first. Panics if it does neither within [`START_TIMEOUT`].
    fn try_spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        data_dir: PathBuf,
        args: &[String],
    ) -> Result<Daemon, Finished> {
        Daemon::try_spawn_with_env(dir, config_path, data_dir, args, &[])
    }

    /// Like [`Daemon::start_in`], with extra environment variables for the process (e.g. a
    /// preloaded library that shifts its wall clock).
    pub fn start_in_with_env(
        config: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("sessiond.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut argv = overrides(data_dir);
        argv.extend(args.iter().map(|a| a.to_string()));
        match Daemon::try_spawn_with_env(dir, config_path, data_dir.to_path_buf(), &argv, env) {
            Ok(daemon) => daemon,
            Err(finished) => panic!(
                "sessiond exited before listening ({}); stderr:\n{}",
                finished.status, finished.stderr
            ),
        }
    }

    fn try_spawn_with_env(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        data_dir: PathBuf,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Daemon, Finished> {
        let mut child = Command::new(binary("sessiond"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "sessiond=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sessiond");

        // Forward stderr lines to a channel so tests can assert on logs and a failed start
        // can show them.
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });

        // `Ok(addr)` once the daemon listens; `Err(stdout)` if stdout closes first (the
        // process exited).
        let (addr_tx, addr_rx) = mpsc::channel::<Result<String, String>>();
        let resp_addr = Arc::new(OnceLock::new());
        let resp_addr_seen = resp_addr.clone();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut before = String::new();
            let mut listening = false;
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(addr) = line.trim().strip_prefix("resp listening on ") {
                    if let Ok(addr) = addr.parse() {
                        let _ = resp_addr_seen.set(addr);
                    }
                }
                match line.trim().strip_prefix("listening on ") {
                    Some(addr) if !listening => {
                        listening = true;
                        let _ = addr_tx.send(Ok(addr.to_string()));
                    }
                    _ if !listening => before.push_str(&line),
                    _ => {}
                }
                line.clear();
            }
            if !listening {
                let _ = addr_tx.send(Err(before));
            }
        });

        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => addr.parse().expect("listen address"),
            Ok(Err(stdout)) => {
                // Stdout closed without the line: the process is exiting. Its stderr
                // reader ends once the pipe closes, which bounds the collection below.
                let status = wait_child(&mut child, START_TIMEOUT).unwrap_or_else(|| {
                    let _ = child.kill();
                    panic!("sessiond closed its stdout without exiting");
                });
                let mut logs = Vec::new();
                while let Ok(line) = err_rx.recv_timeout(IO_TIMEOUT) {
                    logs.push(line);
                }
                return Err(Finished {
                    status,
                    stdout,
                    stderr: logs.join("\n"),
                });
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // The reader thread ends once the pipe closes with the process.
                std::thread::sleep(Duration::from_millis(100));
                let logs: Vec<String> = err_rx.try_iter().collect();
                panic!("sessiond did not start; stderr:\n{}", logs.join("\n"));
            }
        };
        Ok(Daemon {
            child,
            addr,
            resp_addr,
            data_dir,
            config_path,
            stderr: Mutex::new((err_rx, Vec::new())),
            _dir: dir,
        })
    }

    /// The address the daemon listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the daemon's RESP listener. Panics if the daemon has none (start it
    /// with `--resp-listen 127.0.0.1:0` or `[resp] listen`).
    pub fn resp_addr(&self) -> SocketAddr {
        // The daemon prints this line right after `listening on`, before it serves anyone;
        // the wait only covers the reader thread getting to it.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(addr) = self.resp_addr.get() {
                return *addr;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon printed no `resp listening on` line: start it with --resp-listen"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Opens a RESP connection to the daemon's RESP listener.
    pub async fn resp_connect(&self) -> resp::RespConn {
        resp::RespConn::connect(self.resp_addr()).await
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the daemon.
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        let rc = send_signal(pid, signal);
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// Every stderr line logged so far.
    pub fn logs(&self) -> Vec<String> {
        let mut guard = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let (rx, seen) = &mut *guard;
        seen.extend(rx.try_iter());
        seen.clone()
    }

    /// The daemon's resident set size in bytes, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.pid())
            .expect("read VmRSS from /proc/<pid>/status (is the daemon still running?)")
    }

    /// Asserts the daemon is still running and has not logged a panic.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "sessiond exited ({status}); stderr:\n{}",
                self.logs().join("\n")
            );
        }
        self.assert_no_panic();
    }

    /// Asserts that nothing on the daemon's stderr so far reports a panic.
    pub fn assert_no_panic(&self) {
        let logs = self.logs();
        assert!(
            !logs.iter().any(|line| line.contains("panicked")),
            "sessiond panicked; stderr:\n{}",
            logs.join("\n")
        );
    }

    /// Opens a framed native-protocol connection.
    pub async fn connect(&self) -> Conn {
        Conn::connect(self.addr).await
    }

    /// Reads the daemon's `STATS` over a fresh connection.
    pub async fn stats(&self) -> StatsReply {
        self.connect().await.stats().await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident set size in bytes of process `pid`, from `/proc/<pid>/status`; `None` once
/// it has exited. For watching a daemon from another thread ([`Daemon::rss_bytes`] needs the
/// daemon itself).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })?;
    Some(kib * 1024)
}

/// The `--listen`/`--data-dir` arguments every harness daemon runs with.
fn overrides(data_dir: &Path) -> Vec<String> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ]
}

fn send_signal(pid: libc::pid_t, signal: i32) -> i32 {
    // `kill` has no memory-safety preconditions; the workspace forbids `unsafe` in library
    // code, so the process is signalled through the `kill` command instead.
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    match status {
        Ok(s) if s.success() => 0,
        _ => -1,
    }
}

/// Whether an I/O error means the peer closed the connection (a close with unread data in
/// the server's buffer arrives as a reset rather than an EOF).
fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// Reads the next frame within [`IO_TIMEOUT`]: `None` once the server has closed the
/// connection (EOF or reset). Panics on a malformed response or a timeout.
async fn next_frame<S>(stream: &mut S) -> Option<ResponseFrame>
where
    S: futures_util::Stream<Item = Result<ResponseFrame, FrameError>> + Unpin,
{
    match tokio::time::timeout(IO_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(Some(Err(FrameError::Io(e)))) if is_closed(&e) => None,
        Ok(Some(Err(e))) => panic!("bad response: {e}"),
        Ok(None) => None,
        Err(_) => panic!("no response within {IO_TIMEOUT:?}"),
    }
}

/// A native-protocol connection using the protocol crate's client codec.
pub struct Conn {
    framed: Framed<TcpStream, ClientCodec>,
    /// Opaque for the next typed request; each gets a distinct one so replies can be matched.
    next_opaque: u32,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = bounded(IO_TIMEOUT, "connect", TcpStream::connect(addr))
            .await
            .expect("connect to sessiond");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            framed: Framed::new(stream, ClientCodec::new()),
            next_opaque: 1,
        }
    }

    /// Sends one request frame and waits for one response.
    pub async fn call(&mut self, frame: RequestFrame) -> ResponseFrame {
        self.send(frame).await;
        self.recv().await.expect("a response")
    }

    /// Sends one request frame without waiting.
    pub async fn send(&mut self, frame: RequestFrame) {
        bounded(IO_TIMEOUT, "send request", self.framed.send(frame))
            .await
            .expect("send request");
    }

    /// Queues a frame without flushing (for pipelining).
    pub async fn feed(&mut self, frame: RequestFrame) {
        bounded(IO_TIMEOUT, "queue request", self.framed.feed(frame))
            .await
            .expect("queue request");
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) {
        bounded(
            IO_TIMEOUT,
            "flush",
            SinkExt::<RequestFrame>::flush(&mut self.framed),
        )
        .await
        .expect("flush");
    }

    /// The next response, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<ResponseFrame> {
        next_frame(&mut self.framed).await
    }

    /// Writes `bytes` to the socket as they are, after anything already queued: for
    /// malformed input that the codec would refuse to build.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.flush().await;
        let write = async {
            let stream = self.framed.get_mut();
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        bounded(IO_TIMEOUT, "send raw bytes", write)
            .await
            .expect("send raw bytes");
    }

    /// Like [`Conn::send_raw`], but a write the server refuses because it already closed
    /// the connection is not an error. Returns whether every byte was written.
    pub async fn send_raw_lossy(&mut self, bytes: &[u8]) -> bool {
        let write = async {
            let stream = self.framed.get_mut();
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match bounded(IO_TIMEOUT, "send raw bytes", write).await {
            Ok(()) => true,
            Err(e) if is_closed(&e) => false,
            Err(e) => panic!("send raw bytes: {e}"),
        }
    }

    /// Asserts that the server closes the connection next, without sending another frame.
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.recv().await {
            panic!("expected the server to close the connection, got {frame:?}");
        }
    }

    /// Queues a frame without flushing; `false` if the connection is gone (for tests that
    /// kill the server while talking to it).
    pub async fn feed_lossy(&mut self, frame: RequestFrame) -> bool {
        bounded(IO_TIMEOUT, "queue request", self.framed.feed(frame))
            .await
            .is_ok()
    }

    /// Flushes queued frames; `false` if the connection is gone.
    pub async fn flush_lossy(&mut self) -> bool {
        bounded(
            IO_TIMEOUT,
            "flush",
            SinkExt::<RequestFrame>::flush(&mut self.framed),
        )
        .await
        .is_ok()
    }

    /// The next response, or `None` if the connection ends for any reason, including in
    /// the middle of a frame (a killed server). Still panics if nothing arrives within
    /// [`IO_TIMEOUT`].
    pub async fn recv_lossy(&mut self) -> Option<ResponseFrame> {
        match tokio::time::timeout(IO_TIMEOUT, self.framed.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("no response within {IO_TIMEOUT:?}"),
        }
    }

    /// Shuts down the writing side of the socket (a TCP half-close): the server reads EOF
    /// but can still send replies. A connection the server already closed is not an error.
    pub async fn close_write(&mut self) {
        match bounded(IO_TIMEOUT, "close write", self.framed.get_mut().shutdown()).await {
            Ok(()) => {}
            Err(e) if is_closed(&e) || e.kind() == std::io::ErrorKind::NotConnected => {}
            Err(e) => panic!("close write: {e}"),
        }
    }

    /// Sends `request` with a fresh opaque and returns the reply, checking that it echoes
    /// the request's opcode and opaque.
    pub async fn exchange(&mut self, request: &Request) -> ResponseFrame {
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1);
        let frame = request.to_frame(opaque);
        let opcode = frame.opcode;
        let reply = self.call(frame).await;
        assert_eq!(
            (reply.opcode, reply.opaque),
            (opcode, opaque),
            "reply does not echo the request's opcode and opaque: {reply:?}"
        );
        reply
    }

    /// `HELLO` for versions `min..=max`; the raw reply, since refusal is a valid outcome.
    pub async fn hello(&mut self, min: u8, max: u8) -> ResponseFrame {
        let hello = Hello {
            min_version: min,
            max_version: max,
            client_name: Bytes::from_static(b"sessiond-tests"),
        };
        self.exchange(&Request::Hello(hello)).await
    }

    /// `PING` with `payload`.
    pub async fn ping(&mut self, payload: &[u8]) -> PingReply {
        let ping = Ping {
            payload: Bytes::copy_from_slice(payload),
        };
        let reply = self.exchange(&Request::Ping(ping)).await;
        PingReply::from_frame(&reply).unwrap_or_else(|e| panic!("PING: {e}"))
    }

    /// `GET key`.
    pub async fn get(&mut self, key: &[u8]) -> GetReply {
        self.get_with(key, None).await
    }

    /// `GET key` with the `TOUCH` flag, setting the TTL to `ttl_ms` first.
    pub async fn get_touch(&mut self, key: &[u8], ttl_ms: u64) -> GetReply {
        self.get_with(key, Some(ttl_ms)).await
    }

    async fn get_with(&mut self, key: &[u8], touch_ttl_ms: Option<u64>) -> GetReply {
        let get = Get {
            key: Bytes::copy_from_slice(key),
            touch_ttl_ms,
        };
        let reply = self.exchange(&Request::Get(get)).await;
        GetReply::from_frame(&reply).unwrap_or_else(|e| panic!("GET: {e}"))
    }

    /// `SET key value` with `ttl_ms` in `mode`.
    pub async fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        mode: SetMode,
    ) -> SetOutcome {
        let reply = self.exchange(&set_request(key, value, ttl_ms, mode)).await;
        SetOutcome::from_frame(&reply).unwrap_or_else(|e| panic!("SET: {e}"))
    }

    /// An upsert `SET` that must succeed; returns the new version.
    pub async fn put(&mut self, key: &[u8], value: &[u8], ttl_ms: u64) -> u64 {
        match self.set(key, value, ttl_ms, SetMode::Upsert).await {
            SetOutcome::Stored { version } => version,
            other => panic!("upsert of {key:?} was not stored: {other:?}"),
        }
    }

    /// `TOUCH key ttl_ms`.
    pub async fn touch(&mut self, key: &[u8], ttl_ms: u64) -> TouchReply {
        let touch = Touch {
            key: Bytes::copy_from_slice(key),
            ttl_ms,
        };
        let reply = self.exchange(&Request::Touch(touch)).await;
        TouchReply::from_frame(&reply).unwrap_or_else(|e| panic!("TOUCH: {e}"))
    }

    /// `DEL key`, conditional on `if_version` when given.
    pub async fn del(&mut self, key: &[u8], if_version: Option<u64>) -> DelOutcome {
        let del = Del {
            key: Bytes::copy_from_slice(key),
            if_version,
        };
        let reply = self.exchange(&Request::Del(del)).await;
        DelOutcome::from_frame(&reply).unwrap_or_else(|e| panic!("DEL: {e}"))
    }

    /// `STATS`.
    pub async fn stats(&mut self) -> StatsReply {
        let reply = self.exchange(&Request::Stats(Stats)).await;
        StatsReply::from_frame(&reply).unwrap_or_else(|e| panic!("STATS: {e}"))
    }

    /// Writes every frame (fed, then flushed) while reading the replies concurrently, and
    /// returns exactly one reply per frame, in arrival order.
    ///
    /// Reading while writing matters: a server may stop reading while its replies are not
    /// being consumed, and a client that only reads after writing thousands of requests would
    /// then deadlock against it.
    pub async fn pipeline(&mut self, frames: Vec<RequestFrame>) -> Vec<ResponseFrame> {
        let count = frames.len();
        let (mut sink, mut stream) = StreamExt::split::<RequestFrame>(&mut self.framed);
        let write = async move {
            for frame in frames {
                sink.feed(frame).await.expect("queue pipelined request");
            }
            sink.flush().await.expect("flush pipelined requests");
        };
        let read = async move {
            let mut replies = Vec::with_capacity(count);
            while replies.len() < count {
                match next_frame(&mut stream).await {
                    Some(frame) => replies.push(frame),
                    None => panic!(
                        "connection closed after {} of {count} replies",
                        replies.len()
                    ),
                }
            }
            replies
        };
        let ((), replies) = bounded(PIPELINE_TIMEOUT, "pipeline", async {
            tokio::join!(write, read)
        })
        .await;
        replies
    }

    /// Splits the connection into a writing and a reading half that can be used from
    /// different tasks.
    pub fn into_split(self) -> (ConnWriter, ConnReader) {
        let (sink, stream) = self.framed.split();
        (ConnWriter { sink }, ConnReader { stream })
    }
}

/// The writing half of a [`Conn`].
pub struct ConnWriter {
    sink: SplitSink<Framed<TcpStream, ClientCodec>, RequestFrame>,
}

impl ConnWriter {
    /// Queues a frame without flushing.
    pub async fn feed(&mut self, frame: RequestFrame) {
        bounded(IO_TIMEOUT, "queue request", self.sink.feed(frame))
            .await
            .expect("queue request");
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) {
        bounded(IO_TIMEOUT, "flush", self.sink.flush())
            .await
            .expect("flush");
    }
}

/// The reading half of a [`Conn`].
pub struct ConnReader {
    stream: SplitStream<Framed<TcpStream, ClientCodec>>,
}

impl ConnReader {
    /// The next response, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<ResponseFrame> {
        next_frame(&mut self.stream).await
    }

    /// Asserts that the server closes the connection next, without sending another frame.
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.recv().await {
            panic!("expected the server to close the connection, got {frame:?}");
        }
    }
}

/// A `SET` request.
pub fn set_request(key: &[u8], value: &[u8], ttl_ms: u64, mode: SetMode) -> Request {
    Request::Set(Set {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        ttl_ms,
        mode,
    })
}

/// A plain `GET` request.
pub fn get_request(key: &[u8]) -> Request {
    Request::Get(Get {
        key: Bytes::copy_from_slice(key),
        touch_ttl_ms: None,
    })
}

/// A `PING` request.
pub fn ping_request(payload: &[u8]) -> Request {
    Request::Ping(Ping {
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Asserts that `reply` is an error response with `status` and a non-empty UTF-8 message.
pub fn assert_error(reply: &ResponseFrame, status: Status) {
    assert_eq!(
        reply.status(),
        Some(status),
        "expected {status}, got status 0x{:04x} ({reply:?})",
        reply.status
    );
    assert!(
        reply.extras.is_empty(),
        "an error response carries no extras: {reply:?}"
    );
    let message = std::str::from_utf8(&reply.value).expect("error message is UTF-8");
    assert!(!message.is_empty(), "{status} response has no message");
}

/// A small deterministic pseudo-random generator (xorshift64*), so that random inputs are
/// reproducible from the seed printed by a failing test.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Fewer than `bound` random bytes, of random length.
    pub fn bytes_below(&mut self, bound: usize) -> Vec<u8> {
        let len = self.below(bound as u64) as usize;
        self.bytes(len)
    }
}
