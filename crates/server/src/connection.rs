//! Buffered frame I/O on one TCP connection.
//!
//! Reading and writing are decoupled from processing so that responses can be batched: the
//! handler decodes every complete frame that one read brought in, queues each response here,
//! and [`Connection::flush`] sends them all with one write. A client that pipelines 100
//! requests in one packet gets 100 responses in one packet.

use std::io;

use bytes::BytesMut;
use sessiond_proto::{FrameError, Inbound, Limits, ResponseFrame, ServerCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Queued responses are written out once they reach this size, even mid-batch, so that a
/// few small requests for large values cannot make the server buffer without bound, and a
/// client that stops reading stops being read from.
pub(crate) const FLUSH_THRESHOLD: usize = 64 * 1024;

/// A TCP stream with the protocol's codec and read/write buffers.
pub(crate) struct Connection {
    stream: TcpStream,
    codec: ServerCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, limits: Limits) -> Connection {
        Connection {
            stream,
            codec: ServerCodec::new(limits),
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The next complete frame already read, or `Ok(None)` if the buffer holds none. Never
    /// reads from the socket.
    pub(crate) fn next_buffered(&mut self) -> Result<Option<Inbound>, FrameError> {
        self.codec.decode(&mut self.read_buf)
    }

    /// Queues a response for the next [`Connection::flush`].
    pub(crate) fn queue(&mut self, response: &ResponseFrame) {
        self.write_buf.reserve(response.encoded_len());
        response.encode(&mut self.write_buf);
    }

    /// Bytes of responses queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.write_buf.len()
    }

    /// Writes every queued response.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf).await?;
            self.write_buf.clear();
        }
        Ok(())
    }

    /// Waits for and reads more bytes. Returns `Ok(false)` when the peer closed the stream.
    pub(crate) async fn read_more(&mut self) -> io::Result<bool> {
        self.read_buf.reserve(READ_CHUNK);
        Ok(self.stream.read_buf(&mut self.read_buf).await? > 0)
    }

    /// Reads whatever the socket already holds, without waiting. Returns whether anything
    /// was read. Used at shutdown to answer requests the client sent before it.
    pub(crate) fn read_ready(&mut self) -> io::Result<bool> {
        self.read_buf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.read_buf) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a partial frame is buffered (meaningful once no complete frame is left).
    pub(crate) fn has_partial_frame(&self) -> bool {
        !self.read_buf.is_empty()
    }
}
