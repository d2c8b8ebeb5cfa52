//! Opening one connection of a run: TCP or TLS (through `sessiond-client`'s connector, so
//! servers are verified as the library verifies them), then the target's `AUTH` when the run
//! has credentials. All of it happens before the measurement starts.

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use sessiond_client::transport::Stream;
use sessiond_client::Credentials;
use sessiond_proto::command::AuthReply;
use sessiond_proto::ClientCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::config::Config;
use crate::protocol::{line, put_resp_command, Target};

/// Why a connection could not be opened or authenticated.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP or TLS failed.
    #[error(transparent)]
    Connect(#[from] sessiond_client::Error),
    /// The server refused the credentials, or answered something else.
    #[error("AUTH: {0}")]
    Auth(String),
}

/// Opens a connection to `addr` (the run's server, or one of its nodes), authenticated if
/// the run has credentials.
pub async fn open(config: &Config, addr: &str) -> Result<Stream, ConnectError> {
    let mut stream = config.connector.connect(addr).await?;
    if let Some(credentials) = &config.credentials {
        match config.target {
            Target::Native => native_auth(&mut stream, credentials).await?,
            Target::Resp => resp_auth(&mut stream, credentials).await?,
            // Refused when the flags were read.
            Target::Memcached => {}
        }
    }
    Ok(stream)
}

/// The native `AUTH`, through the protocol crate's types.
async fn native_auth(stream: &mut Stream, credentials: &Credentials) -> Result<(), ConnectError> {
    // The server sends nothing but the reply, so the codec's buffer holds nothing more when
    // it is dropped.
    let mut framed = Framed::new(stream, ClientCodec::new());
    let auth = |e: &dyn std::fmt::Display| ConnectError::Auth(e.to_string());
    framed
        .send(credentials.request().to_frame(1))
        .await
        .map_err(|e| auth(&e))?;
    let reply = framed
        .next()
        .await
        .ok_or_else(|| ConnectError::Auth("the server closed the connection".into()))?
        .map_err(|e| auth(&e))?;
    AuthReply::from_frame(&reply).map_err(|e| auth(&e))?;
    Ok(())
}

/// RESP `AUTH user password`; the answer is a single line (`+OK` or an error).
async fn resp_auth(stream: &mut Stream, credentials: &Credentials) -> Result<(), ConnectError> {
    let request = credentials.request();
    let mut buf = BytesMut::new();
    put_resp_command(
        &mut buf,
        &[b"AUTH", request.user.as_bytes(), &request.password],
    );
    let io = |e: std::io::Error| ConnectError::Auth(e.to_string());
    stream.write_all(&buf).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut reply = BytesMut::new();
    loop {
        if let Some(line) = line(&reply) {
            return match line {
                b"+OK" => Ok(()),
                other => Err(ConnectError::Auth(
                    String::from_utf8_lossy(other).into_owned(),
                )),
            };
        }
        if stream.read_buf(&mut reply).await.map_err(io)? == 0 {
            return Err(ConnectError::Auth(
                "the server closed the connection".into(),
            ));
        }
    }
}
