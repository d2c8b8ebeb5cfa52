//! [`Client`]: the typed commands, over a pool of multiplexed connections.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sessiond_proto::command::{
    Del, DelOutcome, Entry, Get, GetReply, Ping, PingReply, Set, SetMode, SetOutcome, Stats,
    StatsReply, Touch, TouchReply,
};
use sessiond_proto::command::{Slowlog, SlowlogEntry, SlowlogLen, SlowlogReply};
use sessiond_proto::{Limits, Request};

use crate::credentials::Credentials;
use crate::mux::Settings;
use crate::pool::Pool;
use crate::tls::TlsOptions;
use crate::transport::Connector;
use crate::Error;

/// A sessiond client: cheap to clone, and every clone shares the same connections.
///
/// Requests from any number of tasks are multiplexed over one connection (or a few, see
/// [`ClientBuilder::connections`]). A connection that fails is reopened by the next request,
/// with a backoff after failed attempts, so a client outlives server restarts. Every request
/// is bounded by the request timeout, waiting for a connection included.
///
/// ```no_run
/// use std::time::Duration;
/// use sessiond_client::{Client, SetMode};
///
/// # async fn demo() -> Result<(), sessiond_client::Error> {
/// let client = Client::connect("127.0.0.1:7878").await?;
/// let version = client
///     .set("session:abc", r#"{"user":"alice"}"#, Duration::from_secs(1800), SetMode::CreateOnly)
///     .await?;
/// let entry = client.get_and_touch("session:abc", Duration::from_secs(1800)).await?;
/// assert_eq!(entry.map(|e| e.version), Some(version));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.pool.addr())
            .field("connections", &self.pool.size())
            .finish()
    }
}

/// Options for a [`Client`]; start from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: String,
    settings: Settings,
    connections: usize,
}

impl ClientBuilder {
    /// Bound on opening a connection: the TCP connect plus the `HELLO` exchange. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Bound on each request, from the call until its reply, waiting for a connection
    /// included. Default 2 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// How many multiplexed connections to spread requests over (default 1). One connection
    /// carries any number of concurrent requests; more only help throughput on a busy
    /// server with several cores.
    pub fn connections(mut self, count: usize) -> Self {
        self.connections = count.max(1);
        self
    }

    /// After a failed connection attempt, the next one waits `min`, doubling per failure up
    /// to `max`. The first attempt after a connection is lost is immediate. Default 50 ms to
    /// 2 s.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.backoff_min = min;
        self.settings.backoff_max = max.max(min);
        self
    }

    /// The name sent in `HELLO`, which the server may log. Default `sessiond-client/VERSION`.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.settings.client_name = Bytes::from(name.into());
        self
    }

    /// Authenticates every connection as `user` with `password` (the native `AUTH`), the
    /// first and every reconnection. A server without users accepts any credentials, so
    /// they can be set before the server requires them.
    ///
    /// Wrong credentials make the request that opened the connection fail with
    /// [`Error::AuthFailed`]; a server that requires authentication from a client without
    /// credentials gives [`Error::AuthRequired`]. `Debug` output never shows the password.
    pub fn credentials(self, user: impl Into<String>, password: impl Into<Vec<u8>>) -> Self {
        self.with_credentials(Credentials::new(user, password))
    }

    /// Like [`ClientBuilder::credentials`], with credentials made beforehand (for example
    /// by [`Credentials::from_file_or_env`]).
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.settings.credentials = Some(credentials);
        self
    }

    /// Connects with TLS, verifying the server against `options` (and presenting a client
    /// certificate if they have one). The server must offer TLS on the address: sessiond's
    /// `server.tls_listen`.
    pub fn tls(mut self, options: TlsOptions) -> Self {
        self.settings.connector = Connector::new(Some(options));
        self
    }

    /// The client, without connecting: the first request opens the connection. Useful when
    /// the application may start before the server.
    pub fn build(self) -> Client {
        Client {
            pool: Arc::new(Pool::new(
                Arc::from(self.addr),
                self.settings,
                self.connections,
            )),
        }
    }

    /// The client, with every connection opened, so that a wrong address or a server that
    /// is down is reported now.
    pub async fn connect(self) -> Result<Client, Error> {
        let client = self.build();
        for mux in client.pool.all() {
            mux.ensure_connected().await?;
        }
        Ok(client)
    }
}

impl Client {
    /// Connects to `addr` (`HOST:PORT`) with the default options.
    pub async fn connect(addr: impl Into<String>) -> Result<Client, Error> {
        Client::builder(addr).connect().await
    }

