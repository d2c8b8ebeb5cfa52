//! `LIST_SESSIONS`: an owner's live sessions, as many as fit one reply.

use sessiond_proto::command::{ListSessions, SessionList};

use super::{owner, Outcome};
use crate::server::Context;

/// The reply's value is held to the server's `max_value_len`: a client sized for the largest
/// `GET` reply can read any listing, however many sessions the owner has.
pub(super) fn apply(cmd: ListSessions, opaque: u32, ctx: &Context) -> Outcome {
    let now = ctx.store.clock().now_ms();
    let sessions = ctx
        .store
        .sessions_of(&cmd.owner)
        .into_iter()
        .map(|session| owner::session_info(session, now))
        .collect();
    let budget = ctx.limits.max_value_len as usize;
    Outcome::reply(SessionList::fitting(sessions, cmd.max_sessions, budget).to_frame(opaque))
}
