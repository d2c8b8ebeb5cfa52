//! Opening a connection: the byte stream (TCP or TLS), `HELLO`, and `AUTH` when the client
//! has credentials. Every connection a client opens, the first and every reconnection,
//! goes through here, so a reconnected client is authenticated exactly like a new one.

use futures_util::{SinkExt, StreamExt};
use sessiond_proto::command::{AuthReply, Hello, HelloReply};
use sessiond_proto::{ClientCodec, Limits, Opcode, ResponseFrame, PROTOCOL_VERSION};
use tokio_util::codec::Framed;

use crate::mux::Settings;
use crate::transport::Stream;
use crate::Error;

/// The opaque of the `HELLO` that opens every connection.
pub(crate) const HELLO_OPAQUE: u32 = 1;

/// The opaque of the `AUTH` that follows it; requests count up from the next.
pub(crate) const AUTH_OPAQUE: u32 = 2;

/// A connection ready for requests, and the server's limits.
pub(crate) type Opened = (Framed<Stream, ClientCodec>, Limits);

/// Connects to `addr` and exchanges `HELLO` (and `AUTH`), within the connect timeout.
pub(crate) async fn open(addr: &std::sync::Arc<str>, settings: &Settings) -> Result<Opened, Error> {
    let handshake = async {
        let stream = settings.connector.connect(addr).await?;
        greet(Framed::new(stream, ClientCodec::new()), addr, settings).await
    };
    match tokio::time::timeout(settings.connect_timeout, handshake).await {
        Ok(result) => result,
        Err(_) => Err(Error::connection(
            addr,
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection and HELLO reply within {:?}",
                    settings.connect_timeout
                ),
            ),
        )),
    }
}

/// `HELLO`, and with credentials `AUTH` in the same write: a reconnection costs one round
/// trip whether or not the client authenticates.
async fn greet(
    mut framed: Framed<Stream, ClientCodec>,
    addr: &std::sync::Arc<str>,
    settings: &Settings,
) -> Result<Opened, Error> {
    let hello = Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        client_name: settings.client_name.clone(),
    };
    let mut sent = framed.feed(hello.to_frame(HELLO_OPAQUE)).await;
    if let (Ok(()), Some(credentials)) = (&sent, &settings.credentials) {
        sent = framed
            .feed(credentials.request().to_frame(AUTH_OPAQUE))
            .await;
    }
    if sent.is_ok() {
        sent = SinkExt::<sessiond_proto::RequestFrame>::flush(&mut framed).await;
    }
    // A server at its connection limit answers BUSY and closes without reading, so the write
    // can fail while that answer waits to be read: read before blaming the write.
    let reply = next_reply(&mut framed, addr, sent).await?;
    // Error statuses first: a server at its connection limit answers with an unsolicited
    // BUSY frame instead of a HELLO reply.
    let hello = HelloReply::from_frame(&reply)?;
    expect_addressed(&reply, Opcode::Hello, HELLO_OPAQUE)?;
    // Limits that break the protocol's own bounds (a zero TTL maximum, say) would make every
    // later computation with them wrong: refuse the server instead.
    hello
        .limits
        .validate()
        .map_err(|e| Error::Protocol(format!("HELLO reports impossible limits: {e}")))?;
    if hello.version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "the server chose protocol version {}, which was not offered",
            hello.version
        )));
    }
    if settings.credentials.is_some() {
        let reply = next_reply(&mut framed, addr, Ok(())).await?;
        AuthReply::from_frame(&reply)?;
        expect_addressed(&reply, Opcode::Auth, AUTH_OPAQUE)?;
    } else if hello.auth_required() {
        // Said here, once, rather than by every request answering AUTH_REQUIRED.
        return Err(Error::AuthRequired(format!(
            "{addr} requires AUTH and the client has no credentials"
        )));
    }
    Ok((framed, hello.limits))
}

/// The next frame, or why there is none (`sent` is how the write went).
async fn next_reply(
    framed: &mut Framed<Stream, ClientCodec>,
    addr: &std::sync::Arc<str>,
    sent: Result<(), sessiond_proto::FrameError>,
) -> Result<ResponseFrame, Error> {
    match (framed.next().await, sent) {
        (Some(Ok(reply)), _) => Ok(reply),
        (_, Err(e)) | (Some(Err(e)), Ok(())) => Err(Error::from_frame(addr, e)),
        (None, Ok(())) => Err(Error::closed(
            addr,
            "the server closed the connection during the handshake",
        )),
    }
}

fn expect_addressed(reply: &ResponseFrame, opcode: Opcode, opaque: u32) -> Result<(), Error> {
    if (reply.opcode, reply.opaque) != (opcode.into(), opaque) {
        return Err(Error::Protocol(format!(
            "{opcode:?} answered with opcode 0x{:02x} opaque {}",
            reply.opcode, reply.opaque
        )));
    }
    Ok(())
}
