//! The command line, as clap sees it. The doc comments here are the `--help` text.

use std::ffi::OsString;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};

/// Printed after `--help`: the conventions a script relies on.
const AFTER_HELP: &str = "\
Output:
  get      the value bytes exactly as stored; a newline is added only when stdout is a
           terminal. With --meta, `version N` and `ttl_ms N` lines go to stderr.
  set      `version N` (the entry's new version)
  touch    `version N` (the entry's version, unchanged by the touch)
  del      nothing
  ping     `PONG`
  stats    the server's `name value` lines

Exit status:
  0  success
  1  the request was answered but not carried out: the key does not exist (get, touch, del,
     set --xx, set --if-version), it already exists (set --nx) or has another version
     (--if-version). A one-line reason starting with the status name is printed on stderr.
  2  anything else: a usage error, connection failure, timeout, or an error status from the
     server (whose message is printed on stderr)

Durations are human-readable (500ms, 30s, 30m, 2h, 1day); TTLs are whole milliseconds,
at least 1ms.";

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

    /// Print the server's counters, one `name value` per line.
    Stats,
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
