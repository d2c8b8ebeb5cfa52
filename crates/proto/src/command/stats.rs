//! `STATS`: server counters.

use bytes::Bytes;

use super::{malformed, reply_status, unexpected, CommandError, Presence, ReplyError, Shape};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Opcode, Status};

/// `STATS`: the server's counters as text.
///
/// ```text
/// flags   0
/// extras  none
/// key     none
/// value   none
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats;

const SHAPE: Shape = Shape {
    opcode: Opcode::Stats,
    allowed_flags: 0,
    extras_lens: &[0],
    key: Presence::Forbidden,
    value: Presence::Forbidden,
};

impl Stats {
    /// Parses a `STATS` frame.
    pub fn parse(frame: RequestFrame) -> Result<Stats, CommandError> {
        SHAPE.check(&frame)?;
        Ok(Stats)
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        RequestFrame::new(Opcode::Stats, opaque)
    }
}

/// The `STATS` reply: UTF-8 text, one `name value` pair per line, each line ending in `\n`.
/// Names are lower-case ASCII with underscores; values contain no newline. Clients must
/// ignore names they do not know.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsReply {
    /// The pairs, in the server's order.
    pub stats: Vec<(String, String)>,
}

impl StatsReply {
    /// The value of the stat called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.stats
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The response frame for this reply.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let mut text = String::new();
        for (name, value) in &self.stats {
            text.push_str(name);
            text.push(' ');
            text.push_str(value);
            text.push('\n');
        }
        ResponseFrame {
            value: Bytes::from(text),
            ..ResponseFrame::new(Opcode::Stats.into(), opaque, Status::Ok)
        }
    }

    /// Reads a `STATS` reply.
    pub fn from_frame(frame: &ResponseFrame) -> Result<StatsReply, ReplyError> {
        match reply_status(frame, Opcode::Stats)? {
            Status::Ok => {}
            other => return Err(unexpected(Opcode::Stats, other)),
        }
        let text = std::str::from_utf8(&frame.value)
            .map_err(|e| malformed(Opcode::Stats, format!("not UTF-8: {e}")))?;
        let stats = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, value) = line.split_once(' ').unwrap_or((line, ""));
                (name.to_string(), value.to_string())
            })
            .collect();
        Ok(StatsReply { stats })
    }
}
