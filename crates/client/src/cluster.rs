//! The multi-node client: one single-node [`Client`] per node, a circuit breaker per node,
//! and the routing of each command to the node [`placement`](crate::placement) names.
//!
//! # Fail closed
//!
//! A key lives on exactly one node, and a request for it goes only there. When that node
//! fails (its connection is refused or lost, or a request times out), its breaker opens:
//! for the next `retry_interval` every request for its keys fails at once with
//! [`Error::Unavailable`], without touching the network, so an application does not pay a
//! timeout per request while a node is down. The first request after the interval tries
//! the node again and closes the breaker if it answers. Keys are never sent to another node
//! on failure: that node does not have them, and a session written there would come back
//! stale (or deleted ones come back) when the first node returns.
//!
//! # Migration window
//!
//! A client built with [`ClientBuilder::previous_topology`] is in a migration window: keys
//! whose node differs between the two topologies may still be on their old node, until
//! `sessiond-cli rebalance` has moved them (create-only at the new node, then delete at the
//! version read from the old one). While it runs, the old node is authoritative for a key
//! it still holds:
//!
//! - reads try the old node first and the new one on a miss. The rebalancer creates at the
//!   new node before it deletes at the old one, so a key missing from the old node is
//!   already on the new one (or is really gone): no read misses a session being moved;
//! - conditional writes and touches go to the old node, and to the new one when the old
//!   says "not found". A write whose version was read from the old node before the key
//!   moved finds another version at the new node: a version conflict, which the session
//!   layer answers by loading again, never a lost update;
//! - create-only writes check that the old node does not hold the key; upserts update the
//!   old node if it holds the key and write to the new one otherwise (never creating a key
//!   on a node it is leaving); deletes go to both;
//! - an owner's sessions are listed and ended on both of the owner's nodes.
//!
//! A key found missing on its old node and present on its new one is remembered (a
//! bounded number of them): its old node is not asked again, so a moved session costs one
//! round trip (`moved.rs` says why that is safe).
//!
//! Once the rebalancer reports nothing left to move, drop the previous topology.

mod moved;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sessiond_proto::command::{Entry, SessionList, SetMode};
use sessiond_proto::Limits;

use crate::placement::{Node, Topology};
use crate::{Client, Error, SessionOptions, SessionWrite};
use moved::MovedKeys;

/// One node: its client and its breaker.
pub(crate) struct Member {
    node: Node,
    client: Client,
    breaker: Breaker,
}

/// A node's circuit breaker: closed (requests go through) or open until an instant.
///
/// There is no half-open state admitting a single probe: once the interval has passed,
/// requests go through again, and the node's connection (one attempt at a time, with its
/// own backoff: `mux.rs`) is what limits how hard a still-dead node is tried. A probe slot
/// would also need undoing when the probing request is cancelled.
struct Breaker {
    retry_interval: Duration,
    /// Mirrors `open.is_some()`, so that a request to a healthy node costs one atomic load
    /// rather than a lock (and a clock read).
    tripped: AtomicBool,
    /// When the node may be tried again, and the failure that opened the breaker.
    open: Mutex<Option<(Instant, Error)>>,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Error)>> {
        // Nothing panics under this lock; a poisoned one still holds a valid state.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Member {
    /// Runs `request` on this node unless its breaker is open; a failure to reach the node
    /// opens it.
    async fn run<'a, T, F>(&'a self, request: impl FnOnce(&'a Client) -> F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let breaker = &self.breaker;
        if breaker.tripped.load(Ordering::Acquire) {
            let now = Instant::now();
            if let Some((until, cause)) = breaker.lock().as_ref() {
                if now < *until {
                    return Err(self.unavailable(cause.clone(), *until - now));
                }
            }
        }
        match request(&self.client).await {
            Err(e) if trips(&e) => {
                let retry_in = breaker.retry_interval;
                *breaker.lock() = Some((Instant::now() + retry_in, e.clone()));
                breaker.tripped.store(true, Ordering::Release);
                Err(self.unavailable(e, retry_in))
            }
            out => {
                // Any answer, even an error status, shows the node is up.
                if breaker.tripped.load(Ordering::Acquire) {
                    *breaker.lock() = None;
                    breaker.tripped.store(false, Ordering::Release);
                }
                out
            }
        }
    }

    fn unavailable(&self, cause: Error, retry_in: Duration) -> Error {
        Error::Unavailable {
            node: Arc::from(self.node.name()),
            cause: Arc::new(cause),
            retry_in,
        }
    }
}

