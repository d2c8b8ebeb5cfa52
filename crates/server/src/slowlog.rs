//! The slow-request log: the last requests that took longer than a threshold to execute.
//!
//! Modelled on Redis's `SLOWLOG`: a bounded ring in memory, newest first, read by the native
//! `SLOWLOG` command (`crate::cmd`), RESP `SLOWLOG GET/LEN/RESET` and `sessiond-cli slowlog`.
//! The place that times each request calls [`SlowLog::record`]; this module only decides
//! what is kept.
//!
//! An entry says which command, over which protocol, from which client, how long it took and
//! how long its key was, but never the key or the value: a session id is a bearer
//! credential, and whoever may read the slow log (the monitor role) must not be handed the
//! means to take over a session.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Entries kept when `slowlog.max_len` is not set (Redis's `slowlog-max-len` default).
pub const DEFAULT_MAX_LEN: usize = 128;

/// The largest `slowlog.max_len` accepted. An entry takes about 80 bytes, so the ring stays
/// under 8 MB; a longer history belongs in a log collector, not in the daemon's memory.
pub const MAX_MAX_LEN: usize = 100_000;

/// The default threshold (`slowlog.threshold`), Redis's `slowlog-log-slower-than` default.
/// A request served from memory takes microseconds; one that takes this long has waited on
/// something (a huge value, a multi-key reply, a stalled worker) worth looking at.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_millis(10);

/// One slow request, as the code that timed it describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowEntry {
    /// The command's name, upper case as the protocol spells it (`GET`, `MGET`, ...).
    pub command: &'static str,
    /// The protocol it came over: `native` or `resp`.
    pub protocol: &'static str,
    /// The length of its key in bytes (for a multi-key command, of all its keys together);
    /// 0 for a command without a key. Never the key itself.
    pub key_len: usize,
    /// How long it took to execute.
    pub duration: Duration,
    /// The client that sent it.
    pub client: SocketAddr,
    /// When it happened, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// An entry kept in the log, with the id that orders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// Unique and increasing for the life of the process, also across [`SlowLog::reset`], so
    /// that a reader polling the log can tell which entries it has already seen.
    pub id: u64,
    /// The request.
    pub entry: SlowEntry,
}

/// The ring of slow requests, shared by every connection.
#[derive(Debug)]
pub struct SlowLog {
    threshold: Option<Duration>,
    max_len: usize,
    recorded_total: AtomicU64,
    // A std mutex, not tokio's: it is held only for a push and a pop (or a copy of at most
    // `max_len` small entries when read), never across an await, so a worker that finds it
    // taken waits for nanoseconds rather than being descheduled. Only slow requests take it
    // at all, and the fast path (`threshold` not reached) touches no shared state.
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    next_id: u64,
    entries: VecDeque<Logged>,
}

impl SlowLog {
    /// A log keeping requests that took at least `threshold` (`None`: keeps nothing), at
    /// most `max_len` of them (at least one is kept whatever `max_len` says).
    pub fn new(threshold: Option<Duration>, max_len: usize) -> SlowLog {
        let max_len = max_len.clamp(1, MAX_MAX_LEN);
        SlowLog {
            threshold,
            max_len,
            recorded_total: AtomicU64::new(0),
            ring: Mutex::new(Ring {
                next_id: 0,
                entries: VecDeque::with_capacity(max_len.min(DEFAULT_MAX_LEN)),
            }),
        }
    }

    /// The duration from which a request is kept; `None` when the log is off. The code that
    /// times requests may skip reading the clock when it is `None`.
    pub fn threshold(&self) -> Option<Duration> {
        self.threshold
    }

    /// How many entries the ring keeps at most.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Keeps `entry` if it took at least the threshold, dropping the oldest entry when the
    /// ring is full. Cheap enough to call after every request: below the threshold it only
    /// compares two durations.
    pub fn record(&self, entry: SlowEntry) {
        match self.threshold {
            Some(threshold) if entry.duration >= threshold => {}
            _ => return,
        }
        self.recorded_total.fetch_add(1, Ordering::Relaxed);
        let mut ring = self.lock();
        let id = ring.next_id;
        ring.next_id += 1;
        if ring.entries.len() >= self.max_len {
            ring.entries.pop_back();
        }
        ring.entries.push_front(Logged { id, entry });
    }

