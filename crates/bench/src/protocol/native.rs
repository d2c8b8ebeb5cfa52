//! sessiond's native protocol, through `sessiond-proto`'s typed commands and client codec:
//! the framing here is the protocol crate's, not a copy of it.

use bytes::{Bytes, BytesMut};
use sessiond_proto::command::{
    Del, DelOutcome, EndAll, EndAllReply, Get, GetReply, ListSessions, ReplyError, SessionList,
    SessionWriteOutcome, Set, SetMode, SetOutcome, SetSession, Touch, TouchReply,
};
use sessiond_proto::{ClientCodec, Opcode, Request, ResponseFrame};
use tokio_util::codec::{Decoder, Encoder};

use super::{hit, Protocol, ProtocolError, Reply};
use crate::workload::OpKind;

/// The opcode of frames the server sends unasked (`BUSY`, `PROTOCOL_ERROR`) before closing.
const UNSOLICITED_OPCODE: u8 = 0xFF;

/// Native-protocol requests with a fixed value and TTL.
#[derive(Debug)]
pub struct Native {
    codec: ClientCodec,
    value: Bytes,
    ttl_ms: u64,
    /// Opaque of the next request sent.
    next_sent: u32,
    /// Opaque the next reply must echo: replies come in request order.
    next_reply: u32,
}

impl Native {
    /// Requests that write `value` and set TTLs of `ttl_ms`.
    pub fn new(value: Bytes, ttl_ms: u64) -> Native {
        Native {
            codec: ClientCodec::new(),
            value,
            ttl_ms,
            next_sent: 1,
            next_reply: 1,
        }
    }

    fn request(&self, kind: OpKind, key: &Bytes) -> Request {
        let key = key.clone();
        match kind {
            OpKind::Get => Request::Get(Get {
                key,
                touch_ttl_ms: Some(self.ttl_ms),
            }),
            OpKind::Read => Request::Get(Get {
                key,
                touch_ttl_ms: None,
            }),
            OpKind::Set => Request::Set(Set {
                key,
                value: self.value.clone(),
                ttl_ms: self.ttl_ms,
                mode: SetMode::Upsert,
            }),
            OpKind::Del => Request::Del(Del {
                key,
                if_version: None,
            }),
            OpKind::Touch => Request::Touch(Touch {
                key,
                ttl_ms: self.ttl_ms,
            }),
            // What `Sessions::login` sends for a browser without a session: the session,
            // created bound to its owner.
            OpKind::Login => Request::SetSession(SetSession {
                owner: Some(key.slice(..OpKind::owner_of(&key).len())),
                key,
                value: self.value.clone(),
                ttl_ms: self.ttl_ms,
                mode: SetMode::Upsert,
                lifetime_ms: None,
                owner_limit: None,
            }),
            OpKind::Devices => Request::ListSessions(ListSessions {
                owner: key.slice(..OpKind::owner_of(&key).len()),
                max_sessions: 0,
            }),
            OpKind::EndAll => Request::EndAll(EndAll {
                owner: key.slice(..OpKind::owner_of(&key).len()),
                except: None,
            }),
            OpKind::Unlock | OpKind::Multi => refused(kind),
        }
    }
}

fn opcode(kind: OpKind) -> Opcode {
    match kind {
        OpKind::Get | OpKind::Read => Opcode::Get,
        OpKind::Set => Opcode::Set,
        OpKind::Del => Opcode::Del,
        OpKind::Touch => Opcode::Touch,
        OpKind::Login => Opcode::SetSession,
        OpKind::Devices => Opcode::ListSessions,
        OpKind::EndAll => Opcode::EndAll,
        OpKind::Unlock | OpKind::Multi => refused(kind),
    }
}

/// Scripts and transactions are RESP's; the configuration never sends them here.
fn refused(kind: OpKind) -> ! {
    unreachable!("the configuration refuses {kind} on the native protocol")
}

impl Protocol for Native {
    fn encode(&mut self, kind: OpKind, key: &Bytes, buf: &mut BytesMut) {
        let frame = self.request(kind, key).to_frame(self.next_sent);
        self.next_sent = self.next_sent.wrapping_add(1);
        // Encoding into a BytesMut only appends; the codec's error type covers decoding.
        if let Err(e) = self.codec.encode(&frame, buf) {
            unreachable!("encoding a request cannot fail: {e}");
        }
    }

