//! The one list of every metric sessiond exports: name, type, unit, labels and help text.
//!
//! Names follow the Prometheus conventions: the `sessiond_` prefix, base units (seconds,
//! bytes) as a suffix, and `_total` on counters. The encoder adds the suffixes: a
//! [`Def`] holds the stem (`sessiond_requests`), its type and its unit, and the exported
//! name is what `exported_name` makes of them (`sessiond_requests_total`). `docs/METRICS.md`
//! lists the same metrics, with the redis_exporter and memcached_exporter metric each one
//! corresponds to; a test checks that every name here appears there.

use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; exported with `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
    /// Always 1; the labels are the information (exported with `_info`).
    Info,
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    /// The name without its type and unit suffixes.
    pub stem: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Seconds or bytes, appended to the name; `None` for a count.
    pub unit: Option<BaseUnit>,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it means (the `# HELP` line).
    pub help: &'static str,
}

/// The base units metrics are exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseUnit {
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
}

impl Def {
    /// The type, as the encoder takes it.
    pub fn metric_type(&self) -> MetricType {
        match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::Info => MetricType::Info,
        }
    }

    /// The unit, as the encoder takes it.
    pub fn unit(&self) -> Option<Unit> {
        self.unit.map(|unit| match unit {
            BaseUnit::Seconds => Unit::Seconds,
            BaseUnit::Bytes => Unit::Bytes,
        })
    }

    /// The name a scrape shows (for a histogram, the stem of its `_bucket`, `_sum` and
    /// `_count` series).
    pub fn exported_name(&self) -> String {
        let mut name = self.stem.to_string();
        match self.unit {
            Some(BaseUnit::Seconds) => name.push_str("_seconds"),
            Some(BaseUnit::Bytes) => name.push_str("_bytes"),
            None => {}
        }
        match self.kind {
            Kind::Counter => name.push_str("_total"),
            Kind::Info => name.push_str("_info"),
            Kind::Gauge | Kind::Histogram => {}
        }
        name
    }
}

const fn def(
    stem: &'static str,
    kind: Kind,
    unit: Option<BaseUnit>,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        stem,
        kind,
        unit,
        labels,
        help,
    }
}

use BaseUnit::{Bytes, Seconds};
use Kind::{Counter, Gauge, Histogram, Info};

