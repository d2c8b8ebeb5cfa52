//! RESP values and their encoding in RESP2 and RESP3.
//!
//! A command builds a [`Value`] once, in RESP3's richer vocabulary; [`Value::encode`] writes
//! it in whichever protocol version the connection has chosen with `HELLO`. RESP2 has no
//! null, map, set or verbatim-string types, so those are written the way Redis writes them
//! to a RESP2 client:
//!
//! | value         | RESP3                   | RESP2                          |
//! |---------------|-------------------------|--------------------------------|
//! | `Null`        | `_\r\n`                 | `$-1\r\n` (null bulk string)   |
//! | `NullArray`   | `_\r\n`                 | `*-1\r\n` (null array)         |
//! | `Map`         | `%N\r\n` + 2N values    | `*2N\r\n` + 2N values          |
//! | `Set`         | `~N\r\n` + N values     | `*N\r\n` + N values            |
//! | `Verbatim`    | `=N\r\ntxt:...\r\n`     | `$N\r\n...\r\n` (bulk string)  |
//!
//! Requests are always arrays of bulk strings (or inline lines); they are decoded by
//! [`super::decode`], not here.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

/// The RESP version a connection speaks: 2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RESP2, what every Redis client speaks without `HELLO`.
    Resp2,
    /// RESP3, chosen with `HELLO 3`.
    Resp3,
}

