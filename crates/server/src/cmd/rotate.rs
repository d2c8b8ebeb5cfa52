//! `ROTATE`: move a session to a new key, optionally binding it to an owner (a login).

use sessiond_proto::command::Rotate;
use sessiond_proto::Opcode;

use super::{owner, Outcome};
use crate::server::Context;

pub(super) fn apply(cmd: Rotate, opaque: u32, ctx: &Context) -> Outcome {
    let bind = cmd
        .bind
        .as_ref()
        .map(|bind| (&bind.owner[..], bind.limit.map(owner::limit)));
    let result = ctx
        .store
        .rotate(&cmd.old_key, &cmd.new_key, cmd.if_version, bind);
    owner::written(result.map(owner::rotate_outcome), Opcode::Rotate, opaque)
}
