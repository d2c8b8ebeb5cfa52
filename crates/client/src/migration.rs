//! Moving sessions after a topology change: what `sessiond-cli rebalance` runs.
//!
//! A [`Rebalance`] walks each node of the old topology with `SCAN` and moves every entry
//! whose node in the new topology is another one. One move:
//!
//! 1. **create-only at the new node**, with the entry's value, remaining TTL, owner and
//!    absolute deadline (`SET_SESSION`; a plain `SET` for an entry that has neither);
//! 2. **delete at the old node, at the version scanned** (`DEL` if-version).
//!
//! The old node stays authoritative while it holds the key (the migration window of
//! `cluster.rs`: clients read it first), so the copy is only a copy until step 2 succeeds.
//! If step 2 is refused, the application changed the session in between (a save: version
//! mismatch) or ended it (a logout: not found); the copy is deleted again, at its own
//! version, and the entry is left for the next pass (or, ended, simply gone). So a session
//! is never lost, and a deleted one does not stay resurrected: at most, for the moment
//! between the copy and its removal, a reader could see the copy of a session that a
//! logout had just deleted.
//!
//! Step 1 finding the key already at the new node means an earlier, interrupted run copied
//! it and stopped before step 2: the old node still holds it and is authoritative, so that
//! copy is replaced.
//!
//! Moves keep the value, the version order per node (a moved entry gets a new version from
//! its new node), the TTL, the owner and the absolute deadline. They do not keep the
//! creation time: the new node counts it from the move.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, StreamExt};
use sessiond_proto::command::{ScanEntry, SetMode};

use crate::placement::{Node, Topology};
use crate::{Client, Error, SessionOptions};

/// What became of one scanned entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Its node does not change: nothing to do.
    Stays,
    /// Copied to its new node and deleted from the old one.
    Moved,
    /// The application changed it during the move: left where it was, for the next pass.
    Changed,
    /// The application deleted it (or it expired) during the move: gone from both nodes.
    Ended,
    /// The new node refused it: its owner is at the new node's session limit. Left where
    /// it was; the report counts it.
    Refused,
}

/// Counts of one batch or one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Entries scanned.
    pub scanned: u64,
    /// Entries moved.
    pub moved: u64,
    /// Entries changed during their move, left for another pass.
    pub changed: u64,
    /// Entries ended during their move.
    pub ended: u64,
    /// Entries the new node refused.
    pub refused: u64,
}

impl Tally {
    fn add(&mut self, outcome: Moved) {
        self.scanned += 1;
        match outcome {
            Moved::Stays => {}
            Moved::Moved => self.moved += 1,
            Moved::Changed => self.changed += 1,
            Moved::Ended => self.ended += 1,
            Moved::Refused => self.refused += 1,
        }
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: Tally) {
        self.scanned += other.scanned;
        self.moved += other.moved;
        self.changed += other.changed;
        self.ended += other.ended;
        self.refused += other.refused;
    }

    /// Whether the pass found nothing left to do: every entry it scanned stays.
    pub fn settled(&self) -> bool {
        self.moved == 0 && self.changed == 0 && self.ended == 0 && self.refused == 0
    }
}

/// A move from one topology to another, with a client per node.
pub struct Rebalance {
    from: Topology,
    to: Topology,
    /// A single-node client per node of either topology, by name.
    clients: Vec<(Node, Client)>,
    concurrency: usize,
}

impl Rebalance {
    /// A move from `from` to `to`, reaching each node with a client made by `client_for`
    /// (a single-node client of its address: it needs the `admin` role for `SCAN`).
    pub fn new(from: Topology, to: Topology, client_for: impl Fn(&Node) -> Client) -> Rebalance {
        let mut clients: Vec<(Node, Client)> = Vec::new();
        for node in to.nodes().iter().chain(from.nodes()) {
            if clients.iter().all(|(n, _)| n.name() != node.name()) {
                clients.push((node.clone(), client_for(node)));
            }
        }
        Rebalance {
            from,
            to,
            clients,
            concurrency: 32,
        }
    }

    /// How many moves run at once (default 32). More is faster and costs the application
    /// more latency.
    pub fn concurrency(mut self, moves: usize) -> Self {
        self.concurrency = moves.max(1);
        self
    }