    fn decode(&mut self, kind: OpKind, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let Some(frame) = self.codec.decode(buf)? else {
            return Ok(None);
        };
        if frame.opcode == UNSOLICITED_OPCODE {
            return Err(ProtocolError::Unexpected(format!(
                "the server is closing the connection: {}: {}",
                status_name(&frame),
                frame.message()
            )));
        }
        let expected = (u8::from(opcode(kind)), self.next_reply);
        if (frame.opcode, frame.opaque) != expected {
            return Err(ProtocolError::Unexpected(format!(
                "reply with opcode 0x{:02x} opaque {} where opcode 0x{:02x} opaque {} was due",
                frame.opcode, frame.opaque, expected.0, expected.1
            )));
        }
        self.next_reply = self.next_reply.wrapping_add(1);
        let reply = match kind {
            OpKind::Get | OpKind::Read => GetReply::from_frame(&frame).map(|r| match r {
                GetReply::Hit(_) => Reply::Hit,
                GetReply::Miss => Reply::Miss,
            }),
            OpKind::Set => SetOutcome::from_frame(&frame).map(|r| match r {
                SetOutcome::Stored { .. } => Reply::Hit,
                _ => Reply::Miss,
            }),
            OpKind::Del => DelOutcome::from_frame(&frame).map(|r| match r {
                DelOutcome::Deleted => Reply::Hit,
                _ => Reply::Miss,
            }),
            OpKind::Touch => TouchReply::from_frame(&frame).map(|r| match r {
                TouchReply::Touched { .. } => Reply::Hit,
                TouchReply::NotFound => Reply::Miss,
            }),
            OpKind::Login => {
                SessionWriteOutcome::from_frame(&frame, Opcode::SetSession).map(|r| match r {
                    SessionWriteOutcome::Stored { .. } => Reply::Hit,
                    _ => Reply::Miss,
                })
            }
            // A hit when the owner had sessions to list or end.
            OpKind::Devices => SessionList::from_frame(&frame).map(|r| hit(r.total > 0)),
            OpKind::EndAll => EndAllReply::from_frame(&frame).map(|r| hit(r.ended > 0)),
            OpKind::Unlock | OpKind::Multi => refused(kind),
        };
        // An error status or a malformed body is counted, but the frame was read whole, so
        // the stream is still in step and the connection carries on.
        Ok(Some(reply.unwrap_or_else(|e: ReplyError| {
            Reply::Error(e.to_string())
        })))
    }
}

fn status_name(frame: &ResponseFrame) -> String {
    match frame.status() {
        Some(status) => status.to_string(),
        None => format!("status 0x{:04x}", frame.status),
    }
}

#[cfg(test)]
mod tests {
    use sessiond_proto::command::Entry;
    use sessiond_proto::Status;

    use super::*;

    fn reply_bytes(frame: ResponseFrame) -> BytesMut {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf
    }

    #[test]
    fn replies_map_to_hits_misses_and_errors() {
        let mut native = Native::new(Bytes::from_static(b"v"), 1000);
        let key = Bytes::from_static(b"k");
        let mut out = BytesMut::new();
        for kind in [OpKind::Get, OpKind::Set, OpKind::Del] {
            native.encode(kind, &key, &mut out);
        }
        let mut buf = reply_bytes(
            GetReply::Hit(Entry {
                value: Bytes::from_static(b"v"),
                version: 1,
                ttl_ms: 1000,
            })
            .to_frame(1),
        );
        buf.extend_from_slice(&reply_bytes(ResponseFrame::error(
            Opcode::Set.into(),
            2,
            Status::TooLarge,
            "too big",
        )));
        buf.extend_from_slice(&reply_bytes(DelOutcome::NotFound.to_frame(3)));
        assert_eq!(
            native.decode(OpKind::Get, &mut buf).unwrap(),
            Some(Reply::Hit)
        );
        let Some(Reply::Error(message)) = native.decode(OpKind::Set, &mut buf).unwrap() else {
            panic!("expected an error reply");
        };
        assert!(message.contains("TOO_LARGE"), "{message}");
        assert_eq!(
            native.decode(OpKind::Del, &mut buf).unwrap(),
            Some(Reply::Miss)
        );
        assert_eq!(native.decode(OpKind::Get, &mut buf).unwrap(), None);
    }

    #[test]
    fn owner_operations_name_the_key_without_its_last_digit() {
        let mut native = Native::new(Bytes::from_static(b"v"), 1000);
        let key = Bytes::from_static(b"session:17");
        let mut out = BytesMut::new();
        for kind in [OpKind::Login, OpKind::Devices, OpKind::EndAll] {
            native.encode(kind, &key, &mut out);
        }
        let mut codec = sessiond_proto::ServerCodec::new(sessiond_proto::Limits::default());
        let mut requests = Vec::new();
        while let Some(inbound) = codec.decode(&mut out).unwrap() {
            let sessiond_proto::Inbound::Request(frame) = inbound else {
                panic!("not a frame: {inbound:?}");
            };
            requests.push(Request::parse(frame, &sessiond_proto::Limits::default()).unwrap());
        }
        let [Request::SetSession(login), Request::ListSessions(list), Request::EndAll(end)] =
            &requests[..]
        else {
            panic!("{requests:?}");
        };
        assert_eq!(&login.key[..], b"session:17");
        assert_eq!(login.owner.as_deref(), Some(&b"session:1"[..]));
        assert_eq!(&list.owner[..], b"session:1");
        assert_eq!(&end.owner[..], b"session:1");

        let mut buf = reply_bytes(
            SessionWriteOutcome::Stored {
                version: 3,
                ended: 0,
            }
            .to_frame(Opcode::SetSession, 1),
        );
        buf.extend_from_slice(&reply_bytes(
            SessionList {
                total: 0,
                sessions: Vec::new(),
            }
            .to_frame(2),
        ));
        buf.extend_from_slice(&reply_bytes(EndAllReply { ended: 4 }.to_frame(3)));
        let replies: Vec<_> = [OpKind::Login, OpKind::Devices, OpKind::EndAll]
            .into_iter()
            .map(|kind| native.decode(kind, &mut buf).unwrap())
            .collect();
        assert_eq!(
            replies,
            [Some(Reply::Hit), Some(Reply::Miss), Some(Reply::Hit)]
        );
    }

    #[test]
    fn an_out_of_order_reply_is_fatal() {
        let mut native = Native::new(Bytes::new(), 1000);
        native.encode(OpKind::Del, &Bytes::from_static(b"k"), &mut BytesMut::new());
        let mut buf = reply_bytes(DelOutcome::Deleted.to_frame(9));
        assert!(native.decode(OpKind::Del, &mut buf).is_err());
    }
}
