//! `HELLO`: agree on a protocol version and tell the client our limits.

use sessiond_proto::command::{Hello, HelloReply, HELLO_FLAG_AUTH_REQUIRED};
use sessiond_proto::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

use super::Outcome;
use crate::access::Access;
use crate::server::Context;
use crate::stats::Stats;

/// Picks the highest version both sides speak. Without one, the connection cannot continue,
/// so the error is fatal. The flags say whether the server requires `AUTH`: that is how a
/// client learns it (it may send `HELLO` before authenticating).
pub(super) fn apply(cmd: Hello, opaque: u32, ctx: &Context, access: &Access) -> Outcome {
    match cmd.negotiate(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION) {
        Some(version) => {
            if !cmd.client_name.is_empty() {
                tracing::debug!(client = %String::from_utf8_lossy(&cmd.client_name), version, "hello");
            }
            Outcome::reply(
                HelloReply {
                    version,
                    flags: if access.required() {
                        HELLO_FLAG_AUTH_REQUIRED
                    } else {
                        0
                    },
                    limits: ctx.limits,
                    server: crate::SERVER_VERSION.to_string(),
                }
                .to_frame(opaque),
            )
        }
        None => {
            Stats::bump(&ctx.stats.protocol_errors);
            Outcome {
                close: true,
                ..Outcome::reply(cmd.no_common_version(
                    opaque,
                    MIN_PROTOCOL_VERSION,
                    PROTOCOL_VERSION,
                ))
            }
        }
    }
}
