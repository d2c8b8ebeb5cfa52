//! Memcached's meta protocol (memcached 1.6 and later).
//!
//! Meta commands are used rather than the classic text commands because they have what a
//! session store needs in one round trip: `mg` with `T` reads and slides the expiry, as
//! `GETEX` and sessiond's `GET` with `TOUCH` do.
//!
//! Memcached counts TTLs in whole seconds, and reads a TTL above 30 days as an absolute Unix
//! time, so the TTL is rounded up to seconds and longer TTLs are refused by the
//! configuration check.

use bytes::{Buf, Bytes, BytesMut};

use super::{excerpt, line, parse_decimal, put_decimal, Protocol, ProtocolError, Reply};
use crate::workload::OpKind;

/// The longest TTL memcached takes as relative: 30 days, in seconds.
pub const MAX_RELATIVE_TTL_SECS: u64 = 30 * 24 * 60 * 60;

/// The TTL in seconds that memcached is given for a TTL of `ttl_ms`: rounded up, so an entry
/// never expires earlier than on the other targets. Refuses TTLs memcached would read as a
/// Unix time.
pub fn ttl_secs(ttl_ms: u64) -> Result<u64, String> {
    let secs = ttl_ms.div_ceil(1000);
    if secs > MAX_RELATIVE_TTL_SECS {
        return Err(format!(
            "memcached reads a TTL over 30 days ({MAX_RELATIVE_TTL_SECS}s) as a Unix time; \
             --ttl of {secs}s is too long"
        ));
    }
    Ok(secs)
}

/// Meta-protocol requests with a fixed value and TTL.
#[derive(Debug)]
pub struct Memcached {
    value: Bytes,
    /// ` T<seconds>`, ready to append.
    ttl_flag: Vec<u8>,
}

impl Memcached {
    /// Requests that write `value` and set TTLs of `ttl_secs` seconds.
    pub fn new(value: Bytes, ttl_secs: u64) -> Memcached {
        Memcached {
            value,
            ttl_flag: format!(" T{ttl_secs}").into_bytes(),
        }
    }
}

impl Protocol for Memcached {
    fn encode(&mut self, kind: OpKind, key: &Bytes, buf: &mut BytesMut) {
        buf.reserve(key.len() + 32);
        match kind {
            OpKind::Get => {
                buf.extend_from_slice(b"mg ");
                buf.extend_from_slice(key);
                buf.extend_from_slice(b" v t");
                buf.extend_from_slice(&self.ttl_flag);
            }
            OpKind::Read => {
                buf.extend_from_slice(b"mg ");
                buf.extend_from_slice(key);
                buf.extend_from_slice(b" v t");
            }
            OpKind::Set => {
                buf.reserve(self.value.len() + 2);
                buf.extend_from_slice(b"ms ");
                buf.extend_from_slice(key);
                buf.extend_from_slice(b" ");
                put_decimal(buf, self.value.len() as u64);
                buf.extend_from_slice(&self.ttl_flag);
                buf.extend_from_slice(b"\r\n");
                buf.extend_from_slice(&self.value);
            }
            OpKind::Del => {
                buf.extend_from_slice(b"md ");
                buf.extend_from_slice(key);
            }
            OpKind::Touch => {
                buf.extend_from_slice(b"mg ");
                buf.extend_from_slice(key);
                buf.extend_from_slice(&self.ttl_flag);
            }
            OpKind::Login | OpKind::Devices | OpKind::EndAll | OpKind::Unlock | OpKind::Multi => {
                unreachable!("the configuration refuses owner, script and transaction operations on memcached")
            }
        }
        buf.extend_from_slice(b"\r\n");
    }

    fn decode(&mut self, kind: OpKind, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let Some(head) = line(buf) else {
            return Ok(None);
        };
        let mut consumed = head.len() + 2;
        let mut words = head.split(|b| *b == b' ');
        let code = words.next().unwrap_or_default();
        let reply = match (kind, code) {
            // `VA <size> <flags>*` is followed by the value and its own line end.
            (OpKind::Get | OpKind::Read, b"VA") => {
                let size = words
                    .next()
                    .and_then(parse_decimal)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| malformed(head))?;
                let total = consumed + size + 2;
                if buf.len() < total {
                    return Ok(None);
                }
                if &buf[total - 2..total] != b"\r\n" {
                    return Err(malformed(&buf[..total]));
                }
                consumed = total;
                Reply::Hit
            }
            (OpKind::Get | OpKind::Read | OpKind::Touch, b"EN") => Reply::Miss,
            (OpKind::Set | OpKind::Del | OpKind::Touch, b"HD") => Reply::Hit,
            // Not stored / not found / exists: refused by a condition, not a failure.
            (OpKind::Set | OpKind::Del, b"NS" | b"NF" | b"EX") => Reply::Miss,
            (_, b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR") => {
                Reply::Error(String::from_utf8_lossy(head).into_owned())
            }
            _ => return Err(malformed(head)),
        };
        buf.advance(consumed);
        Ok(Some(reply))
    }
}

fn malformed(bytes: &[u8]) -> ProtocolError {
    ProtocolError::Unexpected(format!("not a meta-protocol reply: {}", excerpt(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_commands() {
        let mut mc = Memcached::new(Bytes::from_static(b"val"), 1800);
        let key = Bytes::from_static(b"k1");
        let mut buf = BytesMut::new();
        for kind in OpKind::ALL
            .into_iter()
            .filter(|k| !k.needs_owners() && !k.needs_resp())
        {
            mc.encode(kind, &key, &mut buf);
        }
        assert_eq!(
            &buf[..],
            &b"mg k1 v t T1800\r\nmg k1 v t\r\nms k1 3 T1800\r\nval\r\nmd k1\r\nmg k1 T1800\r\n"[..]
        );
    }

    #[test]
    fn replies() {
        let mut mc = Memcached::new(Bytes::new(), 1);
        let mut buf = BytesMut::from(&b"VA 3 t1800\r\nab"[..]);
        assert_eq!(mc.decode(OpKind::Get, &mut buf).unwrap(), None);
        buf.extend_from_slice(b"c\r\nEN\r\nHD\r\nNF\r\nSERVER_ERROR out of memory\r\nHD\r\n");
        assert_eq!(mc.decode(OpKind::Get, &mut buf).unwrap(), Some(Reply::Hit));
        assert_eq!(
            mc.decode(OpKind::Read, &mut buf).unwrap(),
            Some(Reply::Miss)
        );
        assert_eq!(mc.decode(OpKind::Set, &mut buf).unwrap(), Some(Reply::Hit));
        assert_eq!(mc.decode(OpKind::Del, &mut buf).unwrap(), Some(Reply::Miss));
        assert_eq!(
            mc.decode(OpKind::Set, &mut buf).unwrap(),
            Some(Reply::Error("SERVER_ERROR out of memory".into()))
        );
        assert_eq!(
            mc.decode(OpKind::Touch, &mut buf).unwrap(),
            Some(Reply::Hit)
        );
        assert!(buf.is_empty());
        assert!(mc
            .decode(OpKind::Get, &mut BytesMut::from(&b"VALUE k 0 3\r\n"[..]))
            .is_err());
        assert!(mc
            .decode(OpKind::Get, &mut BytesMut::from(&b"VA 1\r\nxyz\r\n"[..]))
            .is_err());
    }
}