/// Whether `e` shows the node cannot be reached, as opposed to an answer from it.
fn trips(e: &Error) -> bool {
    matches!(e, Error::Connection { .. } | Error::Timeout { .. })
}

/// The nodes of a multi-node client and how keys map to them.
pub(crate) struct Cluster {
    topology: Topology,
    previous: Option<Topology>,
    /// Every node of either topology, by name (the current topology's address wins).
    members: Vec<Member>,
    /// Position in `members` of each node of `topology`, in its order.
    current_members: Vec<usize>,
    /// Likewise for `previous`.
    previous_members: Vec<usize>,
    /// `name=addr,...` of the current topology, for `Client::addr` and `Debug`.
    description: String,
    /// In a migration window, the keys found moved.
    moved: Option<MovedKeys>,
}

/// Where a key may be: its node now, and its node in the previous topology if different.
#[derive(Clone, Copy)]
struct Homes<'a> {
    old: Option<&'a Member>,
    new: &'a Member,
}

impl Cluster {
    /// A cluster over `topology` (and `previous`, in a migration window), with one client
    /// per node made by `client_for`.
    pub(crate) fn new(
        topology: Topology,
        previous: Option<Topology>,
        retry_interval: Duration,
        client_for: impl Fn(&Node) -> Client,
    ) -> Cluster {
        let mut members: Vec<Member> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let all = topology
            .nodes()
            .iter()
            .chain(previous.iter().flat_map(Topology::nodes));
        for node in all {
            if by_name.contains_key(node.name()) {
                continue;
            }
            by_name.insert(node.name().to_string(), members.len());
            members.push(Member {
                node: node.clone(),
                client: client_for(node),
                breaker: Breaker {
                    retry_interval,
                    tripped: AtomicBool::new(false),
                    open: Mutex::new(None),
                },
            });
        }
        let positions = |t: &Topology| -> Vec<usize> {
            t.nodes()
                .iter()
                .map(|n| by_name.get(n.name()).copied().unwrap_or_default())
                .collect()
        };
        let current_members = positions(&topology);
        let previous_members = previous.as_ref().map(positions).unwrap_or_default();
        let description = topology
            .nodes()
            .iter()
            .map(|n| format!("{}={}", n.name(), n.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let moved = previous.as_ref().map(|_| MovedKeys::new(moved::CAPACITY));
        Cluster {
            moved,
            topology,
            previous,
            members,
            current_members,
            previous_members,
            description,
        }
    }

    pub(crate) fn description(&self) -> &str {
        &self.description
    }

    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Every node, with a single-node client for it (for per-node commands such as
    /// `STATS`).
    pub(crate) fn nodes(&self) -> Vec<(Node, Client)> {
        self.members
            .iter()
            .map(|m| (m.node.clone(), m.client.clone()))
            .collect()
    }

    fn homes(&self, routing_key: &[u8]) -> Homes<'_> {
        let new = &self.members[self.current_members[self.topology.index_for(routing_key)]];
        let old = self.previous.as_ref().and_then(|previous| {
            let old = &self.members[self.previous_members[previous.index_for(routing_key)]];
            (old.node.name() != new.node.name()).then_some(old)
        });
        Homes { old, new }
    }

    fn homes_of_key(&self, key: &[u8]) -> Homes<'_> {
        self.homes(crate::placement::routing_key(key))
    }

    /// Where a request for `key` goes: [`Cluster::homes_of_key`], without the old node
    /// once the key was found moved.
    fn homes_to_ask(&self, key: &[u8]) -> Homes<'_> {
        let mut homes = self.homes_of_key(key);
        if homes.old.is_some() && self.moved.as_ref().is_some_and(|m| m.contains(key)) {
            homes.old = None;
        }
        homes
    }

    /// Records that `key`'s old node lacked it and its new node has it.
    fn found_moved(&self, key: &[u8]) {
        if let Some(moved) = &self.moved {
            moved.insert(key);
        }
    }

    /// The limits of the first node that answers (every node should run the same
    /// configuration): a node that is down must not fail requests for the others.
    pub(crate) async fn limits(&self) -> Result<Limits, Error> {
        let mut last = None;
        for &i in &self.current_members {
            match self.members[i]
                .run(|c| async move { c.node_limits().await })
                .await
            {
                Ok(limits) => return Ok(limits),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgument("no nodes".into())))
    }

