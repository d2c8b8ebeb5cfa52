//! `slowlog [get N | len | reset]`: the server's log of slow requests (`SLOWLOG`).

use sessiond_proto::command::{Slowlog, SlowlogEntry, SlowlogLen, SlowlogReply};
use sessiond_proto::{Request, ResponseFrame};

use crate::cli::SlowlogOp;
use crate::run::{print, Outcome};

/// What `slowlog` without an operation does: like `redis-cli slowlog get`.
const DEFAULT: SlowlogOp = SlowlogOp::Get { count: 10 };

fn slowlog(op: Option<SlowlogOp>) -> Slowlog {
    match op.unwrap_or(DEFAULT) {
        SlowlogOp::Get { count } => Slowlog::Get { count },
        SlowlogOp::Len => Slowlog::Len,
        SlowlogOp::Reset => Slowlog::Reset,
    }
}

/// The request for `slowlog`.
pub fn request(op: Option<SlowlogOp>) -> Request {
    Request::Slowlog(slowlog(op))
}

/// Prints the reply to `slowlog`.
pub fn report(op: Option<SlowlogOp>, reply: &ResponseFrame) -> anyhow::Result<Outcome> {
    let text = match SlowlogReply::from_frame(reply, &slowlog(op))? {
        SlowlogReply::Entries(entries) => entries.iter().map(entry_line).collect(),
        SlowlogReply::Len(len) => len_lines(&len),
        SlowlogReply::Reset => String::new(),
    };
    print(text.as_bytes())
}

/// `ID UNIX_MS DURATION_US PROTOCOL COMMAND KEY_LEN CLIENT`. The texts come from the
/// server: anything but printable ASCII is escaped, so that a line stays one line.
fn entry_line(e: &SlowlogEntry) -> String {
    let text = |s: &str| {
        s.as_bytes()
            .escape_ascii()
            .to_string()
            .replace(' ', "\\x20")
    };
    format!(
        "{} {} {} {} {} {} {}\n",
        e.id,
        e.unix_ms,
        e.duration_us,
        text(&e.protocol),
        text(&e.command),
        e.key_len,
        text(&e.client)
    )
}

fn len_lines(len: &SlowlogLen) -> String {
    let threshold = len
        .threshold_us
        .map_or_else(|| "off".to_string(), |us| us.to_string());
    format!(
        "len {}\nmax_len {}\nthreshold_us {threshold}\nrecorded_total {}\n",
        len.len, len.max_len, len.recorded_total
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_line_of_seven_fields() {
        let entry = SlowlogEntry {
            id: 3,
            unix_ms: 1_764_180_000_000,
            duration_us: 12_500,
            key_len: 43,
            command: "SET".into(),
            protocol: "native".into(),
            client: "odd name\n".into(),
        };
        let line = entry_line(&entry);
        assert_eq!(
            line,
            "3 1764180000000 12500 native SET 43 odd\\x20name\\n\n"
        );
        assert_eq!(line.trim_end().split(' ').count(), 7);
    }

    #[test]
    fn len_says_off() {
        let len = SlowlogLen {
            len: 0,
            max_len: 128,
            threshold_us: None,
            recorded_total: 5,
        };
        assert_eq!(
            len_lines(&len),
            "len 0\nmax_len 128\nthreshold_us off\nrecorded_total 5\n"
        );
    }
}
