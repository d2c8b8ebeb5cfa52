//! The RESP request decoder: arrays of bulk strings, and inline commands.
//!
//! Clients send a command as an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`);
//! a person typing into `telnet` sends an *inline* command, one line of words (`GET k\r\n`).
//! The first byte tells them apart, as in Redis: `*` starts an array, anything else a line.
//!
//! The decoder is incremental. [`Decoder::decode`] consumes what it can from the read buffer
//! and keeps its place in a partly received array between calls, so a large value arriving
//! in many reads is scanned once, and bytes that are thrown away are never buffered.
//! Incomplete input is `Ok(None)`, not an error.
//!
//! # Limits
//!
//! Nothing a client declares turns into an allocation before the bytes have arrived, and
//! what one request may hold is bounded:
//!
//! - An array may declare at most [`MAX_ARGS`] elements; the argument list grows as
//!   elements arrive. More is `Protocol error: invalid multibulk length`.
//! - A bulk string may declare at most [`MAX_BULK_LEN`] bytes (Redis's own default
//!   `proto-max-bulk-len`); more is `Protocol error: invalid bulk length`.
//! - Within that, an argument longer than [`DecodeLimits::max_arg_bytes`], or a request
//!   whose arguments add up to more than [`DecodeLimits::max_request_bytes`], is *rejected*
//!   the way the native protocol rejects an oversized frame: it is answered with an error
//!   ([`Decoded::TooLarge`]) as soon as the header that goes over the limit arrives, the
//!   rest of the request is read and thrown away as it arrives, and the connection carries
//!   on with the next request.
//! - An inline line, or a header line (`*N` / `$N`), may be at most [`MAX_INLINE`] bytes.
//! - Before `AUTH`, when a password is configured, arrays may have at most 10 elements and
//!   bulk strings at most 16 KiB, as in Redis: an unauthenticated client cannot make the
//!   server buffer much.
//!
//! Protocol errors are fatal, as in Redis: the connection is answered with
//! `-ERR Protocol error: ...` (the messages are Redis's, word for word) and closed, since
//! after a framing error there is no telling where the next request starts.

use bytes::{Buf, Bytes, BytesMut};

/// Most elements an array request may declare (Redis allows `INT_MAX`; no session command
/// needs more than a few thousand).
pub const MAX_ARGS: i64 = 1024 * 1024;

/// Longest bulk string that is not a protocol error: Redis's default `proto-max-bulk-len`.
/// Arguments between [`DecodeLimits::max_arg_bytes`] and this are skipped and answered with
/// an error instead.
pub const MAX_BULK_LEN: i64 = 512 * 1024 * 1024;

/// Longest inline command or header line (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 * 1024;

/// Limits of an unauthenticated connection, when a password is required (Redis's).
const UNAUTHENTICATED_MAX_ARGS: i64 = 10;
const UNAUTHENTICATED_MAX_BULK_LEN: i64 = 16 * 1024;

/// What each argument costs against [`DecodeLimits::max_request_bytes`] besides its bytes:
/// the `Bytes` handle that holds it. Without this, a million empty arguments would be free.
pub(crate) const ARG_OVERHEAD: usize = 32;

/// How much one request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest argument kept: the longer of the key and value limits.
    pub max_arg_bytes: usize,
    /// Most bytes all arguments of one request may add up to (each counted with a small
    /// per-argument overhead).
    pub max_request_bytes: usize,
}

/// A framing error after which the stream cannot be read any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The element count of an array is not a number, or is too large.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// The length of a bulk string is not a number, is negative, or is too large.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An array element does not start with `$`.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedDollar(u8),
    /// Bulk string data is not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// No end of line within [`MAX_INLINE`] bytes of an inline command.
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// No end of line within [`MAX_INLINE`] bytes of an array header.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// No end of line within [`MAX_INLINE`] bytes of a bulk string header.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline command has an unterminated quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An unauthenticated client declared a long array.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// An unauthenticated client declared a long bulk string.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
}

/// Why a request was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLarge {
    /// One argument was longer than [`DecodeLimits::max_arg_bytes`].
    Argument {
        /// Its declared length.
        len: usize,
    },
    /// The arguments added up to more than [`DecodeLimits::max_request_bytes`].
    Total,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A command and its arguments (never empty).
    Command(Vec<Bytes>),
    /// A request over the limits; answer it with an error. The rest of its bytes are
    /// thrown away as they arrive.
    TooLarge(TooLarge),
}

