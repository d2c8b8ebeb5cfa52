//! The command line, as clap sees it. The doc comments here are the `--help` text.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};

/// Printed after `--help`: the conventions a script relies on.
const AFTER_HELP: &str = "\
Output:
  get      the value bytes exactly as stored; a newline is added only when stdout is a
           terminal. With --meta, `version N` and `ttl_ms N` lines go to stderr.
  set      `version N` (the entry's new version), then `ended N` if --end-lru ended
           some of the owner's sessions
  rotate   `version N` (the session's new version), then `ended N` as for set
  sessions one line per session, most recently used first:
           `KEY VERSION CREATED_MS LAST_ACCESS_MS TTL_MS DEADLINE_MS` (times in Unix ms,
           DEADLINE_MS `-` without an absolute lifetime; KEY escaped like a message key);
           `more N` on stderr when N sessions did not fit the reply
  end-all  `ended N`
  rebalance progress lines on stderr; at the end
           `done passes N scanned N moved N changed N ended N refused N` on stdout
  touch    `version N` (the entry's version, unchanged by the touch)
  del      nothing
  ping     `PONG`
  stats    the server's `name value` lines; with --watch, a header and then one line of
           rates per --interval (every 20 lines the header again)
  slowlog  get: one line per entry, newest first:
           `ID UNIX_MS DURATION_US PROTOCOL COMMAND KEY_LEN CLIENT`; len: `len N`,
           `max_len N`, `threshold_us N` (or `off`), `recorded_total N`; reset: nothing

Exit status:
  0  success
  1  the request was answered but not carried out: the key does not exist (get, touch, del,
     set --xx, set --if-version, rotate), it already exists (set --nx, rotate's NEW) or has
     another version (--if-version), or the owner is at its limit (--owner-limit,
     OWNER_LIMIT). A one-line reason starting with the status name is printed on stderr.
  2  anything else: a usage error, connection failure, timeout, or an error status from the
     server (whose message is printed on stderr)

Durations are human-readable (500ms, 30s, 30m, 2h, 1day); TTLs are whole milliseconds,
at least 1ms.

Authentication and TLS:
  --user NAME (or $SESSIOND_USER) sends AUTH before the request, with the password from
  $SESSIOND_PASSWORD or --password-file (there is no --password flag: a password on the
  command line is visible to every user of the machine in the process list). A refused
  password exits 2 with AUTH_FAILED; a command the user's role may not run, with
  NO_PERMISSION.
  --tls connects with TLS, trusting the CA in --cacert; --cert/--key present a client
  certificate (mutual TLS); --server-name overrides the name the server's certificate must
  carry (by default the host of --addr).";

/// Command-line client for sessiond.
///
/// Sends one request to a sessiond server and prints the reply. Keys and values are taken
/// byte for byte from the arguments.
#[derive(Debug, Parser)]
#[command(version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Server address, HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "SESSIOND_ADDR",
        default_value = "127.0.0.1:7878",
        value_name = "HOST:PORT"
    )]
    pub addr: String,

    /// Give up when connecting, or waiting for the reply, takes longer than this.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Authenticate as this user (AUTH); the password comes from $SESSIOND_PASSWORD or
    /// --password-file.
    #[arg(long, global = true, env = "SESSIOND_USER", value_name = "NAME")]
    pub user: Option<String>,

    /// Read the password from this file (its first line; a trailing newline is not part of
    /// it). Takes precedence over $SESSIOND_PASSWORD.
    #[arg(long, global = true, value_name = "FILE", requires = "user")]
    pub password_file: Option<PathBuf>,

    /// Connect with TLS (the server's `tls_listen` port), trusting the CA in --cacert.
    #[arg(long, global = true, requires = "cacert")]
    pub tls: bool,

    /// PEM file of the CA(s) that sign the server's certificate.
    #[arg(long, global = true, value_name = "FILE", requires = "tls")]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate chain, for servers that verify clients (mutual TLS).
    #[arg(long, global = true, value_name = "FILE", requires_all = ["tls", "cert_key"])]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    // Its id is `cert_key`: the subcommands' `key` argument is the session key.
    #[arg(
        id = "cert_key",
        long = "key",
        global = true,
        value_name = "FILE",
        requires = "cert"
    )]
    pub cert_key: Option<PathBuf>,

    /// The name the server's certificate must carry, if not the host of --addr.
    #[arg(long, global = true, value_name = "NAME", requires = "tls")]
    pub server_name: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per request type.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the server answers; prints PONG.
    Ping,

    /// Store VALUE under KEY with a TTL; prints `version N`.
    #[command(group(ArgGroup::new("mode").args(["nx", "xx", "if_version"])))]
    Set {
        /// The key.
        key: OsString,
        /// The value (may be empty).
        value: OsString,
        /// Time to live, e.g. 30m.
        #[arg(long, value_parser = parse_ttl)]
        ttl: u64,
        /// Only create: fail with EXISTS (exit 1) if the key exists.
        #[arg(long)]
        nx: bool,
        /// Only update: fail with NOT_FOUND (exit 1) if the key does not exist.
        #[arg(long)]
        xx: bool,
        /// Only replace version N: fail with VERSION_MISMATCH or NOT_FOUND (exit 1) otherwise.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        if_version: Option<u64>,
        /// End the session this long after the write at the latest, however often it is
        /// touched (an absolute lifetime, e.g. 12h).
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        lifetime: Option<u64>,
        #[command(flatten)]
        bind: OwnerArgs,
    },

    /// List OWNER's live sessions, most recently used first: one line each,
    /// `KEY VERSION CREATED_MS LAST_ACCESS_MS TTL_MS DEADLINE_MS`.
    Sessions {
        /// The owner (e.g. a user id).
        owner: OsString,
    },

    /// End every session of OWNER, atomically; prints `ended N`.
    EndAll {
        /// The owner.
        owner: OsString,
        /// Keep this session (e.g. the current device's).
        #[arg(long, value_name = "KEY")]
        except: Option<OsString>,
    },

    /// Move the session under OLD to NEW in one step (the old key is gone); prints
    /// `version N`.
    Rotate {
        /// The session's key.
        old: OsString,
        /// The key it moves to; must not exist (EXISTS, exit 1).
        new: OsString,
        /// Only move version N: fail with VERSION_MISMATCH (exit 1) otherwise.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        if_version: Option<u64>,
        #[command(flatten)]
        bind: OwnerArgs,
    },

    /// Print the value stored under KEY.
    Get {
        /// The key.
        key: OsString,
        /// Reset the TTL to this before reading (sliding expiry); the version is unchanged.
        #[arg(long, value_name = "TTL", value_parser = parse_ttl)]
        touch: Option<u64>,
        /// Also print `version N` and `ttl_ms N` lines on stderr.
        #[arg(long)]
        meta: bool,
    },

    /// Reset KEY's TTL without changing its value or version; prints `version N`.
    Touch {
        /// The key.
        key: OsString,
        /// The new time to live, e.g. 30m.
        #[arg(value_parser = parse_ttl)]
        ttl: u64,
    },

    /// Remove KEY.
    Del {
        /// The key.
        key: OsString,
        /// Only remove version N: fail with VERSION_MISMATCH (exit 1) otherwise.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        if_version: Option<u64>,
    },

    /// Print the server's counters, one `name value` per line; with --watch, a line of
    /// rates every interval until interrupted.
    Stats {
        /// Print a line of rates (requests/s by command, hits, misses, sessions, memory,
        /// connections) every --interval, computed from successive STATS replies, until
        /// Ctrl-C (or --count lines).
        #[arg(long)]
        watch: bool,
        /// Time between two --watch lines.
        #[arg(long, default_value = "1s", value_parser = parse_timeout, requires = "watch")]
        interval: Duration,
        /// Stop after this many --watch lines.
        #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },

    /// Read or clear the server's log of slow requests (default: `get 10`).
    Slowlog {
        /// What to do with the log.
        #[command(subcommand)]
        op: Option<SlowlogOp>,
    },

    /// Move every session whose node changes from topology FROM to topology TO, while the
    /// application serves traffic (it must read with both: docs/SCALING.md). Resumable:
    /// run it again after an interruption. Needs the admin role. --addr is not used.
    Rebalance {
        /// The old topology: a TOML file of `[[node]]` tables with `name` and `addr`.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The new topology, in the same format.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Where progress is kept between runs.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "sessiond-rebalance.progress"
        )]
        progress: PathBuf,
        /// Sessions moved at once.
        #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
        concurrency: u32,
        /// Scan at most N sessions per second (0: as fast as the moves go).
        #[arg(long, value_name = "N", default_value_t = 0)]
        rate: u64,
        /// Print a progress line on stderr this often.
        #[arg(long, default_value = "1s", value_parser = parse_timeout)]
        report_every: Duration,
    },
}

