//! The native protocol's server side: the frame decoder (`ServerCodec`), its look-ahead at
//! the keys of buffered requests, and typed command parsing (`Request::parse`).
//!
//! Input: the first byte picks the size of the reads the stream arrives in and whether the
//! connection has authenticated; the rest is the stream.
//!
//! Properties:
//! - nothing panics, whatever the bytes; the read buffer never holds far more than the bytes
//!   that came in, whatever lengths they declare;
//! - the decoder yields the same frames, rejections and error whether the stream arrives in
//!   one read or in many (a frame split across reads is the normal case on a socket);
//! - a decoded frame encodes to bytes that decode to the same frame;
//! - a parsed request turns back into a frame that parses to the same request.

use bytes::BytesMut;
use sessiond_proto::{Inbound, Limits, Request, ServerCodec};
use tokio_util::codec::Decoder;

/// Small limits, so that short inputs reach the TOO_LARGE paths as well; the value limit is
/// above the unauthenticated body limit (4096) so that both rejections are reachable.
const LIMITS: Limits = Limits {
    max_key_len: 64,
    max_value_len: 5000,
    max_ttl_ms: 60_000,
};

/// Everything the codec yields for `chunks`, and the fatal error that ended the stream.
fn decode(
    chunks: &mut dyn Iterator<Item = &[u8]>,
    unauthenticated: bool,
) -> (Vec<Inbound>, Option<String>) {
    let mut codec = ServerCodec::new(LIMITS);
    codec.set_unauthenticated(unauthenticated);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        // The server peeks at the keys of a pipelined batch before decoding it.
        for key in codec.buffered_keys(&buf) {
            std::hint::black_box(key);
        }
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(inbound)) => out.push(inbound),
                Ok(None) => {
                    // The buffer grows only as bytes arrive: a length the stream declares
                    // reserves nothing (1,000 headers announcing 1 MiB each once took 1.5 GiB).
                    assert!(
                        buf.capacity() <= 4 * fed + 64,
                        "{} bytes reserved after {fed} bytes in",
                        buf.capacity()
                    );
                    break;
                }
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

/// Checks the properties above on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let unauthenticated = control & 0x80 != 0;
    let read_size = usize::from(control & 0x7f).max(1);

    let whole = decode(&mut std::iter::once(stream), unauthenticated);
    let split = decode(&mut stream.chunks(read_size), unauthenticated);
    assert_eq!(
        whole, split,
        "the result depends on how the stream was split"
    );

    for inbound in whole.0 {
        let Inbound::Request(frame) = inbound else {
            continue;
        };
        let mut encoded = BytesMut::new();
        frame.encode(&mut encoded);
        let mut codec = ServerCodec::new(LIMITS);
        let again = codec.decode(&mut encoded).ok().flatten();
        assert_eq!(
            again,
            Some(Inbound::Request(frame.clone())),
            "frame round trip"
        );
        assert!(encoded.is_empty());

        let opaque = frame.opaque;
        if let Ok(request) = Request::parse(frame, &LIMITS) {
            let reparsed = Request::parse(request.to_frame(opaque), &LIMITS);
            assert_eq!(reparsed.ok(), Some(request), "request round trip");
        }
    }
}
