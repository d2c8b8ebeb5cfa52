//! Wall-clock milliseconds that count suspended time, never run backwards, and that tests can
//! pause.
//!
//! Expiry deadlines are absolute Unix milliseconds so that a persisted deadline means the same
//! thing after a restart. Reading `SystemTime` on every request would let a wall-clock step
//! (NTP, a manual change) expire or resurrect every session at once, so the wall clock is read
//! once, at startup, and then advanced by a clock that only moves forward.
//!
//! That forward clock is `CLOCK_BOOTTIME`, not `CLOCK_MONOTONIC` (what `std::time::Instant`
//! and tokio use on Linux): the monotonic clock stops while the machine is suspended (a
//! laptop's lid, a paused VM, a frozen container), so a 30-minute session would outlive a
//! two-hour suspend. Boot time keeps counting through it, as the wall clock does.
//!
//! What happens when the system's wall clock jumps while sessiond runs: nothing. Deadlines
//! keep being measured against the clock read at startup plus the time elapsed, so a step of
//! the system clock, forwards or backwards, neither expires nor revives a session; sessiond
//! follows the new wall time from its next start. The one exception is the floor set by
//! [`Clock::raise_to`]: the append-only file records how far the clock had got, and a start
//! with a system clock behind that time continues from the recorded time instead, so entries
//! that had already expired stay expired (`proto/AOF.md`, CLOCK records).
//!
//! Tests that pause tokio's time use [`Clock::following_tokio`], which advances with
//! `tokio::time::Instant` and so with `tokio::time::pause()`/`advance()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the wall clock at startup, advanced by a clock that
/// counts suspended time.
#[derive(Debug)]
pub struct Clock {
    /// What counts the time elapsed since the clock was made.
    elapsed: Elapsed,
    /// The Unix time at which `elapsed` was zero. Atomic only so that [`Clock::raise_to`] can
    /// move it through a shared reference; it changes during replay, before requests are
    /// served, so a relaxed load on the request path is enough.
    base_unix_ms: AtomicU64,
}

/// The forward-only clocks a [`Clock`] can advance with.
#[derive(Debug, Clone, Copy)]
enum Elapsed {
    /// `CLOCK_BOOTTIME`, read at creation.
    Boottime(Duration),
    /// tokio's clock, which tests can pause and advance.
    Tokio(tokio::time::Instant),
}

impl Elapsed {
    fn boottime() -> Elapsed {
        Elapsed::Boottime(boottime_now())
    }

    fn since_start(&self) -> Duration {
        match self {
            Elapsed::Boottime(start) => boottime_now().saturating_sub(*start),
            Elapsed::Tokio(start) => start.elapsed(),
        }
    }
}

/// The time since boot, suspended time included.
fn boottime_now() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    // Both fields come from the kernel and are non-negative for this clock.
    Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.max(0) as u32)
}

/// The system's wall clock in Unix milliseconds (0 if it is set before 1970).
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock {
    /// A clock anchored at the current wall-clock time, advanced by `CLOCK_BOOTTIME`.
    pub fn new() -> Clock {
        Clock::starting_at(wall_clock_ms())
    }

    /// A clock that reads `unix_ms` now, advanced by `CLOCK_BOOTTIME`.
    pub fn starting_at(unix_ms: u64) -> Clock {
        Clock {
            elapsed: Elapsed::boottime(),
            base_unix_ms: AtomicU64::new(unix_ms),
        }
    }

    /// A clock anchored at the current wall-clock time that advances with tokio's clock, so
    /// that a test can pause and advance it.
    pub fn following_tokio() -> Clock {
        Clock::following_tokio_from(wall_clock_ms())
    }

    /// A clock that reads `unix_ms` now and advances with tokio's clock.
    pub fn following_tokio_from(unix_ms: u64) -> Clock {
        Clock {
            elapsed: Elapsed::Tokio(tokio::time::Instant::now()),
            base_unix_ms: AtomicU64::new(unix_ms),
        }
    }

    /// The current time in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.base_unix_ms.load(Ordering::Relaxed) + self.elapsed.since_start().as_millis() as u64
    }

    /// Makes the clock read at least `unix_ms` from now on; a clock already past it is left
    /// alone. Replay calls it with the latest time the append-only file recorded, so that a
    /// start with the system clock set back cannot bring back entries that had expired.
    pub fn raise_to(&self, unix_ms: u64) {
        let elapsed = self.elapsed.since_start().as_millis() as u64;
        self.base_unix_ms
            .fetch_max(unix_ms.saturating_sub(elapsed), Ordering::Relaxed);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_clock_starts_at_its_anchor_and_moves_forward() {
        let clock = Clock::starting_at(1_000_000);
        let first = clock.now_ms();
        assert!((1_000_000..1_000_000 + 1_000).contains(&first));
        std::thread::sleep(Duration::from_millis(20));
        assert!(clock.now_ms() >= first + 20);
    }

    #[test]
    fn boottime_counts_at_least_what_the_monotonic_clock_counts() {
        // CLOCK_BOOTTIME = CLOCK_MONOTONIC + time suspended, so over any interval it advances
        // at least as much.
        let mono = std::time::Instant::now();
        let boot = boottime_now();
        std::thread::sleep(Duration::from_millis(30));
        let boot_elapsed = boottime_now() - boot;
        let mono_elapsed = mono.elapsed();
        assert!(boot_elapsed + Duration::from_millis(1) >= mono_elapsed);
    }

    #[test]
    fn raise_to_moves_a_clock_that_is_behind_and_keeps_it_moving() {
        let clock = Clock::starting_at(1_000);
        clock.raise_to(5_000_000);
        let raised = clock.now_ms();
        assert!((5_000_000..5_001_000).contains(&raised));
        std::thread::sleep(Duration::from_millis(10));
        assert!(clock.now_ms() >= raised + 10);
    }

    #[test]
    fn raise_to_never_moves_a_clock_back() {
        let clock = Clock::starting_at(9_000_000);
        clock.raise_to(1_000);
        assert!(clock.now_ms() >= 9_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn following_tokio_advances_only_with_tokio_time() {
        let clock = Clock::following_tokio_from(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_ms(), 2_500);
        clock.raise_to(10_000);
        assert_eq!(clock.now_ms(), 10_000);
    }
}