/// `slowlog`'s operations.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum SlowlogOp {
    /// The newest N entries, newest first, one line each:
    /// `ID UNIX_MS DURATION_US PROTOCOL COMMAND KEY_LEN CLIENT` (never the key itself).
    Get {
        /// How many entries at most.
        #[arg(default_value_t = 10)]
        count: u32,
    },
    /// `len`, `max_len`, `threshold_us` (`off` when the log is off) and `recorded_total`
    /// lines.
    Len,
    /// Remove every entry (needs the admin role).
    Reset,
}

/// The owner a `set` or `rotate` binds the session to, and the limit that applies.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OwnerArgs {
    /// Bind the session to this owner (e.g. a user id, at most 256 bytes).
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<OsString>,
    /// The owner may have at most N live sessions, this one included: past it the write is
    /// refused with OWNER_LIMIT (exit 1), or with --end-lru the least recently used end.
    #[arg(long, value_name = "N", requires = "owner", value_parser = clap::value_parser!(u32).range(1..))]
    pub owner_limit: Option<u32>,
    /// With --owner-limit: end the owner's least recently used sessions to make room.
    #[arg(long, requires = "owner_limit")]
    pub end_lru: bool,
}

/// A TTL in milliseconds. Sub-millisecond parts are dropped (the wire carries whole
/// milliseconds), and a TTL that rounds down to zero is refused here rather than by the server.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let ms = u64::try_from(duration.as_millis()).map_err(|_| "TTL is too long".to_string())?;
    if ms == 0 {
        return Err("TTL must be at least 1ms".into());
    }
    Ok(ms)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("timeout must be more than 0".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn ttls_are_whole_milliseconds() {
        assert_eq!(parse_ttl("500ms"), Ok(500));
        assert_eq!(parse_ttl("30m"), Ok(30 * 60 * 1000));
        assert_eq!(parse_ttl("1500us"), Ok(1));
        assert!(parse_ttl("999us").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("30").is_err());
    }
}
