//! Command-line flags, and the validated run configuration they turn into.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sessiond_client::transport::Connector;
use sessiond_client::{Credentials, TlsOptions};

use crate::protocol::{memcached_ttl_secs, Target};
use sessiond_proto::command::MAX_OWNER_LEN;

use crate::workload::{Mix, OpKind};

/// Drives one session-shaped workload against sessiond, a RESP server (Redis) or memcached,
/// and reports throughput and latency.
///
/// The same workload and the same client code run against every target, which is what makes
/// the numbers comparable. Each connection is one task that keeps `--pipeline` requests in
/// flight. Latency is measured from when a request is queued to when its reply has been read.
///
/// Exit status: 0 when every request succeeded (misses are not failures), 1 when the run
/// completed but some requests failed or a connection was lost, 2 when it could not run.
#[derive(Debug, Parser)]
#[command(name = "sessiond-bench", version, about, long_about)]
pub struct Args {
    /// Protocol of the server under test.
    #[arg(long, value_enum, default_value = "native")]
    pub target: Target,

    /// Server address; or several sessiond nodes, comma-separated `[NAME=]HOST:PORT`, each
    /// sent the keys sessiond-client's placement puts on it (rendezvous hashing on the
    /// names; a node without a name is named by its address), with --connections each.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7878")]
    pub addr: String,

    /// Connections, each driven by its own task.
    #[arg(short, long, value_name = "N", default_value_t = 50)]
    pub connections: usize,

    /// Requests kept in flight on each connection (1 = request/response).
    #[arg(short, long, value_name = "N", default_value_t = 1)]
    pub pipeline: usize,

    /// Size of the values written, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub value_size: usize,

    /// Number of distinct keys; each operation picks one uniformly at random.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub keys: u64,

    /// Key prefix; the key number follows, zero-padded to --id-len digits.
    #[arg(long, value_name = "TEXT", default_value = "session:")]
    pub key_prefix: String,

    /// Digits of the key number (43 = a 32-byte random session id in base64url).
    #[arg(long, value_name = "N", default_value_t = 43)]
    pub id_len: usize,

    /// TTL of writes and touches (e.g. 30m, 1800s). Memcached rounds it up to whole seconds.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,

    /// Operation mix as NAME=WEIGHT pairs. get reads and slides the expiry, read only
    /// reads, set writes, del deletes, touch only slides the expiry; on sessiond's native
    /// protocol also login (write the session bound to its owner), devices (list the
    /// owner's sessions) and end_all (end them). The owner of a key is the key without its
    /// last digit: ten sessions per owner. On RESP also unlock (phpredis's session lock
    /// release: EVAL of its compare-and-delete script, the value as the token) and multi
    /// (MULTI, GETEX, SET, PEXPIRE, EXEC).
    #[arg(long, value_name = "SPEC", default_value = "get=80,set=15,del=5")]
    pub mix: Mix,

    /// Run the workload this long before measuring.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Measure for this long (the default when --ops is not given is 10s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "ops")]
    pub duration: Option<Duration>,

    /// Measure exactly this many operations, spread over the connections.
    #[arg(long, value_name = "N")]
    pub ops: Option<u64>,

    /// Instead of the mix, write keys 0..N once each and stop (e.g. to read the server's
    /// memory use afterwards). No warm-up.
    #[arg(long, value_name = "N", conflicts_with_all = ["ops", "duration", "prefill"])]
    pub load: Option<u64>,

    /// Write every key of the key space once before the warm-up, so the run starts from a
    /// full store instead of an empty one.
    #[arg(long)]
    pub prefill: bool,

    /// Seed of the random choices; the same seed gives every connection the same sequence.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Runtime worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Print a progress line on stderr every second even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,

    /// Authenticate every connection as this user before the run (native `AUTH`, or RESP
    /// `AUTH user password`); the password comes from $SESSIOND_PASSWORD or
    /// --password-file. Not for memcached.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Read the password of --user from this file (a trailing newline is not part of it).
    #[arg(long, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,

    /// Connect with TLS, trusting the CA in --cacert (sessiond's or Redis's TLS port).
    #[arg(long, requires = "cacert")]
    pub tls: bool,

    /// PEM file of the CA(s) that sign the server's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate chain (mutual TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// The name the server's certificate must carry, if not the host of --addr.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub server_name: Option<String>,

    /// Open a new connection (TCP, TLS handshake, AUTH) for every request and close it after
    /// the reply, to measure connection setup: ops/s is then new connections per second,
    /// and latency includes the handshake. Needs --pipeline 1.
    #[arg(long)]
    pub reconnect: bool,

