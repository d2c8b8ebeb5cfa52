//! `DEL`: remove, optionally only at a given version.

use sessiond_proto::command::{Del, DelOutcome};

use super::Outcome;
use crate::server::Context;
use crate::stats::Stats;

pub(super) fn apply(cmd: Del, opaque: u32, ctx: &Context) -> Outcome {
    let outcome = ctx.store.del(&cmd.key, cmd.if_version);
    Stats::bump(match outcome {
        DelOutcome::Deleted => &ctx.stats.del_deleted,
        _ => &ctx.stats.del_misses,
    });
    Outcome::write(outcome.to_frame(opaque), outcome == DelOutcome::Deleted)
}