    /// `PING` on every node of the current topology: fails with the first node's error.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        for &i in &self.current_members {
            self.members[i]
                .run(|c| async move { c.node_ping().await })
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn get_with(
        &self,
        key: &[u8],
        touch_ttl_ms: Option<u64>,
    ) -> Result<Option<Entry>, Error> {
        let homes = self.homes_to_ask(key);
        let read =
            on_member(|m| m.run(|c| async move { c.node_get_with(key, touch_ttl_ms).await }));
        let Some(old) = homes.old else {
            return read(homes.new).await;
        };
        if let Some(entry) = read(old).await? {
            return Ok(Some(entry));
        }
        let found = read(homes.new).await?;
        if found.is_some() {
            self.found_moved(key);
        }
        Ok(found)
    }

    pub(crate) async fn set<'a>(
        &'a self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
        mode: SetMode,
        options: Option<&SessionOptions>,
    ) -> Result<SessionWrite, Error> {
        let homes = self.homes_to_ask(key);
        let write = |m: &'a Member, mode| {
            m.run(move |c| async move {
                match options {
                    Some(options) => c.node_set_session(key, value, ttl, mode, options).await,
                    None => c
                        .node_set(key, value, ttl, mode)
                        .await
                        .map(|version| SessionWrite { version, ended: 0 }),
                }
            })
        };
        let Some(old) = homes.old else {
            return write(homes.new, mode).await;
        };
        match mode {
            SetMode::CreateOnly => {
                if old
                    .run(|c| async move { c.node_get_with(key, None).await })
                    .await?
                    .is_some()
                {
                    return Err(Error::Exists);
                }
                let written = write(homes.new, mode).await?;
                self.found_moved(key);
                Ok(written)
            }
            // An upsert lands on the old node only if that node still holds the key (it is
            // then authoritative, and the rebalancer moves the new value). Created there
            // instead, the entry would be one the rebalancer may already have passed, lost
            // once the previous topology is dropped.
            SetMode::Upsert => match write(old, SetMode::UpdateOnly).await {
                Err(Error::NotFound) => self.on_new(key, write(homes.new, mode).await),
                out => out,
            },
            SetMode::UpdateOnly | SetMode::IfVersion(_) => match write(old, mode).await {
                Err(Error::NotFound) => self.on_new(key, write(homes.new, mode).await),
                out => out,
            },
        }
    }

    pub(crate) async fn touch(&self, key: &[u8], ttl: Duration) -> Result<u64, Error> {
        let homes = self.homes_to_ask(key);
        let touch = on_member(|m| m.run(|c| async move { c.node_touch(key, ttl).await }));
        self.old_then_new(key, homes, touch).await
    }

    pub(crate) async fn del(&self, key: &[u8]) -> Result<bool, Error> {
        let homes = self.homes_to_ask(key);
        let del = on_member(|m| m.run(|c| async move { c.node_del(key).await }));
        let mut existed = false;
        if let Some(old) = homes.old {
            existed |= del(old).await?;
        }
        Ok(del(homes.new).await? || existed)
    }

    pub(crate) async fn del_if_version(&self, key: &[u8], version: u64) -> Result<(), Error> {
        let homes = self.homes_to_ask(key);
        let del =
            on_member(|m| m.run(|c| async move { c.node_del_if_version(key, version).await }));
        self.old_then_new(key, homes, del).await
    }

    pub(crate) async fn sessions_of(&self, owner: &[u8], tag: &str) -> Result<SessionList, Error> {
        let homes = self.homes(tag.as_bytes());
        let list = on_member(|m| m.run(|c| async move { c.node_sessions_of(owner).await }));
        let mut merged = list(homes.new).await?;
        if let Some(old) = homes.old {
            let more = list(old).await?;
            merged.total += more.total;
            for info in more.sessions {
                if merged.sessions.iter().any(|s| s.key == info.key) {
                    // Caught mid-move: on both nodes for a moment. Count it once.
                    merged.total = merged.total.saturating_sub(1);
                } else {
                    merged.sessions.push(info);
                }
            }
            merged
                .sessions
                .sort_by(|a, b| (b.last_access_ms, &a.key).cmp(&(a.last_access_ms, &b.key)));
        }
        Ok(merged)
    }

    pub(crate) async fn end_all(
        &self,
        owner: &[u8],
        tag: &str,
        except: Option<&[u8]>,
    ) -> Result<u64, Error> {
        let homes = self.homes(tag.as_bytes());
        let end = on_member(|m| m.run(|c| async move { c.node_end_all(owner, except).await }));
        let mut ended = end(homes.new).await?;
        if let Some(old) = homes.old {
            ended += end(old).await?;
        }
        Ok(ended)
    }

    /// `ROTATE` from `old_key` to `new_key`: one command when both keys live on the node
    /// that holds the session, otherwise a move between nodes (see [`Cluster::move_between`]).
    pub(crate) async fn rotate(
        &self,
        old_key: &[u8],
        new_key: &[u8],
        if_version: Option<u64>,
        bind: &SessionOptions,
        lifetime: Option<Duration>,
    ) -> Result<SessionWrite, Error> {
        let source = self.homes_of_key(old_key);
        let target = self.homes_of_key(new_key).new;
        let mut result = Err(Error::NotFound);
        for from in source.old.into_iter().chain([source.new]) {
            result = if from.node.name() == target.node.name() {
                from.run(|c| async move { c.node_rotate(old_key, new_key, if_version, bind).await })
                    .await
            } else {
                let copy = match lifetime {
                    Some(lifetime) => bind.clone().absolute_lifetime(lifetime),
                    None => bind.clone(),
                };
                self.move_between(from, target, old_key, new_key, if_version, &copy)
                    .await
            };
            if !matches!(result, Err(Error::NotFound)) {
                break;
            }
        }
        result
    }

    /// Runs `op` at the key's old node, then at its new one if the old says "not found" (or
    /// only at the new one outside a migration window, or once the key was found moved).
    async fn old_then_new<'a, T, F>(
        &self,
        key: &[u8],
        homes: Homes<'a>,
        op: impl Fn(&'a Member) -> F,
    ) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        if let Some(old) = homes.old {
            match op(old).await {
                Err(Error::NotFound) => return self.on_new(key, op(homes.new).await),
                out => return out,
            }
        }
        op(homes.new).await
    }

    /// `answer`, the new node's after the old one said "not found": if it succeeded, the
    /// key is on its new node only.
    fn on_new<T>(&self, key: &[u8], answer: Result<T, Error>) -> Result<T, Error> {
        if answer.is_ok() {
            self.found_moved(key);
        }
        answer
    }

    /// A rotation across nodes: read the session at `from`, create it create-only under
    /// `new_key` at `to` (bound as `bind` says), then delete `old_key` at the version read.
    /// If the delete is refused (another request wrote or deleted the session meanwhile),
    /// the copy is deleted again and the refusal returned: nothing changed.
    ///
    /// Unlike a one-node `ROTATE`, this cannot carry the creation time or the absolute
    /// deadline (`GET` does not return them): the moved session counts its age from the
    /// move, and has the absolute lifetime `bind` gives it (the session layer's configured
    /// one, from the move), if any.
    async fn move_between(
        &self,
        from: &Member,
        to: &Member,
        old_key: &[u8],
        new_key: &[u8],
        if_version: Option<u64>,
        bind: &SessionOptions,
    ) -> Result<SessionWrite, Error> {
        let Some(entry) = from
            .run(|c| async move { c.node_get_with(old_key, None).await })
            .await?
        else {
            return Err(Error::NotFound);
        };
        if if_version.is_some_and(|v| v != entry.version) {
            return Err(Error::VersionMismatch {
                current: entry.version,
            });
        }
        let ttl = Duration::from_millis(entry.ttl_ms);
        let value = &entry.value[..];
        let written = to
            .run(|c| async move {
                c.node_set_session(new_key, value, ttl, SetMode::CreateOnly, bind)
                    .await
            })
            .await?;
        let version = entry.version;
        match from
            .run(|c| async move { c.node_del_if_version(old_key, version).await })
            .await
        {
            Ok(()) => Ok(written),
            Err(refused) => {
                let copy = written.version;
                // Best effort, unlike a rebalance's copy (`migration.rs`), which needs a
                // durable record: this copy is under a fresh id that was never handed out
                // (the caller gets the refusal and sends no cookie), so if its removal fails
                // too nobody can present it. It counts toward its owner's sessions until it
                // expires with its TTL or the owner's sessions are ended.
                let _ = to
                    .run(|c| async move { c.node_del_if_version(new_key, copy).await })
                    .await;
                Err(refused)
            }
        }
    }
}

/// `f`, typed as a request on one member that borrows it for `'a` (closures cannot say so
/// in their own signature).
fn on_member<'a, T, F>(f: impl Fn(&'a Member) -> F) -> impl Fn(&'a Member) -> F
where
    F: std::future::Future<Output = Result<T, Error>>,
{
    f
}
