//! RESP2, the protocol of Redis and its compatibles.
//!
//! Requests are arrays of bulk strings. Only the reply types the commands sent can produce
//! are read: simple strings, errors, integers and bulk strings, and the one array `EXEC`
//! answers a transaction with; anything else (another array, or RESP3 types) means the
//! stream is not what was asked for, and is fatal.

use bytes::{Buf, Bytes, BytesMut};

use super::{excerpt, hit, line, parse_decimal, put_decimal, Protocol, ProtocolError, Reply};
use crate::workload::OpKind;

/// phpredis's session lock release (`redis_session.c`): delete the lock only if it still
/// holds this process's token.
const UNLOCK_SCRIPT: &[u8] =
    b"if redis.call(\"get\",KEYS[1]) == ARGV[1] then return redis.call(\"del\",KEYS[1]) else return 0 end";

/// The replies to an [`OpKind::Multi`] transaction before `EXEC`'s: `MULTI`'s `+OK` and a
/// `+QUEUED` for each of its three commands.
const MULTI_ACKS: usize = 4;

/// RESP2 requests with a fixed value and TTL.
#[derive(Debug)]
pub struct Resp {
    value: Bytes,
    /// The TTL in milliseconds, already in decimal.
    ttl_ms: Vec<u8>,
}

impl Resp {
    /// Requests that write `value` and set TTLs of `ttl_ms`.
    pub fn new(value: Bytes, ttl_ms: u64) -> Resp {
        Resp {
            value,
            ttl_ms: ttl_ms.to_string().into_bytes(),
        }
    }
}

/// Appends a command as an array of bulk strings.
pub(crate) fn put_command(buf: &mut BytesMut, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len() + 16).sum();
    buf.reserve(len + 16);
    buf.extend_from_slice(b"*");
    put_decimal(buf, parts.len() as u64);
    buf.extend_from_slice(b"\r\n");
    for part in parts {
        buf.extend_from_slice(b"$");
        put_decimal(buf, part.len() as u64);
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(part);
        buf.extend_from_slice(b"\r\n");
    }
}

/// A RESP2 reply, by type; strings are not copied out, as nothing here needs their content
/// except an error's message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Simple(Vec<u8>),
    Error(String),
    Integer(i64),
    /// `None` is the null bulk string (`$-1`).
    Bulk(Option<usize>),
}

