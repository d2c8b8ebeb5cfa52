//! `SET`: write under one of the four modes, held to the memory limit.

use sessiond_proto::command::{Set, SetOutcome};
use sessiond_proto::Opcode;

use super::Outcome;
use crate::server::Context;
use crate::stats::Stats;
use crate::store::Expiry;

pub(super) fn apply(cmd: Set, opaque: u32, ctx: &Context) -> Outcome {
    let expiry = Expiry::In(cmd.ttl_ms);
    let Ok(outcome) = ctx
        .store
        .set_limited(&cmd.key, &cmd.value, expiry, cmd.mode, None)
    else {
        return Outcome::reply(super::out_of_memory(Opcode::Set, opaque));
    };
    Stats::bump(match outcome {
        SetOutcome::Stored { .. } => &ctx.stats.set_stored,
        _ => &ctx.stats.set_rejected,
    });
    Outcome::write(
        outcome.to_frame(opaque),
        matches!(outcome, SetOutcome::Stored { .. }),
    )
}
