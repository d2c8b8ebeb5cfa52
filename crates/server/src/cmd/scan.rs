//! `SCAN`: every live entry with its session fields, whole shards at a time, for moving
//! sessions to another server (`sessiond-cli rebalance`).
//!
//! The cursor is the index of the next shard to read (0 starts, and a reply's 0 ends).
//! Reading whole shards, under each shard's read lock, is what makes the scan complete:
//! an entry that stays live for the whole scan is in exactly one shard, and that shard is
//! read once. A bucket-level cursor would split shards across replies at the price of the
//! resize rules of Redis's `SCAN` (`store/scan.rs`); one shard is a small part of the
//! store (it has 1024), so a reply of whole shards stays small too.
//!
//! A reply must stay readable by every client, whose codec accepts a value of at most
//! [`Limits::HARD_MAX_VALUE_LEN`] bytes (and rebalancing cannot get past a reply it cannot
//! read: it asks for the same cursor again). So a shard joins a reply only if the reply
//! then still fits the budget, unless the reply would otherwise be empty; a shard that
//! alone is larger than the protocol's limit is answered with `TOO_LARGE`, naming it,
//! rather than with a frame no client accepts. That takes a store above 16 GiB whose
//! entries hash unevenly; splitting such a shard needs a bucket cursor.

use bytes::Bytes;
use sessiond_proto::command::{Scan, ScanEntry, ScanReply};
use sessiond_proto::{Limits, Opcode, ResponseFrame, Status};

use super::Outcome;
use crate::server::Context;

pub(super) fn apply(cmd: Scan, opaque: u32, ctx: &Context) -> Outcome {
    let store = &ctx.store;
    let shards = store.shard_count() as u64;
    let hard = Limits::HARD_MAX_VALUE_LEN as usize;
    let budget = (ctx.limits.max_value_len as usize).min(hard);
    let wanted = match cmd.max_entries {
        0 => usize::MAX,
        n => n as usize,
    };
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let mut shard = cmd.cursor;
    while shard < shards && entries.len() < wanted {
        let (read, read_bytes) = read_shard(ctx, shard);
        if entries.is_empty() && read_bytes > hard {
            return Outcome::reply(ResponseFrame::error(
                Opcode::Scan.into(),
                opaque,
                Status::TooLarge,
                format!(
                    "shard {shard} holds {read_bytes} bytes of entries, more than a reply \
                     can carry ({hard})"
                ),
            ));
        }
        if !entries.is_empty() && bytes + read_bytes > budget {
            // Read again by the next call: cheaper than a reply no client can read.
            break;
        }
        bytes += read_bytes;
        entries.extend(read);
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

/// The live entries of one shard, and the bytes they take in a reply.
fn read_shard(ctx: &Context, shard: u64) -> (Vec<ScanEntry>, usize) {
    let store = &ctx.store;
    let now = store.clock().now_ms();
    let (mut entries, mut bytes) = (Vec::new(), 0);
    // `shard` < the shard count, a usize.
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
    (entries, bytes)
}
