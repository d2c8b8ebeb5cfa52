//! Buffered byte I/O on one TCP connection, whatever protocol it speaks, in plain TCP or
//! TLS ([`Stream`]).
//!
//! Reading and writing are decoupled from processing so that responses can be batched: the
//! handler decodes every complete request that one read brought in (straight out of
//! [`Connection::read_buf`]), encodes each response into [`Connection::write_buf`], and
//! [`Connection::flush`] sends them all with one write. A client that pipelines 100
//! requests in one packet gets 100 responses in one packet.
//!
//! What a client can make a connection hold is bounded here: the read buffer grows only as
//! bytes arrive (decoders never reserve a length a header declares), both buffers shrink
//! back to [`READ_CHUNK`] after a large frame, and a flush that the client does not take
//! within the write timeout ends the connection, so a client that never reads cannot keep
//! its slot or its responses. Across connections, [`OutputBudget`] bounds what all those
//! waiting for their clients hold together.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{self, timeout_at, Instant};
use tokio_rustls::server::TlsStream;

use crate::memory::Charge;

mod output;

pub(crate) use output::{OutputBudget, OverBudget};

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Queued responses are written out once they reach this size, even mid-batch, so that a
/// few small requests for large values cannot make the server buffer without bound, and a
/// client that stops reading stops being read from.
pub(crate) const FLUSH_THRESHOLD: usize = 64 * 1024;

/// A buffer whose capacity has grown past this (for one large request or response) is
/// replaced with a fresh one of [`READ_CHUNK`] bytes once it is empty again, so that ten
/// thousand connections that each once sent a 1 MiB value do not keep ten gigabytes.
const SHRINK_ABOVE: usize = 4 * READ_CHUNK;

/// The error a flush fails with when the client did not take its responses within the
/// write timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client did not read its responses within the write timeout of {0:?}")]
pub(crate) struct WriteTimeout(pub(crate) Duration);

impl WriteTimeout {
    /// Whether `error` is a flush that timed out.
    pub(crate) fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<WriteTimeout>())
    }
}

/// How long, and for how many bytes, [`Connection::close_after_reply`] keeps reading; at
/// shutdown, [`Connection::close_at_shutdown`] stops once the client has been quiet this long.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1024 * 1024;

/// The socket under a connection: plain TCP, or TLS over TCP once the handshake is done.
///
/// An enum rather than a boxed trait object, so a plain connection pays one branch per read
/// or write and nothing more. The TLS stream is boxed because it carries rustls's buffers
/// (about a kilobyte of state), which would otherwise make every plain connection as big.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS; reads and writes are plaintext, rustls encrypts and decrypts.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket, under TLS if any.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    /// For TLS: sends close_notify, then half-closes the TCP connection, so the client
    /// learns that the server has finished sending (as from FIN on a plain socket) while it
    /// may still send, and its input is still read.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

/// A stream with its read and write buffers.
pub(crate) struct Connection {
    stream: Stream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Whether the read buffer has grown past [`SHRINK_ABOVE`] since it was last shrunk.
    /// Tracked rather than read from its capacity, which falls as requests are split off
    /// the front while their allocation lives on.
    read_grown: bool,
    /// How long one flush may wait for the client to take its responses.
    write_timeout: Option<Duration>,
    /// What a flush that has to wait counts against, with every other connection's.
    output: Arc<OutputBudget>,
    /// Both buffers' capacity, counted in the server's memory accounting. Updated where a
    /// buffer is allocated or given back (a read's reserve, a flush, a shrink), which leaves
    /// it unchanged on the common path: no shared counter is touched per request.
    charge: Charge,
}

impl Connection {
    pub(crate) fn new(
        stream: Stream,
        write_timeout: Option<Duration>,
        output: Arc<OutputBudget>,
        charge: Charge,
    ) -> Connection {
        Connection {
            stream,
            // Both start empty: an idle connection (or one that has sent half a header) should
            // cost its socket and task, not two buffers it is not using.
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            read_grown: false,
            write_timeout,
            output,
            charge,
        }
    }

    /// Counts the buffers' current capacity.
    fn recount(&mut self) {
        self.charge
            .set(self.read_buf.capacity() + self.write_buf.capacity());
    }

