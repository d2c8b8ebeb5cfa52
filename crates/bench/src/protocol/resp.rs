//! RESP2, the protocol of Redis and its compatibles.
//!
//! Requests are arrays of bulk strings. Only the reply types the five commands can produce
//! are read: simple strings, errors, integers and bulk strings; anything else (an array, or
//! RESP3 types) means the stream is not what was asked for, and is fatal.

use bytes::{Buf, Bytes, BytesMut};

use super::{excerpt, line, parse_decimal, put_decimal, Protocol, ProtocolError, Reply};
use crate::workload::OpKind;

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
            OpKind::Login | OpKind::Devices | OpKind::EndAll => {
                unreachable!("the configuration refuses owner operations on RESP")
            }
        }
    }

    fn decode(&mut self, kind: OpKind, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
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
            (OpKind::Del | OpKind::Touch, Value::Integer(0)) => Reply::Miss,
            (kind, other) => Reply::Error(format!("unexpected reply to {kind}: {other:?}")),
        };
        Ok(Some(reply))
    }
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