    /// Requests kept since the process started, including those the ring has since dropped
    /// or that [`SlowLog::reset`] removed.
    pub fn recorded_total(&self) -> u64 {
        self.recorded_total.load(Ordering::Relaxed)
    }

    /// The newest `count` entries (all of them for `None`), newest first.
    pub fn get(&self, count: Option<usize>) -> Vec<Logged> {
        let ring = self.lock();
        let count = count.unwrap_or(usize::MAX).min(ring.entries.len());
        ring.entries.iter().take(count).copied().collect()
    }

    /// How many entries the ring holds now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the ring holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry. Ids keep increasing from where they were.
    pub fn reset(&self) {
        self.lock().entries.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Nothing that can panic runs while the lock is held, and the ring is consistent
        // after every statement anyway: a poisoned lock is still good to use.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog::new(Some(DEFAULT_THRESHOLD), DEFAULT_MAX_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(micros: u64) -> SlowEntry {
        SlowEntry {
            command: "GET",
            protocol: "native",
            key_len: 32,
            duration: Duration::from_micros(micros),
            client: SocketAddr::from(([127, 0, 0, 1], 40000)),
            unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn keeps_only_requests_at_or_over_the_threshold() {
        let log = SlowLog::new(Some(Duration::from_millis(10)), 8);
        log.record(entry(9_999));
        assert!(log.is_empty());
        log.record(entry(10_000));
        log.record(entry(50_000));
        assert_eq!(log.len(), 2);
        assert_eq!(log.recorded_total(), 2);
        let got = log.get(None);
        // Newest first.
        assert_eq!(got[0].entry.duration, Duration::from_millis(50));
        assert_eq!(got[0].id, 1);
        assert_eq!(got[1].id, 0);
    }

    #[test]
    fn off_keeps_nothing_and_zero_keeps_everything() {
        let off = SlowLog::new(None, 8);
        off.record(entry(1_000_000));
        assert!(off.is_empty());
        assert_eq!(off.recorded_total(), 0);
        let all = SlowLog::new(Some(Duration::ZERO), 8);
        all.record(entry(0));
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn the_ring_stays_bounded_and_drops_the_oldest() {
        let log = SlowLog::new(Some(Duration::ZERO), 4);
        for i in 0..1000 {
            log.record(entry(i));
        }
        assert_eq!(log.len(), 4);
        assert_eq!(log.recorded_total(), 1000);
        let ids: Vec<u64> = log.get(None).iter().map(|l| l.id).collect();
        assert_eq!(ids, [999, 998, 997, 996]);
        assert_eq!(log.get(Some(2)).len(), 2);
        assert_eq!(log.get(Some(0)).len(), 0);
    }

    #[test]
    fn reset_empties_the_ring_but_ids_go_on() {
        let log = SlowLog::new(Some(Duration::ZERO), 4);
        log.record(entry(1));
        log.record(entry(2));
        log.reset();
        assert!(log.is_empty());
        assert_eq!(log.recorded_total(), 2);
        log.record(entry(3));
        assert_eq!(log.get(None)[0].id, 2);
    }

    #[test]
    fn max_len_is_clamped() {
        assert_eq!(SlowLog::new(None, 0).max_len(), 1);
        assert_eq!(SlowLog::new(None, usize::MAX).max_len(), MAX_MAX_LEN);
    }

    #[test]
    fn concurrent_recording_loses_no_count_and_keeps_the_bound() {
        let log = std::sync::Arc::new(SlowLog::new(Some(Duration::ZERO), 16));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        log.record(entry(i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(log.recorded_total(), 2000);
        assert_eq!(log.len(), 16);
        let ids: Vec<u64> = log.get(None).iter().map(|l| l.id).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1] + 1), "{ids:?}");
        assert_eq!(ids[0], 1999);
    }
}
