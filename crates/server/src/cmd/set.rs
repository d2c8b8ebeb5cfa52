//! `SET`: write under one of the four modes, held to the memory limit.

use sessiond_proto::command::{Set, SetOutcome};
use sessiond_proto::{Opcode, ResponseFrame, Status};

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
        // Counted in STATS memory_refused, by the store.
        return Outcome::reply(ResponseFrame::error(
            Opcode::Set.into(),
            opaque,
            Status::OutOfMemory,
            "the server's memory is at limits.max_memory: sessions cannot be created or \
             grown until others are deleted or expire",
        ));
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
