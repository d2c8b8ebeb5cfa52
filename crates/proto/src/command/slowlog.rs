//! `SLOWLOG`: read or clear the server's log of slow requests.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    malformed, reply_status, reply_u64s, u64_extras, unexpected, CommandError, Presence,
    ReplyError, Shape,
};
use crate::frame::{RequestFrame, ResponseFrame};
use crate::{Limits, Opcode, Status};

/// `SLOWLOG`: one of three operations on the slow-request log.
///
/// ```text
/// flags   0
/// extras  operation u8 (0 GET, 1 LEN, 2 RESET), reserved u8 x3 (0), count u32
///         (GET: the most entries to return; LEN and RESET: 0)
/// key     none
/// value   none
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowlog {
    /// The newest entries, newest first, at most `count` of them.
    Get {
        /// The most entries to return.
        count: u32,
    },
    /// How many entries the log holds, and its settings.
    Len,
    /// Remove every entry.
    Reset,
}

/// The operation byte of `GET`.
pub const SLOWLOG_GET: u8 = 0x00;
/// The operation byte of `LEN`.
pub const SLOWLOG_LEN: u8 = 0x01;
/// The operation byte of `RESET`.
pub const SLOWLOG_RESET: u8 = 0x02;

const EXTRAS_LEN: usize = 8;

const SHAPE: Shape = Shape {
    opcode: Opcode::Slowlog,
    allowed_flags: 0,
    extras_lens: &[EXTRAS_LEN],
    key: Presence::Forbidden,
    value: Presence::Forbidden,
};

impl Slowlog {
    /// Parses a `SLOWLOG` frame.
    pub fn parse(frame: RequestFrame) -> Result<Slowlog, CommandError> {
        SHAPE.check(&frame)?;
        let mut extras = &frame.extras[..];
        let operation = extras.get_u8();
        let reserved = [extras.get_u8(), extras.get_u8(), extras.get_u8()];
        let count = extras.get_u32();
        let invalid = |message: &str| Err(CommandError::InvalidArgument(message.to_string()));
        if reserved != [0; 3] {
            return invalid("SLOWLOG: the reserved extras bytes must be 0");
        }
        match (operation, count) {
            (SLOWLOG_GET, count) => Ok(Slowlog::Get { count }),
            (SLOWLOG_LEN, 0) => Ok(Slowlog::Len),
            (SLOWLOG_RESET, 0) => Ok(Slowlog::Reset),
            (SLOWLOG_LEN | SLOWLOG_RESET, _) => {
                invalid("SLOWLOG: count must be 0 for LEN and RESET")
            }
            (other, _) => Err(CommandError::InvalidArgument(format!(
                "SLOWLOG: unknown operation 0x{other:02x} (0 GET, 1 LEN, 2 RESET)"
            ))),
        }
    }

    /// The frame for this request.
    pub fn to_frame(&self, opaque: u32) -> RequestFrame {
        let (operation, count) = match *self {
            Slowlog::Get { count } => (SLOWLOG_GET, count),
            Slowlog::Len => (SLOWLOG_LEN, 0),
            Slowlog::Reset => (SLOWLOG_RESET, 0),
        };
        let mut extras = BytesMut::with_capacity(EXTRAS_LEN);
        extras.put_u8(operation);
        extras.put_bytes(0, 3);
        extras.put_u32(count);
        RequestFrame {
            extras: extras.freeze(),
            ..RequestFrame::new(Opcode::Slowlog, opaque)
        }
    }
}

/// One request in the slow log, as `SLOWLOG GET` returns it. It holds the key's length but
/// never the key: a session id is a credential.
///
/// On the wire, entries follow each other in the reply's value:
///
/// ```text
/// id            u64   unique, increasing
/// unix_ms       u64   when the request was executed, ms since the Unix epoch
/// duration_us   u64   how long it took, in microseconds
/// key_len       u32   length of its key (all its keys, for a multi-key command)
/// command_len   u8, command    ASCII, e.g. "SET" or "MGET"
/// protocol_len  u8, protocol   ASCII: "native" or "resp"
/// client_len    u8, client     ASCII: the client's address and port, e.g. "127.0.0.1:52814"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowlogEntry {
    /// Unique and increasing for the life of the server process.
    pub id: u64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
    /// The length of its key in bytes.
    pub key_len: u32,
    /// The command's name.
    pub command: String,
    /// The protocol it came over.
    pub protocol: String,
    /// The client's address and port.
    pub client: String,
}

/// The length of an entry's fixed-size fields.
const ENTRY_FIXED_LEN: usize = 8 + 8 + 8 + 4;

