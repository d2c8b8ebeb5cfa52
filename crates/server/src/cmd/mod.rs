//! Applying parsed requests to the store: one command per file.
//!
//! The wire grammar of each command lives with its parser in `sessiond_proto::command`; the
//! files here hold only what the server does with it. [`execute`] is the one entry point the
//! connection handler calls for every well-formed frame.

mod del;
mod get;
mod hello;
mod ping;
mod set;
mod stats;
mod touch;

use sessiond_proto::{Opcode, Request, RequestFrame, ResponseFrame, Status};

use crate::server::Context;
use crate::stats::Stats;

/// A response, whether the request changed the store (so its acknowledgement may have to
/// wait for the AOF), and whether the connection must be closed after sending it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) response: ResponseFrame,
    pub(crate) mutated: bool,
    pub(crate) close: bool,
}

impl Outcome {
    fn reply(response: ResponseFrame) -> Outcome {
        Outcome {
            response,
            mutated: false,
            close: false,
        }
    }

    fn write(response: ResponseFrame, mutated: bool) -> Outcome {
        Outcome {
            response,
            mutated,
            close: false,
        }
    }
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

/// Parses `frame` and applies it.
pub(crate) fn execute(frame: RequestFrame, ctx: &Context) -> Outcome {
    let (opcode, opaque) = (frame.opcode, frame.opaque);
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
        Request::Get(get) => get.touch_ttl_ms.is_some(),
        // A DEL is a logout: it runs even then, and answers the error itself (`del::apply`).
        Request::Del(_) => false,
        _ => false,
    };
    if is_write && ctx.refuse_writes() {
        return refused(request.opcode(), opaque);
    }
    match request {
        Request::Hello(cmd) => hello::apply(cmd, opaque, ctx),
        Request::Ping(cmd) => Outcome::reply(ping::apply(cmd, opaque)),
        Request::Get(cmd) => get::apply(cmd, opaque, ctx),
        Request::Set(cmd) => set::apply(cmd, opaque, ctx),
        Request::Touch(cmd) => touch::apply(cmd, opaque, ctx),
        Request::Del(cmd) => del::apply(cmd, opaque, ctx),
        Request::Stats(cmd) => Outcome::reply(stats::apply(cmd, opaque, ctx)),
    }
}
