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

use crate::cluster::Cluster;
use crate::credentials::Credentials;
use crate::id::owner_tag;
use crate::mux::Settings;
use crate::placement::Topology;
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
    inner: Inner,
    /// The key of [`Client::owner_tag`].
    tag_key: Arc<[u8]>,
}

/// One server, or many with placement (`cluster.rs`).
#[derive(Clone)]
enum Inner {
    Node(Arc<Pool>),
    Cluster(Arc<Cluster>),
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Node(pool) => f
                .debug_struct("Client")
                .field("addr", &pool.addr())
                .field("connections", &pool.size())
                .finish(),
            Inner::Cluster(cluster) => f
                .debug_struct("Client")
                .field("nodes", &cluster.description())
                .finish(),
        }
    }
}

/// Options for a [`Client`]; start from [`Client::builder`] or [`Client::cluster`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: String,
    settings: Settings,
    connections: usize,
    /// Set for a multi-node client.
    topology: Option<Topology>,
    previous: Option<Topology>,
    retry_interval: Duration,
    tag_key: Vec<u8>,
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

    /// A multi-node client: also reads keys from their node in `previous` until
    /// `sessiond-cli rebalance` has moved them (the migration window of docs/SCALING.md).
    pub fn previous_topology(mut self, previous: Topology) -> Self {
        self.previous = Some(previous);
        self
    }

    /// A multi-node client: how long requests for a node that failed fail at once with
    /// [`Error::Unavailable`] before the node is tried again. Default 1 s.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The secret the routing tags of owners are made with ([`Client::owner_tag`]). Every
    /// instance of an application must use the same one, and it must not change while
    /// sessions exist: it decides which node an owner's sessions live on. Without it the
    /// tag of an owner is computable by anyone (it still does not show the owner).
    pub fn owner_tag_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.tag_key = key.into();
        self
    }

    /// The client, without connecting: the first request opens the connection. Useful when
    /// the application may start before the server (or, for many nodes, while one is down).
    pub fn build(self) -> Client {
        let tag_key: Arc<[u8]> = Arc::from(self.tag_key.as_slice());
        let inner = match self.topology {
            None => Inner::Node(Arc::new(Pool::new(
                Arc::from(self.addr),
                self.settings,
                self.connections,
            ))),
            Some(topology) => {
                let (settings, connections) = (self.settings, self.connections);
                let one = |node: &crate::placement::Node| Client {
                    inner: Inner::Node(Arc::new(Pool::new(
                        Arc::from(node.addr()),
                        settings.clone(),
                        connections,
                    ))),
                    tag_key: tag_key.clone(),
                };
                let cluster = Cluster::new(topology, self.previous, self.retry_interval, one);
                Inner::Cluster(Arc::new(cluster))
            }
        };
        Client { inner, tag_key }
    }

    /// The client, with every connection opened, so that a wrong address or a server that
    /// is down is reported now.
    ///
    /// For many nodes, every node must answer; to start while one is down, use
    /// [`ClientBuilder::build`].
    pub async fn connect(self) -> Result<Client, Error> {
        let client = self.build();
        match &client.inner {
            Inner::Node(pool) => {
                for mux in pool.all() {
                    mux.ensure_connected().await?;
                }
            }
            Inner::Cluster(cluster) => {
                for (_, node) in cluster.nodes() {
                    node.limits().await?;
                }
            }
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
            topology: None,
            previous: None,
            retry_interval: Duration::from_secs(1),
            // Public, so a tag lets someone who guesses an owner check the guess; set a
            // secret with `ClientBuilder::owner_tag_key` to rule that out.
            tag_key: crate::id::PUBLIC_TAG_KEY.to_vec(),
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

    /// Options for a client of many sessiond nodes, each key on the node that `topology`
    /// places it on (see [`placement`](crate::placement) and docs/SCALING.md). Each node
    /// gets the connections, timeouts and credentials set on the builder.
    ///
    /// ```no_run
    /// use sessiond_client::placement::{Node, Topology};
    /// use sessiond_client::Client;
    ///
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let topology = Topology::new([
    ///     Node::new("sessiond-0", "sessiond-0.sessiond:7878")?,
    ///     Node::new("sessiond-1", "sessiond-1.sessiond:7878")?,
    /// ])?;
    /// let client = Client::cluster(topology).build();
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster(topology: Topology) -> ClientBuilder {
        let mut builder = Client::builder(String::new());
        builder.topology = Some(topology);
        builder
    }

    /// The server address; for many nodes, `name=addr` of each, comma-separated.
    pub fn addr(&self) -> &str {
        match &self.inner {
            Inner::Node(pool) => pool.addr(),
            Inner::Cluster(cluster) => cluster.description(),
        }
    }

    /// The topology of a multi-node client; `None` for a single server.
    pub fn topology(&self) -> Option<&Topology> {
        match &self.inner {
            Inner::Node(_) => None,
            Inner::Cluster(cluster) => Some(cluster.topology()),
        }
    }

    /// Each node of a multi-node client (of both topologies in a migration window) with a
    /// client of that node alone, for per-node commands (`STATS`, `SLOWLOG`); for a single
    /// server, none.
    pub fn nodes(&self) -> Vec<(crate::placement::Node, Client)> {
        match &self.inner {
            Inner::Node(_) => Vec::new(),
            Inner::Cluster(cluster) => cluster.nodes(),
        }
    }

    /// The routing tag of `owner`: 8 URL-safe characters of an HMAC of the owner, which
    /// the session layer puts in the ids of the owner's sessions so that they all live on
    /// one node (see [`placement`](crate::placement)). Never the owner itself: ids are
    /// bearer tokens that proxies may log.
    pub fn owner_tag(&self, owner: impl AsRef<[u8]>) -> String {
        owner_tag(&self.tag_key, owner.as_ref())
    }

    /// The multi-node client, if this is one.
    pub(crate) fn cluster_inner(&self) -> Option<&Cluster> {
        match &self.inner {
            Inner::Node(_) => None,
            Inner::Cluster(cluster) => Some(cluster),
        }
    }

    /// The server's limits (longest key, value and TTL), as reported by `HELLO` when the
    /// current connection was opened; for many nodes, those of the first that answers.
    pub async fn limits(&self) -> Result<Limits, Error> {
        match &self.inner {
            Inner::Node(pool) => pool.pick().limits().await,
            Inner::Cluster(cluster) => cluster.limits().await,
        }
    }

    // The `node_*` methods below are the single-server bodies of the public commands. The
    // multi-node client calls them on its per-node clients, never the public methods: a
    // public method may hand the request to the cluster, and a cluster future that
    // contained a public method's future would contain itself.

    /// [`Client::limits`] of a single-server client.
    pub(crate) async fn node_limits(&self) -> Result<Limits, Error> {
        match &self.inner {
            Inner::Node(pool) => pool.pick().limits().await,
            Inner::Cluster(_) => Err(not_a_node()),
        }
    }

    /// Sends a request that names no key to the single server. A multi-node client must
    /// route by key; the commands without one are refused there.
    pub(crate) async fn call(
        &self,
        request: Request,
    ) -> Result<sessiond_proto::ResponseFrame, Error> {
        match &self.inner {
            Inner::Node(pool) => pool.pick().call(&request).await,
            Inner::Cluster(_) => Err(Error::InvalidArgument(format!(
                "{:?} goes to one node: use Client::nodes() for a client of each",
                request.opcode()
            ))),
        }
    }

    /// `PING`: checks that the server answers (for many nodes, every node).
    pub async fn ping(&self) -> Result<(), Error> {
        match self.cluster_inner() {
            Some(cluster) => cluster.ping().await,
            None => self.node_ping().await,
        }
    }

    pub(crate) async fn node_ping(&self) -> Result<(), Error> {
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
        match self.cluster_inner() {
            Some(cluster) => cluster.get_with(key, touch_ttl_ms).await,
            None => self.node_get_with(key, touch_ttl_ms).await,
        }
    }

    pub(crate) async fn node_get_with(
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
        let (key, value) = (key.as_ref(), value.as_ref());
        match self.cluster_inner() {
            Some(cluster) => {
                let written = cluster.set(key, value, ttl, mode, None).await?;
                Ok(written.version)
            }
            None => self.node_set(key, value, ttl, mode).await,
        }
    }

    pub(crate) async fn node_set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
        mode: SetMode,
    ) -> Result<u64, Error> {
        let reply = self
            .call(Request::Set(Set {
                key: checked_key(key)?,
                value: checked_value(value, 0)?,
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
        match self.cluster_inner() {
            Some(cluster) => cluster.touch(key.as_ref(), ttl).await,
            None => self.node_touch(key.as_ref(), ttl).await,
        }
    }

    pub(crate) async fn node_touch(&self, key: &[u8], ttl: Duration) -> Result<u64, Error> {
        let reply = self
            .call(Request::Touch(Touch {
                key: checked_key(key)?,
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
        match self.cluster_inner() {
            Some(cluster) => cluster.del(key.as_ref()).await,
            None => self.node_del(key.as_ref()).await,
        }
    }

    pub(crate) async fn node_del(&self, key: &[u8]) -> Result<bool, Error> {
        match self.del_with(key, None).await? {
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
        match self.cluster_inner() {
            Some(cluster) => cluster.del_if_version(key.as_ref(), version).await,
            None => self.node_del_if_version(key.as_ref(), version).await,
        }
    }

    pub(crate) async fn node_del_if_version(&self, key: &[u8], version: u64) -> Result<(), Error> {
        match self.del_with(key, Some(version)).await? {
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

/// What a `node_*` method answers on a multi-node client: a bug in this crate, never
/// reached by the public API.
fn not_a_node() -> Error {
    Error::InvalidArgument("a per-node request was sent to a multi-node client".into())
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