    /// The nodes to scan: those of the old topology.
    pub fn sources(&self) -> impl Iterator<Item = &Node> {
        self.from.nodes().iter()
    }

    fn client(&self, name: &str) -> Result<&Client, Error> {
        self.clients
            .iter()
            .find(|(n, _)| n.name() == name)
            .map(|(_, c)| c)
            .ok_or_else(|| Error::InvalidArgument(format!("no node named {name:?}")))
    }

    /// Scans one batch of node `source` from `cursor` (`max_entries` a hint), moves what
    /// belongs elsewhere, and returns the counts and the cursor to continue from (0: the
    /// node is done). An error leaves the cursor where it was: running the batch again is
    /// safe.
    pub async fn batch(
        &self,
        source: &str,
        cursor: u64,
        max_entries: u32,
    ) -> Result<(Tally, u64), Error> {
        let from = self.client(source)?;
        let reply = from.scan(cursor, max_entries).await?;
        let moves = reply.entries.into_iter().map(|entry| async move {
            let target = self.to.node_for_key(&entry.key).name();
            if target == source {
                return Ok(Moved::Stays);
            }
            move_entry(from, self.client(target)?, entry).await
        });
        let mut outcomes = stream::iter(moves).buffer_unordered(self.concurrency);
        let mut tally = Tally::default();
        while let Some(outcome) = outcomes.next().await {
            tally.add(outcome?);
        }
        Ok((tally, reply.next_cursor))
    }
}

/// Moves `entry` from `from` to `to` (see the module docs).
async fn move_entry(from: &Client, to: &Client, entry: ScanEntry) -> Result<Moved, Error> {
    let ttl = Duration::from_millis(entry.ttl_ms.max(1));
    let mut options = SessionOptions::new();
    if let Some(owner) = &entry.owner {
        options = options.owner(owner);
    }
    if let Some(deadline) = entry.deadline_ms {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let Some(left) = deadline.checked_sub(now).filter(|left| *left > 0) else {
            // Past its absolute deadline: it is ending where it is, nothing to move.
            return Ok(Moved::Stays);
        };
        options = options.absolute_lifetime(Duration::from_millis(left));
    }
    let create = || async {
        let (key, value) = (&entry.key[..], &entry.value[..]);
        if options.is_empty() {
            to.set(key, value, ttl, SetMode::CreateOnly).await
        } else {
            let mode = SetMode::CreateOnly;
            let written = to.set_session(key, value, ttl, mode, &options).await;
            written.map(|w| w.version)
        }
    };
    let copy = match create().await {
        Ok(version) => version,
        Err(Error::Exists) => {
            // A copy from an interrupted run: the old node still holds the key and is
            // authoritative, so the copy is replaced.
            if let Some(stale) = to.get(&entry.key).await? {
                match to.del_if_version(&entry.key, stale.version).await {
                    Ok(()) | Err(Error::NotFound) => {}
                    Err(Error::VersionMismatch { .. }) => return Ok(Moved::Changed),
                    Err(e) => return Err(e),
                }
            }
            match create().await {
                Ok(version) => version,
                Err(Error::Exists) => return Ok(Moved::Changed),
                Err(Error::OwnerLimitReached) => return Ok(Moved::Refused),
                Err(e) => return Err(e),
            }
        }
        Err(Error::OwnerLimitReached) => return Ok(Moved::Refused),
        Err(e) => return Err(e),
    };
    let outcome = match from.del_if_version(&entry.key, entry.version).await {
        Ok(()) => return Ok(Moved::Moved),
        Err(Error::VersionMismatch { .. }) => Moved::Changed,
        Err(Error::NotFound) => Moved::Ended,
        Err(e) => {
            // Unknown whether the old node deleted it: remove the copy, so that the old
            // node (authoritative) decides, and let the caller retry the batch.
            let _ = to.del_if_version(&entry.key, copy).await;
            return Err(e);
        }
    };
    match to.del_if_version(&entry.key, copy).await {
        // Gone already, or the application wrote it since: either way not ours to remove.
        Ok(()) | Err(Error::NotFound) | Err(Error::VersionMismatch { .. }) => Ok(outcome),
        Err(e) => Err(e),
    }
}
