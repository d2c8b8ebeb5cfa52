//! One connection to a server, framed with the protocol crate's [`ClientCodec`].

use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use sessiond_proto::{ClientCodec, RequestFrame, ResponseFrame};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// The opaque of the request: each invocation sends one request on its own connection, so
/// any fixed value identifies it.
pub const OPAQUE: u32 = 1;

/// A connection that sends one request at a time and waits for its reply.
///
/// It does not send `HELLO`: the server assumes protocol version 1 without one, and a server
/// that cannot speak it answers `UNSUPPORTED_VERSION` with a message, which is reported like
/// any other error status. That saves a round trip per invocation.
pub struct Client {
    framed: Framed<TcpStream, ClientCodec>,
    addr: String,
    timeout: Duration,
}

impl Client {
    /// Connects to `addr` (HOST:PORT), giving up after `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<Client> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                anyhow::anyhow!("connecting to {addr}: timed out after {}", human(timeout))
            })?
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(Client {
            framed: Framed::new(stream, ClientCodec::new()),
            addr: addr.to_string(),
            timeout,
        })
    }

    /// Sends `request` and returns its reply, which is known to be addressed to it and not
    /// an error status.
    ///
    /// An error status is returned as an error whatever its opaque: the server sends `BUSY`
    /// unsolicited (opaque 0) when it is at its connection limit, and that is the answer.
    pub async fn call(&mut self, request: RequestFrame) -> anyhow::Result<ResponseFrame> {
        let (opcode, opaque) = (request.opcode, request.opaque);
        let exchange = async {
            let sent = self.framed.send(request).await;
            // A server at its connection limit answers BUSY and closes without reading, so
            // the write can fail while that answer waits to be read: read before blaming
            // the write.
            match self.framed.next().await {
                Some(reply) => reply.map(Some),
                None => sent.map(|()| None),
            }
        };
        let reply = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                anyhow::anyhow!("no reply from {} within {}", self.addr, human(self.timeout))
            })?
            .with_context(|| format!("talking to {}", self.addr))?;
        let Some(reply) = reply else {
            bail!("{} closed the connection without replying", self.addr);
        };
        if let Some(status) = reply.status().filter(|s| s.is_error()) {
            bail!("server answered {status}: {}", reply.message());
        }
        if (reply.opcode, reply.opaque) != (opcode, opaque) {
            bail!(
                "reply is for opcode 0x{:02x} opaque {}, not the request's 0x{opcode:02x} {opaque}",
                reply.opcode,
                reply.opaque
            );
        }
        Ok(reply)
    }
}

/// Formats a duration for a message: `5s`, not `5.000000000s`.
fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}
