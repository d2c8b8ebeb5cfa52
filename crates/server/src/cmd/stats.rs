//! `STATS`: counters and store gauges.

use sessiond_proto::command::{Stats as StatsRequest, StatsReply};
use sessiond_proto::ResponseFrame;

use crate::server::Context;

pub(super) fn apply(_cmd: StatsRequest, opaque: u32, ctx: &Context) -> ResponseFrame {
    StatsReply {
        stats: ctx.stats.snapshot(&ctx.store, ctx.aof.as_ref()),
    }
    .to_frame(opaque)
}
