//! Opening the byte stream a connection runs over: plain TCP, or TCP with TLS.
//!
//! [`Connector`] is public because `sessiond-cli` and `sessiond-bench` open their own
//! connections (one request per process; a load generator's own pipelining) but must verify
//! servers exactly as this client does: one place decides how a TLS connection is made.
//! Everything above it sees a [`Stream`], whichever it is.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::tls::TlsOptions;
use crate::Error;

/// How to open connections: plain TCP, or TLS with the given options.
#[derive(Clone, Debug, Default)]
pub struct Connector {
    tls: Option<TlsOptions>,
}

impl Connector {
    /// Plain TCP, or TLS when `tls` is given.
    pub fn new(tls: Option<TlsOptions>) -> Connector {
        Connector { tls }
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `addr` (`HOST:PORT`) and, with TLS, completes the handshake.
    ///
    /// A TCP failure is an [`Error::Connection`]; a certificate the options do not accept,
    /// or a server that does not speak TLS, an [`Error::Tls`].
    pub async fn connect(&self, addr: &str) -> Result<Stream, Error> {
        let shared: Arc<str> = Arc::from(addr);
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::connection(&shared, e))?;
        // Requests are small and latency-bound; writers batch on their own.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Either::Left(tcp));
        };
        let name = tls.name_for(addr)?;
        let stream = TlsConnector::from(tls.config())
            .connect(name, tcp)
            .await
            .map_err(|e| Error::from_io(&shared, e))?;
        Ok(Either::Right(Box::new(stream)))
    }
}

/// An open connection's bytes, in the clear (`Left`) or through TLS (`Right`; boxed, as a
/// TLS session is some hundreds of bytes of state). `Either` forwards reads and writes to
/// whichever it holds.
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;
