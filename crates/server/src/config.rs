//! The configuration file (`sessiond.toml`) and its validation.
//!
//! Every section and key is optional and defaults to the value documented in
//! `config/sessiond.toml`. Unknown keys are errors, so a typo never silently falls back to a
//! default; errors name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sessiond_proto::Limits;

use crate::aof::FsyncPolicy;
use crate::auth::Role;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value is of the right type but out of range.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `server.max_connections`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: network and process settings.
    pub server: ServerConfig,
    /// `[limits]`: sizes and TTLs accepted.
    pub limits: LimitsConfig,
    /// `[expiry]`: the background sweep.
    pub expiry: ExpiryConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[aof]`: persistence.
    pub aof: AofConfig,
    /// `[resp]`: the optional Redis-protocol listener.
    pub resp: RespConfig,
    /// `[tls]`: the certificate of the TLS listeners.
    pub tls: TlsConfig,
    /// `[auth]`: users, roles and the limits on authentication.
    pub auth: AuthConfig,
    /// `[slowlog]`: the log of slow requests.
    pub slowlog: SlowlogConfig,
    /// `[metrics]`: the Prometheus metrics and health endpoints.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the HTTP listener of `/metrics`, `/health/live` and `/health/ready`
/// (`crate::metrics`, `docs/METRICS.md`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Its address; absent means no metrics listener (and no per-request recording).
    pub listen: Option<SocketAddr>,
    /// Whether it speaks TLS, with the `[tls]` certificate.
    pub tls: bool,
    /// A file holding the bearer token `/metrics` requires (one line); absent means none.
    pub token_file: Option<PathBuf>,
}

/// `[slowlog]`: which requests the slow-request log ([`crate::slowlog`]) keeps.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlowlogConfig {
    /// Requests that take at least this long are kept; `None` (`"off"`) keeps none.
    #[serde(deserialize_with = "threshold")]
    pub threshold: Option<Duration>,
    /// How many entries are kept; the oldest is dropped for a new one.
    pub max_len: usize,
}

impl Default for SlowlogConfig {
    fn default() -> Self {
        SlowlogConfig {
            threshold: Some(crate::slowlog::DEFAULT_THRESHOLD),
            max_len: crate::slowlog::DEFAULT_MAX_LEN,
        }
    }
}

/// `slowlog.threshold`: a duration (`"10ms"`, `"0s"` for every request) or `"off"`.
fn threshold<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?}: {e} (write a duration such as \"10ms\", or \"off\")"
        ))
    })
}

/// A secret from the configuration file (a password). Its `Debug` prints `<redacted>`, so
/// that printing a configuration, in a log line or a panic, never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for the code that checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[auth]`: who may connect, and as what.
///
/// Authentication is on when at least one user is defined (or the deprecated
/// `resp.password` is set); then every connection, on every listener, must authenticate
/// before it may do more than `HELLO`, `AUTH` and `PING`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A connection that has not authenticated this long after it was accepted is closed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed `AUTH` attempts allowed per client IP address and minute before each further
    /// failure is answered only after a delay.
    pub max_failures_per_minute: u32,
    /// Start even though a listener binds a non-loopback address with authentication off
    /// (protected mode's override; logged as a warning at every start).
    pub allow_unauthenticated_network: bool,
    /// `[[auth.users]]`.
    pub users: Vec<UserConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            timeout: Duration::from_secs(10),
            max_failures_per_minute: 10,
            allow_unauthenticated_network: false,
            users: Vec::new(),
        }
    }
}

/// `[[auth.users]]`: one user. Exactly one of `password_hash`, `password_file` and
/// `password_env` gives the password. (`Debug` shows no secret: the hash is a [`Secret`], and
/// the others only say where the password is.)
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name `AUTH` gives.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// An argon2id PHC string, as `sessiond hash-password` prints it.
    pub password_hash: Option<Secret>,
    /// A file holding the password in plain text (a secrets manager's mount); one trailing
    /// newline is ignored.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password in plain text.
    pub password_env: Option<String>,
}

/// `[tls]`: used by `server.tls_listen` and `resp.tls_listen`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates are verified against (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client without a certificate is refused.
    pub require_client_cert: bool,
}

