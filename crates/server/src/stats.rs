//! Server-wide counters reported by `STATS`.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use crate::aof::Aof;
use crate::memory::Part;
use crate::store::Store;

/// Monotonic counters shared by every connection.
///
/// Relaxed atomics: each counter is independent and only ever read for reporting, so no
/// ordering between them is needed.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    /// Connections open now.
    pub connections_current: AtomicU64,
    /// Connections accepted since start (including rejected ones).
    pub connections_total: AtomicU64,
    /// Connections turned away at the connection limit.
    pub connections_rejected: AtomicU64,
    /// Request frames decoded, including ones answered with an error.
    pub requests_total: AtomicU64,
    /// Requests or streams answered with an error status.
    pub protocol_errors: AtomicU64,
    /// `GET`s that found a live entry.
    pub get_hits: AtomicU64,
    /// `GET`s that did not.
    pub get_misses: AtomicU64,
    /// `SET`s that stored.
    pub set_stored: AtomicU64,
    /// `SET`s refused by their mode (EXISTS, NOT_FOUND, VERSION_MISMATCH).
    pub set_rejected: AtomicU64,
    /// `TOUCH`es that found a live entry.
    pub touch_hits: AtomicU64,
    /// `TOUCH`es that did not.
    pub touch_misses: AtomicU64,
    /// `DEL`s that removed an entry.
    pub del_deleted: AtomicU64,
    /// `DEL`s that removed nothing (missing, or version mismatch).
    pub del_misses: AtomicU64,
    /// `AUTH` attempts (either protocol) with an unknown user or a wrong password.
    pub auth_failures: AtomicU64,
    /// Failed `AUTH` attempts answered late because their address failed too often.
    pub auth_throttled: AtomicU64,
    /// Connections closed because they had not authenticated by `auth.timeout`.
    pub auth_timeouts: AtomicU64,
    /// Connections turned away because their address held `max_connections_per_address`.
    pub connections_rejected_per_address: AtomicU64,
    /// Connections closed to make room for a new one while the table was full.
    pub connections_displaced: AtomicU64,
    /// Connections closed because a request was not complete within `frame_timeout`.
    pub frame_timeouts: AtomicU64,
    /// Connections closed because the client did not take its responses within
    /// `write_timeout`.
    pub write_timeouts: AtomicU64,
    /// Multi-key requests refused because their reply would pass the reply budget.
    pub replies_too_large: AtomicU64,
}

impl Stats {
    /// Zeroed counters, with uptime counted from now.
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            connections_current: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            get_hits: AtomicU64::new(0),
            get_misses: AtomicU64::new(0),
            set_stored: AtomicU64::new(0),
            set_rejected: AtomicU64::new(0),
            touch_hits: AtomicU64::new(0),
            touch_misses: AtomicU64::new(0),
            del_deleted: AtomicU64::new(0),
            del_misses: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_throttled: AtomicU64::new(0),
            auth_timeouts: AtomicU64::new(0),
            connections_rejected_per_address: AtomicU64::new(0),
            connections_displaced: AtomicU64::new(0),
            frame_timeouts: AtomicU64::new(0),
            write_timeouts: AtomicU64::new(0),
            replies_too_large: AtomicU64::new(0),
        }
    }

    /// Time since the server started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter and gauge as `(name, value)` pairs, in the documented order.
    pub fn snapshot(&self, store: &Store, aof: Option<&Aof>) -> Vec<(String, String)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let pairs: [(&str, String); 18] = [
            // The version alone (PROTOCOL.md 5.7); HELLO's value names the software too.
            ("server_version", env!("CARGO_PKG_VERSION").to_string()),
            ("uptime_ms", self.started.elapsed().as_millis().to_string()),
            ("connections_current", load(&self.connections_current)),
            ("connections_total", load(&self.connections_total)),
            ("connections_rejected", load(&self.connections_rejected)),
            ("requests_total", load(&self.requests_total)),
            ("protocol_errors", load(&self.protocol_errors)),
            ("get_hits", load(&self.get_hits)),
            ("get_misses", load(&self.get_misses)),
            ("set_stored", load(&self.set_stored)),
            ("set_rejected", load(&self.set_rejected)),
            ("touch_hits", load(&self.touch_hits)),
            ("touch_misses", load(&self.touch_misses)),
            ("del_deleted", load(&self.del_deleted)),
            ("del_misses", load(&self.del_misses)),
            ("entries", store.len().to_string()),
            ("expired_reclaimed", store.expired_reclaimed().to_string()),
            ("memory_bytes_estimate", store.memory_estimate().to_string()),
        ];
        let memory = store.memory();
        let mut memory_lines: Vec<(&str, String)> = vec![
            ("memory_used_bytes", memory.used().to_string()),
            // 0: no cap (`limits.max_memory = "unlimited"`).
            (
                "memory_limit_bytes",
                memory.limit().unwrap_or(0).to_string(),
            ),
            ("memory_policy", memory.policy().name().to_string()),
            ("memory_refused", memory.refused().to_string()),
            ("memory_evicted", memory.evicted().to_string()),
        ];
        for part in Part::ALL {
            let name = match part {
                Part::Entries => "memory_entries_bytes",
                Part::Table => "memory_table_bytes",
                Part::Aof => "memory_aof_bytes",
                Part::Connections => "memory_connections_bytes",
                Part::ResidentExcess => "memory_resident_excess_bytes",
            };
            memory_lines.push((name, memory.used_by(part).to_string()));
        }
        let flag = |b: bool| u8::from(b).to_string();
        let persistence: [(&str, String); 6] = [
            ("aof_enabled", flag(aof.is_some())),
            (
                "aof_fsync",
                aof.map_or("off", |a| a.policy().name()).to_string(),
            ),
            ("aof_file_bytes", aof.map_or(0, Aof::file_len).to_string()),
            ("aof_rewrites", aof.map_or(0, Aof::rewrites).to_string()),
            (
                "aof_write_errors",
                aof.map_or(0, Aof::write_errors).to_string(),
            ),
            ("aof_failed", flag(aof.is_some_and(Aof::is_failed))),
        ];
        let auth: [(&str, String); 3] = [
            ("auth_failures", load(&self.auth_failures)),
            ("auth_throttled", load(&self.auth_throttled)),
            ("auth_timeouts", load(&self.auth_timeouts)),
        ];
        let bounds: [(&str, String); 5] = [
            (
                "connections_rejected_per_address",
                load(&self.connections_rejected_per_address),
            ),
            ("connections_displaced", load(&self.connections_displaced)),
            ("frame_timeouts", load(&self.frame_timeouts)),
            ("write_timeouts", load(&self.write_timeouts)),
            ("replies_too_large", load(&self.replies_too_large)),
        ];
        pairs
            .into_iter()
            .chain(memory_lines)
            .chain(persistence)
            .chain(auth)
            .chain(bounds)
            .map(|(name, value)| (name.to_string(), value))
            .collect()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}
