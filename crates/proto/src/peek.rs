//! Looking ahead at the keys of requests that are already buffered, without decoding them.
//!
//! A server that received a pipelined batch can use the keys to warm its caches before it
//! executes the first request: each lookup then finds its data already on the way, instead of
//! every request waiting for its own chain of cache misses in turn. This only reads; the
//! frames are decoded and checked as usual afterwards, so a key seen here is a hint and
//! nothing more.

use crate::header::{RequestHeader, HEADER_LEN, REQUEST_MAGIC};
use crate::Opcode;

/// The keys of the complete request frames at the start of a buffer, in order. Stops at the
/// first frame that is incomplete or does not start with the request magic, and skips frames
/// without a key. Created by [`ServerCodec::buffered_keys`](crate::ServerCodec::buffered_keys).
#[derive(Debug, Clone)]
pub struct BufferedKeys<'a> {
    rest: &'a [u8],
}

impl<'a> BufferedKeys<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> BufferedKeys<'a> {
        BufferedKeys { rest: buf }
    }
}

impl<'a> Iterator for BufferedKeys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let (magic, header) = RequestHeader::read(self.rest.first_chunk::<HEADER_LEN>()?);
            if magic != REQUEST_MAGIC {
                self.rest = &[];
                return None;
            }
            let body = &self.rest[HEADER_LEN..];
            // `body_len` is at most 2^32 + 2^16 + 2^8, so it fits a `usize` on 64-bit targets;
            // on narrower ones a frame that large is incomplete by definition.
            let frame_body = usize::try_from(header.body_len()).unwrap_or(usize::MAX);
            if body.len() < frame_body {
                self.rest = &[];
                return None;
            }
            let key_start = usize::from(header.extras_len);
            let key = &body[key_start..key_start + usize::from(header.key_len)];
            self.rest = &body[frame_body..];
            // The key of an `AUTH` is a user name, not a stored key: nothing to warm.
            if !key.is_empty() && header.opcode != u8::from(Opcode::Auth) {
                return Some(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;

    use crate::command::{Get, Set, SetMode};
    use crate::{Limits, ServerCodec};

    fn batch() -> BytesMut {
        let mut buf = BytesMut::new();
        Get {
            key: "a".into(),
            touch_ttl_ms: Some(1000),
        }
        .to_frame(1)
        .encode(&mut buf);
        crate::command::Ping::default().to_frame(2).encode(&mut buf);
        Set {
            key: "bb".into(),
            value: vec![7u8; 100].into(),
            ttl_ms: 1000,
            mode: SetMode::Upsert,
        }
        .to_frame(3)
        .encode(&mut buf);
        buf
    }

    #[test]
    fn yields_the_keys_of_complete_frames_in_order() {
        let codec = ServerCodec::new(Limits::default());
        let buf = batch();
        let keys: Vec<&[u8]> = codec.buffered_keys(&buf).collect();
        assert_eq!(keys, vec![&b"a"[..], &b"bb"[..]]);
        // The last frame cut short: only the first key is complete.
        let keys: Vec<&[u8]> = codec.buffered_keys(&buf[..buf.len() - 1]).collect();
        assert_eq!(keys, vec![&b"a"[..]]);
    }

    #[test]
    fn stops_at_anything_that_is_not_a_request() {
        let codec = ServerCodec::new(Limits::default());
        let mut buf = BytesMut::from(&b"PING\r\n"[..]);
        buf.extend_from_slice(&batch());
        assert_eq!(codec.buffered_keys(&buf).count(), 0);
    }

    proptest! {
        #[test]
        fn never_panics_and_keys_lie_within_the_buffer(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let codec = ServerCodec::new(Limits::default());
            let range = bytes.as_ptr_range();
            for key in codec.buffered_keys(&bytes) {
                prop_assert!(range.start <= key.as_ptr() && key.as_ptr_range().end <= range.end);
            }
        }
    }
}