/// `[resp]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RespConfig {
    /// Address of the RESP (Redis protocol) listener; absent means no RESP listener.
    pub listen: Option<SocketAddr>,
    /// Address of a RESP listener that speaks TLS (see `[tls]`); absent means none.
    pub tls_listen: Option<SocketAddr>,
    /// TTL of a write that gives none (Redis would keep such a key forever).
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Whether `FLUSHDB`/`FLUSHALL` may delete every session.
    pub allow_flush: bool,
    /// Largest reply a multi-key command (`MGET`) may build, in bytes; a larger one is
    /// refused with an error instead of being built.
    pub max_reply_bytes: u64,
    /// How long one `EVAL`/`EVALSHA` may run, in milliseconds; a script still running then
    /// is stopped with an error and nothing it wrote is applied.
    pub max_script_time_ms: u64,
    /// How much memory one script may allocate in Lua, in bytes; past it the script is
    /// stopped with an error and nothing it wrote is applied.
    pub max_script_memory_bytes: u64,
    /// How many scripts `SCRIPT LOAD` and `EVAL` keep for `EVALSHA`; past it the least
    /// recently used is forgotten.
    pub max_cached_scripts: u64,
    /// Deprecated in favour of `[auth]`: the password of an implicit user `default` with the
    /// `admin` role. Setting it turns authentication on for every listener.
    pub password: Option<Secret>,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            listen: None,
            tls_listen: None,
            default_ttl: Duration::from_secs(24 * 60 * 60),
            allow_flush: false,
            max_reply_bytes: 64 * 1024 * 1024,
            max_script_time_ms: 1000,
            max_script_memory_bytes: 16 * 1024 * 1024,
            max_cached_scripts: 1000,
            password: None,
        }
    }
}

/// `[aof]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AofConfig {
    /// Whether mutations are appended to `data_dir/appendonly.aof` and replayed at startup.
    pub enabled: bool,
    /// When the file is fsynced, and so what a crash can lose.
    pub fsync: FsyncPolicy,
    /// No automatic rewrite while the file is smaller than this.
    pub rewrite_min_bytes: u64,
    /// Rewrite once the file has grown by this percentage since the last rewrite or load.
    pub rewrite_growth_percent: u64,
}

impl Default for AofConfig {
    fn default() -> Self {
        AofConfig {
            enabled: true,
            fsync: FsyncPolicy::Everysec,
            rewrite_min_bytes: 64 * 1024 * 1024,
            rewrite_growth_percent: 100,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the native-protocol listener.
    pub listen: SocketAddr,
    /// Address of a native-protocol listener that speaks TLS (see `[tls]`); absent means
    /// none.
    pub tls_listen: Option<SocketAddr>,
    /// Directory for persistent files.
    pub data_dir: PathBuf,
    /// Connections served at once; more are answered `BUSY` and closed, unless one that has
    /// gone longest without a request can be displaced.
    pub max_connections: u32,
    /// Connections served at once from one client IP address, loopback included (0: no
    /// limit).
    pub max_connections_per_address: u32,
    /// Close connections that send nothing for this long (0 disables).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Close a connection whose request is not complete this long after its first byte
    /// arrived, however steadily the rest trickles in (0 disables).
    #[serde(with = "humantime_serde")]
    pub frame_timeout: Duration,
    /// Close a connection whose client does not take its responses within this long
    /// (0 disables).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// The bytes that connections waiting for their clients to read may hold together;
    /// past it, those holding the most are closed (0 disables).
    pub max_pending_output_bytes: u64,
    /// How long shutdown waits for connections to finish their requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Threads serving connections; 0 means one per CPU the process may run on.
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            tls_listen: None,
            data_dir: PathBuf::from("data"),
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_pending_output_bytes: 64 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            worker_threads: 0,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest key, in bytes.
    pub max_key_bytes: u32,
    /// Longest value, in bytes.
    pub max_value_bytes: u32,
    /// Longest TTL a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// The memory the server's sessions, tables and buffers may hold ([`crate::memory`]).
    pub max_memory: MaxMemory,
    /// What happens when `max_memory` is reached.
    pub memory_policy: crate::memory::Policy,
    /// The absolute lifetime of every session created (its deadline no touch moves past),
    /// unless the write gives one; absent: none.
    #[serde(with = "humantime_serde")]
    pub max_session_lifetime: Option<Duration>,
    /// The most live sessions one owner may have, 1 to [`MAX_MAX_SESSIONS_PER_OWNER`];
    /// default [`DEFAULT_MAX_SESSIONS_PER_OWNER`]. A request may set a lower limit for itself,
    /// never a higher one.
    pub max_sessions_per_owner: u32,
    /// What binding one more session to an owner at `max_sessions_per_owner` does.
    pub owner_limit_policy: OwnerLimitPolicy,
}

/// The default of `limits.max_sessions_per_owner`.
///
/// Finite because listing (`LIST_SESSIONS`, `SESSIOND.SESSIONS`) and ending (`END_ALL`) an
/// owner's sessions walk all of them while holding the owner's shard lock on a runtime
/// worker: an owner with hundreds of thousands of sessions made every such request take
/// seconds and stalled unrelated requests. A person has a handful of devices; a thousand
/// leaves room for service accounts and shared kiosks while keeping those walks under a
/// millisecond (proto/PROTOCOL.md 6.4). Refusing past it (the default policy) is visible to
/// the application, where silently ending sessions would not be.
pub const DEFAULT_MAX_SESSIONS_PER_OWNER: u32 = 1_000;

/// The highest `limits.max_sessions_per_owner` the server accepts: an owner at this size
/// already costs a listing or an end-all a few hundred milliseconds of one worker
/// (proto/PROTOCOL.md 6.4), and nothing higher is a per-owner limit in any useful sense.
pub const MAX_MAX_SESSIONS_PER_OWNER: u32 = 100_000;

/// The longest `resp.max_script_time_ms`: a script holds its keys, and the worker thread it
/// runs on, for as long as it runs.
pub const MAX_SCRIPT_TIME_MS: u64 = 60_000;

/// The smallest `resp.max_script_memory_bytes`: less leaves a script no room for the strings
/// and tables of even a small reply.
pub const MIN_SCRIPT_MEMORY: u64 = 1 << 20;

/// The largest `resp.max_script_memory_bytes`: each worker thread has its own Lua state, so
/// the server may need this much per worker.
pub const MAX_SCRIPT_MEMORY: u64 = 1 << 30;

/// The largest `resp.max_cached_scripts`.
pub const MAX_CACHED_SCRIPTS: u64 = 100_000;

/// `limits.owner_limit_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnerLimitPolicy {
    /// The login is refused (`OWNER_LIMIT`).
    #[default]
    Refuse,
    /// The owner's least recently used sessions are ended to make room.
    EndLeastRecentlyUsed,
}

/// `limits.max_memory`: a size (`"2GiB"`, `"512MB"`, or a number of bytes), `"auto"`, or
/// `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "SizeText")]
pub enum MaxMemory {
    /// [`crate::memory::DEFAULT_SHARE_PERCENT`] of the container's or the machine's memory.
    #[default]
    Auto,
    /// No cap. Spelled out (`"unlimited"`) because `0` or `"off"` could as well be typos,
    /// and a server without a cap is ended by the kernel's OOM killer instead.
    Unlimited,
    /// This many bytes.
    Bytes(u64),
}

/// The smallest cap accepted: below it the server could not even hold its tables.
pub const MIN_MAX_MEMORY: u64 = 1 << 20;

impl MaxMemory {
    /// The cap in bytes, `None` for none (or when `auto` finds no memory size to take a
    /// share of).
    pub fn resolve(self) -> Option<u64> {
        match self {
            MaxMemory::Auto => crate::memory::default_limit(),
            MaxMemory::Unlimited => None,
            MaxMemory::Bytes(bytes) => Some(bytes),
        }
    }
}

/// A size as TOML gives it: a string or an integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Integer(i64),
    Text(String),
}

