//! The RESP request decoder: arrays of bulk strings and inline commands (`resp::decode`),
//! and the inline command splitter on its own.
//!
//! Input: the first byte picks the size of the reads the stream arrives in and whether the
//! connection has authenticated; the rest is the stream.
//!
//! Properties:
//! - nothing panics, whatever the bytes; the read buffer never holds far more than the bytes
//!   that came in, whatever lengths they declare;
//! - the decoder yields the same commands, rejections and error whether the stream arrives
//!   in one read or in many;
//! - every decoded command, written back as an array of bulk strings, decodes to the same
//!   arguments, and written back as an inline command with every byte escaped (`"\xHH"`),
//!   splits into the same arguments.

use bytes::{Bytes, BytesMut};
use sessiond::fuzzing::resp::{split_args, DecodeLimits, Decoded, Decoder, ProtocolError};

/// Small limits, so that short inputs reach the too-large paths as well.
const LIMITS: DecodeLimits = DecodeLimits {
    max_arg_bytes: 64,
    max_request_bytes: 512,
};

/// Limits no re-encoded command can reach: an inline command is not held to the argument
/// limits the way an array is, so its arguments may exceed [`LIMITS`].
const UNLIMITED: DecodeLimits = DecodeLimits {
    max_arg_bytes: 1 << 30,
    max_request_bytes: 1 << 30,
};

fn decode(
    chunks: &mut dyn Iterator<Item = &[u8]>,
    authenticated: bool,
) -> (Vec<Decoded>, Option<ProtocolError>) {
    let mut decoder = Decoder::new(LIMITS, authenticated);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(decoded)) => out.push(decoded),
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
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn as_array(args: &[Bytes]) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn as_inline(args: &[Bytes]) -> Vec<u8> {
    let mut line = Vec::new();
    for arg in args {
        line.extend_from_slice(b" \"");
        for byte in arg.iter() {
            line.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
        }
        line.push(b'"');
    }
    line
}

/// Checks the properties above on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let authenticated = control & 0x80 == 0;
    let read_size = usize::from(control & 0x7f).max(1);

    let whole = decode(&mut std::iter::once(stream), authenticated);
    let split = decode(&mut stream.chunks(read_size), authenticated);
    assert_eq!(
        whole, split,
        "the result depends on how the stream was split"
    );

    for decoded in whole.0 {
        let Decoded::Command(args) = decoded else {
            continue;
        };
        assert!(!args.is_empty(), "an empty command was returned");
        let mut encoded = as_array(&args);
        let again = Decoder::new(UNLIMITED, true).decode(&mut encoded);
        assert_eq!(
            again,
            Ok(Some(Decoded::Command(args.clone()))),
            "array round trip"
        );
        assert!(encoded.is_empty());
        assert_eq!(
            split_args(&as_inline(&args)),
            Some(args),
            "inline round trip"
        );
    }

    // The splitter on its own, on a line that need not end or be within MAX_INLINE.
    std::hint::black_box(split_args(stream));
}
