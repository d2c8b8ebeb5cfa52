//! The records the writer adds of its own: version reservations and the clock.
//!
//! - **Reservations** (`LAST_VERSION`): the store hands out versions only up to a ceiling the
//!   writer has granted (`store::versions`), and the writer grants a ceiling only once a
//!   `LAST_VERSION` record of it is in the file and fsynced, whatever the fsync policy. Replay
//!   continues above every such record, so no version a client may have seen is handed out
//!   again after a crash. The next block is reserved when half of the current one is used.
//! - **Clock** (`CLOCK`): the time the writer's clock had reached. Replay never lets the clock
//!   start below the latest one, so a start with the system clock set back cannot revive
//!   entries that had expired. Written at most once a second while records are being written,
//!   every [`IDLE_CLOCK_INTERVAL`] while idle (so that entries expiring with no write after
//!   them stay expired), with every reservation, and at shutdown.
//!
//! Both go through the shared buffer like any mutation, so a running rewrite's side buffer
//! carries them into the new file too.

use std::time::{Duration, Instant};

use super::Writer;
use crate::aof::record::{encode_clock, encode_last_version};
use crate::aof::VERSION_BLOCK;

/// How often a `CLOCK` record is written while records are being written.
const BUSY_CLOCK_INTERVAL: Duration = Duration::from_secs(1);
/// How often a `CLOCK` record is written while nothing else is: often enough that an entry
/// that expired this long before a crash stays expired, rare enough (about 2 KiB an hour) that
/// an idle server's file barely grows.
const IDLE_CLOCK_INTERVAL: Duration = Duration::from_secs(10);

/// What the writer tracks of its own records.
#[derive(Debug)]
pub(super) struct MetaRecords {
    /// A reservation queued but not yet granted: its record's sequence number and ceiling.
    reservation: Option<(u64, u64)>,
    /// Every record up to this sequence number is in the file (written, maybe not fsynced).
    in_file_through: u64,
    /// When the last `CLOCK` record was queued.
    last_clock: Instant,
    /// Whether records other than the writer's own were written since then.
    busy_since_clock: bool,
    /// Sequence number of the writer's own last record.
    last_own_seq: u64,
}

impl MetaRecords {
    pub(super) fn new() -> MetaRecords {
        MetaRecords {
            reservation: None,
            in_file_through: 0,
            // The first reservation, at startup, brings the first clock record with it.
            last_clock: Instant::now(),
            busy_since_clock: false,
            last_own_seq: 0,
        }
    }

    /// Records up to `seq` are now in the file.
    pub(super) fn in_file(&mut self, seq: u64) {
        self.in_file_through = self.in_file_through.max(seq);
        // Records after the writer's own: clients are writing.
        self.busy_since_clock |= seq > self.last_own_seq;
    }
}

impl Writer {
    /// Queues a reservation if the store is using up its versions, and a clock record if one
    /// is due (or `force`d, at shutdown).
    pub(super) fn queue_meta_records(&mut self, force_clock: bool) {
        if self.failed() && !force_clock {
            // Nothing queued now could be granted before the file recovers; the store's
            // writes are refused meanwhile.
            return;
        }
        let ceiling = match self.meta.reservation {
            Some(_) => None,
            None => {
                let (last, granted) = self.store.version_headroom();
                (granted.saturating_sub(last) < VERSION_BLOCK / 2)
                    .then(|| last.saturating_add(VERSION_BLOCK))
            }
        };
        let interval = if self.meta.busy_since_clock {
            BUSY_CLOCK_INTERVAL
        } else {
            IDLE_CLOCK_INTERVAL
        };
        let clock_due = force_clock || self.meta.last_clock.elapsed() >= interval;
        if ceiling.is_none() && !clock_due {
            return;
        }
        if let Some(ceiling) = ceiling {
            // Counted in snapshots from now on, granted or not: see `Store::request_versions`.
            self.store.request_versions(ceiling);
        }
        let now_ms = self.store.clock().now_ms();
        let seq = self.aof.push(|salt, buf| {
            if let Some(ceiling) = ceiling {
                encode_last_version(ceiling, salt, buf);
            }
            encode_clock(now_ms, salt, buf);
        });
        if let Some(ceiling) = ceiling {
            self.meta.reservation = Some((seq, ceiling));
        }
        self.meta.last_own_seq = seq;
        self.meta.last_clock = Instant::now();
        self.meta.busy_since_clock = false;
    }

    /// Grants the queued reservation once its record is in the file, fsyncing first unless
    /// the fsync policy already has.
    pub(super) fn grant_reservation(&mut self) {
        let Some((seq, ceiling)) = self.meta.reservation else {
            return;
        };
        if self.failed() || self.meta.in_file_through < seq {
            return;
        }
        if self.dirty && !self.fsync() {
            return;
        }
        self.meta.reservation = None;
        self.store.grant_versions(ceiling);
    }
}
