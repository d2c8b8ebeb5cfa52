//! `AUTH`: authenticate the connection as a configured user.

use sessiond_proto::command::{Auth, AuthReply};
use sessiond_proto::{Opcode, ResponseFrame, Status};

use super::Outcome;
use crate::access::{Access, LoginFailed};
use crate::server::Context;

/// The one message for an unknown user and a wrong password alike, so that user names
/// cannot be probed.
pub(crate) const AUTH_FAILED_MESSAGE: &str = "invalid user name or password";

/// Authenticates the connection; the reply names the role. A failure leaves the connection
/// as it was and may be answered late (see [`Access::login`]). On a server without users
/// any credentials succeed as `admin`.
pub(super) fn apply(cmd: Auth, opaque: u32, ctx: &Context, access: &mut Access) -> Outcome {
    match access.login(&ctx.auth, &ctx.stats, &cmd.user, &cmd.password) {
        Ok(role) => Outcome::reply(
            AuthReply {
                role: role.name().to_string(),
            }
            .to_frame(opaque),
        ),
        Err(LoginFailed { delay }) => Outcome {
            delay,
            ..Outcome::reply(ResponseFrame::error(
                Opcode::Auth.into(),
                opaque,
                Status::AuthFailed,
                AUTH_FAILED_MESSAGE,
            ))
        },
    }
}
