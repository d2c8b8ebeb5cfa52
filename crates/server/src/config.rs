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
    /// Password `AUTH` must give before any other command; absent means none is required.
    pub password: Option<String>,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            listen: None,
            tls_listen: None,
            default_ttl: Duration::from_secs(24 * 60 * 60),
            allow_flush: false,
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
    /// Connections served at once; more are answered `BUSY` and closed.
    pub max_connections: u32,
    /// Close connections that send nothing for this long (0 disables).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
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
            idle_timeout: Duration::from_secs(300),
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        LimitsConfig {
            max_key_bytes: limits.max_key_len,
            max_value_bytes: limits.max_value_len,
            max_ttl: Duration::from_millis(limits.max_ttl_ms),
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
        if self.resp.password.as_deref() == Some("") {
            return invalid(
                "resp.password",
                "must not be empty (leave it out to require no password)".into(),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", e.to_string());
        }
        self.validate_tls()
    }

    /// `[tls]` is complete when a listener needs it, and not given for nothing (a
    /// certificate configured with no TLS listener is most likely a forgotten `tls_listen`,
    /// and would leave the operator believing traffic is encrypted).
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
        let configured = tls.cert_file.is_some()
            || tls.key_file.is_some()
            || tls.client_ca_file.is_some()
            || tls.require_client_cert;
        if configured && !listening {
            return invalid(
                "tls",
                "is set but no listener uses it: set server.tls_listen or resp.tls_listen",
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

    /// The certificate files of the TLS listeners, if any listener uses TLS.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        if self.server.tls_listen.is_none() && self.resp.tls_listen.is_none() {
            return None;
        }
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
            password: self.resp.password.clone(),
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
        let err = parse("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n").unwrap_err();
        assert!(err.contains("tls_listen"), "{err}");
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

    #[test]
    fn durations_are_human() {
        let config =
            parse("[server]\nidle_timeout = \"90s\"\n[limits]\nmax_ttl = \"2h\"\n").unwrap();
        assert_eq!(config.server.idle_timeout, Duration::from_secs(90));
        assert_eq!(config.limits().max_ttl_ms, 7_200_000);
    }
}