impl SlowlogEntry {
    /// The entry's length on the wire.
    pub fn encoded_len(&self) -> usize {
        ENTRY_FIXED_LEN + 3 + short(&self.command) + short(&self.protocol) + short(&self.client)
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.id);
        out.put_u64(self.unix_ms);
        out.put_u64(self.duration_us);
        out.put_u32(self.key_len);
        for text in [&self.command, &self.protocol, &self.client] {
            let text = &text.as_bytes()[..short(text)];
            // `short` bounds the length at 255.
            out.put_u8(text.len() as u8);
            out.put_slice(text);
        }
    }

    fn decode(buf: &mut &[u8]) -> Result<SlowlogEntry, String> {
        if buf.len() < ENTRY_FIXED_LEN {
            return Err(format!("an entry is cut short after {} bytes", buf.len()));
        }
        let (id, unix_ms, duration_us, key_len) =
            (buf.get_u64(), buf.get_u64(), buf.get_u64(), buf.get_u32());
        let mut text = || -> Result<String, String> {
            let len = usize::from(*buf.first().ok_or("an entry is cut short")?);
            let bytes = buf.get(1..1 + len).ok_or("an entry is cut short")?;
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| "an entry's text is not UTF-8".to_string())?;
            buf.advance(1 + len);
            Ok(text)
        };
        Ok(SlowlogEntry {
            id,
            unix_ms,
            duration_us,
            key_len,
            command: text()?,
            protocol: text()?,
            client: text()?,
        })
    }
}

/// How much of `text` fits an entry's one-byte length (all of it, for anything the server
/// writes; a longer text is cut at a character boundary rather than refused).
fn short(text: &str) -> usize {
    let mut len = text.len().min(usize::from(u8::MAX));
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    len
}

/// What the log holds and how it is set, as `SLOWLOG LEN` returns it.
///
/// ```text
/// extras  len u64, max_len u64, threshold_us u64 (all ones: the log is off),
///         recorded_total u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowlogLen {
    /// Entries held now.
    pub len: u64,
    /// The most entries it holds; a new one drops the oldest.
    pub max_len: u64,
    /// The duration from which a request is logged, in microseconds; `None` when the log is
    /// off.
    pub threshold_us: Option<u64>,
    /// Requests logged since the server started, including the ones dropped or reset since.
    pub recorded_total: u64,
}

/// `threshold_us` when the log is off.
const THRESHOLD_OFF: u64 = u64::MAX;

/// The reply to a [`Slowlog`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlowlogReply {
    /// `GET`: the entries, newest first.
    Entries(Vec<SlowlogEntry>),
    /// `LEN`.
    Len(SlowlogLen),
    /// `RESET`: the log is empty.
    Reset,
}

impl SlowlogReply {
    /// The response frame for this reply. A `GET` reply carries as many of the entries as fit
    /// the protocol's largest value ([`Limits::HARD_MAX_VALUE_LEN`]), the newest first; its
    /// extras say how many that is.
    pub fn to_frame(&self, opaque: u32) -> ResponseFrame {
        let ok = ResponseFrame::new(Opcode::Slowlog.into(), opaque, Status::Ok);
        match self {
            SlowlogReply::Entries(entries) => {
                let limit = Limits::HARD_MAX_VALUE_LEN as usize;
                let mut value = BytesMut::new();
                let mut count: u32 = 0;
                for entry in entries {
                    if value.len() + entry.encoded_len() > limit || count == u32::MAX {
                        break;
                    }
                    entry.encode(&mut value);
                    count += 1;
                }
                ResponseFrame {
                    extras: Bytes::copy_from_slice(&count.to_be_bytes()),
                    value: value.freeze(),
                    ..ok
                }
            }
            SlowlogReply::Len(len) => ResponseFrame {
                extras: u64_extras(&[
                    len.len,
                    len.max_len,
                    len.threshold_us.unwrap_or(THRESHOLD_OFF),
                    len.recorded_total,
                ]),
                ..ok
            },
            SlowlogReply::Reset => ok,
        }
    }

