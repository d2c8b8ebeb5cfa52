//! Log output: tracing to stderr, as text or JSON.

use std::io::IsTerminal;

use tracing_subscriber::filter::ParseError;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, takes precedence over the
/// configured level so that an operator can turn up logging without editing the file.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::builder()
        .with_regex(false)
        .try_from_env()
        .or_else(|_| parse_filter(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in files and journals they are noise.
        .with_ansi(std::io::stderr().is_terminal());
    // `try_init` fails only if a subscriber is already installed, which leaves logging working.
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Parses a filter in `EnvFilter` syntax, the way `log.level` and `RUST_LOG` are read: with
/// span field values matched literally, not as regular expressions. tracing-subscriber
/// compiles such a regex into a dense automaton that can grow exponentially with the
/// pattern: a 165-byte `log.level` found by fuzzing the configuration parser took more than
/// 4 GiB and nine minutes in `--check-config` (its docs advise turning regexes off for
/// input that is not trusted, and no session-store filter needs one).
pub fn parse_filter(directives: &str) -> Result<EnvFilter, ParseError> {
    EnvFilter::builder().with_regex(false).parse(directives)
}
