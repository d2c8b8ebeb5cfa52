//! `SET`: write under one of the four modes.

use sessiond_proto::command::{Set, SetOutcome};

use super::Outcome;
use crate::server::Context;
use crate::stats::Stats;

pub(super) fn apply(cmd: Set, opaque: u32, ctx: &Context) -> Outcome {
    let outcome = ctx.store.set(&cmd.key, &cmd.value, cmd.ttl_ms, cmd.mode);
    Stats::bump(match outcome {
        SetOutcome::Stored { .. } => &ctx.stats.set_stored,
        _ => &ctx.stats.set_rejected,
    });
    Outcome::write(
        outcome.to_frame(opaque),
        matches!(outcome, SetOutcome::Stored { .. }),
    )
}