/// Decodes requests from a connection's read buffer.
#[derive(Debug)]
pub struct Decoder {
    limits: DecodeLimits,
    authenticated: bool,
    /// The array being received, if its header has been read.
    partial: Option<Partial>,
}

#[derive(Debug)]
struct Partial {
    /// Elements not yet complete.
    remaining: usize,
    args: Vec<Bytes>,
    /// Bytes counted against `max_request_bytes` so far.
    size: usize,
    next: Next,
    /// Set once the request went over a limit (and was answered): its arguments are
    /// dropped and the rest of its bytes are skipped.
    too_large: Option<TooLarge>,
}

/// How far [`Decoder::continue_array`] got.
enum Step {
    Decoded(Decoded),
    /// More bytes are needed.
    Incomplete,
    /// A rejected request has been thrown away completely.
    Skipped,
}

/// What the partial array waits for.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// A `$N` header line.
    Header,
    /// `N` bytes of data and CRLF, to keep.
    Data(usize),
    /// This many more bytes (data and CRLF) to throw away.
    Skip(usize),
}

impl Decoder {
    /// A decoder enforcing `limits`. `authenticated` is false when a password is required
    /// and not yet given.
    pub fn new(limits: DecodeLimits, authenticated: bool) -> Decoder {
        Decoder {
            limits,
            authenticated,
            partial: None,
        }
    }

    /// Whether no request is partly decoded: the buffer then starts at a request.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Lifts the unauthenticated limits (after a successful `AUTH`).
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }

    /// Decodes the next request from `buf`, consuming its bytes. `Ok(None)` when `buf` holds
    /// no complete request; call again once more bytes have been appended.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                match buf.first() {
                    None => return Ok(None),
                    Some(b'*') => {}
                    Some(_) => match inline(buf)? {
                        None => return Ok(None),
                        // An empty line is not a command; Redis ignores it too.
                        Some(args) if args.is_empty() => continue,
                        Some(args) => return Ok(Some(Decoded::Command(args))),
                    },
                }
                let Some(count) = header(buf, ProtocolError::TooBigMultibulkCount)? else {
                    return Ok(None);
                };
                let count = count.ok_or(ProtocolError::InvalidMultibulkLength)?;
                if count > MAX_ARGS {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if !self.authenticated && count > UNAUTHENTICATED_MAX_ARGS {
                    return Err(ProtocolError::UnauthenticatedMultibulkLength);
                }
                if count <= 0 {
                    // `*0` and `*-1` are empty commands, ignored as Redis does.
                    continue;
                }
                self.partial = Some(Partial {
                    remaining: count as usize,
                    // Grows as elements arrive: the declared count costs nothing up front.
                    args: Vec::with_capacity((count as usize).min(8)),
                    size: 0,
                    next: Next::Header,
                    too_large: None,
                });
            }
            match self.continue_array(buf)? {
                Step::Decoded(decoded) => return Ok(Some(decoded)),
                Step::Incomplete => return Ok(None),
                Step::Skipped => continue,
            }
        }
    }

    /// Reads as much of the partial array as `buf` holds.
    fn continue_array(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        let limits = self.limits;
        let authenticated = self.authenticated;
        let Some(partial) = self.partial.as_mut() else {
            return Ok(Step::Incomplete);
        };
        while partial.remaining > 0 {
            match partial.next {
                Next::Header => {
                    if let Some(&tag) = buf.first() {
                        if tag != b'$' {
                            return Err(ProtocolError::ExpectedDollar(tag));
                        }
                    }
                    let Some(len) = header(buf, ProtocolError::TooBigBulkCount)? else {
                        return Ok(Step::Incomplete);
                    };
                    let len = match len {
                        Some(len) if (0..=MAX_BULK_LEN).contains(&len) => len,
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    };
                    if !authenticated && len > UNAUTHENTICATED_MAX_BULK_LEN {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    let len = len as usize;
                    partial.size += len + ARG_OVERHEAD;
                    if partial.too_large.is_some() {
                        partial.next = Next::Skip(len + 2);
                        continue;
                    }
                    let over = if len > limits.max_arg_bytes {
                        Some(TooLarge::Argument { len })
                    } else if partial.size > limits.max_request_bytes {
                        Some(TooLarge::Total)
                    } else {
                        None
                    };
                    if let Some(reason) = over {
                        // Answer now: the verdict needs only this header, and a client
                        // that declared more than it will send should not wait for it.
                        partial.too_large = Some(reason);
                        partial.args = Vec::new();
                        partial.next = Next::Skip(len + 2);
                        return Ok(Step::Decoded(Decoded::TooLarge(reason)));
                    }
                    partial.next = Next::Data(len);
                }
                Next::Data(len) => {
                    if buf.len() < len + 2 {
                        // Nothing is reserved for the announced length: the buffer grows
                        // only as bytes arrive, so `$1048576\r\n` followed by nothing costs
                        // its own few bytes (a thousand of them once took a gigabyte).
                        return Ok(Step::Incomplete);
                    }
                    let data = buf.split_to(len).freeze();
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::MissingCrlf);
                    }
                    buf.advance(2);
                    partial.args.push(data);
                    partial.remaining -= 1;
                    partial.next = Next::Header;
                }
                Next::Skip(left) => {
                    let n = left.min(buf.len());
                    buf.advance(n);
                    if n < left {
                        partial.next = Next::Skip(left - n);
                        return Ok(Step::Incomplete);
                    }
                    partial.remaining -= 1;
                    partial.next = Next::Header;
                }
            }
        }
        let Some(done) = self.partial.take() else {
            return Ok(Step::Incomplete);
        };
        Ok(match done.too_large {
            // Already answered when it went over the limit.
            Some(_) => Step::Skipped,
            None => Step::Decoded(Decoded::Command(done.args)),
        })
    }
}

