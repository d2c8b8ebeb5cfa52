//! One connection to a server, framed with the protocol crate's [`ClientCodec`], over TCP or
//! TLS as `sessiond-client` opens them.

use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use sessiond_client::transport::{Connector, Stream};
use sessiond_client::Credentials;
use sessiond_proto::{ClientCodec, Opcode, RequestFrame, ResponseFrame};
use tokio_util::codec::Framed;

/// The opaque of the request: each invocation sends one request on its own connection, so
/// any fixed value identifies it.
pub const OPAQUE: u32 = 1;

/// The opaque of the `AUTH` sent ahead of it.
const AUTH_OPAQUE: u32 = 2;

/// A connection that sends one request at a time and waits for its reply.
///
/// It does not send `HELLO`: the server assumes protocol version 1 without one, and a server
/// that cannot speak it answers `UNSUPPORTED_VERSION` with a message, which is reported like
/// any other error status. That saves a round trip per invocation. For the same reason an
/// `AUTH` goes out in the same write as the request.
pub struct Client {
    framed: Framed<Stream, ClientCodec>,
    addr: String,
    timeout: Duration,
}

impl Client {
    /// Connects to `addr` (HOST:PORT) through `connector` (plain or TLS), giving up after
    /// `timeout`.
    pub async fn connect(
        addr: &str,
        connector: &Connector,
        timeout: Duration,
    ) -> anyhow::Result<Client> {
        let stream = tokio::time::timeout(timeout, connector.connect(addr))
            .await
            .map_err(|_| {
                anyhow::anyhow!("connecting to {addr}: timed out after {}", human(timeout))
            })??;
        Ok(Client {
            framed: Framed::new(stream, ClientCodec::new()),
            addr: addr.to_string(),
            timeout,
        })
    }

    /// Sends `request`, preceded by an `AUTH` with `credentials` if there are any, and
    /// returns its reply, which is known to be addressed to it and not an error status.
    ///
    /// An error status is returned as an error whatever its opaque: the server sends `BUSY`
    /// unsolicited (opaque 0) when it is at its connection limit, and that is the answer.
    /// A refused `AUTH` is reported as such, before the request's own (then
    /// `AUTH_REQUIRED`) answer.
    pub async fn call(
        &mut self,
        credentials: Option<&Credentials>,
        request: RequestFrame,
    ) -> anyhow::Result<ResponseFrame> {
        let (opcode, opaque) = (request.opcode, request.opaque);
        let (addr, timeout) = (self.addr.clone(), self.timeout);
        let exchange = async {
            let mut sent = Ok(());
            if let Some(credentials) = credentials {
                sent = self
                    .framed
                    .feed(credentials.request().to_frame(AUTH_OPAQUE))
                    .await;
            }
            if sent.is_ok() {
                sent = self.framed.send(request).await;
            }
            if credentials.is_some() {
                let reply = self.next(&sent).await?;
                expect_reply(&reply, Opcode::Auth.into(), AUTH_OPAQUE)?;
            }
            let reply = self.next(&sent).await?;
            expect_reply(&reply, opcode, opaque)?;
            Ok(reply)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no reply from {addr} within {}", human(timeout)))?
    }

    /// The next reply. A server at its connection limit answers BUSY and closes without
    /// reading, so the write can fail while that answer waits to be read: read before
    /// blaming the write (`sent`).
    async fn next(
        &mut self,
        sent: &Result<(), sessiond_proto::FrameError>,
    ) -> anyhow::Result<ResponseFrame> {
        match self.framed.next().await {
            Some(reply) => reply.with_context(|| format!("talking to {}", self.addr)),
            None => match sent {
                Err(e) => bail!("talking to {}: {e}", self.addr),
                Ok(()) => bail!("{} closed the connection without replying", self.addr),
            },
        }
    }
}

/// Fails on an error status, or on a reply addressed to another request.
fn expect_reply(reply: &ResponseFrame, opcode: u8, opaque: u32) -> anyhow::Result<()> {
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
    Ok(())
}

/// Formats a duration for a message: `5s`, not `5.000000000s`.
fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}