impl TryFrom<SizeText> for MaxMemory {
    type Error = String;

    fn try_from(text: SizeText) -> Result<MaxMemory, String> {
        let bytes = match text {
            SizeText::Text(text) if text == "auto" => return Ok(MaxMemory::Auto),
            SizeText::Text(text) if text == "unlimited" => return Ok(MaxMemory::Unlimited),
            SizeText::Text(text) => parse_size(&text)?,
            SizeText::Integer(n) => u64::try_from(n).map_err(|_| format!("{n} is negative"))?,
        };
        if bytes < MIN_MAX_MEMORY {
            return Err(format!(
                "limits.max_memory must be at least 1MiB (write \"unlimited\" for no cap), \
                 not {bytes} bytes"
            ));
        }
        Ok(MaxMemory::Bytes(bytes))
    }
}

/// Parses `"2GiB"`, `"512 MB"`, `"1048576"`: binary (KiB, MiB, GiB, TiB) and decimal (KB,
/// MB, GB, TB) units, or bytes (`B` or none).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as \"2GiB\""))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use KiB, MiB, GiB...)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        LimitsConfig {
            max_key_bytes: limits.max_key_len,
            max_value_bytes: limits.max_value_len,
            max_ttl: Duration::from_millis(limits.max_ttl_ms),
            max_memory: MaxMemory::Auto,
            memory_policy: crate::memory::Policy::RefuseNew,
            max_session_lifetime: None,
            max_sessions_per_owner: DEFAULT_MAX_SESSIONS_PER_OWNER,
            owner_limit_policy: OwnerLimitPolicy::Refuse,
        }
    }
}

