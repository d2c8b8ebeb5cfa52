//! tokio-util codecs for both ends of a connection.
//!
//! [`ServerCodec`] decodes requests and encodes responses; [`ClientCodec`] does the opposite.
//! Both return `Ok(None)` while a frame is incomplete: a partial frame is the normal state of
//! a stream, not an error.
//!
//! Errors are split by what the connection can still do afterwards:
//!
//! - [`FrameError`] is fatal. After a bad magic byte or an unknown header version the stream
//!   can no longer be split into frames, so the only safe thing left is to answer once and
//!   close.
//! - A [`Rejection`] is not. The header was readable, so the frame's extent is known and the
//!   decoder skips it (without buffering an oversized body) and hands the server an error to
//!   answer with; the connection and the requests pipelined behind it carry on.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{RequestFrame, ResponseFrame};
use crate::header::{RequestHeader, ResponseHeader, HEADER_LEN, REQUEST_MAGIC, RESPONSE_MAGIC};
use crate::peek::BufferedKeys;
use crate::{Limits, Status, PROTOCOL_VERSION};

/// A stream-level failure after which no further frame can be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The first byte of a header was not the magic byte for this direction.
    #[error("bad magic byte 0x{found:02x} (expected 0x{expected:02x}): not a sessiond stream")]
    BadMagic {
        /// The byte found.
        found: u8,
        /// The byte expected.
        expected: u8,
    },
    /// The header declared a protocol version this codec does not speak.
    #[error("unsupported protocol version {found} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The opcode byte as read from the header.
        opcode: u8,
        /// The opaque as read from the header.
        opaque: u32,
    },
    /// A response declared a body larger than the client is willing to buffer.
    #[error("response body of {len} bytes exceeds the client limit of {limit} bytes")]
    ResponseTooLarge {
        /// Declared body length.
        len: u64,
        /// The client's limit.
        limit: u64,
    },
    /// The underlying transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A request frame the server must answer with an error, though the stream is still in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The request's opcode byte.
    pub opcode: u8,
    /// The request's opaque.
    pub opaque: u32,
    /// The error status to answer with.
    pub status: Status,
    /// A human-readable reason for the response's value.
    pub message: String,
}

impl Rejection {
    /// The error response that answers this rejection.
    pub fn to_response(&self) -> ResponseFrame {
        ResponseFrame::error(self.opcode, self.opaque, self.status, self.message.clone())
    }
}

/// What the server codec produces for each frame on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A well-formed frame within limits.
    Request(RequestFrame),
    /// A frame that was skipped; answer it with [`Rejection::to_response`].
    Rejected(Rejection),
}

/// The server side: decodes [`RequestFrame`]s within [`Limits`], encodes [`ResponseFrame`]s.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    limits: Limits,
    /// Body bytes of a rejected frame still to be thrown away as they arrive.
    discard: u64,
    /// Whether the stricter limit for unauthenticated connections applies.
    unauthenticated: bool,
}

impl ServerCodec {
    /// A codec that enforces `limits` on every request.
    pub fn new(limits: Limits) -> Self {
        ServerCodec {
            limits,
            discard: 0,
            unauthenticated: false,
        }
    }

    /// While `on`, a frame whose body is longer than
    /// [`Limits::MAX_UNAUTHENTICATED_BODY_LEN`] is rejected with `TOO_LARGE` (and skipped
    /// without buffering, like any oversized frame). A server that requires authentication
    /// turns this on for a new connection and off once it has authenticated.
    pub fn set_unauthenticated(&mut self, on: bool) {
        self.unauthenticated = on;
    }

