//! `SET_SESSION`: a `SET` that binds an owner, sets an absolute deadline and holds the owner
//! to its session limit, all in the store's one atomic step.

use sessiond_proto::command::SetSession;
use sessiond_proto::Opcode;

use super::{owner, Outcome};
use crate::server::Context;
use crate::store::{Expiry, SessionOptions};

pub(super) fn apply(cmd: SetSession, opaque: u32, ctx: &Context) -> Outcome {
    // The lifetime counts from when the server applies the write, like a TTL, so that the
    // client's clock does not matter.
    let now = ctx.store.clock().now_ms();
    let options = SessionOptions {
        owner: cmd.owner.as_deref(),
        absolute_deadline: cmd.lifetime_ms.map(|ms| now.saturating_add(ms)),
        owner_limit: cmd.owner_limit.map(owner::limit),
    };
    let result = ctx.store.set_session(
        &cmd.key,
        &cmd.value,
        Expiry::In(cmd.ttl_ms),
        cmd.mode,
        &options,
    );
    owner::written(result.map(owner::set_outcome), Opcode::SetSession, opaque)
}