/// `[expiry]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// How often the sweep runs.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long one sweep may run before it yields until the next tick (up to ten times
    /// longer while much of what it visits has expired).
    #[serde(with = "humantime_serde")]
    pub sweep_budget: Duration,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            sweep_interval: Duration::from_millis(100),
            sweep_budget: Duration::from_millis(1),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Filter used when `RUST_LOG` is not set (tracing-subscriber `EnvFilter` syntax).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1".into());
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return invalid("server.data_dir", "must not be empty".into());
        }
        if self.limits.max_key_bytes == 0 || self.limits.max_key_bytes > Limits::HARD_MAX_KEY_LEN {
            return invalid(
                "limits.max_key_bytes",
                format!("must be between 1 and {}", Limits::HARD_MAX_KEY_LEN),
            );
        }
        if self.limits.max_value_bytes > Limits::HARD_MAX_VALUE_LEN {
            return invalid(
                "limits.max_value_bytes",
                format!("must be at most {}", Limits::HARD_MAX_VALUE_LEN),
            );
        }
        let max_ttl_ms = self.limits.max_ttl.as_millis();
        if max_ttl_ms == 0 || max_ttl_ms > u128::from(Limits::HARD_MAX_TTL_MS) {
            return invalid(
                "limits.max_ttl",
                "must be between 1ms and 10 years (3650d)".into(),
            );
        }
        if let Some(lifetime) = self.limits.max_session_lifetime {
            let ms = lifetime.as_millis();
            if ms == 0 || ms > u128::from(Limits::HARD_MAX_TTL_MS) {
                return invalid(
                    "limits.max_session_lifetime",
                    "must be between 1ms and 10 years (3650d)".into(),
                );
            }
        }
        if !(1..=MAX_MAX_SESSIONS_PER_OWNER).contains(&self.limits.max_sessions_per_owner) {
            return invalid(
                "limits.max_sessions_per_owner",
                format!("must be between 1 and {MAX_MAX_SESSIONS_PER_OWNER}"),
            );
        }
        if self.expiry.sweep_interval.is_zero() {
            return invalid("expiry.sweep_interval", "must be greater than 0".into());
        }
        if self.expiry.sweep_budget.is_zero() {
            return invalid("expiry.sweep_budget", "must be greater than 0".into());
        }
        if self.aof.rewrite_growth_percent == 0 {
            return invalid("aof.rewrite_growth_percent", "must be at least 1".into());
        }
        if self.resp.default_ttl.as_millis() == 0 {
            return invalid("resp.default_ttl", "must be at least 1ms".into());
        }
        self.validate_scripts()?;
        if self
            .resp
            .password
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            return invalid(
                "resp.password",
                "must not be empty (leave it out to require no password)".into(),
            );
        }
        if let Err(e) = crate::logging::parse_filter(&self.log.level) {
            return invalid("log.level", e.to_string());
        }
        let max_len = crate::slowlog::MAX_MAX_LEN;
        if !(1..=max_len).contains(&self.slowlog.max_len) {
            return invalid(
                "slowlog.max_len",
                format!("must be between 1 and {max_len} (set slowlog.threshold = \"off\" to keep none)"),
            );
        }
        self.validate_auth()?;
        self.validate_tls()?;
        if self.metrics.tls && self.tls_certificate().is_none() {
            return invalid(
                "metrics.tls",
                "needs tls.cert_file and tls.key_file".to_string(),
            );
        }
        Ok(())
    }

    /// The `[resp]` script bounds are within what the server can honour: a time limit of at
    /// most a minute (a script holds its keys for as long as it runs), at least 1 MiB of Lua
    /// memory (the standard library alone needs some), at most 1 GiB.
    fn validate_scripts(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        let resp = &self.resp;
        if !(1..=MAX_SCRIPT_TIME_MS).contains(&resp.max_script_time_ms) {
            return invalid(
                "resp.max_script_time_ms",
                "must be between 1 and 60000 (one minute)",
            );
        }
        if !(MIN_SCRIPT_MEMORY..=MAX_SCRIPT_MEMORY).contains(&resp.max_script_memory_bytes) {
            return invalid(
                "resp.max_script_memory_bytes",
                "must be between 1048576 (1 MiB) and 1073741824 (1 GiB)",
            );
        }
        if !(1..=MAX_CACHED_SCRIPTS).contains(&resp.max_cached_scripts) {
            return invalid("resp.max_cached_scripts", "must be between 1 and 100000");
        }
        Ok(())
    }

    /// Every user has a name, one role and exactly one source of its password, and a hash
    /// is one `sessiond hash-password` could have printed. No message quotes a secret.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        let auth = &self.auth;
        if auth.timeout.is_zero() {
            return invalid("auth.timeout", "must be greater than 0".into());
        }
        if auth.max_failures_per_minute == 0 {
            return invalid("auth.max_failures_per_minute", "must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        if self.resp.password.is_some() {
            names.insert(crate::auth::DEFAULT_USER);
        }
        for (i, user) in auth.users.iter().enumerate() {
            let n = i + 1;
            if user.name.is_empty() || user.name.len() > Limits::MAX_USER_LEN {
                return invalid(
                    "auth.users.name",
                    format!(
                        "user #{n}: must be 1 to {} bytes long",
                        Limits::MAX_USER_LEN
                    ),
                );
            }
            if !names.insert(user.name.as_str()) {
                return invalid(
                    "auth.users.name",
                    format!(
                        "user {:?} is defined twice (`default` is also defined by resp.password)",
                        user.name
                    ),
                );
            }
            let sources = usize::from(user.password_hash.is_some())
                + usize::from(user.password_file.is_some())
                + usize::from(user.password_env.is_some());
            if sources != 1 {
                return invalid(
                    "auth.users.password_hash",
                    format!(
                        "user {:?}: set exactly one of password_hash, password_file and password_env",
                        user.name
                    ),
                );
            }
            if let Some(hash) = &user.password_hash {
                if let Err(reason) = crate::auth::check_hash(hash.expose()) {
                    return invalid(
                        "auth.users.password_hash",
                        format!("user {:?}: {reason}", user.name),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether connections must authenticate: some user is defined.
    pub fn auth_enabled(&self) -> bool {
        !self.auth.users.is_empty() || self.resp.password.is_some()
    }

    /// Every address a listener binds, with the key that sets it. Protected mode checks them
    /// all.
    pub fn listen_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        let optional = [
            ("server.tls_listen", self.server.tls_listen),
            ("resp.listen", self.resp.listen),
            ("resp.tls_listen", self.resp.tls_listen),
        ];
        std::iter::once(("server.listen", self.server.listen))
            .chain(
                optional
                    .into_iter()
                    .filter_map(|(key, addr)| addr.map(|a| (key, a))),
            )
            .collect()
    }

    /// Protected mode: the addresses that are reachable from the network (not loopback)
    /// while authentication is off. Empty when authentication is on or every listener binds
    /// a loopback address.
    pub fn exposed_without_auth(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut exposed: Vec<_> = if self.auth_enabled() {
            Vec::new()
        } else {
            self.listen_addrs()
                .into_iter()
                .filter(|(_, addr)| !addr.ip().is_loopback())
                .collect()
        };
        // The metrics listener has no users: its protection is its token.
        if let (Some(addr), None) = (self.metrics.listen, &self.metrics.token_file) {
            if !addr.ip().is_loopback() {
                exposed.push(("metrics.listen", addr));
            }
        }
        exposed
    }

    /// `[tls]` is complete when a listener needs it. (`[tls]` without a TLS listener is
    /// not an error here: the file may rely on `--tls-listen` or `SESSIOND_TLS_LISTEN`, and
    /// is checked alone; the daemon warns at start-up instead, see
    /// [`Config::tls_unused`].)
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        let tls = &self.tls;
        let listening = self.server.tls_listen.is_some() || self.resp.tls_listen.is_some();
        if listening && tls.cert_file.is_none() {
            return invalid(
                "tls.cert_file",
                "is required when server.tls_listen or resp.tls_listen is set",
            );
        }
        if listening && tls.key_file.is_none() {
            return invalid(
                "tls.key_file",
                "is required when server.tls_listen or resp.tls_listen is set",
            );
        }
        if tls.require_client_cert && tls.client_ca_file.is_none() {
            return invalid(
                "tls.require_client_cert",
                "needs tls.client_ca_file to verify client certificates against",
            );
        }
        Ok(())
    }

    /// Whether `[tls]` names files although no listener uses TLS: most likely a forgotten
    /// `tls_listen`, which would leave the operator believing traffic is encrypted.
    pub fn tls_unused(&self) -> bool {
        let tls = &self.tls;
        let configured = tls.cert_file.is_some()
            || tls.key_file.is_some()
            || tls.client_ca_file.is_some()
            || tls.require_client_cert;
        configured && !self.tls_listening()
    }

    /// Whether some listener speaks TLS.
    fn tls_listening(&self) -> bool {
        self.server.tls_listen.is_some()
            || self.resp.tls_listen.is_some()
            || (self.metrics.tls && self.metrics.listen.is_some())
    }

    /// The certificate files of the TLS listeners, if any listener uses TLS.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        if !self.tls_listening() {
            return None;
        }
        self.tls_certificate()
    }

    /// The files `[tls]` names, whether or not a listener uses them (`--check-config`
    /// reads them, since the listener may come from the command line): `None` unless both
    /// the certificate and the key are set.
    pub fn tls_certificate(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert_file: self.tls.cert_file.clone()?,
            key_file: self.tls.key_file.clone()?,
            client_ca_file: self.tls.client_ca_file.clone(),
            require_client_cert: self.tls.require_client_cert,
        })
    }

    /// The RESP listener's settings (all of `[resp]` but the address).
    pub fn resp_settings(&self) -> crate::resp::Settings {
        crate::resp::Settings {
            // Capped like every other TTL, so that lowering limits.max_ttl alone is enough.
            default_ttl_ms: self.resp.default_ttl.min(self.limits.max_ttl).as_millis() as u64,
            allow_flush: self.resp.allow_flush,
            max_reply_bytes: usize::try_from(self.resp.max_reply_bytes).unwrap_or(usize::MAX),
            max_script_time_ms: self.resp.max_script_time_ms,
            // Validated to at most 1 GiB, which fits every usize sessiond builds for.
            max_script_memory_bytes: usize::try_from(self.resp.max_script_memory_bytes)
                .unwrap_or(usize::MAX),
            max_cached_scripts: usize::try_from(self.resp.max_cached_scripts).unwrap_or(usize::MAX),
        }
    }

    /// The session defaults `[limits]` sets for the store.
    pub fn session_defaults(&self) -> crate::store::SessionDefaults {
        let limits = &self.limits;
        crate::store::SessionDefaults {
            max_lifetime_ms: limits.max_session_lifetime.map(|d| d.as_millis() as u64),
            owner_limit: Some(crate::store::OwnerLimit {
                max: limits.max_sessions_per_owner,
                policy: match limits.owner_limit_policy {
                    OwnerLimitPolicy::Refuse => crate::store::LimitPolicy::Refuse,
                    OwnerLimitPolicy::EndLeastRecentlyUsed => {
                        crate::store::LimitPolicy::EndLeastRecentlyUsed
                    }
                },
            }),
        }
    }

    /// The protocol limits this configuration sets.
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_len: self.limits.max_key_bytes,
            max_value_len: self.limits.max_value_bytes,
            max_ttl_ms: self.limits.max_ttl.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let text = include_str!("../../../config/sessiond.toml");
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("listen_addr"), "{err}");
        let err = parse("[srever]\n").unwrap_err();
        assert!(err.contains("srever"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("[server]\nmax_connections = 0\n").unwrap_err();
        assert!(err.contains("server.max_connections"), "{err}");
        let err = parse("[server]\nmax_connections = -1\n").unwrap_err();
        assert!(err.contains("max_connections"), "{err}");
        let err = parse("[server]\nlisten = \"nope\"\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
        let err = parse("[limits]\nmax_ttl = \"forever\"\n").unwrap_err();
        assert!(err.contains("max_ttl"), "{err}");
        let err = parse("[limits]\nmax_value_bytes = 100000000\n").unwrap_err();
        assert!(err.contains("limits.max_value_bytes"), "{err}");
        let err = parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(err.contains("format"), "{err}");
        let err = parse("[resp]\ndefault_ttl = \"0s\"\n").unwrap_err();
        assert!(err.contains("resp.default_ttl"), "{err}");
        let err = parse("[resp]\npassword = \"\"\n").unwrap_err();
        assert!(err.contains("resp.password"), "{err}");
        let err = parse("[resp]\nlisten = \"nope\"\n").unwrap_err();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn script_bounds_are_validated() {
        let settings = parse("").unwrap().resp_settings();
        assert_eq!(settings.max_script_time_ms, 1000);
        assert_eq!(settings.max_script_memory_bytes, 16 << 20);
        assert_eq!(settings.max_cached_scripts, 1000);
        for (text, key) in [
            ("max_script_time_ms = 0", "resp.max_script_time_ms"),
            ("max_script_time_ms = 60001", "resp.max_script_time_ms"),
            (
                "max_script_memory_bytes = 1000",
                "resp.max_script_memory_bytes",
            ),
            (
                "max_script_memory_bytes = 2147483648",
                "resp.max_script_memory_bytes",
            ),
            ("max_cached_scripts = 0", "resp.max_cached_scripts"),
        ] {
            let err = parse(&format!("[resp]\n{text}\n")).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        let config = parse("[resp]\nmax_script_time_ms = 200\nmax_cached_scripts = 5\n").unwrap();
        assert_eq!(config.resp_settings().max_script_time_ms, 200);
        assert_eq!(config.resp_settings().max_cached_scripts, 5);
    }

    #[test]
    fn resp_listener_is_off_by_default() {
        let config = parse("").unwrap();
        assert_eq!(config.resp.listen, None);
        assert_eq!(config.resp_settings().default_ttl_ms, 86_400_000);
        let config = parse("[resp]\nlisten = \"127.0.0.1:6380\"\n").unwrap();
        assert_eq!(
            config.resp.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 6380)))
        );
        // The default TTL is capped by max_ttl like every other TTL.
        let config = parse("[limits]\nmax_ttl = \"2h\"\n").unwrap();
        assert_eq!(config.resp_settings().default_ttl_ms, 7_200_000);
    }

    #[test]
    fn tls_needs_a_certificate_and_a_listener() {
        assert_eq!(parse("").unwrap().tls_files(), None);
        let err = parse("[server]\ntls_listen = \"127.0.0.1:7879\"\n").unwrap_err();
        assert!(err.contains("tls.cert_file"), "{err}");
        let err = parse("[resp]\ntls_listen = \"127.0.0.1:6380\"\n[tls]\ncert_file = \"c.pem\"\n")
            .unwrap_err();
        assert!(err.contains("tls.key_file"), "{err}");
        let unused = parse("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n").unwrap();
        assert!(unused.tls_unused());
        assert_eq!(unused.tls_files(), None);
        let both = "[server]\ntls_listen = \"127.0.0.1:7879\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let err = parse(&format!("{both}require_client_cert = true\n")).unwrap_err();
        assert!(err.contains("tls.client_ca_file"), "{err}");
        let files = parse(&format!("{both}client_ca_file = \"ca.pem\"\n"))
            .unwrap()
            .tls_files()
            .unwrap();
        assert_eq!(files.cert_file, PathBuf::from("c.pem"));
        assert_eq!(files.client_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(!files.require_client_cert);
    }

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0sJ0PYw/5oZbZq2yfH3u1Ow6tqw4yZ3v1Kc1Xq1ePEM";

    #[test]
    fn auth_is_off_without_users() {
        let config = parse("").unwrap();
        assert!(!config.auth_enabled());
        assert_eq!(config.auth.timeout, Duration::from_secs(10));
        assert_eq!(config.auth.max_failures_per_minute, 10);
        let config = parse("[resp]\npassword = \"s3cret\"\n").unwrap();
        assert!(config.auth_enabled());
    }

    #[test]
    fn users_need_exactly_one_password_source() {
        let user = |extra: &str| format!("[[auth.users]]\nname = \"app\"\nrole = \"app\"\n{extra}");
        let config = parse(&user(&format!("password_hash = \"{HASH}\"\n"))).unwrap();
        assert!(config.auth_enabled());
        assert_eq!(config.auth.users[0].role, Role::App);
        assert!(parse(&user("password_env = \"X\"\n")).is_ok());
        let err = parse(&user("")).unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
        let err = parse(&user("password_env = \"X\"\npassword_file = \"f\"\n")).unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
        let err = parse(&user("role = \"root\"\n")).unwrap_err();
        assert!(err.contains("role"), "{err}");
    }

    #[test]
    fn a_bad_hash_is_refused_without_being_quoted() {
        let text = "[[auth.users]]\nname = \"app\"\nrole = \"app\"\npassword_hash = \"hunter2\"\n";
        let err = parse(text).unwrap_err();
        assert!(err.contains("auth.users.password_hash"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn user_names_are_unique_and_default_is_taken_by_resp_password() {
        let user = |name: &str| {
            format!("[[auth.users]]\nname = \"{name}\"\nrole = \"admin\"\npassword_env = \"X\"\n")
        };
        let err = parse(&format!("{}{}", user("a"), user("a"))).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = parse(&format!("[resp]\npassword = \"p\"\n{}", user("default"))).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = parse(&user("")).unwrap_err();
        assert!(err.contains("auth.users.name"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let text = format!("[resp]\npassword = \"s3cret-resp\"\n[[auth.users]]\nname = \"app\"\nrole = \"app\"\npassword_hash = \"{HASH}\"\n");
        let shown = format!("{:?}", parse(&text).unwrap());
        assert!(!shown.contains("s3cret-resp"), "{shown}");
        assert!(!shown.contains("argon2id"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn protected_mode_sees_every_listener() {
        assert!(parse("").unwrap().exposed_without_auth().is_empty());
        let config = parse("[server]\nlisten = \"0.0.0.0:7878\"\n").unwrap();
        assert_eq!(config.exposed_without_auth()[0].0, "server.listen");
        let config = parse("[resp]\nlisten = \"192.0.2.1:6380\"\n").unwrap();
        assert_eq!(config.exposed_without_auth()[0].0, "resp.listen");
        let config = parse("[resp]\nlisten = \"[::]:6380\"\npassword = \"p\"\n").unwrap();
        assert!(config.exposed_without_auth().is_empty());
        let config = parse("[resp]\nlisten = \"[::1]:6380\"\n").unwrap();
        assert!(config.exposed_without_auth().is_empty());
    }

    #[test]
    fn memory_sizes_are_human_and_zero_is_refused() {
        let sessions = parse(
            "[limits]\nmax_session_lifetime = \"12h\"\nmax_sessions_per_owner = 3\n\
             owner_limit_policy = \"end-least-recently-used\"\n",
        )
        .unwrap()
        .session_defaults();
        assert_eq!(sessions.max_lifetime_ms, Some(12 * 3_600_000));
        assert_eq!(
            sessions.owner_limit,
            Some(crate::store::OwnerLimit {
                max: 3,
                policy: crate::store::LimitPolicy::EndLeastRecentlyUsed
            })
        );
        // Without a word about it, an owner is held to the default limit, refusing.
        let defaults = parse("").unwrap().session_defaults();
        assert_eq!(defaults.max_lifetime_ms, None);
        assert_eq!(
            defaults.owner_limit,
            Some(crate::store::OwnerLimit {
                max: DEFAULT_MAX_SESSIONS_PER_OWNER,
                policy: crate::store::LimitPolicy::Refuse
            })
        );
        for bad in [0, u64::from(MAX_MAX_SESSIONS_PER_OWNER) + 1] {
            let err = parse(&format!("[limits]\nmax_sessions_per_owner = {bad}\n")).unwrap_err();
            assert!(err.contains("limits.max_sessions_per_owner"), "{err}");
            assert!(err.contains("between 1 and 100000"), "{err}");
        }
        let highest = format!("[limits]\nmax_sessions_per_owner = {MAX_MAX_SESSIONS_PER_OWNER}\n");
        assert_eq!(
            parse(&highest).unwrap().limits.max_sessions_per_owner,
            MAX_MAX_SESSIONS_PER_OWNER
        );
        let size = |text: &str| parse(&format!("[limits]\nmax_memory = {text}\n"));
        assert_eq!(
            size("\"2GiB\"").unwrap().limits.max_memory,
            MaxMemory::Bytes(2 << 30)
        );
        assert_eq!(
            size("\"32 MiB\"").unwrap().limits.max_memory,
            MaxMemory::Bytes(32 << 20)
        );
        assert_eq!(
            size("\"512MB\"").unwrap().limits.max_memory,
            MaxMemory::Bytes(512_000_000)
        );
        assert_eq!(
            size("67108864").unwrap().limits.max_memory,
            MaxMemory::Bytes(64 << 20)
        );
        assert_eq!(
            size("\"unlimited\"").unwrap().limits.max_memory,
            MaxMemory::Unlimited
        );
        assert_eq!(size("\"auto\"").unwrap().limits.max_memory, MaxMemory::Auto);
        for bad in ["0", "\"0\"", "\"off\"", "\"2 furlongs\"", "-5", "\"1KiB\""] {
            let err = size(bad).unwrap_err();
            assert!(err.contains("max_memory"), "{bad}: {err}");
        }
        let policy = parse("[limits]\nmemory_policy = \"evict-soonest-expiring\"\n").unwrap();
        assert_eq!(
            policy.limits.memory_policy,
            crate::memory::Policy::EvictSoonestExpiring
        );
        assert!(parse("[limits]\nmemory_policy = \"allkeys-lru\"\n").is_err());
    }

    #[test]
    fn slowlog_threshold_is_a_duration_or_off() {
        let config = parse("").unwrap();
        assert_eq!(config.slowlog.threshold, Some(Duration::from_millis(10)));
        assert_eq!(config.slowlog.max_len, 128);
        let config = parse("[slowlog]\nthreshold = \"off\"\n").unwrap();
        assert_eq!(config.slowlog.threshold, None);
        let config = parse("[slowlog]\nthreshold = \"0s\"\nmax_len = 5\n").unwrap();
        assert_eq!(config.slowlog.threshold, Some(Duration::ZERO));
        assert_eq!(config.slowlog.max_len, 5);
        let err = parse("[slowlog]\nthreshold = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("threshold"), "{err}");
        for bad in ["0", "100001", "-1"] {
            let err = parse(&format!("[slowlog]\nmax_len = {bad}\n")).unwrap_err();
            assert!(err.contains("max_len"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_are_human() {
        let config =
            parse("[server]\nidle_timeout = \"90s\"\n[limits]\nmax_ttl = \"2h\"\n").unwrap();
        assert_eq!(config.server.idle_timeout, Duration::from_secs(90));
        assert_eq!(config.limits().max_ttl_ms, 7_200_000);
    }
}