    /// Whether the body of a rejected frame is still being thrown away: the stream is in the
    /// middle of a frame even though nothing of it is buffered.
    pub fn is_discarding(&self) -> bool {
        self.discard > 0
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The keys of the complete requests at the start of `src`, the buffer this codec decodes
    /// from, without consuming anything (see [`crate::peek`]). None while the body of a
    /// rejected frame is still being thrown away: `src` does not start with a frame then.
    pub fn buffered_keys<'a>(&self, src: &'a [u8]) -> BufferedKeys<'a> {
        BufferedKeys::new(if self.discard > 0 { &[] } else { src })
    }

    fn oversize_reason(&self, header: &RequestHeader) -> Option<String> {
        if self.unauthenticated
            && header.body_len() > u64::from(Limits::MAX_UNAUTHENTICATED_BODY_LEN)
        {
            return Some(format!(
                "frame body of {} bytes exceeds the limit of {} bytes before authentication",
                header.body_len(),
                Limits::MAX_UNAUTHENTICATED_BODY_LEN
            ));
        }
        if u32::from(header.key_len) > self.limits.max_key_len {
            return Some(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                header.key_len, self.limits.max_key_len
            ));
        }
        if header.value_len > self.limits.max_value_len {
            return Some(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                header.value_len, self.limits.max_value_len
            ));
        }
        None
    }
}

impl Decoder for ServerCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        if self.discard > 0 {
            let n = usize::try_from(self.discard).map_or(src.len(), |d| d.min(src.len()));
            src.advance(n);
            self.discard -= n as u64;
            if self.discard > 0 {
                return Ok(None);
            }
        }
        // The magic is checked as soon as its byte arrives, so that a client speaking another
        // protocol (say `PING\r\n` from a Redis client) is told at once instead of waiting for
        // 16 bytes that may never come.
        if let Some(&first) = src.first() {
            if first != REQUEST_MAGIC {
                return Err(FrameError::BadMagic {
                    found: first,
                    expected: REQUEST_MAGIC,
                });
            }
        }
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        // The magic byte was checked above.
        let (_, header) = RequestHeader::read(header);
        if header.version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: header.version,
                opcode: header.opcode,
                opaque: header.opaque,
            });
        }
        if let Some(message) = self.oversize_reason(&header) {
            // Throw the body away as it streams in rather than buffering it: the declared
            // length is exactly what an attacker controls.
            src.advance(HEADER_LEN);
            self.discard = header.body_len();
            let now = usize::try_from(self.discard).map_or(src.len(), |d| d.min(src.len()));
            src.advance(now);
            self.discard -= now as u64;
            return Ok(Some(Inbound::Rejected(Rejection {
                opcode: header.opcode,
                opaque: header.opaque,
                status: Status::TooLarge,
                message,
            })));
        }
        // Within limits, so the whole frame fits in memory; the limits bound this to about
        // 16 MiB + 64 KiB + 255 bytes. Nothing is reserved for it, though: the buffer grows
        // only as the bytes arrive, so a header that announces a megabyte and is followed by
        // nothing costs its 16 bytes, not the megabyte (a thousand such headers once took
        // a gigabyte).
        let frame_len = HEADER_LEN + header.body_len() as usize;
        if src.len() < frame_len {
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let extras = src.split_to(usize::from(header.extras_len)).freeze();
        let key = src.split_to(usize::from(header.key_len)).freeze();
        let value = src.split_to(header.value_len as usize).freeze();
        if header.reserved != 0 {
            return Ok(Some(Inbound::Rejected(Rejection {
                opcode: header.opcode,
                opaque: header.opaque,
                status: Status::InvalidArgument,
                message: format!("reserved header byte must be 0, got {}", header.reserved),
            })));
        }
        Ok(Some(Inbound::Request(RequestFrame {
            opcode: header.opcode,
            flags: header.flags,
            opaque: header.opaque,
            extras,
            key,
            value,
        })))
    }
}

impl Encoder<ResponseFrame> for ServerCodec {
    type Error = FrameError;