    /// Bytes read and not yet consumed by the protocol's decoder.
    pub(crate) fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Encoded responses waiting for the next [`Connection::flush`]; append to it to queue one.
    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Bytes of responses queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.write_buf.len()
    }

    /// Writes every queued response. Fails with [`WriteTimeout`] if the client does not
    /// take them within the write timeout, or with [`OverBudget`] if the connections that
    /// wait for their clients hold too much together and this one is among those holding
    /// the most: the connection must then be dropped.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        // Plain TCP first tries one non-blocking write, which is all that most flushes take:
        // the kernel's socket buffer has room. That skips the future machinery below, paid
        // once per unpipelined request; a socket that is not ready, or takes only part of
        // the batch, goes on through it from where this write stopped. (Not by advancing the
        // buffer: that would hide its allocation from `capacity()`, which the memory count,
        // the output budget and the shrink below all go by.)
        let mut written = 0;
        if let Stream::Plain(tcp) = &self.stream {
            match tcp.try_write(&self.write_buf) {
                Ok(n) if n == self.write_buf.len() => {
                    self.flushed();
                    return Ok(());
                }
                Ok(n) => written = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let Connection {
            stream,
            read_buf,
            write_buf,
            write_timeout,
            output,
            ..
        } = self;
        let write = async {
            stream.write_all(&write_buf[written..]).await?;
            // tokio-rustls encrypts into rustls's buffer and writes it out as it goes, but
            // may keep the last record until flushed; for plain TCP this is a no-op.
            stream.flush().await
        };
        tokio::pin!(write);
        // One poll first: most flushes complete in it, and only one that has to wait for the
        // client is counted against the budget (which takes a lock).
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        match first {
            Poll::Ready(written) => written?,
            Poll::Pending => {
                let mut wait = output.wait(read_buf.capacity() + write_buf.capacity());
                let written = async {
                    match *write_timeout {
                        None => write.await,
                        Some(limit) => match time::timeout(limit, write).await {
                            Ok(written) => written,
                            Err(_) => {
                                Err(io::Error::new(io::ErrorKind::TimedOut, WriteTimeout(limit)))
                            }
                        },
                    }
                };
                tokio::select! {
                    written = written => written?,
                    () = wait.cut() => {
                        let budget = output.limit();
                        return Err(io::Error::other(OverBudget(budget)));
                    }
                }
            }
        }
        self.flushed();
        Ok(())
    }

    /// Empties the write buffer once everything in it has been written, shrinking it if a
    /// large batch made it grow.
    fn flushed(&mut self) {
        self.write_buf.clear();
        if self.write_buf.capacity() > SHRINK_ABOVE {
            self.write_buf = BytesMut::with_capacity(READ_CHUNK);
        }
        self.recount();
    }

    /// Waits for and reads more bytes. Returns `Ok(false)` when the peer closed the stream.
    pub(crate) async fn read_more(&mut self) -> io::Result<bool> {
        if self.read_buf.capacity() == 0 {
            // Wait until there is something to read before taking a buffer to read it into.
            // TLS has no readiness of its own (a readable socket may hold half a record), so
            // it takes its buffer at once.
            if let Stream::Plain(tcp) = &self.stream {
                tcp.readable().await?;
            }
        }
        self.read_buf.reserve(READ_CHUNK);
        self.read_grown |= self.read_buf.capacity() > SHRINK_ABOVE;
        self.recount();
        Ok(self.stream.read_buf(&mut self.read_buf).await? > 0)
    }

    /// Gives a read buffer that grew for a large request back to the allocator once little
    /// of it is in use, keeping what is buffered. Called between batches, not per request:
    /// a connection that keeps sending large values keeps its large buffer.
    pub(crate) fn shrink(&mut self) {
        if self.read_grown && self.read_buf.len() <= READ_CHUNK {
            let mut fresh = BytesMut::with_capacity(READ_CHUNK);
            fresh.extend_from_slice(&self.read_buf);
            self.read_buf = fresh;
            self.read_grown = false;
            self.recount();
        }
    }

    /// Bytes that have arrived on the socket and are not read yet: what the client had
    /// delivered (and our TCP stack acknowledged) by now. Shutdown answers the requests
    /// among them and no others, so a client that keeps pipelining cannot hold the
    /// server past the moment it learnt of the shutdown.
    ///
    /// Over TLS this counts the encrypted bytes in the socket plus the plaintext rustls has
    /// already decrypted and not handed out; since each encrypted record is a little larger
    /// than its plaintext, the bound is a few bytes per record generous, never short.
    pub(crate) fn arrived(&mut self) -> io::Result<usize> {
        let in_socket = rustix::io::ioctl_fionread(self.stream.tcp())?;
        let in_socket = usize::try_from(in_socket).unwrap_or(usize::MAX);
        let decrypted = match &mut self.stream {
            Stream::Plain(_) => 0,
            // Processing what rustls has buffered is what its next read would do first; an
            // error here (a bad record) will be reported by that read.
            Stream::Tls(tls) => tls
                .get_mut()
                .1
                .process_new_packets()
                .map_or(0, |state| state.plaintext_bytes_to_read()),
        };
        Ok(in_socket.saturating_add(decrypted))
    }

    /// Reads at most `limit` bytes of what the socket already holds, without waiting.
    /// Returns how many were read: 0 if none were available or the peer closed.
    pub(crate) fn read_arrived(&mut self, limit: usize) -> io::Result<usize> {
        let start = self.read_buf.len();
        self.read_buf.resize(start + limit.min(READ_CHUNK), 0);
        let read = match &mut self.stream {
            Stream::Plain(tcp) => tcp.try_read(&mut self.read_buf[start..]),
            // A TLS stream has no `try_read`: poll it once with a waker that does nothing.
            // Pending means nothing decryptable has arrived, which is what `try_read`'s
            // WouldBlock says; the next real read registers the task's own waker again.
            Stream::Tls(tls) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut buf = ReadBuf::new(&mut self.read_buf[start..]);
                match Pin::new(tls).poll_read(&mut cx, &mut buf) {
                    Poll::Ready(Ok(())) => Ok(buf.filled().len()),
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                self.read_buf.truncate(start);
                return Err(e);
            }
        };
        self.read_buf.truncate(start + n);
        Ok(n)
    }

    /// Closes the connection so that the last reply survives: sends FIN (after a TLS
    /// close_notify on a TLS connection), then reads and
    /// throws away what the client is still sending, until it closes its side or a short
    /// bound is reached. Closing a socket that has unread data makes the kernel send a reset
    /// instead, and a reset can destroy a reply the client has not read yet, such as the
    /// error that explains why the connection is being closed.
    pub(crate) async fn close_after_reply(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match self.discard(deadline).await {
                Some(n) => drained += n,
                None => return,
            }
        }
    }

    /// Like [`Connection::close_after_reply`], for shutdown. The client may still be
    /// reading megabytes of responses and pipelining requests all the while, so input is
    /// thrown away without a byte bound, until the client closes, sends nothing for
    /// [`LINGER_TIME`] (it has stopped writing, so closing cannot destroy anything it has
    /// yet to read), or `deadline` (the shutdown timeout) passes.
    pub(crate) async fn close_at_shutdown(&mut self, deadline: Instant) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        loop {
            let quiet = (Instant::now() + LINGER_TIME).min(deadline);
            if self.discard(quiet).await.is_none() {
                return;
            }
        }
    }

    /// Reads and throws away one chunk of input: how many bytes, or `None` if the peer
    /// closed, the read failed, or nothing arrived before `deadline`.
    async fn discard(&mut self, deadline: Instant) -> Option<usize> {
        self.read_buf.clear();
        self.read_buf.reserve(READ_CHUNK);
        match timeout_at(deadline, self.stream.read_buf(&mut self.read_buf)).await {
            Ok(Ok(n)) if n > 0 => Some(n),
            _ => None,
        }
    }

    /// Whether a partial request is buffered (meaningful once no complete one is left).
    pub(crate) fn has_partial_frame(&self) -> bool {
        !self.read_buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::memory::{Accounting, Part};

    /// A connected pair of plain TCP sockets: (server side, client side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    /// A flush whose first non-blocking write takes all but a little of a large batch (the
    /// client is not reading yet) still ends with the large buffer given back and counted
    /// as such. The memory count and the shrink go by the buffer's capacity, which writing
    /// from a moved start would hide: what is left after the first write would look like a
    /// small buffer, and the large allocation would stay behind it.
    #[tokio::test]
    async fn a_large_flush_written_in_parts_gives_its_buffer_back() {
        // How much a fresh connection's socket buffers take before the client reads.
        let (probe, _client) = pair().await;
        let absorbed = probe.try_write(&vec![0; 64 * 1024 * 1024]).unwrap();

        let (server, client) = pair().await;
        let memory = Arc::new(Accounting::unlimited());
        let mut connection = Connection::new(
            Stream::Plain(server),
            None,
            OutputBudget::new(0),
            memory.charge(Part::Connections),
        );
        let batch = absorbed + 1000;
        connection.write_buf().resize(batch, 7);
        let allocation = connection.write_buf().as_ptr() as usize;
        let reader = tokio::spawn(async move {
            let mut client = client;
            // Let the flush find the socket full first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut received = vec![0; batch];
            client.read_exact(&mut received).await.unwrap();
            received.iter().all(|&b| b == 7)
        });
        connection.flush().await.unwrap();
        assert!(reader.await.unwrap(), "every byte arrived once");
        assert_eq!(connection.queued(), 0);
        let now_at = connection.write_buf().as_ptr() as usize;
        assert!(
            !(allocation..allocation + batch).contains(&now_at),
            "the batch's allocation was kept"
        );
        assert!(connection.write_buf().capacity() <= READ_CHUNK);
        assert!(memory.used_by(Part::Connections) <= READ_CHUNK as u64);
    }
}
