//! `HELLO`: agree on a protocol version and tell the client our limits.

use sessiond_proto::command::{Hello, HelloReply};
use sessiond_proto::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

use super::Outcome;
use crate::server::Context;
use crate::stats::Stats;

/// Picks the highest version both sides speak. Without one, the connection cannot continue,
/// so the error is fatal.
pub(super) fn apply(cmd: Hello, opaque: u32, ctx: &Context) -> Outcome {
    match cmd.negotiate(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION) {
        Some(version) => {
            if !cmd.client_name.is_empty() {
                tracing::debug!(client = %String::from_utf8_lossy(&cmd.client_name), version, "hello");
            }
            Outcome::reply(
                HelloReply {
                    version,
                    limits: ctx.limits,
                    server: crate::SERVER_VERSION.to_string(),
                }
                .to_frame(opaque),
            )
        }
        None => {
            Stats::bump(&ctx.stats.protocol_errors);
            Outcome {
                response: cmd.no_common_version(opaque, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION),
                mutated: false,
                close: true,
            }
        }
    }
}
