//! The floor server: answers the load generator's native-protocol requests with canned
//! replies and keeps no data, so that what it costs per request is what any server pays
//! for the same traffic before doing any work of its own: the system calls, the kernel's
//! TCP work and the readiness machinery.
//!
//! `scripts/bench-compare cost` runs it beside sessiond and memcached under the same CPU
//! quota. Two ways of doing the I/O are compared:
//!
//! - [`epoll`]: what sessiond (through tokio, over mio) and memcached (through libevent)
//!   do: wait for readiness, then one `recv` and one `send` per request per connection.
//! - [`uring`]: io_uring, where the receives and sends of every connection that is ready
//!   are submitted together and their completions collected together, one `io_uring_enter`
//!   for a whole batch instead of two system calls per request.
//!
//! Neither does anything with a request beyond finding where it ends and copying its opaque
//! into a reply prepared at start-up, so the gap between a real server's CPU per request and
//! the floor's is what that server's own work costs, and the floor itself is what is left
//! to a server that does no work at all.
//!
//! Every request gets a reply of the shape the load generator expects: `GET` a hit with
//! the configured value size, `SET` stored, `DEL` deleted, `PING` a pong, anything else an
//! `UNKNOWN_OPCODE` error. A frame with the wrong magic or a body over [`MAX_BODY`] closes
//! the connection, as sessiond would. What one client can make it hold is bounded: a
//! receive is at most [`READ_CHUNK`] bytes, and a connection whose unsent replies exceed
//! [`MAX_QUEUED_OUTPUT`] is not read until they drain.

use sessiond_proto::command::{DelOutcome, Entry, GetReply, SetOutcome};
use sessiond_proto::header::{RequestHeader, HEADER_LEN, REQUEST_MAGIC};
use sessiond_proto::{Opcode, ResponseFrame, Status};

pub mod epoll;
#[cfg(target_os = "linux")]
pub mod uring;

/// The largest request body accepted, sessiond's default `max_value_bytes` with room for a
/// key: a bound on what one connection can make the server buffer.
pub const MAX_BODY: usize = 1024 * 1024 + 64 * 1024;

/// Bytes read from a socket at a time. Also a bound on the replies one receive can produce
/// (a thousand small requests, a megabyte of replies at 1 KiB each).
pub const READ_CHUNK: usize = 16 * 1024;

/// Unsent replies beyond which a connection is not read until they drain: what a client
/// that sends without reading can make the server hold.
pub const MAX_QUEUED_OUTPUT: usize = 4 * 1024 * 1024;

/// Where the opaque sits in both headers: the reply's is the request's, copied.
const OPAQUE: std::ops::Range<usize> = 4..8;

/// A frame the floor server will not read: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The first byte of a header was not the request magic.
    #[error("bad magic byte {0:#04x}")]
    Magic(u8),
    /// The header declared a body over [`MAX_BODY`].
    #[error("body of {0} bytes declared, over the limit")]
    TooLong(u64),
}

/// The encoded replies, each with opaque 0, patched per request.
#[derive(Debug, Clone)]
pub struct Replies {
    get: Vec<u8>,
    set: Vec<u8>,
    del: Vec<u8>,
    ping: Vec<u8>,
    unknown: Vec<u8>,
}

impl Replies {
    /// Replies whose `GET` hits carry `value_len` bytes.
    pub fn new(value_len: usize) -> Replies {
        let encode = |frame: ResponseFrame| {
            let mut bytes = Vec::with_capacity(frame.encoded_len());
            frame.encode(&mut bytes);
            bytes
        };
        let hit = GetReply::Hit(Entry {
            value: vec![b'v'; value_len].into(),
            version: 1,
            ttl_ms: 1_800_000,
        });
        Replies {
            get: encode(hit.to_frame(0)),
            set: encode(SetOutcome::Stored { version: 1 }.to_frame(0)),
            del: encode(DelOutcome::Deleted.to_frame(0)),
            ping: encode(ResponseFrame::new(Opcode::Ping.into(), 0, Status::Ok)),
            unknown: encode(ResponseFrame::error(
                0,
                0,
                Status::UnknownOpcode,
                "the floor server answers GET, SET, DEL and PING only",
            )),
        }
    }

    /// The reply to a request with this opcode, and whether it is the error reply (which
    /// names the request's opcode, as sessiond's do).
    fn for_opcode(&self, opcode: u8) -> (&[u8], bool) {
        match Opcode::from_u8(opcode) {
            Some(Opcode::Get) => (&self.get, false),
            Some(Opcode::Set) => (&self.set, false),
            Some(Opcode::Del) => (&self.del, false),
            Some(Opcode::Ping) => (&self.ping, false),
            _ => (&self.unknown, true),
        }
    }

    /// Appends to `output` a reply to each complete request at the start of `input`, and
    /// returns how many bytes of `input` those requests took.
    pub fn answer(&self, input: &[u8], output: &mut Vec<u8>) -> Result<usize, Malformed> {
        let mut used = 0;
        while let Some(header) = input[used..].first_chunk::<HEADER_LEN>() {
            let (magic, fields) = RequestHeader::read(header);
            if magic != REQUEST_MAGIC {
                return Err(Malformed::Magic(magic));
            }
            let body = fields.body_len();
            if body > MAX_BODY as u64 {
                return Err(Malformed::TooLong(body));
            }
            let end = used + HEADER_LEN + body as usize;
            if end > input.len() {
                break;
            }
            let (reply, is_error) = self.for_opcode(fields.opcode);
            let start = output.len();
            output.extend_from_slice(reply);
            output[start..][OPAQUE].copy_from_slice(&header[OPAQUE]);
            if is_error {
                output[start + 2] = fields.opcode;
            }
            used = end;
        }
        Ok(used)
    }
}

