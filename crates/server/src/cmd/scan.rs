//! `SCAN`: every live entry with its session fields, whole shards at a time, for moving
//! sessions to another server (`sessiond-cli rebalance`).
//!
//! The cursor is the index of the next shard to read (0 starts, and a reply's 0 ends).
//! Reading whole shards, under each shard's read lock, is what makes the scan complete:
//! an entry that stays live for the whole scan is in exactly one shard, and that shard is
//! read once. A bucket-level cursor would split shards across replies at the price of the
//! resize rules of Redis's `SCAN` (`store/scan.rs`); one shard is a small part of the
//! store (it has 1024), so a reply of whole shards stays small too.

use bytes::Bytes;
use sessiond_proto::command::{Scan, ScanEntry, ScanReply};

use super::Outcome;
use crate::server::Context;

/// The reply's value stops growing past the server's `max_value_len` (after the shard that
/// crossed it), so that a client sized for the largest `GET` reply can read it whatever
/// `max_entries` asks for.
pub(super) fn apply(cmd: Scan, opaque: u32, ctx: &Context) -> Outcome {
    let store = &ctx.store;
    let shards = store.shard_count() as u64;
    let budget = ctx.limits.max_value_len as usize;
    let wanted = match cmd.max_entries {
        0 => usize::MAX,
        n => n as usize,
    };
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let mut shard = cmd.cursor;
    while shard < shards && entries.len() < wanted && bytes < budget {
        let now = store.clock().now_ms();
        // `shard` < `shards`, a usize.
        store.visit_live_sessions_in_shard(shard as usize, |state, has_meta| {
            let meta = &state.meta;
            let entry = ScanEntry {
                key: Bytes::copy_from_slice(state.key),
                owner: meta.owner.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(state.value),
                version: state.version,
                ttl_ms: state.expires_at_ms.saturating_sub(now).max(1),
                created_ms: if has_meta { meta.created_ms } else { 0 },
                deadline_ms: meta.absolute_deadline_ms,
            };
            bytes += entry.encoded_len();
            entries.push(entry);
        });
        shard += 1;
    }
    let next_cursor = if shard >= shards { 0 } else { shard };
    Outcome::reply(
        ScanReply {
            next_cursor,
            entries,
        }
        .to_frame(opaque),
    )
}
