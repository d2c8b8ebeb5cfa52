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
//! # A move interrupted between its copy and its end
//!
//! The copy is removed again when step 2 is refused, but the process can die (or lose the
//! new node) after step 1 and before that removal. If a logout deleted the session between
//! the `SCAN` and step 1, the copy is then the only one left: a later run never sees it
//! (it scans the old topology, and the old node no longer has the key), and every client in
//! the migration window, missing on the old node, would find it on the new one: a session
//! the user ended, alive again. So the fate of every copy is made durable first: the caller
//! records each move as [`Pending`] (new node, key, version scanned) *before*
//! [`Rebalance::run`] makes its copy, and forgets it only once the move is settled (its
//! outcome is in the [`Tally`]; a move that failed stays pending). A pending move found
//! when a run starts is settled by [`Rebalance::settle`]: whatever copy it may have left at
//! the new node is deleted. That is right when the old node still holds the key (it is
//! authoritative, the next pass moves it again) and when the old node lost it to a logout.
//! It is wrong only for a move whose delete at the old node succeeded in the moment before
//! the process died and before the caller recorded it: that session is then deleted, the
//! user logged out, rather than any ended session coming back. So [`Rebalance::run`] tells
//! the caller of each move as soon as it is settled, for the caller to record at once
//! (`sessiond-cli rebalance` appends it to a journal: a write that survives the process
//! being killed, unlike what a whole batch's results would be).
//!
//! Moves keep the value, the version order per node (a moved entry gets a new version from
//! its new node), the TTL, the owner and the absolute deadline. They do not keep the
//! creation time: the new node counts it from the move.

use std::fmt;
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

    /// Scans one batch of node `source` from `cursor` (`max_entries` a hint). Nothing is
    /// changed: the entries that belong elsewhere come back as moves to record and run.
    pub async fn scan(
        &self,
        source: &str,
        cursor: u64,
        max_entries: u32,
    ) -> Result<Scanned, Error> {
        let reply = self.client(source)?.scan(cursor, max_entries).await?;
        let mut scanned = Scanned {
            stays: 0,
            moves: Vec::new(),
            next_cursor: reply.next_cursor,
        };
        for entry in reply.entries {
            let target = self.to.node_for_key(&entry.key).name();
            if target == source {
                scanned.stays += 1;
            } else {
                scanned.moves.push(Move {
                    source: source.to_string(),
                    target: target.to_string(),
                    entry,
                });
            }
        }
        Ok(scanned)
    }

    /// Runs `moves` (as many at once as the concurrency) to their end, even when some
    /// fail: a move cut off midway would leave its copy behind. `settled` hears of each
    /// move that is settled, as soon as it is. Returns the counts of the settled ones, the
    /// moves that are not settled (still pending: settle them with [`Rebalance::settle`]
    /// before anything else) and the first error.
    pub async fn run(
        &self,
        moves: Vec<Move>,
        mut settled: impl FnMut(&Pending),
    ) -> (Tally, Vec<Pending>, Option<Error>) {
        let runs = moves.into_iter().map(|m| async move {
            let pending = m.pending();
            let outcome = match (self.client(&m.source), self.client(&m.target)) {
                (Ok(from), Ok(to)) => move_entry(from, to, m.entry).await,
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            (pending, outcome)
        });
        let mut outcomes = stream::iter(runs).buffer_unordered(self.concurrency);
        let (mut tally, mut unsettled, mut first) = (Tally::default(), Vec::new(), None);
        while let Some((pending, outcome)) = outcomes.next().await {
            match outcome {
                Ok(moved) => {
                    settled(&pending);
                    tally.add(moved);
                }
                Err(e) => {
                    unsettled.push(pending);
                    first.get_or_insert(e);
                }
            }
        }
        (tally, unsettled, first)
    }

    /// Settles a move recorded as pending by an earlier run that did not finish it: deletes
    /// whatever copy it may have left at its new node (see the module docs for why that is
    /// right whether or not the old node still holds the key). Returns whether there was
    /// one. An error means the copy may still be there: the move stays pending.
    pub async fn settle(&self, pending: &Pending) -> Result<bool, Error> {
        self.client(&pending.target)?.del(&pending.key).await
    }
}

/// What one `SCAN` batch found.
#[derive(Debug)]
pub struct Scanned {
    /// Entries that stay where they are.
    pub stays: u64,
    /// Entries whose node changes.
    pub moves: Vec<Move>,
    /// The cursor to continue from: 0 when the node is done.
    pub next_cursor: u64,
}

/// One entry to move from its old node to its new one.
pub struct Move {
    source: String,
    target: String,
    entry: ScanEntry,
}

impl Move {
    /// What to record before running this move.
    pub fn pending(&self) -> Pending {
        Pending {
            target: self.target.clone(),
            key: self.entry.key.to_vec(),
            version: self.entry.version,
        }
    }
}

impl fmt::Debug for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the value: it is a session's content.
        f.debug_struct("Move")
            .field("source", &self.source)
            .field("target", &self.target)
            .field("version", &self.entry.version)
            .finish_non_exhaustive()
    }
}

/// A move whose copy may exist at its new node and is not settled yet: what a caller
/// keeps durably while the move runs (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The new node's name.
    pub target: String,
    /// The key.
    pub key: Vec<u8>,
    /// The version scanned at the old node.
    pub version: u64,
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
            // node (authoritative) decides, and let the caller retry the batch. Either way
            // the move fails and stays pending: if this removal failed too, settling it is
            // what removes the copy.
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
