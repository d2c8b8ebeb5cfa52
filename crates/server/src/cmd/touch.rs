//! `TOUCH`: move the deadline.

use sessiond_proto::command::{Touch, TouchReply};

use super::Outcome;
use crate::server::Context;
use crate::stats::Stats;

pub(super) fn apply(cmd: Touch, opaque: u32, ctx: &Context) -> Outcome {
    let reply = ctx.store.touch(&cmd.key, cmd.ttl_ms);
    Stats::bump(match reply {
        TouchReply::Touched { .. } => &ctx.stats.touch_hits,
        TouchReply::NotFound => &ctx.stats.touch_misses,
    });
    Outcome::write(
        reply.to_frame(opaque),
        matches!(reply, TouchReply::Touched { .. }),
    )
}