    fn encode(&mut self, item: ResponseFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<&ResponseFrame> for ServerCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &ResponseFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

/// The client side: decodes [`ResponseFrame`]s, encodes [`RequestFrame`]s.
#[derive(Debug, Clone)]
pub struct ClientCodec {
    max_body_len: u64,
}

impl ClientCodec {
    /// A codec that accepts response bodies up to the protocol's hard value limit.
    pub fn new() -> Self {
        ClientCodec {
            max_body_len: u64::from(Limits::HARD_MAX_VALUE_LEN) + 255,
        }
    }

    /// A codec that refuses response bodies longer than `max_body_len` bytes.
    pub fn with_max_body_len(max_body_len: u64) -> Self {
        ClientCodec { max_body_len }
    }
}

impl Default for ClientCodec {
    fn default() -> Self {
        ClientCodec::new()
    }
}

impl Decoder for ClientCodec {
    type Item = ResponseFrame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ResponseFrame>, FrameError> {
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        };
        let (magic, header) = ResponseHeader::read(header);
        if magic != RESPONSE_MAGIC {
            return Err(FrameError::BadMagic {
                found: magic,
                expected: RESPONSE_MAGIC,
            });
        }
        if header.version != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: header.version,
                opcode: header.opcode,
                opaque: header.opaque,
            });
        }
        if header.body_len() > self.max_body_len {
            return Err(FrameError::ResponseTooLarge {
                len: header.body_len(),
                limit: self.max_body_len,
            });
        }
        let frame_len = HEADER_LEN + header.body_len() as usize;
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let extras = src.split_to(usize::from(header.extras_len)).freeze();
        let value = src.split_to(header.value_len as usize).freeze();
        Ok(Some(ResponseFrame {
            opcode: header.opcode,
            opaque: header.opaque,
            status: header.status,
            extras,
            value,
        }))
    }
}

impl Encoder<RequestFrame> for ClientCodec {
    type Error = FrameError;

    fn encode(&mut self, item: RequestFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<&RequestFrame> for ClientCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &RequestFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::command::{Get, Set, SetMode};
    use crate::header::HEADER_LEN;
    use crate::Opcode;

    /// Small limits so that oversized frames stay cheap to build.
    const SMALL: Limits = Limits {
        max_key_len: 8,
        max_value_len: 100,
        max_ttl_ms: 60_000,
    };

    fn encode(frame: &RequestFrame) -> Vec<u8> {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        buf
    }

    fn encode_response(frame: &ResponseFrame) -> Vec<u8> {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        buf
    }

    fn ping(opaque: u32) -> RequestFrame {
        RequestFrame {
            value: Bytes::from_static(b"ok?"),
            ..RequestFrame::new(Opcode::Ping, opaque)
        }
    }

    fn set(key: &[u8], value: &[u8], opaque: u32) -> RequestFrame {
        Set {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            ttl_ms: 1000,
            mode: SetMode::Upsert,
        }
        .to_frame(opaque)
    }

    /// Feeds `chunks` one at a time, decoding after each until the codec asks for more, and
    /// returns everything decoded. Checks that skipped bodies are never buffered.
    fn feed(codec: &mut ServerCodec, chunks: &[&[u8]]) -> Vec<Inbound> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(inbound) = codec.decode(&mut buf).unwrap() {
                out.push(inbound);
            }
            assert!(buf.capacity() < 4096, "capacity grew to {}", buf.capacity());
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        out
    }

    fn rejected(inbound: &Inbound) -> &Rejection {
        match inbound {
            Inbound::Rejected(rejection) => rejection,
            Inbound::Request(frame) => panic!("expected a rejection, got {frame:?}"),
        }
    }

    #[test]
    fn unauthenticated_frames_are_held_to_the_smaller_limit() {
        let limit = Limits::MAX_UNAUTHENTICATED_BODY_LEN as usize;
        let mut codec = ServerCodec::new(Limits::default());
        codec.set_unauthenticated(true);
        let big = set(b"k", &vec![b'v'; limit], 9);
        let mut buf = BytesMut::from(&encode(&big)[..]);
        let out = codec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "the body is skipped");
        let rejection = rejected(&out);
        assert_eq!((rejection.status, rejection.opaque), (Status::TooLarge, 9));
        assert!(rejection.message.contains("before authentication"));

