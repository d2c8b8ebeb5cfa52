//! `PING`: echo the payload.

use sessiond_proto::command::{Ping, PingReply};
use sessiond_proto::ResponseFrame;

pub(super) fn apply(cmd: Ping, opaque: u32) -> ResponseFrame {
    PingReply {
        payload: cmd.payload,
    }
    .to_frame(opaque)
}
