//! `END_ALL`: end every session of an owner, or all but the caller's own.

use sessiond_proto::command::{EndAll, EndAllReply};
use sessiond_proto::{Opcode, ResponseFrame, Status};

use super::Outcome;
use crate::server::Context;

/// Like `DEL` (see `del::apply`), `END_ALL` is a logout and runs even while the AOF cannot be
/// written: the sessions stop working at once, the safe direction, and the answer says that
/// the ending is not durable yet.
pub(super) fn apply(cmd: EndAll, opaque: u32, ctx: &Context) -> Outcome {
    let failed = ctx.refuse_writes();
    let ended = ctx.store.end_all(&cmd.owner, cmd.except.as_deref());
    if failed {
        return Outcome::reply(ResponseFrame::error(
            Opcode::EndAll.into(),
            opaque,
            Status::PersistenceFailed,
            format!(
                "ended {ended} sessions in memory, but the append-only file cannot be written: \
                 the ending is not durable yet; retry until OK"
            ),
        ));
    }
    Outcome::write(EndAllReply { ended }.to_frame(opaque), ended > 0)
}