        // The same frame once authenticated, and a frame exactly at the limit before.
        codec.set_unauthenticated(false);
        let mut buf = BytesMut::from(&encode(&big)[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(Inbound::Request(_)))
        ));
        codec.set_unauthenticated(true);
        let at_limit = set(b"k", &vec![b'v'; limit - 16 - 1], 10);
        let mut buf = BytesMut::from(&encode(&at_limit)[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Ok(Some(Inbound::Request(_)))
        ));
    }

    #[test]
    fn bad_magic_is_fatal_on_the_server() {
        let mut bytes = encode(&ping(7));
        bytes[0] = 0x47;
        let err = ServerCodec::new(SMALL)
            .decode(&mut BytesMut::from(&bytes[..]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::BadMagic {
                    found: 0x47,
                    expected: REQUEST_MAGIC
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_response_is_bad_magic_to_the_server_and_a_request_to_the_client() {
        let response = encode_response(&ResponseFrame::new(1, 3, Status::Ok));
        let err = ServerCodec::new(SMALL)
            .decode(&mut BytesMut::from(&response[..]))
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::BadMagic {
                found: RESPONSE_MAGIC,
                ..
            }
        ));

        let request = encode(&ping(3));
        let err = ClientCodec::new()
            .decode(&mut BytesMut::from(&request[..]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::BadMagic {
                    found: REQUEST_MAGIC,
                    expected: RESPONSE_MAGIC
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_magic_is_detected_from_the_first_byte() {
        // A text client's short command is refused at once, not after 16 bytes.
        for bytes in [&b"PING\r\n"[..], &b"P"[..]] {
            let err = ServerCodec::new(SMALL)
                .decode(&mut BytesMut::from(bytes))
                .unwrap_err();
            assert!(
                matches!(err, FrameError::BadMagic { found: b'P', .. }),
                "{err:?}"
            );
        }
        // A correct first byte alone is just an incomplete header.
        let mut buf = BytesMut::from(&[REQUEST_MAGIC][..]);
        assert!(ServerCodec::new(SMALL).decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn unsupported_version_is_fatal_on_both_sides() {
        for version in [0u8, 2, 0xff] {
            let mut bytes = encode(&ping(9));
            bytes[1] = version;
            let err = ServerCodec::new(SMALL)
                .decode(&mut BytesMut::from(&bytes[..]))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    FrameError::UnsupportedVersion { found, opcode: 0x01, opaque: 9 }
                        if found == version
                ),
                "{err:?}"
            );

            let mut bytes = encode_response(&ResponseFrame::new(1, 9, Status::Ok));
            bytes[1] = version;
            let err = ClientCodec::new()
                .decode(&mut BytesMut::from(&bytes[..]))
                .unwrap_err();
            assert!(
                matches!(err, FrameError::UnsupportedVersion { found, .. } if found == version),
                "{err:?}"
            );
        }
    }

    #[test]
    fn oversized_key_is_skipped_across_partial_buffers() {
        let key = [b'k'; 200];
        let big = encode(
            &Get {
                key: Bytes::copy_from_slice(&key),
                touch_ttl_ms: None,
            }
            .to_frame(11),
        );
        let next = encode(&ping(12));
        let mut codec = ServerCodec::new(SMALL);

        // Header plus a little of the key: rejected at once, from the header alone.
        let out = feed(&mut codec, &[&big[..HEADER_LEN + 10]]);
        assert_eq!(out.len(), 1);
        let rejection = rejected(&out[0]);
        assert_eq!(
            (rejection.opcode, rejection.opaque, rejection.status),
            (Opcode::Get.into(), 11, Status::TooLarge)
        );
        assert_eq!(
            rejection.message,
            "key of 200 bytes exceeds the limit of 8 bytes"
        );

        // The rest of the key arrives in pieces and vanishes; the last piece shares its buffer
        // with the start of the next frame, whose end comes later.
        let mut tail_and_next = big[HEADER_LEN + 150..].to_vec();
        tail_and_next.extend_from_slice(&next[..5]);
        let out = feed(
            &mut codec,
            &[
                &big[HEADER_LEN + 10..HEADER_LEN + 70],
                &big[HEADER_LEN + 70..HEADER_LEN + 150],
            ],
        );
        assert!(out.is_empty());
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&tail_and_next);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(&buf[..], &next[..5]);
        buf.extend_from_slice(&next[5..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Inbound::Request(ping(12)))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_value_is_skipped_across_partial_buffers() {
        let value = vec![b'v'; 1000];
        let big = encode(&set(b"k", &value, 21));
        let next = encode(&ping(22));
        let mut stream = big.clone();
        stream.extend_from_slice(&next);

        // Uneven pieces: the first ends inside the header, one ends exactly at the end of the
        // skipped frame, and the next frame arrives split in two.
        let cuts = [10, HEADER_LEN + 3, 300, 301, 777, big.len(), big.len() + 7];
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&stream[start..cut]);
            start = cut;
        }
        chunks.push(&stream[start..]);

        let mut codec = ServerCodec::new(SMALL);
        let out = feed(&mut codec, &chunks);
        assert_eq!(out.len(), 2);
        let rejection = rejected(&out[0]);
        assert_eq!(
            (rejection.opcode, rejection.opaque, rejection.status),
            (Opcode::Set.into(), 21, Status::TooLarge)
        );
        assert_eq!(
            rejection.message,
            "value of 1000 bytes exceeds the limit of 100 bytes"
        );
        assert_eq!(
            rejection.to_response(),
            ResponseFrame::error(Opcode::Set.into(), 21, Status::TooLarge, &rejection.message)
        );
        assert_eq!(out[1], Inbound::Request(ping(22)));
    }

    #[test]
    fn a_hostile_declared_length_allocates_nothing() {
        let mut header = Vec::new();
        crate::header::RequestHeader {
            version: 1,
            opcode: Opcode::Set.into(),
            flags: 0,
            opaque: 1,
            key_len: u16::MAX,
            extras_len: u8::MAX,
            reserved: 0,
            value_len: u32::MAX,
        }
        .write(&mut header);
        let mut codec = ServerCodec::new(Limits::default());
        let mut buf = BytesMut::from(&header[..]);
        let inbound = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(rejected(&inbound).status, Status::TooLarge);
        assert!(buf.capacity() < 1024);
        assert_eq!(
            codec.discard,
            u64::from(u16::MAX) + u64::from(u8::MAX) + u64::from(u32::MAX)
        );
        // Whatever arrives next is body, however much of it there is.
        buf.extend_from_slice(&[0xb5; 4096]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn lengths_at_the_limits_are_accepted() {
        let frame = set(&[b'k'; 8], &[b'v'; 100], 5);
        let out = feed(&mut ServerCodec::new(SMALL), &[&encode(&frame)]);
        assert_eq!(out, [Inbound::Request(frame)]);
    }

    #[test]
    fn a_header_alone_reserves_nothing_for_the_body_it_announces() {
        let frame = set(b"k", &[b'v'; 100], 5);
        let bytes = encode(&frame);
        let mut codec = ServerCodec::new(SMALL);
        let mut buf = BytesMut::from(&bytes[..HEADER_LEN]);
        let before = buf.capacity();
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(buf.capacity(), before);
        buf.extend_from_slice(&bytes[HEADER_LEN..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Inbound::Request(frame))
        );
    }

    #[test]
    fn nonzero_reserved_byte_is_rejected_after_its_body() {
        let mut bad = encode(&set(b"k", b"value", 31));
        bad[11] = 0x01;
        let mut stream = bad.clone();
        stream.extend_from_slice(&encode(&ping(32)));
        let out = feed(
            &mut ServerCodec::new(SMALL),
            &[&stream[..20], &stream[20..]],
        );
        assert_eq!(out.len(), 2);
        let rejection = rejected(&out[0]);
        assert_eq!(
            (rejection.opcode, rejection.opaque, rejection.status),
            (Opcode::Set.into(), 31, Status::InvalidArgument)
        );
        assert_eq!(out[1], Inbound::Request(ping(32)));
    }

    #[test]
    fn unknown_opcodes_still_decode() {
        let frame = RequestFrame {
            opcode: 0x42,
            flags: 0xff,
            opaque: 1,
            extras: Bytes::from_static(b"xyz"),
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        };
        let out = feed(&mut ServerCodec::new(SMALL), &[&encode(&frame)]);
        assert_eq!(out, [Inbound::Request(frame)]);
    }

    #[test]
    fn truncated_frames_are_incomplete_not_errors() {
        let request = encode(&set(b"key", b"value", 41));
        for len in 0..request.len() {
            let mut buf = BytesMut::from(&request[..len]);
            assert_eq!(ServerCodec::new(SMALL).decode(&mut buf).unwrap(), None);
            assert_eq!(buf.len(), len, "an incomplete frame must not be consumed");
        }

        let mut response = ResponseFrame::new(Opcode::Get.into(), 41, Status::Ok);
        response.extras = Bytes::from(vec![0; 16]);
        response.value = Bytes::from_static(b"value");
        let bytes = encode_response(&response);
        for len in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..len]);
            assert_eq!(ClientCodec::new().decode(&mut buf).unwrap(), None);
            assert_eq!(buf.len(), len);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(ClientCodec::new().decode(&mut buf).unwrap(), Some(response));
    }

    #[test]
    fn client_refuses_responses_over_its_limit_from_the_header() {
        let mut response = ResponseFrame::new(Opcode::Get.into(), 1, Status::Ok);
        response.extras = Bytes::from(vec![0; 4]);
        response.value = Bytes::from(vec![0; 7]);
        let bytes = encode_response(&response);

        // Only the header is needed to refuse: the body is never waited for.
        let mut buf = BytesMut::from(&bytes[..HEADER_LEN]);
        let err = ClientCodec::with_max_body_len(10)
            .decode(&mut buf)
            .unwrap_err();
        assert!(
            matches!(err, FrameError::ResponseTooLarge { len: 11, limit: 10 }),
            "{err:?}"
        );

        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = ClientCodec::with_max_body_len(11).decode(&mut buf).unwrap();
        assert_eq!(decoded, Some(response));
    }

    #[test]
    fn default_client_limit_covers_the_largest_legal_response() {
        let mut header = BytesMut::new();
        let mut response = crate::header::ResponseHeader {
            version: 1,
            opcode: Opcode::Get.into(),
            extras_len: u8::MAX,
            opaque: 0,
            status: 0,
            reserved: 0,
            value_len: Limits::HARD_MAX_VALUE_LEN,
        };
        response.write(&mut header);
        assert_eq!(
            ClientCodec::new().decode(&mut header.clone()).unwrap(),
            None
        );

        response.value_len += 1;
        header.clear();
        response.write(&mut header);
        let err = ClientCodec::new().decode(&mut header).unwrap_err();
        assert!(
            matches!(err, FrameError::ResponseTooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn both_encoder_forms_write_the_same_bytes() {
        let request = set(b"k", b"v", 1);
        let (mut by_ref, mut by_value) = (BytesMut::new(), BytesMut::new());
        ClientCodec::new().encode(&request, &mut by_ref).unwrap();
        ClientCodec::new()
            .encode(request.clone(), &mut by_value)
            .unwrap();
        assert_eq!(by_ref, by_value);
        assert_eq!(&by_ref[..], &encode(&request)[..]);

        let response = ResponseFrame::error(3, 1, Status::InternalError, "oops");
        let (mut by_ref, mut by_value) = (BytesMut::new(), BytesMut::new());
        let mut codec = ServerCodec::new(SMALL);
        codec.encode(&response, &mut by_ref).unwrap();
        codec.encode(response.clone(), &mut by_value).unwrap();
        assert_eq!(by_ref, by_value);
        assert_eq!(by_ref.len(), response.encoded_len());
    }
}