/// Reads a `*N\r\n` or `$N\r\n` line. `Ok(None)` if it is incomplete; `Ok(Some(None))` if
/// the number is not a valid integer (or the line does not end in CRLF).
fn header(
    buf: &mut BytesMut,
    too_big: ProtocolError,
) -> Result<Option<Option<i64>>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE + 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if buf.len() > MAX_INLINE {
            return Err(too_big);
        }
        return Ok(None);
    };
    if cr + 1 >= buf.len() {
        return Ok(None);
    }
    let number = if buf[cr + 1] == b'\n' {
        parse_i64(&buf[1..cr])
    } else {
        None
    };
    buf.advance(cr + 2);
    Ok(Some(number))
}

/// Reads an inline command: one line, split into words as `redis-cli` and Redis split them
/// (see [`split_args`]). `Ok(None)` if the line is incomplete.
fn inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_INLINE + 1)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError::TooBigInline);
        }
        return Ok(None);
    };
    let line = buf.split_to(newline + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_args(line)
        .map(Some)
        .ok_or(ProtocolError::UnbalancedQuotes)
}

/// Splits a line into arguments like Redis's `sdssplitargs`: words separated by spaces;
/// `"double quotes"` with `\n`, `\r`, `\t`, `\b`, `\a`, `\xHH` and `\<char>` escapes;
/// `'single quotes'` with only `\'`. A closing quote must be followed by a space or the end
/// of the line. `None` for unbalanced quotes. As in C, a NUL byte ends the line.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // The C original reads a NUL terminator past the end; `at` does the same.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(i);
            if in_double {
                if c == b'\\'
                    && at(i + 1) == b'x'
                    && at(i + 2).is_ascii_hexdigit()
                    && at(i + 3).is_ascii_hexdigit()
                {
                    current.push(hex(at(i + 2)) * 16 + hex(at(i + 3)));
                    i += 3;
                } else if c == b'\\' && at(i + 1) != 0 {
                    i += 1;
                    current.push(match at(i) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(i + 1) != 0 && !is_space(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(i + 1) == b'\'' {
                    i += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(i + 1) != 0 && !is_space(at(i + 1)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => current.push(c),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(current));
    }
}

/// C's `isspace`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Parses a decimal integer the way Redis's `string2ll` does: an optional `-`, then digits,
/// no leading zeros (except `0` itself), no `+`, no spaces, no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate negatively so that i64::MIN, whose magnitude has no positive i64, parses.
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_arg_bytes: 100,
        max_request_bytes: 300,
    };

    fn args(words: &[&str]) -> Decoded {
        Decoded::Command(words.iter().map(|w| Bytes::from(w.to_string())).collect())
    }

    /// Decodes everything in `input`, fed one byte at a time, which exercises every
    /// resumption point.
    fn decode_bytewise(input: &[u8]) -> Result<Vec<Decoded>, ProtocolError> {
        let mut decoder = Decoder::new(LIMITS, true);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(d) = decoder.decode(&mut buf)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn decode_all(input: &[u8]) -> Result<Vec<Decoded>, ProtocolError> {
        let mut decoder = Decoder::new(LIMITS, true);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(d) = decoder.decode(&mut buf)? {
            out.push(d);
        }
        Ok(out)
    }

    #[test]
    fn arrays_whole_and_bytewise() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let want = vec![args(&["GET", "k"]), args(&["PING"])];
        assert_eq!(decode_all(input).unwrap(), want);
        assert_eq!(decode_bytewise(input).unwrap(), want);
    }

    #[test]
    fn empty_arrays_and_lines_are_ignored() {
        let input = b"*0\r\n*-1\r\n\r\n\n*1\r\n$0\r\n\r\n";
        assert_eq!(decode_all(input).unwrap(), vec![args(&[""])]);
    }

    #[test]
    fn inline_commands() {
        assert_eq!(
            decode_bytewise(b"SET k \"a b\\x41\\n\" 'it\\'s'\r\nPING\n").unwrap(),
            vec![
                Decoded::Command(vec![
                    Bytes::from_static(b"SET"),
                    Bytes::from_static(b"k"),
                    Bytes::from_static(b"a bA\n"),
                    Bytes::from_static(b"it's"),
                ]),
                args(&["PING"]),
            ]
        );
        assert_eq!(
            decode_all(b"  GET   k  \r\n").unwrap(),
            vec![args(&["GET", "k"])]
        );
        assert_eq!(
            decode_all(b"GET \"k\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            decode_all(b"GET \"k\"x\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn bad_lengths_are_protocol_errors() {
        for input in [
            &b"*x\r\n"[..],
            b"*01\r\n",
            b"*+1\r\n",
            b"*1\rx",
            b"*2000000\r\n",
        ] {
            assert_eq!(
                decode_all(input),
                Err(ProtocolError::InvalidMultibulkLength),
                "{input:?}"
            );
        }
        for input in [
            &b"*1\r\n$x\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$99999999999999\r\n",
        ] {
            assert_eq!(
                decode_all(input),
                Err(ProtocolError::InvalidBulkLength),
                "{input:?}"
            );
        }
        assert_eq!(
            decode_all(b"*1\r\n:1\r\n"),
            Err(ProtocolError::ExpectedDollar(b':'))
        );
        assert_eq!(
            decode_all(b"*1\r\n$1\r\nabc"),
            Err(ProtocolError::MissingCrlf)
        );
        assert_eq!(
            decode_all(&vec![b'a'; MAX_INLINE + 1]),
            Err(ProtocolError::TooBigInline)
        );
        let mut long_header = b"*1".to_vec();
        long_header.resize(MAX_INLINE + 2, b'1');
        assert_eq!(
            decode_all(&long_header),
            Err(ProtocolError::TooBigMultibulkCount)
        );
    }

    #[test]
    fn a_declared_count_allocates_nothing_up_front() {
        let mut decoder = Decoder::new(LIMITS, true);
        let mut buf = BytesMut::from(&b"*1048576\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        let partial = decoder.partial.as_ref().unwrap();
        assert!(partial.args.capacity() <= 8);
    }

    #[test]
    fn a_declared_bulk_length_reserves_nothing_before_its_bytes() {
        let mut decoder = Decoder::new(LIMITS, true);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$100\r\n"[..]);
        let before = buf.capacity();
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() <= before, "{} > {before}", buf.capacity());
    }

    #[test]
    fn oversized_requests_are_skipped_and_reported() {
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$101\r\n".to_vec();
        input.extend_from_slice(&[b'v'; 101]);
        input.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
        let want = vec![
            Decoded::TooLarge(TooLarge::Argument { len: 101 }),
            args(&["PING"]),
        ];
        assert_eq!(decode_all(&input).unwrap(), want);
        assert_eq!(decode_bytewise(&input).unwrap(), want);

        // Many small arguments add up.
        let mut input = b"*10\r\n".to_vec();
        for _ in 0..10 {
            input.extend_from_slice(b"$50\r\n");
            input.extend_from_slice(&[b'k'; 50]);
            input.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            decode_all(&input).unwrap(),
            vec![Decoded::TooLarge(TooLarge::Total)]
        );
    }

    #[test]
    fn unauthenticated_limits() {
        let mut decoder = Decoder::new(LIMITS, false);
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut decoder = Decoder::new(LIMITS, false);
        let mut buf = BytesMut::from(&b"*1\r\n$16385\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
    }

    #[test]
    fn integers_parse_like_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1a",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }
}
