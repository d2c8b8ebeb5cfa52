//! Looking ahead at the keys of pipelined RESP commands, without decoding them: the RESP
//! counterpart of `sessiond_proto::peek`, so that a batch from `redis-benchmark -P 16` or a
//! client's pipeline gets its entries prefetched (see `Store::prefetch`) before it runs.
//!
//! Every command sessiond serves that names a key names it first (`GET key`, `SET key ...`,
//! `EXPIRE key ...`); for the others the first argument is looked up anyway, which costs one
//! lookup that finds nothing. Only multibulk requests are read, the form every client library
//! sends; an inline command or anything malformed ends the look-ahead, and the decoder will
//! deal with it.

use super::decode::parse_i64;

/// Arrays with more elements than this end the look-ahead: nothing pipelined in bulk has
/// them, and walking them would only cost time.
const MAX_PEEKED_ARGS: i64 = 64;

/// The first argument of each complete multibulk command at the start of a buffer.
#[derive(Debug, Clone)]
pub(crate) struct BufferedKeys<'a> {
    rest: &'a [u8],
}

impl<'a> BufferedKeys<'a> {
    /// Looks ahead in `buf`, which must start at a command boundary.
    pub(crate) fn new(buf: &'a [u8]) -> BufferedKeys<'a> {
        BufferedKeys { rest: buf }
    }

    /// Parses one command, returning its first argument (if it has one) and what follows it.
    fn command(buf: &'a [u8]) -> Option<(Option<&'a [u8]>, &'a [u8])> {
        let (count, mut rest) = number_line(buf, b'*')?;
        if !(1..=MAX_PEEKED_ARGS).contains(&count) {
            return None;
        }
        let mut first_argument = None;
        for index in 0..count {
            let (len, after) = number_line(rest, b'$')?;
            let len = usize::try_from(len).ok()?;
            let data = after.get(..len)?;
            rest = after.get(len..)?.strip_prefix(b"\r\n")?;
            if index == 1 {
                first_argument = Some(data);
            }
        }
        Some((first_argument, rest))
    }
}

impl<'a> Iterator for BufferedKeys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let Some((key, rest)) = Self::command(self.rest) else {
                self.rest = &[];
                return None;
            };
            self.rest = rest;
            if let Some(key) = key.filter(|key| !key.is_empty()) {
                return Some(key);
            }
        }
    }
}

/// Reads a `<tag><number>\r\n` line at the start of `buf`.
fn number_line(buf: &[u8], tag: u8) -> Option<(i64, &[u8])> {
    let line = buf.strip_prefix(&[tag])?;
    let cr = line.iter().position(|&b| b == b'\r')?;
    let rest = line.get(cr..)?.strip_prefix(b"\r\n")?;
    Some((parse_i64(&line[..cr])?, rest))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::BufferedKeys;

    fn keys(buf: &[u8]) -> Vec<&[u8]> {
        BufferedKeys::new(buf).collect()
    }

    #[test]
    fn yields_the_first_argument_of_each_complete_command() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n\
                    *3\r\n$3\r\nSET\r\n$2\r\nbb\r\n$5\r\nhello\r\n";
        assert_eq!(keys(buf), vec![&b"a"[..], &b"bb"[..]]);
        // The last command cut short: only the first key is complete.
        assert_eq!(keys(&buf[..buf.len() - 1]), vec![&b"a"[..]]);
    }

    #[test]
    fn stops_at_inline_and_malformed_commands() {
        assert!(keys(b"GET a\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n").is_empty());
        assert!(keys(b"*2\r\n$3\r\nGET\r\n$x\r\nb\r\n").is_empty());
        assert!(keys(b"*2\r\n$3\r\nGET\r\n$1\r\nbXX").is_empty());
        assert!(keys(b"*-1\r\n").is_empty());
        assert!(keys(b"*100000\r\n$3\r\nGET\r\n").is_empty());
    }

    proptest! {
        #[test]
        fn never_panics_and_keys_lie_within_the_buffer(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let range = bytes.as_ptr_range();
            for key in BufferedKeys::new(&bytes) {
                prop_assert!(range.start <= key.as_ptr() && key.as_ptr_range().end <= range.end);
            }
        }
    }
}