    /// Options for a client of the server at `addr` (`HOST:PORT`; a host name is resolved
    /// again at every connection attempt).
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            addr: addr.into(),
            settings: Settings {
                connect_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(2),
                backoff_min: Duration::from_millis(50),
                backoff_max: Duration::from_secs(2),
                client_name: Bytes::from(concat!("sessiond-client/", env!("CARGO_PKG_VERSION"))),
                connector: Connector::default(),
                credentials: None,
            },
            connections: 1,
        }
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        self.pool.addr()
    }

    /// The server's limits (longest key, value and TTL), as reported by `HELLO` when the
    /// current connection was opened.
    pub async fn limits(&self) -> Result<Limits, Error> {
        self.pool.pick().limits().await
    }

    pub(crate) async fn call(
        &self,
        request: Request,
    ) -> Result<sessiond_proto::ResponseFrame, Error> {
        self.pool.pick().call(&request).await
    }

    /// `PING`: checks that the server answers.
    pub async fn ping(&self) -> Result<(), Error> {
        let payload = Bytes::from_static(b"sessiond-client");
        let reply = self
            .call(Request::Ping(Ping {
                payload: payload.clone(),
            }))
            .await?;
        let reply = PingReply::from_frame(&reply)?;
        if reply.payload != payload {
            return Err(Error::Protocol(
                "PING reply does not echo the payload".into(),
            ));
        }
        Ok(())
    }

    /// `GET`: the entry, or `None` if the key does not exist or has expired.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry>, Error> {
        self.get_with(key.as_ref(), None).await
    }

    /// `GET` with `TOUCH`: resets the TTL to `ttl` and returns the entry, in one round trip
    /// (sliding expiry). The version is unchanged by the touch.
    pub async fn get_and_touch(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Duration,
    ) -> Result<Option<Entry>, Error> {
        self.get_with(key.as_ref(), Some(ttl_ms(ttl)?)).await
    }

    async fn get_with(
        &self,
        key: &[u8],
        touch_ttl_ms: Option<u64>,
    ) -> Result<Option<Entry>, Error> {
        let reply = self
            .call(Request::Get(Get {
                key: checked_key(key)?,
                touch_ttl_ms,
            }))
            .await?;
        Ok(match GetReply::from_frame(&reply)? {
            GetReply::Hit(entry) => Some(entry),
            GetReply::Miss => None,
        })
    }

    /// `SET`: stores `value` under `key` for `ttl` and returns the entry's new version.
    ///
    /// The mode makes the write conditional: [`SetMode::CreateOnly`] fails with
    /// [`Error::Exists`] if the key exists; [`SetMode::UpdateOnly`] fails with
    /// [`Error::NotFound`] if it does not; [`SetMode::IfVersion`] fails with
    /// [`Error::VersionMismatch`] if someone wrote the key since that version was read, or
    /// [`Error::NotFound`] if it was deleted or expired.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use sessiond_client::{Client, Error, SetMode};
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// let ttl = Duration::from_secs(1800);
    /// let Some(entry) = client.get("session:abc").await? else { return Ok(()) };
    /// match client.set("session:abc", "new value", ttl, SetMode::IfVersion(entry.version)).await {
    ///     Ok(version) => println!("stored as version {version}"),
    ///     Err(Error::VersionMismatch { current }) => println!("lost a race with version {current}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ttl: Duration,
        mode: SetMode,
    ) -> Result<u64, Error> {
        let reply = self
            .call(Request::Set(Set {
                key: checked_key(key.as_ref())?,
                value: checked_value(value.as_ref(), 0)?,
                ttl_ms: ttl_ms(ttl)?,
                mode,
            }))
            .await?;
        match SetOutcome::from_frame(&reply)? {
            SetOutcome::Stored { version } => Ok(version),
            SetOutcome::Exists => Err(Error::Exists),
            SetOutcome::NotFound => Err(Error::NotFound),
            SetOutcome::VersionMismatch { current } => Err(Error::VersionMismatch { current }),
        }
    }

    /// `TOUCH`: resets the TTL of `key` to `ttl`, keeping its value and version, and returns
    /// the version. [`Error::NotFound`] if the key does not exist.
    pub async fn touch(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Result<u64, Error> {
        let reply = self
            .call(Request::Touch(Touch {
                key: checked_key(key.as_ref())?,
                ttl_ms: ttl_ms(ttl)?,
            }))
            .await?;
        match TouchReply::from_frame(&reply)? {
            TouchReply::Touched { version } => Ok(version),
            TouchReply::NotFound => Err(Error::NotFound),
        }
    }

    /// `DEL`: removes `key`; `true` if it existed.
    pub async fn del(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        match self.del_with(key.as_ref(), None).await? {
            DelOutcome::Deleted => Ok(true),
            DelOutcome::NotFound => Ok(false),
            DelOutcome::VersionMismatch { current } => Err(Error::Protocol(format!(
                "unconditional DEL answered VERSION_MISMATCH (version {current})"
            ))),
        }
    }

    /// `DEL` with `IF_VERSION`: removes `key` only if its version is `version`.
    /// [`Error::VersionMismatch`] if it has another, [`Error::NotFound`] if it is absent.
    pub async fn del_if_version(&self, key: impl AsRef<[u8]>, version: u64) -> Result<(), Error> {
        match self.del_with(key.as_ref(), Some(version)).await? {
            DelOutcome::Deleted => Ok(()),
            DelOutcome::NotFound => Err(Error::NotFound),
            DelOutcome::VersionMismatch { current } => Err(Error::VersionMismatch { current }),
        }
    }

    async fn del_with(&self, key: &[u8], if_version: Option<u64>) -> Result<DelOutcome, Error> {
        let reply = self
            .call(Request::Del(Del {
                key: checked_key(key)?,
                if_version,
            }))
            .await?;
        Ok(DelOutcome::from_frame(&reply)?)
    }

    /// `STATS`: the server's counters, as `name value` pairs.
    pub async fn stats(&self) -> Result<StatsReply, Error> {
        let reply = self.call(Request::Stats(Stats)).await?;
        Ok(StatsReply::from_frame(&reply)?)
    }

    /// `SLOWLOG GET`: the newest `count` entries of the server's slow-request log, newest
    /// first (fewer if it holds fewer). Needs the `monitor` or `admin` role on a server
    /// with users.
    pub async fn slowlog(&self, count: u32) -> Result<Vec<SlowlogEntry>, Error> {
        match self.slowlog_call(Slowlog::Get { count }).await? {
            SlowlogReply::Entries(entries) => Ok(entries),
            _ => Err(Error::Protocol(
                "SLOWLOG GET answered with another reply".into(),
            )),
        }
    }

    /// `SLOWLOG LEN`: how many entries the slow-request log holds, how many it keeps at
    /// most, its threshold, and how many requests it has recorded since the server started.
    pub async fn slowlog_len(&self) -> Result<SlowlogLen, Error> {
        match self.slowlog_call(Slowlog::Len).await? {
            SlowlogReply::Len(len) => Ok(len),
            _ => Err(Error::Protocol(
                "SLOWLOG LEN answered with another reply".into(),
            )),
        }
    }

    /// `SLOWLOG RESET`: empties the slow-request log. Needs the `admin` role on a server
    /// with users.
    pub async fn slowlog_reset(&self) -> Result<(), Error> {
        self.slowlog_call(Slowlog::Reset).await.map(drop)
    }

    async fn slowlog_call(&self, request: Slowlog) -> Result<SlowlogReply, Error> {
        let reply = self.call(Request::Slowlog(request)).await?;
        Ok(SlowlogReply::from_frame(&reply, &request)?)
    }
}

