//! `GET`: read, optionally sliding the deadline.

use sessiond_proto::command::{Get, GetReply};

use super::Outcome;
use crate::server::Context;
use crate::stats::Stats;

pub(super) fn apply(cmd: Get, opaque: u32, ctx: &Context) -> Outcome {
    // While writes cannot be persisted a touch never gets here: the dispatcher answers it
    // PERSISTENCE_FAILED, like every other write.
    let touch = cmd.touch_ttl_ms.is_some();
    let reply = ctx.store.get(&cmd.key, cmd.touch_ttl_ms);
    Stats::bump(match reply {
        GetReply::Hit(_) => &ctx.stats.get_hits,
        GetReply::Miss => &ctx.stats.get_misses,
    });
    Outcome::write(
        reply.to_frame(opaque),
        matches!(reply, GetReply::Hit(_)) && touch,
    )
}