/// A connection's buffered input: what has been received and not yet answered.
#[derive(Debug)]
pub struct Input {
    bytes: Vec<u8>,
    filled: usize,
}

impl Input {
    /// An empty buffer of [`READ_CHUNK`] bytes.
    pub fn new() -> Input {
        Input {
            bytes: vec![0; READ_CHUNK],
            filled: 0,
        }
    }

    /// Room to receive into: [`READ_CHUNK`] bytes. The buffer grows (up to a frame of
    /// [`MAX_BODY`], which [`Input::answer`] enforces) when a request larger than it
    /// arrives, and shrinks back once a receive ends on a frame boundary.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.bytes.len() < self.filled + READ_CHUNK {
            self.bytes.resize(self.filled + READ_CHUNK, 0);
        }
        &mut self.bytes[self.filled..self.filled + READ_CHUNK]
    }

    /// Counts `n` bytes received into [`Input::spare`].
    pub fn received(&mut self, n: usize) {
        debug_assert!(
            self.filled + n <= self.bytes.len(),
            "more received than room given"
        );
        self.filled = (self.filled + n).min(self.bytes.len());
    }

    /// Answers every complete request buffered, appending the replies to `output`, and
    /// keeps the incomplete rest.
    pub fn answer(&mut self, replies: &Replies, output: &mut Vec<u8>) -> Result<(), Malformed> {
        let used = replies.answer(&self.bytes[..self.filled], output)?;
        self.bytes.copy_within(used..self.filled, 0);
        self.filled -= used;
        // Grown for a large frame: back to the usual size once it is answered.
        if self.filled == 0 && self.bytes.len() > READ_CHUNK {
            self.bytes.truncate(READ_CHUNK);
            self.bytes.shrink_to_fit();
        }
        Ok(())
    }
}

impl Default for Input {
    fn default() -> Self {
        Input::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use sessiond_proto::command::{Del, Get, Set, SetMode};
    use sessiond_proto::{ClientCodec, Request};
    use tokio_util::codec::{Decoder, Encoder};

    /// The frames of `requests`, each with its opaque, encoded one after the other.
    pub(super) fn requests(requests: &[(Request, u32)]) -> Vec<u8> {
        let mut codec = ClientCodec::new();
        let mut bytes = BytesMut::new();
        for (request, opaque) in requests {
            let frame = request.to_frame(*opaque);
            codec.encode(&frame, &mut bytes).unwrap();
        }
        bytes.to_vec()
    }

    #[test]
    fn each_request_gets_its_reply_with_its_opaque() {
        let key = Bytes::from_static(b"session:1");
        let input = requests(&[
            (
                Request::Get(Get {
                    key: key.clone(),
                    touch_ttl_ms: Some(1000),
                }),
                7,
            ),
            (
                Request::Set(Set {
                    key: key.clone(),
                    value: Bytes::from_static(b"data"),
                    ttl_ms: 1000,
                    mode: SetMode::Upsert,
                }),
                8,
            ),
            (
                Request::Del(Del {
                    key,
                    if_version: None,
                }),
                9,
            ),
        ]);
        let replies = Replies::new(100);
        let mut output = Vec::new();
        // All but the last byte: the third request is incomplete and waits.
        let used = replies
            .answer(&input[..input.len() - 1], &mut output)
            .unwrap();
        assert!(used < input.len() - 1);
        let used = used + replies.answer(&input[used..], &mut output).unwrap();
        assert_eq!(used, input.len());

        let mut codec = ClientCodec::new();
        let mut output = BytesMut::from(&output[..]);
        let get = codec.decode(&mut output).unwrap().unwrap();
        assert_eq!(get.opaque, 7);
        match GetReply::from_frame(&get).unwrap() {
            GetReply::Hit(entry) => assert_eq!(entry.value.len(), 100),
            GetReply::Miss => panic!("a miss"),
        }
        let set = codec.decode(&mut output).unwrap().unwrap();
        assert_eq!(set.opaque, 8);
        assert_eq!(
            SetOutcome::from_frame(&set).unwrap(),
            SetOutcome::Stored { version: 1 }
        );
        let del = codec.decode(&mut output).unwrap().unwrap();
        assert_eq!(del.opaque, 9);
        assert_eq!(DelOutcome::from_frame(&del).unwrap(), DelOutcome::Deleted);
        assert!(output.is_empty());
    }

    #[test]
    fn a_bad_magic_or_an_oversized_body_is_refused() {
        let replies = Replies::new(10);
        let mut output = Vec::new();
        let mut header = [0u8; HEADER_LEN];
        header[0] = 0x80;
        assert_eq!(
            replies.answer(&header, &mut output),
            Err(Malformed::Magic(0x80))
        );
        header[0] = REQUEST_MAGIC;
        header[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            replies.answer(&header, &mut output),
            Err(Malformed::TooLong(u64::from(u32::MAX)))
        );
        assert!(output.is_empty());
    }

    #[test]
    fn input_grows_for_a_large_frame_and_shrinks_after_it() {
        let replies = Replies::new(10);
        let big = requests(&[(
            Request::Set(Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![0u8; 3 * READ_CHUNK]),
                ttl_ms: 1000,
                mode: SetMode::Upsert,
            }),
            1,
        )]);
        let mut input = Input::new();
        let mut output = Vec::new();
        let mut offset = 0;
        while offset < big.len() {
            let spare = input.spare();
            let n = spare.len().min(big.len() - offset);
            spare[..n].copy_from_slice(&big[offset..offset + n]);
            input.received(n);
            offset += n;
            input.answer(&replies, &mut output).unwrap();
        }
        assert_eq!(input.filled, 0);
        assert_eq!(input.bytes.len(), READ_CHUNK);
        assert_eq!(output.len(), replies.set.len());
    }
}