impl Version {
    /// The number `HELLO` takes and reports.
    pub fn number(self) -> i64 {
        match self {
            Version::Resp2 => 2,
            Version::Resp3 => 3,
        }
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A simple string that never changes, such as `OK` or `PONG` (`+OK\r\n`).
    Simple(&'static str),
    /// An error, code included (`ERR ...`, `NOAUTH ...`). Must not contain CR or LF: build
    /// it with [`Value::error`], which replaces them.
    Error(Cow<'static, str>),
    /// A signed integer (`:N\r\n`).
    Integer(i64),
    /// A binary-safe string (`$N\r\n...\r\n`).
    Bulk(Bytes),
    /// No value: a missing key.
    Null,
    /// No array: what `EXEC` answers when a watched key changed (Redis's RESP2 null array).
    NullArray,
    /// An ordered list.
    Array(Vec<Value>),
    /// Key-value pairs, in order.
    Map(Vec<(Value, Value)>),
    /// An unordered collection (`COMMAND`'s flags).
    Set(Vec<Value>),
    /// Text meant for people, such as `INFO`'s (RESP3 tags it `txt`).
    Verbatim(String),
}

/// Redis's most common reply.
pub const OK: Value = Value::Simple("OK");

impl Value {
    /// An error reply. `message` starts with the error code (`ERR`, `WRONGPASS`, ...);
    /// CR and LF are replaced with spaces, as Redis does, so that a message quoting client
    /// bytes cannot break the framing.
    pub fn error(message: impl Into<Cow<'static, str>>) -> Value {
        let message = message.into();
        if message.contains(['\r', '\n']) {
            Value::Error(Cow::Owned(message.replace(['\r', '\n'], " ")))
        } else {
            Value::Error(message)
        }
    }

    /// A bulk string copied from a static string.
    pub fn bulk_static(s: &'static str) -> Value {
        Value::Bulk(Bytes::from_static(s.as_bytes()))
    }

    /// A bulk string holding `s`.
    pub fn bulk_string(s: String) -> Value {
        Value::Bulk(Bytes::from(s))
    }

    /// Appends the encoding of this value in `version` to `out`.
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        match self {
            Value::Simple(s) => {
                out.put_u8(b'+');
                out.put_slice(s.as_bytes());
                out.put_slice(b"\r\n");
            }
            Value::Error(message) => {
                out.put_u8(b'-');
                out.put_slice(message.as_bytes());
                out.put_slice(b"\r\n");
            }
            Value::Integer(n) => {
                out.put_u8(b':');
                put_decimal(out, *n);
                out.put_slice(b"\r\n");
            }
            Value::Bulk(data) => put_bulk(out, b'$', data),
            Value::Null => match version {
                Version::Resp2 => out.put_slice(b"$-1\r\n"),
                Version::Resp3 => out.put_slice(b"_\r\n"),
            },
            Value::NullArray => match version {
                Version::Resp2 => out.put_slice(b"*-1\r\n"),
                Version::Resp3 => out.put_slice(b"_\r\n"),
            },
            Value::Array(items) => {
                put_header(out, b'*', items.len());
                for item in items {
                    item.encode(version, out);
                }
            }
            Value::Map(pairs) => {
                match version {
                    Version::Resp2 => put_header(out, b'*', pairs.len() * 2),
                    Version::Resp3 => put_header(out, b'%', pairs.len()),
                }
                for (key, value) in pairs {
                    key.encode(version, out);
                    value.encode(version, out);
                }
            }
            Value::Set(items) => {
                let tag = match version {
                    Version::Resp2 => b'*',
                    Version::Resp3 => b'~',
                };
                put_header(out, tag, items.len());
                for item in items {
                    item.encode(version, out);
                }
            }
            Value::Verbatim(text) => match version {
                Version::Resp2 => put_bulk(out, b'$', text.as_bytes()),
                Version::Resp3 => {
                    put_header(out, b'=', text.len() + 4);
                    out.put_slice(b"txt:");
                    out.put_slice(text.as_bytes());
                    out.put_slice(b"\r\n");
                }
            },
        }
    }

    /// An upper bound on the encoded size, close enough to count towards the flush
    /// threshold while responses are held.
    pub fn encoded_len(&self) -> usize {
        // Type byte, up to 20 digits, CRLF.
        const HEADER: usize = 1 + 20 + 2;
        match self {
            Value::Simple(s) => s.len() + 3,
            Value::Error(message) => message.len() + 3,
            Value::Integer(_) | Value::Null | Value::NullArray => HEADER,
            Value::Bulk(data) => HEADER + data.len() + 2,
            Value::Verbatim(text) => HEADER + 4 + text.len() + 2,
            Value::Array(items) | Value::Set(items) => {
                HEADER + items.iter().map(Value::encoded_len).sum::<usize>()
            }
            Value::Map(pairs) => {
                HEADER
                    + pairs
                        .iter()
                        .map(|(k, v)| k.encoded_len() + v.encoded_len())
                        .sum::<usize>()
            }
        }
    }
}

fn put_header(out: &mut BytesMut, tag: u8, len: usize) {
    out.put_u8(tag);
    put_decimal(out, len as i64);
    out.put_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, tag: u8, data: &[u8]) {
    out.reserve(data.len() + 32);
    put_header(out, tag, data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Writes `n` in decimal without going through `fmt` (this runs for every bulk reply).
pub(crate) fn put_decimal(out: &mut BytesMut, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &Value, version: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        value.encode(version, &mut out);
        assert!(out.len() <= value.encoded_len(), "{value:?}");
        out.to_vec()
    }

    #[test]
    fn scalars() {
        for version in [Version::Resp2, Version::Resp3] {
            assert_eq!(encode(&OK, version), b"+OK\r\n");
            assert_eq!(encode(&Value::Integer(-42), version), b":-42\r\n");
            assert_eq!(
                encode(&Value::Integer(i64::MIN), version),
                b":-9223372036854775808\r\n"
            );
            assert_eq!(encode(&Value::Integer(0), version), b":0\r\n");
            assert_eq!(encode(&Value::bulk_static("ab"), version), b"$2\r\nab\r\n");
        }
    }

    #[test]
    fn resp3_types_degrade_in_resp2() {
        assert_eq!(encode(&Value::Null, Version::Resp2), b"$-1\r\n");
        assert_eq!(encode(&Value::Null, Version::Resp3), b"_\r\n");
        assert_eq!(encode(&Value::NullArray, Version::Resp2), b"*-1\r\n");
        assert_eq!(encode(&Value::NullArray, Version::Resp3), b"_\r\n");
        let map = Value::Map(vec![(Value::bulk_static("a"), Value::Integer(1))]);
        assert_eq!(encode(&map, Version::Resp2), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encode(&map, Version::Resp3), b"%1\r\n$1\r\na\r\n:1\r\n");
        let set = Value::Set(vec![Value::Simple("write")]);
        assert_eq!(encode(&set, Version::Resp2), b"*1\r\n+write\r\n");
        assert_eq!(encode(&set, Version::Resp3), b"~1\r\n+write\r\n");
        let text = Value::Verbatim("a:1\r\n".into());
        assert_eq!(encode(&text, Version::Resp2), b"$5\r\na:1\r\n\r\n");
        assert_eq!(encode(&text, Version::Resp3), b"=9\r\ntxt:a:1\r\n\r\n");
    }

    #[test]
    fn errors_cannot_break_framing() {
        let e = Value::error(String::from("ERR bad\r\nthing"));
        assert_eq!(encode(&e, Version::Resp2), b"-ERR bad  thing\r\n");
    }
}
