//! `DEL`: remove, optionally only at a given version.

use sessiond_proto::command::{Del, DelOutcome};
use sessiond_proto::{Opcode, ResponseFrame, Status};

use super::Outcome;
use crate::server::Context;
use crate::stats::Stats;

/// While the AOF cannot be written, unlike every other write, a DEL is still applied: it is
/// a logout, and the session must stop working at once, the safe direction. It is answered
/// `PERSISTENCE_FAILED` whatever its outcome (also for an absent key, which an earlier DEL
/// during the failure may have removed), so a client retrying keeps hearing "not durable yet"
/// until the file has recovered; the recovery writes the deletion, and a retry then answers
/// `NOT_FOUND` (PROTOCOL.md, `PERSISTENCE_FAILED`; AOF.md section 10).
pub(super) fn apply(cmd: Del, opaque: u32, ctx: &Context) -> Outcome {
    let failed = ctx.refuse_writes();
    let outcome = ctx.store.del(&cmd.key, cmd.if_version);
    Stats::bump(match outcome {
        DelOutcome::Deleted => &ctx.stats.del_deleted,
        _ => &ctx.stats.del_misses,
    });
    if failed {
        return Outcome::reply(ResponseFrame::error(
            Opcode::Del.into(),
            opaque,
            Status::PersistenceFailed,
            "deleted in memory, but the append-only file cannot be written: the deletion is not \
             durable yet; retry until OK or NOT_FOUND",
        ));
    }
    Outcome::write(outcome.to_frame(opaque), outcome == DelOutcome::Deleted)
}
