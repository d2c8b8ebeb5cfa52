//! `SLOWLOG`: read or clear the log of slow requests ([`crate::slowlog`]).
//!
//! Which role may run which operation is decided with the other permissions, in
//! [`super::category`]: `GET` and `LEN` are counters (`monitor`), `RESET` destroys what
//! other operators may be looking at (`admin`).

use sessiond_proto::command::{Slowlog, SlowlogEntry, SlowlogLen, SlowlogReply};
use sessiond_proto::ResponseFrame;

use crate::server::Context;
use crate::slowlog::{Logged, SlowLog};

pub(super) fn apply(cmd: Slowlog, opaque: u32, ctx: &Context) -> ResponseFrame {
    let log = &ctx.slowlog;
    match cmd {
        Slowlog::Get { count } => SlowlogReply::Entries(
            log.get(Some(usize::try_from(count).unwrap_or(usize::MAX)))
                .iter()
                .map(entry)
                .collect(),
        ),
        Slowlog::Len => SlowlogReply::Len(len(log)),
        Slowlog::Reset => {
            log.reset();
            SlowlogReply::Reset
        }
    }
    .to_frame(opaque)
}

/// The wire form of a kept entry.
fn entry(logged: &Logged) -> SlowlogEntry {
    let entry = &logged.entry;
    SlowlogEntry {
        id: logged.id,
        unix_ms: entry.unix_ms,
        duration_us: micros(entry.duration),
        key_len: u32::try_from(entry.key_len).unwrap_or(u32::MAX),
        command: entry.command.to_string(),
        protocol: entry.protocol.to_string(),
        client: entry.client.to_string(),
    }
}

/// What `SLOWLOG LEN` reports.
fn len(log: &SlowLog) -> SlowlogLen {
    SlowlogLen {
        len: log.len() as u64,
        max_len: log.max_len() as u64,
        threshold_us: log.threshold().map(micros),
        recorded_total: log.recorded_total(),
    }
}

/// Whole microseconds, as the protocol counts durations in the slow log.
pub(crate) fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
