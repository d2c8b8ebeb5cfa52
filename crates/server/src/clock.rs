//! Wall-clock milliseconds that tests can pause.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, advanced by a monotonic clock.
///
/// Expiry deadlines are absolute Unix milliseconds so that a persisted deadline means the same
/// thing after a restart. Reading `SystemTime` on every request would let a wall-clock step
/// (NTP, a manual change) expire or resurrect every session at once, so the wall clock is read
/// once and advanced by `tokio::time::Instant`, which is monotonic and which tests can pause and
/// advance with `tokio::time::pause()`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_instant: Instant,
    base_unix_ms: u64,
}

impl Clock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Clock {
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock::starting_at(base_unix_ms)
    }

    /// A clock that reads `unix_ms` now.
    pub fn starting_at(unix_ms: u64) -> Clock {
        Clock {
            base_instant: Instant::now(),
            base_unix_ms: unix_ms,
        }
    }

    /// The current time in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.base_unix_ms + self.base_instant.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
