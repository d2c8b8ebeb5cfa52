//! A small RESP client for end-to-end tests: arrays of bulk strings or raw bytes out, parsed
//! RESP2/RESP3 values in. Written from the RESP specification, independently of the
//! server's encoder, so that a test compares the server's bytes with what the spec says.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{bounded, IO_TIMEOUT};

/// A reply, with every RESP2 and RESP3 type kept distinct so tests can check the type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+...`
    Simple(String),
    /// `-...`
    Error(String),
    /// `:N`
    Integer(i64),
    /// `$N` data
    Bulk(Vec<u8>),
    /// RESP2 `$-1`.
    NullBulk,
    /// RESP2 `*-1`.
    NullArray,
    /// RESP3 `_`.
    Null,
    /// `*N`
    Array(Vec<Value>),
    /// RESP3 `%N`
    Map(Vec<(Value, Value)>),
    /// RESP3 `~N`
    Set(Vec<Value>),
    /// RESP3 `=N` with its three-letter format.
    Verbatim(String, Vec<u8>),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `,` (kept as text).
    Double(String),
}

impl Value {
    /// A bulk string from text.
    pub fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    /// The text of a simple string, error, bulk or verbatim string.
    pub fn text(&self) -> String {
        match self {
            Value::Simple(s) | Value::Error(s) => s.clone(),
            Value::Bulk(b) | Value::Verbatim(_, b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("not a string: {other:?}"),
        }
    }

    /// The integer of an integer reply.
    pub fn int(&self) -> i64 {
        match self {
            Value::Integer(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    /// The elements of an array (or set).
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(items) | Value::Set(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    /// Whether this is an error reply starting with `prefix`.
    pub fn is_error(&self, prefix: &str) -> bool {
        matches!(self, Value::Error(e) if e.starts_with(prefix))
    }
}

/// Parses one value from the front of `buf`, consuming it; `None` if incomplete.
pub fn parse(buf: &mut BytesMut) -> Option<Value> {
    let (value, used) = parse_at(buf, 0)?;
    buf.advance(used);
    Some(value)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn parse_at(buf: &[u8], at: usize) -> Option<(Value, usize)> {
    let tag = *buf.get(at)?;
    let (head, mut next) = line(buf, at + 1)?;
    let text = String::from_utf8_lossy(head).into_owned();
    let number = || text.parse::<i64>().expect("RESP length or integer");
    let items = |n: i64, next: &mut usize| -> Option<Vec<Value>> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (v, after) = parse_at(buf, *next)?;
            out.push(v);
            *next = after;
        }
        Some(out)
    };
    let value = match tag {
        b'+' => Value::Simple(text),
        b'-' => Value::Error(text),
        b':' => Value::Integer(number()),
        b'_' => Value::Null,
        b'#' => Value::Boolean(head == b"t"),
        b',' => Value::Double(text),
        b'$' | b'=' => {
            let n = number();
            if n < 0 {
                return Some((Value::NullBulk, next));
            }
            let n = n as usize;
            let data = buf.get(next..next + n)?.to_vec();
            if buf.get(next + n..next + n + 2)? != b"\r\n" {
                panic!("bulk string not followed by CRLF");
            }
            next += n + 2;
            if tag == b'=' {
                let format = String::from_utf8_lossy(&data[..3]).into_owned();
                Value::Verbatim(format, data[4..].to_vec())
            } else {
                Value::Bulk(data)
            }
        }
        b'*' | b'~' => {
            let n = number();
            if n < 0 {
                return Some((Value::NullArray, next));
            }
            let list = items(n, &mut next)?;
            if tag == b'*' {
                Value::Array(list)
            } else {
                Value::Set(list)
            }
        }
        b'%' => {
            let flat = items(number() * 2, &mut next)?;
            let mut pairs = Vec::new();
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
        other => panic!("unexpected RESP type byte {:?}", char::from(other)),
    };
    Some((value, next))
}

/// Encodes a command as an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A RESP connection. Every wait is bounded by [`IO_TIMEOUT`].
pub struct RespConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RespConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RespConn {
        let stream = bounded(IO_TIMEOUT, "connect", TcpStream::connect(addr))
            .await
            .expect("connect to the RESP listener");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RespConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        bounded(IO_TIMEOUT, "write", self.stream.write_all(bytes))
            .await
            .expect("write to the RESP listener");
    }

    /// Sends bytes; `false` if the server has closed the connection.
    pub async fn send_raw_lossy(&mut self, bytes: &[u8]) -> bool {
        bounded(IO_TIMEOUT, "write", self.stream.write_all(bytes))
            .await
            .is_ok()
    }

    /// Sends a command (as an array of bulk strings) without waiting for the reply.
    pub async fn send(&mut self, args: &[&str]) {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send_raw(&command(&args)).await;
    }

    /// Sends a command and returns its reply.
    pub async fn call(&mut self, args: &[&str]) -> Value {
        self.send(args).await;
        self.recv().await.expect("a reply, not a closed connection")
    }

    /// Sends a command with binary arguments and returns its reply.
    pub async fn call_bytes(&mut self, args: &[&[u8]]) -> Value {
        self.send_raw(&command(args)).await;
        self.recv().await.expect("a reply, not a closed connection")
    }

    /// The next reply, or `None` if the server closed the connection (cleanly or with a
    /// reset) before sending one.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            if let Some(value) = parse(&mut self.buf) {
                return Some(value);
            }
            let read = bounded(
                IO_TIMEOUT,
                "read a reply",
                self.stream.read_buf(&mut self.buf),
            )
            .await;
            match read {
                Ok(0) | Err(_) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed in the middle of a reply: {:?}",
                        self.buf
                    );
                    return None;
                }
                Ok(_) => {}
            }
        }
    }

    /// Asserts that the server closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        if let Some(value) = self.recv().await {
            panic!("expected the connection to be closed, got {value:?}");
        }
    }
}