/// Parses one reply from the front of `buf`, returning it with its length in bytes.
fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    let Some(head) = line(buf) else {
        return Ok(None);
    };
    let after_head = head.len() + 2;
    let bad = || ProtocolError::Unexpected(format!("not a RESP2 reply: {}", excerpt(head)));
    let (&kind, rest) = head.split_first().ok_or_else(bad)?;
    let value = match kind {
        b'+' => Value::Simple(rest.to_vec()),
        b'-' => Value::Error(String::from_utf8_lossy(rest).into_owned()),
        b':' => Value::Integer(parse_decimal(rest).ok_or_else(bad)?),
        b'$' => match parse_decimal(rest).ok_or_else(bad)? {
            -1 => Value::Bulk(None),
            len if len >= 0 => {
                let len = len as usize;
                let total = after_head + len + 2;
                if buf.len() < total {
                    return Ok(None);
                }
                if &buf[after_head + len..total] != b"\r\n" {
                    return Err(bad());
                }
                return Ok(Some((Value::Bulk(Some(len)), total)));
            }
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    Ok(Some((value, after_head)))
}

impl Protocol for Resp {
    fn encode(&mut self, kind: OpKind, key: &Bytes, buf: &mut BytesMut) {
        let ttl = &self.ttl_ms[..];
        match kind {
            OpKind::Get => put_command(buf, &[b"GETEX", key, b"PX", ttl]),
            OpKind::Read => put_command(buf, &[b"GET", key]),
            OpKind::Set => put_command(buf, &[b"SET", key, &self.value, b"PX", ttl]),
            OpKind::Del => put_command(buf, &[b"DEL", key]),
            OpKind::Touch => put_command(buf, &[b"PEXPIRE", key, ttl]),
            // The token is the value: a lock that some other request holds now.
            OpKind::Unlock => put_command(buf, &[b"EVAL", UNLOCK_SCRIPT, b"1", key, &self.value]),
            OpKind::Multi => {
                put_command(buf, &[b"MULTI"]);
                put_command(buf, &[b"GETEX", key, b"PX", ttl]);
                put_command(buf, &[b"SET", key, &self.value, b"PX", ttl]);
                put_command(buf, &[b"PEXPIRE", key, ttl]);
                put_command(buf, &[b"EXEC"]);
            }
            OpKind::Login | OpKind::Devices | OpKind::EndAll => {
                unreachable!("the configuration refuses owner operations on RESP")
            }
        }
    }

    fn decode(&mut self, kind: OpKind, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        if kind == OpKind::Multi {
            return decode_transaction(buf);
        }
        let Some((value, len)) = parse(buf)? else {
            return Ok(None);
        };
        buf.advance(len);
        let reply = match (kind, value) {
            (_, Value::Error(message)) => Reply::Error(message),
            (OpKind::Get | OpKind::Read, Value::Bulk(Some(_))) => Reply::Hit,
            (OpKind::Get | OpKind::Read, Value::Bulk(None)) => Reply::Miss,
            (OpKind::Set, Value::Simple(s)) if s == b"OK" => Reply::Hit,
            // SET with NX or XX answers a refused write with a null bulk string.
            (OpKind::Set, Value::Bulk(None)) => Reply::Miss,
            (OpKind::Del | OpKind::Touch, Value::Integer(1)) => Reply::Hit,
            (OpKind::Del | OpKind::Touch | OpKind::Unlock, Value::Integer(0)) => Reply::Miss,
            (OpKind::Unlock, Value::Integer(1)) => Reply::Hit,
            (kind, other) => Reply::Error(format!("unexpected reply to {kind}: {other:?}")),
        };
        Ok(Some(reply))
    }
}

/// Reads the five replies of one [`OpKind::Multi`] once all have arrived: `+OK`, three
/// `+QUEUED` (or errors, for a command refused while queued), then `EXEC`'s array of three
/// replies (or its error). A hit when the session was there to read.
fn decode_transaction(buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
    let mut at = 0;
    let mut error = None;
    for _ in 0..MULTI_ACKS {
        let Some((value, len)) = parse(&buf[at..])? else {
            return Ok(None);
        };
        at += len;
        match value {
            Value::Simple(_) => {}
            Value::Error(message) => {
                error.get_or_insert(message);
            }
            other => {
                return Err(ProtocolError::Unexpected(format!(
                    "unexpected reply inside MULTI: {other:?}"
                )))
            }
        }
    }
    let Some(head) = line(&buf[at..]) else {
        return Ok(None);
    };
    let mut replies = Vec::with_capacity(3);
    if head == b"*3" {
        at += head.len() + 2;
        for _ in 0..3 {
            let Some((value, len)) = parse(&buf[at..])? else {
                return Ok(None);
            };
            at += len;
            replies.push(value);
        }
    } else {
        // EXECABORT, or another error in place of the array.
        let Some((Value::Error(message), len)) = parse(&buf[at..])? else {
            return Err(ProtocolError::Unexpected(format!(
                "not EXEC's reply: {}",
                excerpt(head)
            )));
        };
        at += len;
        error.get_or_insert(message);
    }
    buf.advance(at);
    if let Some(message) = error {
        return Ok(Some(Reply::Error(message)));
    }
    Ok(Some(
        match replies.iter().find_map(|value| match value {
            Value::Error(message) => Some(message.clone()),
            _ => None,
        }) {
            Some(message) => Reply::Error(message),
            None => hit(matches!(replies.first(), Some(Value::Bulk(Some(_))))),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut resp = Resp::new(Bytes::from_static(b"val"), 1800000);
        let mut buf = BytesMut::new();
        resp.encode(OpKind::Get, &Bytes::from_static(b"k1"), &mut buf);
        assert_eq!(
            &buf[..],
            b"*4\r\n$5\r\nGETEX\r\n$2\r\nk1\r\n$2\r\nPX\r\n$7\r\n1800000\r\n"
        );
        buf.clear();
        resp.encode(OpKind::Set, &Bytes::from_static(b"k1"), &mut buf);
        assert_eq!(
            &buf[..],
            &b"*5\r\n$3\r\nSET\r\n$2\r\nk1\r\n$3\r\nval\r\n$2\r\nPX\r\n$7\r\n1800000\r\n"[..]
        );
    }

    #[test]
    fn replies_are_read_whole_or_not_at_all() {
        let mut resp = Resp::new(Bytes::new(), 1);
        let mut buf = BytesMut::from(&b"$3\r\nab"[..]);
        assert_eq!(resp.decode(OpKind::Get, &mut buf).unwrap(), None);
        buf.extend_from_slice(b"c\r\n$-1\r\n+OK\r\n:0\r\n-ERR wrong\r\n:1");
        assert_eq!(
            resp.decode(OpKind::Get, &mut buf).unwrap(),
            Some(Reply::Hit)
        );
        assert_eq!(
            resp.decode(OpKind::Get, &mut buf).unwrap(),
            Some(Reply::Miss)
        );
        assert_eq!(
            resp.decode(OpKind::Set, &mut buf).unwrap(),
            Some(Reply::Hit)
        );
        assert_eq!(
            resp.decode(OpKind::Del, &mut buf).unwrap(),
            Some(Reply::Miss)
        );
        assert_eq!(
            resp.decode(OpKind::Touch, &mut buf).unwrap(),
            Some(Reply::Error("ERR wrong".into()))
        );
        assert_eq!(resp.decode(OpKind::Del, &mut buf).unwrap(), None);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            resp.decode(OpKind::Del, &mut buf).unwrap(),
            Some(Reply::Hit)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_transaction_is_read_once_all_five_replies_are_in() {
        let mut resp = Resp::new(Bytes::from_static(b"v"), 1000);
        let mut sent = BytesMut::new();
        resp.encode(OpKind::Multi, &Bytes::from_static(b"k1"), &mut sent);
        assert_eq!(
            sent.windows(3).filter(|w| w == b"\r\n*").count(),
            4,
            "five commands"
        );
        let replies: &[u8] =
            b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n$1\r\nv\r\n+OK\r\n:1\r\n+PONG\r\n";
        let whole = replies.len() - b"+PONG\r\n".len();
        for cut in 0..whole {
            let mut buf = BytesMut::from(&replies[..cut]);
            assert_eq!(
                resp.decode(OpKind::Multi, &mut buf).unwrap(),
                None,
                "cut {cut}"
            );
            assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
        }
        let mut buf = BytesMut::from(replies);
        assert_eq!(
            resp.decode(OpKind::Multi, &mut buf).unwrap(),
            Some(Reply::Hit)
        );
        assert_eq!(&buf[..], b"+PONG\r\n");
        // A miss, an error inside EXEC, and a transaction refused while queued.
        let mut buf = BytesMut::from(
            &b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n$-1\r\n+OK\r\n:1\r\n"[..],
        );
        assert_eq!(
            resp.decode(OpKind::Multi, &mut buf).unwrap(),
            Some(Reply::Miss)
        );
        let mut buf = BytesMut::from(
            &b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n$-1\r\n-OOM no\r\n:1\r\n"[..],
        );
        assert_eq!(
            resp.decode(OpKind::Multi, &mut buf).unwrap(),
            Some(Reply::Error("OOM no".into()))
        );
        let mut buf = BytesMut::from(&b"+OK\r\n-ERR unknown command\r\n+QUEUED\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of previous errors.\r\n"[..]);
        assert_eq!(
            resp.decode(OpKind::Multi, &mut buf).unwrap(),
            Some(Reply::Error("ERR unknown command".into()))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn unlock_is_phpredis_script() {
        let mut resp = Resp::new(Bytes::from_static(b"token"), 1000);
        let mut sent = BytesMut::new();
        resp.encode(OpKind::Unlock, &Bytes::from_static(b"k1"), &mut sent);
        let text = String::from_utf8_lossy(&sent).into_owned();
        assert!(text.starts_with("*5\r\n$4\r\nEVAL\r\n"), "{text}");
        assert!(
            text.ends_with("$1\r\n1\r\n$2\r\nk1\r\n$5\r\ntoken\r\n"),
            "{text}"
        );
        for (reply, expected) in [(&b":1\r\n"[..], Reply::Hit), (b":0\r\n", Reply::Miss)] {
            let mut buf = BytesMut::from(reply);
            assert_eq!(
                resp.decode(OpKind::Unlock, &mut buf).unwrap(),
                Some(expected)
            );
        }
    }

    #[test]
    fn arrays_and_garbage_are_fatal() {
        let mut resp = Resp::new(Bytes::new(), 1);
        assert!(resp
            .decode(OpKind::Get, &mut BytesMut::from(&b"*1\r\n"[..]))
            .is_err());
        assert!(resp
            .decode(OpKind::Get, &mut BytesMut::from(&b"$3\r\nabcXY"[..]))
            .is_err());
        assert!(resp
            .decode(OpKind::Get, &mut BytesMut::from(&b"hello\r\n"[..]))
            .is_err());
    }
}