/// Requests answered, by protocol, command and outcome.
pub const REQUESTS: Def = def(
    "sessiond_requests",
    Counter,
    None,
    &["protocol", "command", "outcome"],
    "Requests answered, by protocol, command and outcome.",
);
/// Time to execute a request, by protocol and command.
pub const REQUEST_DURATION: Def = def(
    "sessiond_request_duration",
    Histogram,
    Some(Seconds),
    &["protocol", "command"],
    "Time from a request's bytes being read to its answer being ready, excluding the network.",
);
/// Requests kept by the slow log.
pub const SLOW_REQUESTS: Def = def(
    "sessiond_slow_requests",
    Counter,
    None,
    &[],
    "Requests that took at least slowlog.threshold.",
);
/// Frames and requests answered with a protocol error.
pub const PROTOCOL_ERRORS: Def = def(
    "sessiond_protocol_errors",
    Counter,
    None,
    &[],
    "Requests or streams answered with a protocol error (malformed, too large).",
);
/// Sessions held.
pub const SESSIONS: Def = def(
    "sessiond_sessions",
    Gauge,
    None,
    &[],
    "Sessions held, including expired ones not yet reclaimed.",
);
/// Owners with sessions.
pub const OWNERS: Def = def(
    "sessiond_owners",
    Gauge,
    None,
    &[],
    "Owners (users) with at least one session bound to them.",
);
/// Writes that stored a session.
pub const SESSIONS_STORED: Def = def(
    "sessiond_sessions_stored",
    Counter,
    None,
    &[],
    "Writes that stored a session (created or replaced), both protocols.",
);
/// Sessions reclaimed because they expired.
pub const SESSIONS_EXPIRED: Def = def(
    "sessiond_sessions_expired",
    Counter,
    None,
    &[],
    "Sessions reclaimed because they expired.",
);
/// Sessions deleted by a client.
pub const SESSIONS_DELETED: Def = def(
    "sessiond_sessions_deleted",
    Counter,
    None,
    &[],
    "Sessions removed by a delete request (logouts).",
);
/// Sessions evicted at the memory limit.
pub const SESSIONS_EVICTED: Def = def(
    "sessiond_sessions_evicted",
    Counter,
    None,
    &[],
    "Sessions evicted to stay under limits.max_memory.",
);
/// Writes refused at the memory limit.
pub const SESSIONS_REFUSED: Def = def(
    "sessiond_sessions_refused",
    Counter,
    None,
    &[],
    "Writes refused because they would pass limits.max_memory (policy noeviction).",
);
/// Memory counted against the limit, by part.
pub const MEMORY_USED: Def = def(
    "sessiond_memory_used",
    Gauge,
    Some(Bytes),
    &["part"],
    "Memory counted against limits.max_memory, by what holds it.",
);
/// The memory limit.
pub const MEMORY_LIMIT: Def = def(
    "sessiond_memory_limit",
    Gauge,
    Some(Bytes),
    &[],
    "limits.max_memory; 0 when there is no limit.",
);
/// Resident set size.
pub const RESIDENT_MEMORY: Def = def(
    "sessiond_resident_memory",
    Gauge,
    Some(Bytes),
    &[],
    "Resident set size of the process (what the kernel counts, allocator overhead included).",
);
/// Connections open now.
pub const CONNECTIONS: Def = def(
    "sessiond_connections",
    Gauge,
    None,
    &["listener"],
    "Connections open now, by listener.",
);
/// Connections accepted.
pub const CONNECTIONS_ACCEPTED: Def = def(
    "sessiond_connections_accepted",
    Counter,
    None,
    &["listener"],
    "Connections accepted by the operating system, including those then turned away.",
);
/// Connections turned away or closed by the server.
pub const CONNECTIONS_REJECTED: Def = def(
    "sessiond_connections_rejected",
    Counter,
    None,
    &["listener", "reason"],
    "Connections turned away or closed by the server, by listener and reason.",
);
/// Failed authentications.
pub const AUTH_FAILURES: Def = def(
    "sessiond_auth_failures",
    Counter,
    None,
    &[],
    "AUTH attempts with an unknown user or a wrong password, both protocols.",
);
/// AOF size.
pub const AOF_SIZE: Def = def(
    "sessiond_aof_size",
    Gauge,
    Some(Bytes),
    &[],
    "Size of the append-only file.",
);
/// Whether the AOF accepts writes.
pub const AOF_WRITABLE: Def = def(
    "sessiond_aof_writable",
    Gauge,
    None,
    &[],
    "1 while the append-only file accepts writes, 0 while writes are refused.",
);
/// Time since the last fsync.
pub const AOF_LAST_FSYNC_AGE: Def = def(
    "sessiond_aof_last_fsync_age",
    Gauge,
    Some(Seconds),
    &[],
    "Time since the append-only file was last fsynced (or opened).",
);
/// Fsync latency.
pub const AOF_FSYNC_DURATION: Def = def(
    "sessiond_aof_fsync_duration",
    Histogram,
    Some(Seconds),
    &[],
    "Time each fsync of the append-only file took.",
);
/// Completed rewrites.
pub const AOF_REWRITES: Def = def(
    "sessiond_aof_rewrites",
    Counter,
    None,
    &[],
    "Append-only file rewrites completed.",
);
/// Duration of the last rewrite.
pub const AOF_LAST_REWRITE_DURATION: Def = def(
    "sessiond_aof_last_rewrite_duration",
    Gauge,
    Some(Seconds),
    &[],
    "How long the last rewrite took, successful or not; 0 before the first.",
);
/// Status of the last rewrite.
pub const AOF_LAST_REWRITE_SUCCESS: Def = def(
    "sessiond_aof_last_rewrite_success",
    Gauge,
    None,
    &[],
    "1 if the last rewrite succeeded (or none has run), 0 if it failed.",
);
/// Failed writes and fsyncs.
pub const AOF_WRITE_ERRORS: Def = def(
    "sessiond_aof_write_errors",
    Counter,
    None,
    &[],
    "Failed writes, fsyncs and rewrites of the append-only file.",
);
/// Replay duration.
pub const AOF_REPLAY_DURATION: Def = def(
    "sessiond_aof_replay_duration",
    Gauge,
    Some(Seconds),
    &[],
    "How long loading the append-only file took at startup.",
);
/// Readiness.
pub const READY: Def = def(
    "sessiond_ready",
    Gauge,
    None,
    &[],
    "1 when /health/ready answers 200.",
);
/// Version and commit.
pub const BUILD: Def = def(
    "sessiond_build",
    Info,
    None,
    &["version", "git_sha"],
    "The version and the git commit the binary was built from.",
);
/// Start time.
pub const START_TIME: Def = def(
    "sessiond_start_time",
    Gauge,
    Some(Seconds),
    &[],
    "When the process started, seconds since the Unix epoch.",
);

/// Every metric, in the order a scrape lists them.
pub const ALL: &[Def] = &[
    REQUESTS,
    REQUEST_DURATION,
    SLOW_REQUESTS,
    PROTOCOL_ERRORS,
    SESSIONS,
    OWNERS,
    SESSIONS_STORED,
    SESSIONS_EXPIRED,
    SESSIONS_DELETED,
    SESSIONS_EVICTED,
    SESSIONS_REFUSED,
    MEMORY_USED,
    MEMORY_LIMIT,
    RESIDENT_MEMORY,
    CONNECTIONS,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_REJECTED,
    AUTH_FAILURES,
    AOF_SIZE,
    AOF_WRITABLE,
    AOF_LAST_FSYNC_AGE,
    AOF_FSYNC_DURATION,
    AOF_REWRITES,
    AOF_LAST_REWRITE_DURATION,
    AOF_LAST_REWRITE_SUCCESS,
    AOF_WRITE_ERRORS,
    AOF_REPLAY_DURATION,
    READY,
    BUILD,
    START_TIME,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/METRICS.md is the table operators read: it must name every metric, with its
    /// type.
    #[test]
    fn every_metric_is_in_the_documented_table() {
        let doc = include_str!("../../../../docs/METRICS.md");
        for def in ALL {
            let name = def.exported_name();
            let row = doc
                .lines()
                .find(|line| line.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("docs/METRICS.md has no row for {name}"));
            let kind = match def.kind {
                Kind::Counter => "| counter |",
                Kind::Gauge => "| gauge |",
                Kind::Histogram => "| histogram |",
                Kind::Info => "| gauge (info) |",
            };
            assert!(row.contains(kind), "{name}: {row}");
            for label in def.labels {
                assert!(row.contains(&format!("`{label}`")), "{name}: label {label}");
            }
        }
    }
}