    /// Open loop: send this many requests per second in all, each connection on a fixed
    /// schedule of its own (connections staggered), whether or not earlier replies have
    /// come back; latency is measured from when a request was due, not when it was sent,
    /// so a stall that holds requests back is counted in full (no coordinated omission).
    /// --pipeline caps the requests in flight per connection; one that is due while the
    /// window is full waits, and its wait counts. To send on time despite the runtime's
    /// millisecond timers, a connection spins for the last millisecond before each due
    /// time, so the load generator uses more CPU than in a closed-loop run.
    #[arg(long, value_name = "PER_SEC", conflicts_with_all = ["load", "reconnect"])]
    pub rate: Option<f64>,
}

/// The lowest `--rate`: one request every ten seconds.
const MIN_RATE: f64 = 0.1;

/// The environment variable the password of `--user` is read from, unless
/// `--password-file` is given.
const PASSWORD_VAR: &str = "SESSIOND_PASSWORD";

/// When the measured part of a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many operations.
    Ops(u64),
}

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// The operation mix over random keys.
    Mix {
        /// Relative weights of the operations.
        mix: Mix,
        /// When to stop measuring.
        stop: Stop,
        /// How long to run before measuring.
        warmup: Duration,
        /// Whether to write the whole key space first.
        prefill: bool,
    },
    /// One write of each of this many keys, in order.
    Load(u64),
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Protocol of the server.
    pub target: Target,
    /// Server address.
    pub addr: String,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Value size in bytes.
    pub value_size: usize,
    /// Number of keys.
    pub keys: u64,
    /// Key prefix.
    pub key_prefix: String,
    /// Digits of the key number.
    pub id_len: usize,
    /// TTL in milliseconds (at least 1).
    pub ttl_ms: u64,
    /// What to run.
    pub work: Work,
    /// Random seed.
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
    /// JSON output.
    pub json: bool,
    /// Progress line on stderr.
    pub progress: bool,
    /// How connections are opened: plain TCP or TLS.
    pub connector: Connector,
    /// Sent in an `AUTH` on every connection before the run, if set.
    pub credentials: Option<Credentials>,
    /// A new connection for every request.
    pub reconnect: bool,
    /// Open loop at this many requests per second in all (`--rate`); `None` is a closed
    /// loop, each connection sending as soon as its window has room.
    pub rate: Option<f64>,
}

impl Args {
    /// Checks the flags against each other and the target.
    pub fn into_config(self, stderr_is_terminal: bool) -> Result<Config, String> {
        let credentials = self.credentials()?;
        if credentials.is_some() && self.target == crate::protocol::Target::Memcached {
            return Err("--user: the memcached target has no authentication".into());
        }
        let connector = self.connector()?;
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if self.reconnect && self.pipeline != 1 {
            return Err("--reconnect sends one request per connection: use --pipeline 1".into());
        }
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err("--ttl must be at least 1ms".into());
        }
        if self.target == crate::protocol::Target::Memcached {
            memcached_ttl_secs(ttl_ms)?;
        }
        if self.target != crate::protocol::Target::Native
            && self.mix.kinds().any(OpKind::needs_owners)
        {
            return Err("login, devices and end_all are sessiond's: use --target native".into());
        }
        if self.target != crate::protocol::Target::Resp && self.mix.kinds().any(OpKind::needs_resp)
        {
            return Err("unlock and multi are RESP commands: use --target resp".into());
        }
        if self.mix.kinds().any(OpKind::needs_owners)
            && self.key_prefix.len() + self.id_len > MAX_OWNER_LEN + 1
        {
            return Err(format!(
                "login, devices and end_all use the key without its last digit as the owner, \
                 which must be at most {MAX_OWNER_LEN} bytes: shorten --key-prefix or --id-len"
            ));
        }
        if let Some(rate) = self.rate {
            // At least one request every ten seconds in all: a run that hears no reply for
            // 30 s takes the server to be stuck and gives up (run::STALL_TIMEOUT).
            if !(rate.is_finite() && rate >= MIN_RATE) {
                return Err(format!(
                    "--rate must be a number of requests per second of at least {MIN_RATE}, \
                     not {rate}"
                ));
            }
        }
        if self.ops == Some(0) || self.load == Some(0) {
            return Err("--ops and --load must be at least 1".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err("--duration must be longer than 0s".into());
        }
        let (work, keys) = match self.load {
            Some(n) => (Work::Load(n), n),
            None => {
                let stop = match (self.ops, self.duration) {
                    (Some(n), _) => Stop::Ops(n),
                    (None, Some(d)) => Stop::Duration(d),
                    (None, None) => Stop::Duration(Duration::from_secs(10)),
                };
                let work = Work::Mix {
                    mix: self.mix,
                    stop,
                    warmup: self.warmup,
                    prefill: self.prefill,
                };
                (work, self.keys)
            }
        };
        let threads = match self.threads {
            Some(0) => return Err("--threads must be at least 1".into()),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Config {
            target: self.target,
            addr: self.addr,
            connections: self.connections,
            pipeline: self.pipeline,
            value_size: self.value_size,
            keys,
            key_prefix: self.key_prefix,
            id_len: self.id_len,
            ttl_ms,
            work,
            seed: self.seed,
            threads,
            json: self.json,
            progress: self.progress || stderr_is_terminal,
            connector,
            credentials,
            reconnect: self.reconnect,
            rate: self.rate,
        })
    }

