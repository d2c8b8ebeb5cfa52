//! Log output: tracing to stderr, as text or JSON.

use std::io::IsTerminal;

use tracing_subscriber::filter::ParseError;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, takes precedence over the
/// configured level so that an operator can turn up logging without editing the file.
pub fn init(config: &LogConfig) {
    let filter = std::env::var(EnvFilter::DEFAULT_ENV)
        .map_err(|_| ())
        .and_then(|directives| parse_filter(&directives).map_err(|_| ()))
        .or_else(|()| parse_filter(&config.level))
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
///
/// Only ASCII is accepted. Every level, target and field name is ASCII, and
/// tracing-subscriber 0.3.23 slices a directive at byte offsets that can fall inside a
/// multi-byte character, which panics: fuzzing the configuration parser found a `log.level`
/// holding the two-byte letter `Բ` (`fuzz/corpus/config/non-ascii-log-level`) that ended the
/// daemon at startup instead of failing validation.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, FilterError> {
    if let Some(position) = directives.find(|c: char| !c.is_ascii()) {
        return Err(FilterError::NotAscii { position });
    }
    Ok(EnvFilter::builder().with_regex(false).parse(directives)?)
}

/// Why a log filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The filter holds a character outside ASCII, which no directive needs.
    #[error("only ASCII is allowed; found a non-ASCII character at byte {position}")]
    NotAscii {
        /// Byte offset of the first non-ASCII character.
        position: usize,
    },
    /// tracing-subscriber did not accept the directives.
    #[error(transparent)]
    Parse(#[from] ParseError),
}