    /// Reads the reply to `request`.
    pub fn from_frame(
        frame: &ResponseFrame,
        request: &Slowlog,
    ) -> Result<SlowlogReply, ReplyError> {
        let op = Opcode::Slowlog;
        match reply_status(frame, op)? {
            Status::Ok => {}
            other => return Err(unexpected(op, other)),
        }
        match request {
            Slowlog::Get { .. } => {
                let Ok(count) = <[u8; 4]>::try_from(&frame.extras[..]) else {
                    return Err(malformed(op, "GET extras must be 4 bytes".into()));
                };
                let count = u32::from_be_bytes(count);
                let mut buf = &frame.value[..];
                // Each entry takes at least its fixed fields: a count the value cannot hold
                // is refused before anything is allocated for it.
                if u64::from(count) * ENTRY_FIXED_LEN as u64 > buf.len() as u64 {
                    return Err(malformed(
                        op,
                        format!("{count} entries in {} bytes", buf.len()),
                    ));
                }
                let entries = (0..count)
                    .map(|_| SlowlogEntry::decode(&mut buf))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|reason| malformed(op, reason))?;
                if !buf.is_empty() {
                    return Err(malformed(
                        op,
                        format!("{} bytes after the entries", buf.len()),
                    ));
                }
                Ok(SlowlogReply::Entries(entries))
            }
            Slowlog::Len => {
                let [len, max_len, threshold_us, recorded_total] = reply_u64s::<4>(frame, op)?;
                Ok(SlowlogReply::Len(SlowlogLen {
                    len,
                    max_len,
                    threshold_us: (threshold_us != THRESHOLD_OFF).then_some(threshold_us),
                    recorded_total,
                }))
            }
            Slowlog::Reset => {
                if !frame.extras.is_empty() || !frame.value.is_empty() {
                    return Err(malformed(op, "RESET reply must be empty".into()));
                }
                Ok(SlowlogReply::Reset)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> SlowlogEntry {
        SlowlogEntry {
            id,
            unix_ms: 1_764_180_000_000 + id,
            duration_us: 12_500,
            key_len: 4,
            command: "SET".into(),
            protocol: "native".into(),
            client: "[2001:db8::1]:52814".into(),
        }
    }

    #[test]
    fn requests_round_trip_and_bad_extras_are_refused() {
        for request in [Slowlog::Get { count: 10 }, Slowlog::Len, Slowlog::Reset] {
            assert_eq!(Slowlog::parse(request.to_frame(1)), Ok(request));
        }
        let frame = |extras: &[u8]| RequestFrame {
            extras: Bytes::copy_from_slice(extras),
            ..RequestFrame::new(Opcode::Slowlog, 1)
        };
        for bad in [
            &[3, 0, 0, 0, 0, 0, 0, 0][..],
            &[1, 0, 0, 0, 0, 0, 0, 1],
            &[2, 0, 0, 0, 0, 0, 0, 1],
            &[0, 0, 1, 0, 0, 0, 0, 1],
            &[0, 0, 0, 0],
            &[],
        ] {
            assert!(Slowlog::parse(frame(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replies_round_trip() {
        let get = Slowlog::Get { count: 2 };
        let entries = SlowlogReply::Entries(vec![entry(1), entry(0)]);
        assert_eq!(
            SlowlogReply::from_frame(&entries.to_frame(7), &get),
            Ok(entries)
        );
        let len = SlowlogReply::Len(SlowlogLen {
            len: 2,
            max_len: 128,
            threshold_us: None,
            recorded_total: 9,
        });
        assert_eq!(
            SlowlogReply::from_frame(&len.to_frame(7), &Slowlog::Len),
            Ok(len)
        );
        let reset = SlowlogReply::Reset;
        assert_eq!(
            SlowlogReply::from_frame(&reset.to_frame(7), &Slowlog::Reset),
            Ok(reset)
        );
    }

    #[test]
    fn a_truncated_or_lying_get_reply_is_malformed() {
        let get = Slowlog::Get { count: 2 };
        let good = SlowlogReply::Entries(vec![entry(1), entry(0)]).to_frame(7);
        for cut in 0..good.value.len() {
            let frame = ResponseFrame {
                value: good.value.slice(..cut),
                ..good.clone()
            };
            assert!(
                SlowlogReply::from_frame(&frame, &get).is_err(),
                "cut at {cut}"
            );
        }
        let huge = ResponseFrame {
            extras: Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]),
            ..good.clone()
        };
        assert!(SlowlogReply::from_frame(&huge, &get).is_err());
    }

    #[test]
    fn a_get_reply_stays_within_the_largest_value() {
        let many: Vec<SlowlogEntry> = (0..400_000).map(entry).collect();
        let frame = SlowlogReply::Entries(many).to_frame(1);
        assert!(frame.value.len() <= Limits::HARD_MAX_VALUE_LEN as usize);
        let count = u32::from_be_bytes(frame.extras[..].try_into().unwrap());
        assert_eq!(count as usize * entry(0).encoded_len(), frame.value.len());
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let mut long = entry(0);
        long.client = "é".repeat(200);
        let frame = SlowlogReply::Entries(vec![long]).to_frame(1);
        let Ok(SlowlogReply::Entries(got)) =
            SlowlogReply::from_frame(&frame, &Slowlog::Get { count: 1 })
        else {
            panic!("not decoded");
        };
        assert_eq!(got[0].client, "é".repeat(127));
    }
}
