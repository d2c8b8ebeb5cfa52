//! The store-wide version counter, and the durable reservation that keeps it from ever
//! handing out a number twice.
//!
//! Versions are visible the moment a write is applied, before its record is durable (with
//! fsync `everysec` or `no` a crash loses the last records; with `always` another connection
//! can read a write before its fsync). If the counter restarted from the highest version on
//! disk, a version a client saw before a crash could be handed out again after it, to a
//! different write, and an if-version write based on the old read would succeed against data
//! it never saw: the ABA problem versions exist to prevent.
//!
//! So, with persistence, the counter may only hand out versions up to a *granted* ceiling, and
//! a ceiling is granted only once a record saying "versions up to here may have been handed
//! out" is durable (the AOF writer appends a `LAST_VERSION` record and fsyncs it, whatever
//! the fsync policy). Replay continues above the highest such record, so no version below a
//! granted ceiling is ever issued again. The writer keeps the ceiling well ahead of the
//! counter (it reserves another block whenever half of the last one is used), so a write
//! waits for a reservation only if it outruns the disk by half a block; the cost is a gap of
//! up to a block in the numbering after each restart, which the protocol allows (versions are
//! increasing, not contiguous).
//!
//! Without persistence the ceiling is unlimited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a write waits for a reservation before it gives up waiting (see
/// [`Versions::next`]).
const RESERVATION_WAIT: Duration = Duration::from_secs(1);

/// The counter and its granted ceiling.
#[derive(Debug)]
pub(super) struct Versions {
    /// The last version handed out.
    last: AtomicU64,
    /// Versions up to this may be handed out: a durable reservation covers them.
    granted: AtomicU64,
    /// The highest ceiling whose reservation record has been queued for the file, granted or
    /// not yet. A snapshot of the store records it, so that a grant made while the snapshot is
    /// written is still covered by the file that replaces the old one.
    requested: AtomicU64,
    /// Writes that outran the reservation wait here for the next grant. The mutex guards
    /// nothing but the condition variable's protocol.
    grant_lock: Mutex<()>,
    grant_wakeup: Condvar,
}

impl Versions {
    /// A counter starting at 0 with no ceiling (no persistence).
    pub(super) fn unlimited() -> Versions {
        Versions {
            last: AtomicU64::new(0),
            granted: AtomicU64::new(u64::MAX),
            requested: AtomicU64::new(0),
            grant_lock: Mutex::new(()),
            grant_wakeup: Condvar::new(),
        }
    }

    /// The last version handed out.
    pub(super) fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// The highest version that may be handed out without another reservation.
    pub(super) fn granted(&self) -> u64 {
        self.granted.load(Ordering::Acquire)
    }

    /// Every version up to this may have been handed out.
    pub(super) fn reserved_up_to(&self) -> u64 {
        match self.granted() {
            u64::MAX => self.last(),
            granted => granted
                .max(self.requested.load(Ordering::Acquire))
                .max(self.last()),
        }
    }

    /// Moves the counter past `version` (replay).
    pub(super) fn restore(&self, version: u64) {
        self.last.fetch_max(version, Ordering::Relaxed);
    }

    /// From now on, versions above the current counter are handed out only once granted.
    pub(super) fn require_reservations(&self) {
        self.granted.store(self.last(), Ordering::Release);
    }

    /// Notes that a reservation up to `ceiling` has been queued for the file.
    pub(super) fn request(&self, ceiling: u64) {
        self.requested.fetch_max(ceiling, Ordering::Release);
    }

    /// Allows versions up to `ceiling`, and wakes writes waiting for them.
    pub(super) fn grant(&self, ceiling: u64) {
        self.granted.fetch_max(ceiling, Ordering::Release);
        let _guard = lock(&self.grant_lock);
        self.grant_wakeup.notify_all();
    }

    /// The next version. Called with the key's shard lock held, which is what keeps one key's
    /// versions in the order its writes were applied.
    ///
    /// If the version is above the granted ceiling, waits for the writer to grant it, calling
    /// `nudge` (which wakes the writer) while it waits. Such a wait blocks the shard, so it is
    /// bounded: after [`RESERVATION_WAIT`] without a grant (the file has failed and writes are
    /// being refused, but this one was applied before the failure was noticed) the version is
    /// handed out anyway and an error is logged. Its record is in the writer's buffer, and a
    /// recovery rewrite persists it, so the counter still resumes above it after a restart,
    /// unless the process dies before the file recovers.
    pub(super) fn next(&self, nudge: impl Fn()) -> u64 {
        let version = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        if version > self.granted() {
            self.wait_for_grant(version, nudge);
        }
        version
    }

    #[cold]
    fn wait_for_grant(&self, version: u64, nudge: impl Fn()) {
        let deadline = Instant::now() + RESERVATION_WAIT;
        let mut guard = lock(&self.grant_lock);
        while version > self.granted() {
            let now = Instant::now();
            if now >= deadline {
                tracing::error!(
                    version,
                    granted = self.granted(),
                    "handing out a version no durable reservation covers: the append-only file is not being written"
                );
                return;
            }
            nudge();
            let wait = (deadline - now).min(Duration::from_millis(50));
            guard = match self.grant_wakeup.wait_timeout(guard, wait) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Locks a mutex that guards no data, ignoring poisoning.
fn lock(mutex: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn without_reservations_versions_count_from_one() {
        let versions = Versions::unlimited();
        assert_eq!(versions.next(|| {}), 1);
        assert_eq!(versions.next(|| {}), 2);
        versions.restore(10);
        assert_eq!(versions.next(|| {}), 11);
    }

    #[test]
    fn a_version_above_the_grant_waits_for_it() {
        let versions = Arc::new(Versions::unlimited());
        versions.restore(5);
        versions.require_reservations();
        let granter = {
            let versions = versions.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                versions.grant(8);
            })
        };
        let started = Instant::now();
        assert_eq!(versions.next(|| {}), 6);
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert!(versions.granted() >= 6);
        granter.join().unwrap();
        // Within the grant: no wait.
        assert_eq!(versions.next(|| {}), 7);
        assert_eq!(versions.next(|| {}), 8);
    }

    #[test]
    fn waiting_nudges_the_writer_and_gives_up_after_the_bound() {
        let versions = Versions::unlimited();
        versions.require_reservations();
        let nudges = std::sync::atomic::AtomicU32::new(0);
        let started = Instant::now();
        let version = versions.next(|| {
            nudges.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(version, 1);
        assert!(started.elapsed() >= RESERVATION_WAIT);
        assert!(nudges.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn a_grant_never_lowers_the_ceiling() {
        let versions = Versions::unlimited();
        versions.require_reservations();
        versions.grant(100);
        versions.grant(50);
        assert_eq!(versions.granted(), 100);
    }
}