/// The key as frame bytes. Only what the frame cannot carry is refused here; the server
/// judges the rest (an empty key, a key over its own limit) and says why.
pub(crate) fn checked_key(key: &[u8]) -> Result<Bytes, Error> {
    if key.len() > Limits::HARD_MAX_KEY_LEN as usize {
        return Err(Error::InvalidArgument(format!(
            "a key of {} bytes exceeds the protocol's limit of {} bytes",
            key.len(),
            Limits::HARD_MAX_KEY_LEN
        )));
    }
    Ok(Bytes::copy_from_slice(key))
}

/// The value as frame bytes, with `beside` more bytes the frame's value carries with it
/// (`SET_SESSION` puts the owner there). Like [`checked_key`], only what the frame cannot
/// carry is refused here.
pub(crate) fn checked_value(value: &[u8], beside: usize) -> Result<Bytes, Error> {
    let limit = Limits::HARD_MAX_VALUE_LEN as usize;
    if value.len().saturating_add(beside) > limit {
        return Err(Error::InvalidArgument(format!(
            "a value of {} bytes exceeds the protocol's limit of {} bytes",
            value.len(),
            limit - beside.min(limit)
        )));
    }
    Ok(Bytes::copy_from_slice(value))
}

/// A TTL in whole milliseconds, rounded up so that a sub-millisecond TTL is not sent as 0.
pub(crate) fn ttl_ms(ttl: Duration) -> Result<u64, Error> {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return Err(Error::InvalidArgument("a TTL must be at least 1 ms".into()));
    }
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_ms(Duration::from_micros(1)).unwrap(), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)).unwrap(), 1500);
        assert_eq!(ttl_ms(Duration::from_micros(1500)).unwrap(), 2);
        assert_eq!(ttl_ms(Duration::MAX).unwrap(), u64::MAX);
        assert!(matches!(
            ttl_ms(Duration::ZERO),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn keys_the_frame_cannot_carry_are_refused() {
        assert!(checked_key(&[b'k'; 65535]).is_ok());
        assert!(matches!(
            checked_key(&[b'k'; 65536]),
            Err(Error::InvalidArgument(_))
        ));
    }
}
