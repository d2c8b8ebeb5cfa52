//! The server a RESP test runs against: the real `sessiond`, or, to check that the test
//! itself is right, the real `redis-server` it imitates.
//!
//! A test of Redis behaviour that fails against sessiond may be wrong about Redis rather than
//! sessiond being wrong. Tests written on [`RespServer`] therefore also run against
//! `redis-server` (Debian's redis-server package) when `SESSIOND_TESTS_REFERENCE=redis-server`
//! is set: `cargo test -p sessiond-tests --test resp_libraries` with that variable must pass
//! as well. CI runs them against sessiond only.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::Daemon;

/// How long redis-server may take to load its append-only file and accept connections.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(20);

/// What sessiond is started with beyond its configuration: a RESP listener on a free port.
const RESP_ARGS: &[&str] = &["--resp-listen", "127.0.0.1:0"];

/// The environment variable that selects `redis-server` instead of sessiond.
pub const REFERENCE_VAR: &str = "SESSIOND_TESTS_REFERENCE";

/// Whether this run checks the tests against `redis-server`.
pub fn against_redis() -> bool {
    match std::env::var(REFERENCE_VAR) {
        Ok(v) if v == "redis-server" => true,
        Ok(v) if v.is_empty() => false,
        Ok(v) => panic!("{REFERENCE_VAR}={v:?}: the only reference server is redis-server"),
        Err(_) => false,
    }
}

/// A running server with a RESP listener.
pub enum RespServer {
    /// The real daemon.
    Sessiond(Daemon),
    /// The reference.
    Redis(RedisServer),
}

/// What a [`RespServer`] is started with. Each field is the same setting in the two
/// servers' terms.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// Lines of `sessiond.toml`, before an `[aof]` table made from the fields below (so
    /// they must not hold one).
    pub sessiond_config: String,
    /// Whether every acknowledged write must first reach the disk: sessiond's
    /// `aof.fsync = "always"`, redis-server's `appendfsync always`.
    pub fsync_always: bool,
    /// Rewrite (compact) the append-only file once it reaches this size: sessiond's
    /// `aof.rewrite_min_bytes`, redis-server's `auto-aof-rewrite-min-size`. Small values make
    /// rewrites frequent, so that a crash test also kills the server in the middle of one.
    pub rewrite_min_bytes: Option<u64>,
    /// A user with this name and password and the application's rights: sessiond's `app`
    /// role, redis-server's ACL user with every command on every key.
    pub app_user: Option<(String, String)>,
}

impl RespServer {
    /// Starts sessiond (or redis-server, see [`against_redis`]) with its data in `data_dir`,
    /// which the caller owns so that [`RespServer::restart`] finds the same files.
    pub fn start(settings: &ServerSettings, data_dir: &Path) -> RespServer {
        if against_redis() {
            return RespServer::Redis(RedisServer::start(settings, data_dir));
        }
        let mut config = settings.sessiond_config.clone();
        config.push_str("\n[aof]\n");
        if settings.fsync_always {
            config.push_str("fsync = \"always\"\n");
        }
        if let Some(bytes) = settings.rewrite_min_bytes {
            config.push_str(&format!("rewrite_min_bytes = {bytes}\n"));
        }
        if let Some((name, password)) = &settings.app_user {
            // Beside the data directory, which the daemon creates itself.
            let file = data_dir.with_extension("app-password");
            std::fs::write(&file, password).expect("write the password file");
            config.push_str(&format!(
                "\n[[auth.users]]\nname = \"{name}\"\nrole = \"app\"\npassword_file = \"{}\"\n",
                file.display()
            ));
        }
        RespServer::Sessiond(Daemon::start_in(&config, data_dir, RESP_ARGS))
    }

    /// The RESP listener's address.
    pub fn resp_addr(&self) -> SocketAddr {
        match self {
            RespServer::Sessiond(daemon) => daemon.resp_addr(),
            RespServer::Redis(redis) => redis.addr,
        }
    }

    /// sessiond's native listener; `None` for redis-server.
    pub fn native_addr(&self) -> Option<SocketAddr> {
        match self {
            RespServer::Sessiond(daemon) => Some(daemon.addr()),
            RespServer::Redis(_) => None,
        }
    }

    /// The name to print in test output.
    pub fn name(&self) -> &'static str {
        match self {
            RespServer::Sessiond(_) => "sessiond",
            RespServer::Redis(_) => "redis-server",
        }
    }

    /// Kills the server with `SIGKILL` (a crash) and reaps it.
    pub fn kill9(&mut self) {
        match self {
            RespServer::Sessiond(daemon) => daemon.kill9(),
            RespServer::Redis(redis) => redis.kill9(),
        }
    }

    /// Starts the server again on the same data directory, after [`RespServer::kill9`].
    pub fn restart(self) -> RespServer {
        match self {
            RespServer::Sessiond(daemon) => {
                RespServer::Sessiond(daemon.restart_with_args(RESP_ARGS))
            }
            RespServer::Redis(redis) => RespServer::Redis(redis.restart()),
        }
    }

    /// Asserts that the server is still running and, for sessiond, has not panicked.
    pub fn assert_running(&mut self) {
        match self {
            RespServer::Sessiond(daemon) => daemon.assert_running(),
            RespServer::Redis(redis) => {
                let status = redis.child.try_wait();
                assert!(
                    matches!(status, Ok(None)),
                    "redis-server exited: {status:?}"
                );
            }
        }
    }
}

/// A `redis-server` process on a loopback port, persisting to an append-only file in a
/// data directory the caller owns.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    args: Vec<String>,
}

impl RedisServer {
    fn start(settings: &ServerSettings, data_dir: &Path) -> RedisServer {
        std::fs::create_dir_all(data_dir).expect("create redis-server's data directory");
        let port = free_port();
        let fsync = if settings.fsync_always {
            "always"
        } else {
            "everysec"
        };
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dir",
            &data_dir.display().to_string(),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            fsync,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(bytes) = settings.rewrite_min_bytes {
            args.push("--auto-aof-rewrite-min-size".to_string());
            args.push(bytes.to_string());
        }
        if let Some((name, password)) = &settings.app_user {
            let user = [name, "on", &format!(">{password}"), "~*", "&*", "+@all"];
            args.push("--user".to_string());
            args.extend(user.iter().map(|a| a.to_string()));
        }
        RedisServer::spawn(args, port)
    }

    fn spawn(args: Vec<String>, port: u16) -> RedisServer {
        let program = PathBuf::from("redis-server");
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawn redis-server (apt-get install -y redis-server): {e}")
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut said = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = ready_tx.send(Ok(()));
                } else {
                    said.push_str(&line);
                    said.push('\n');
                }
            }
            // Once ready, nothing waits for this; before, it carries the reason it stopped.
            let _ = ready_tx.send(Err(said));
        });
        match ready_rx.recv_timeout(REDIS_START_TIMEOUT) {
            Ok(Ok(())) => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server {args:?} did not start: {other:?}");
            }
        }
        RedisServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            args,
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(mut self) -> RedisServer {
        self.kill9();
        let args = std::mem::take(&mut self.args);
        RedisServer::spawn(args, self.addr.port())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback port nothing listens on right now (redis-server cannot be asked to choose
/// one and report it, as sessiond can).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}
