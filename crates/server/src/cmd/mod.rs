//! Applying parsed requests to the store: one command per file.
//!
//! The wire grammar of each command lives with its parser in `sessiond_proto::command`; the
//! files here hold only what the server does with it. [`execute`] is the one entry point the
//! connection handler calls for every well-formed frame; it asks [`crate::access`] whether
//! the connection may run the opcode's [`Category`] (see [`category`]) before anything else.

mod auth;
mod del;
mod end_all;
mod get;
mod hello;
mod list_sessions;
pub(crate) mod owner;
mod ping;
mod rotate;
mod scan;
mod set;
mod set_session;
mod slowlog;
mod stats;
mod touch;

use std::time::Duration;

use sessiond_proto::command::SLOWLOG_RESET;
use sessiond_proto::{Opcode, Request, RequestFrame, ResponseFrame, Status};

use crate::access::{Access, Category, Denied};
use crate::server::Context;
use crate::stats::Stats;

/// A response, whether the request changed the store (so its acknowledgement may have to
/// wait for the AOF), whether the connection must be closed after sending it, and how long
/// to wait before sending it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) response: ResponseFrame,
    pub(crate) mutated: bool,
    pub(crate) close: bool,
    pub(crate) delay: Option<Duration>,
}

impl Outcome {
    fn reply(response: ResponseFrame) -> Outcome {
        Outcome::write(response, false)
    }

    fn write(response: ResponseFrame, mutated: bool) -> Outcome {
        Outcome {
            response,
            mutated,
            close: false,
            delay: None,
        }
    }
}

/// The native command table's permission column: what each request does, for
/// [`crate::access::allows`]. `None` for an undefined opcode.
pub(crate) fn category(frame: &RequestFrame) -> Option<Category> {
    Some(match Opcode::from_u8(frame.opcode)? {
        Opcode::Hello | Opcode::Auth | Opcode::Ping => Category::Handshake,
        Opcode::Get | Opcode::Set | Opcode::Touch | Opcode::Del => Category::Session,
        Opcode::SetSession | Opcode::Rotate => Category::Session,
        Opcode::ListSessions | Opcode::EndAll => Category::Owner,
        Opcode::Stats => Category::Stats,
        // Every key is a session id, a bearer credential: only an admin may list them.
        Opcode::Scan => Category::Keyspace,
        // Clearing the slow log takes from other operators what they may be reading: only
        // an admin may. Reading it is like reading the counters. (A malformed request is
        // judged as a read, and then refused by its parser.)
        Opcode::Slowlog if frame.extras.first() == Some(&SLOWLOG_RESET) => Category::Keyspace,
        Opcode::Slowlog => Category::Stats,
    })
}

/// The error that answers a command the connection may not run.
fn denied(opcode: u8, opaque: u32, denied: Denied) -> Outcome {
    let name = Opcode::from_u8(opcode).map_or("this command", Opcode::name);
    Outcome::reply(match denied {
        Denied::AuthRequired => ResponseFrame::error(
            opcode,
            opaque,
            Status::AuthRequired,
            "authentication required: send AUTH first",
        ),
        Denied::NoPermission { user, role } => ResponseFrame::error(
            opcode,
            opaque,
            Status::NoPermission,
            format!("user {user:?} (role {role}) may not run {name}"),
        ),
    })
}

/// The answer to a write while the AOF cannot persist writes: refused before it is applied.
fn refused(opcode: Opcode, opaque: u32) -> Outcome {
    Outcome::reply(ResponseFrame::error(
        opcode.into(),
        opaque,
        Status::PersistenceFailed,
        "writes are refused: the append-only file cannot be written (see the server log)",
    ))
}

/// The answer to a write that would create or grow an entry while memory is at its limit.
fn out_of_memory(opcode: Opcode, opaque: u32) -> ResponseFrame {
    // Counted in STATS memory_refused, by the store.
    ResponseFrame::error(
        opcode.into(),
        opaque,
        Status::OutOfMemory,
        "the server's memory is at limits.max_memory: sessions cannot be created or \
         grown until others are deleted or expire",
    )
}

/// Checks that the connection may run `frame`'s opcode, then parses and applies it. Before
/// authentication an undefined opcode is answered `AUTH_REQUIRED` like any other that is
/// not a handshake: an unauthenticated client learns nothing about the server.
pub(crate) fn execute(frame: RequestFrame, ctx: &Context, access: &mut Access) -> Outcome {
    let (opcode, opaque) = (frame.opcode, frame.opaque);
    let allowed = match category(&frame) {
        Some(category) => access.check(category),
        None if access.is_authenticated() => Ok(()),
        None => Err(Denied::AuthRequired),
    };
    if let Err(why) = allowed {
        return denied(opcode, opaque, why);
    }
    let request = match Request::parse(frame, &ctx.limits) {
        Ok(request) => request,
        Err(error) => {
            Stats::bump(&ctx.stats.protocol_errors);
            return Outcome::reply(ResponseFrame::error(
                opcode,
                opaque,
                error.status(),
                error.to_string(),
            ));
        }
    };
    // A GET with TOUCH is a write too: while writes cannot be persisted, serving it as a plain
    // read would answer OK to a client that believes its session was extended.
    let is_write = match &request {
        Request::Set(_) | Request::Touch(_) => true,
        Request::SetSession(_) | Request::Rotate(_) => true,
        Request::Get(get) => get.touch_ttl_ms.is_some(),
        // A DEL is a logout: it runs even then, and answers the error itself (`del::apply`).
        Request::Del(_) => false,
        _ => false,
    };
    if is_write && ctx.refuse_writes() {
        return refused(request.opcode(), opaque);
    }
    match request {
        Request::Hello(cmd) => hello::apply(cmd, opaque, ctx, access),
        Request::Ping(cmd) => Outcome::reply(ping::apply(cmd, opaque)),
        Request::Get(cmd) => get::apply(cmd, opaque, ctx),
        Request::Set(cmd) => set::apply(cmd, opaque, ctx),
        Request::Touch(cmd) => touch::apply(cmd, opaque, ctx),
        Request::Del(cmd) => del::apply(cmd, opaque, ctx),
        Request::Stats(cmd) => Outcome::reply(stats::apply(cmd, opaque, ctx)),
        Request::Auth(cmd) => auth::apply(cmd, opaque, ctx, access),
        Request::Slowlog(cmd) => Outcome::reply(slowlog::apply(cmd, opaque, ctx)),
        Request::SetSession(cmd) => set_session::apply(cmd, opaque, ctx),
        Request::ListSessions(cmd) => list_sessions::apply(cmd, opaque, ctx),
        Request::EndAll(cmd) => end_all::apply(cmd, opaque, ctx),
        Request::Rotate(cmd) => rotate::apply(cmd, opaque, ctx),
        Request::Scan(cmd) => scan::apply(cmd, opaque, ctx),
    }
}