    /// The credentials of `--user`, with the password from `--password-file` or
    /// `$SESSIOND_PASSWORD`.
    fn credentials(&self) -> Result<Option<Credentials>, String> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        Credentials::from_file_or_env(user, self.password_file.as_deref(), PASSWORD_VAR)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Plain TCP, or TLS per `--tls`, `--cacert`, `--cert`/`--key` and `--server-name`.
    fn connector(&self) -> Result<Connector, String> {
        let (true, Some(ca)) = (self.tls, &self.cacert) else {
            return Ok(Connector::new(None));
        };
        let client_cert = self.cert.as_deref().zip(self.key.as_deref());
        let tls = TlsOptions::from_files(ca, client_cert, self.server_name.as_deref())
            .map_err(|e| e.to_string())?;
        Ok(Connector::new(Some(tls)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        let args =
            Args::try_parse_from(std::iter::once("sessiond-bench").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        args.into_config(false)
    }

    #[test]
    fn defaults_are_the_session_workload() {
        let c = config(&[]).unwrap();
        assert_eq!((c.connections, c.pipeline, c.value_size), (50, 1, 1024));
        assert_eq!((c.keys, c.ttl_ms), (100_000, 30 * 60 * 1000));
        assert_eq!(
            c.work,
            Work::Mix {
                mix: Mix::default(),
                stop: Stop::Duration(Duration::from_secs(10)),
                warmup: Duration::from_secs(1),
                prefill: false,
            }
        );
        assert!(!c.progress);
    }

    #[test]
    fn owner_operations_need_the_native_target_and_short_enough_keys() {
        let mix = ["--mix", "get=1,login=1"];
        assert!(config(&mix).is_ok());
        assert!(config(&[&mix[..], &["--target", "resp"]].concat()).is_err());
        assert!(config(&[&mix[..], &["--target", "memcached"]].concat()).is_err());
        assert!(config(&[&mix[..], &["--id-len", "300"]].concat()).is_err());
    }

    #[test]
    fn conflicting_or_empty_flags_are_refused() {
        assert!(config(&["--ops", "5", "--duration", "1s"]).is_err());
        assert!(config(&["--load", "5", "--ops", "5"]).is_err());
        assert!(config(&["--pipeline", "0"]).is_err());
        assert!(config(&["--ttl", "0s"]).is_err());
        assert!(config(&["--mix", "get=0"]).is_err());
        assert!(config(&["--target", "memcached", "--ttl", "31d"]).is_err());
        assert!(config(&["--target", "memcached", "--ttl", "30d"]).is_ok());
        assert_eq!(config(&["--load", "7"]).unwrap().work, Work::Load(7));
    }

    #[test]
    fn tls_and_credential_flags_need_their_companions() {
        // TLS needs a CA to verify the server with, and a CA alone does not turn TLS on.
        assert!(config(&["--tls"]).is_err());
        assert!(config(&["--cacert", "ca.pem"]).is_err());
        assert!(config(&["--tls", "--cacert", "/nonexistent/ca.pem"]).is_err());
        assert!(config(&["--cert", "c.pem"]).is_err());
        // A password has no flag of its own, and memcached has no AUTH.
        assert!(config(&["--password", "secret"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "secret\n").unwrap();
        let file = file.to_str().unwrap();
        let c = config(&["--user", "app", "--password-file", file]).unwrap();
        assert_eq!(
            c.credentials.map(|c| c.user().to_string()),
            Some("app".into())
        );
        assert!(!c.connector.is_tls());
        let memcached = [
            "--target",
            "memcached",
            "--user",
            "app",
            "--password-file",
            file,
        ];
        assert!(config(&memcached).is_err());
        assert!(config(&["--reconnect", "--pipeline", "2"]).is_err());
        assert!(config(&["--reconnect"]).unwrap().reconnect);
    }

    #[test]
    fn rate_is_a_positive_schedule_of_the_mix() {
        assert_eq!(config(&["--rate", "2500"]).unwrap().rate, Some(2500.0));
        assert_eq!(config(&[]).unwrap().rate, None);
        assert_eq!(config(&["--rate", "0.1"]).unwrap().rate, Some(0.1));
        for bad in ["0", "-5", "NaN", "inf", "0.05"] {
            assert!(config(&["--rate", bad]).is_err(), "--rate {bad}");
        }
        assert!(config(&["--rate", "100", "--load", "5"]).is_err());
        assert!(config(&["--rate", "100", "--reconnect"]).is_err());
    }
}
