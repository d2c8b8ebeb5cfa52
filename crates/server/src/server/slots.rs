//! The connection table: who holds the server's connection slots, and who gives one up.
//!
//! Every connection, on either protocol and in plain TCP or TLS, holds a [`Slot`] for as long
//! as it is open. Three rules keep the table from being starved by clients that hold slots
//! without using them (slowloris: thousands of connections that each send a byte every few
//! seconds, or none at all):
//!
//! - **At most `server.max_connections` slots.** One limit for both protocols: it bounds file
//!   descriptors and memory, which both spend alike.
//! - **At most `server.max_connections_per_address` slots per client IP address**, loopback
//!   included: an exemption would let any local process (or a proxy that forwards the
//!   world) take the whole table, and a deployment behind a local proxy is exactly one that
//!   should set this limit on purpose. 0 turns the limit off.
//! - **When the table is full, a new connection displaces another**: the oldest of those
//!   that have not completed a single request yet, or else the one that has gone longest
//!   since its last request, provided that is longer than [`DISPLACE_AFTER`]. A client that
//!   behaves completes requests, so its connections are the last to go; one that trickles a
//!   frame or sits silent is the first. An attacker that keeps reconnecting only displaces
//!   its own connections, oldest first, while a new client's connection, the youngest, gets
//!   its request answered long before its turn comes. The choice is exact (a walk over the
//!   table, only when it is full), not sampled.
//!
//! The frame deadline (`server.frame_timeout`, in the handler) bounds how long a slow frame
//! may hold its slot even when the table is not full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{self, Instant};

use super::interrupt::{Interrupt, Interruption};

/// How long a connection that has completed requests must have gone without one before a
/// new connection may displace it: longer than a client's pause between the requests of one
/// exchange (log in, read the session, write it back), so that only a connection parked in
/// a pool, or a client that stopped after one request, gives way.
pub(crate) const DISPLACE_AFTER: Duration = Duration::from_secs(5);

/// How long a new connection waits for the slot of the connection it displaced to be given
/// back (its handler has to notice and close first).
const DISPLACE_WAIT: Duration = Duration::from_secs(1);

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address already holds `max_connections_per_address` slots.
    PerAddress,
    /// The table is full and no connection in it could be displaced.
    Full,
}

/// The table of connection slots, shared by every listener.
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    per_address: u32,
    started: Instant,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_address: HashMap<IpAddr, u32>,
    held: HashMap<u64, Arc<Progress>>,
    next_id: u64,
    /// Set once the server shuts down: every connection entered later is told at once.
    shutting_down: bool,
}

/// What the table knows of one open connection.
struct Progress {
    /// When the connection last completed a request (or connected), in milliseconds since
    /// the table was made. Relaxed: only read to pick whom to displace.
    last: AtomicU64,
    /// Whether the connection has completed a request at all.
    served: AtomicBool,
    /// How the connection's handler is told to close (displaced) or to finish (shutdown).
    interrupt: Interrupt,
}

impl Slots {
    /// A table of `max_connections` slots, `per_address` of them at most for one client
    /// address (0: no per-address limit).
    pub(crate) fn new(max_connections: u32, per_address: u32) -> Arc<Slots> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            per_address,
            started: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    /// A std mutex: nothing awaits while it is held, and it is taken once per connection
    /// opened or closed (and per displacement), never per request. A panic while holding it
    /// leaves the counts as consistent as any other moment, so poisoning is ignored.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot for a new connection from `address`, displacing the connection that has gone
    /// longest without completing a request if the table is full. Returns the slot and
    /// whether a connection was displaced for it.
    pub(crate) async fn take(self: &Arc<Self>, address: IpAddr) -> Result<(Slot, bool), Refusal> {
        if let Some(slot) = self.try_take(address)? {
            return Ok((slot, false));
        }
        if !self.displace_one() {
            return Err(Refusal::Full);
        }
        let permit = time::timeout(DISPLACE_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Refusal::Full)?;
        Ok((self.register(address, permit)?, true))
    }

    /// A slot if one is free and `address` is under its limit; `Ok(None)` if the table is
    /// full.
    fn try_take(self: &Arc<Self>, address: IpAddr) -> Result<Option<Slot>, Refusal> {
        self.check_address(&self.table(), address)?;
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => self.register(address, permit).map(Some),
            Err(_) => Ok(None),
        }
    }

    fn check_address(&self, table: &Table, address: IpAddr) -> Result<(), Refusal> {
        let held = table.by_address.get(&address).copied().unwrap_or(0);
        if self.per_address > 0 && held >= self.per_address {
            return Err(Refusal::PerAddress);
        }
        Ok(())
    }

    /// Enters a connection that has its permit into the table.
    fn register(
        self: &Arc<Self>,
        address: IpAddr,
        permit: OwnedSemaphorePermit,
    ) -> Result<Slot, Refusal> {
        let mut table = self.table();
        // Checked again under the same lock as the count it guards: another connection from
        // the address may have been entered since the first check.
        self.check_address(&table, address)?;
        *table.by_address.entry(address).or_insert(0) += 1;
        let id = table.next_id;
        table.next_id += 1;
        let progress = Arc::new(Progress {
            last: AtomicU64::new(self.millis(Instant::now())),
            served: AtomicBool::new(false),
            interrupt: Interrupt::default(),
        });
        if table.shutting_down {
            progress.interrupt.raise(Interruption::Shutdown);
        }
        table.held.insert(id, progress.clone());
        drop(table);
        Ok(Slot {
            slots: self.clone(),
            id,
            address,
            progress,
            _permit: permit,
        })
    }

    /// Tells every connection, and every one entered from now on, that the server is
    /// shutting down.
    pub(crate) fn shut_down(&self) {
        let mut table = self.table();
        table.shutting_down = true;
        for progress in table.held.values() {
            progress.interrupt.raise(Interruption::Shutdown);
        }
    }

    /// Tells the oldest connection that has not completed a request to close, or else the
    /// one that has gone longest since its last request if that is longer than
    /// [`DISPLACE_AFTER`]. Returns whether one was told.
    fn displace_one(&self) -> bool {
        let now = self.millis(Instant::now());
        let patience = u64::try_from(DISPLACE_AFTER.as_millis()).unwrap_or(u64::MAX);
        let mut table = self.table();
        let oldest = table
            .held
            .iter()
            .filter(|(_, p)| !p.interrupt.is_raised(Interruption::Displaced))
            .map(|(&id, p)| {
                (
                    p.served.load(Ordering::Relaxed),
                    p.last.load(Ordering::Relaxed),
                    id,
                )
            })
            .min();
        let Some((served, last, id)) = oldest else {
            return false;
        };
        if served && now.saturating_sub(last) < patience {
            return false;
        }
        if let Some(progress) = table.held.remove(&id) {
            progress.interrupt.raise(Interruption::Displaced);
        }
        true
    }
}

/// One connection's place in the table, given back when dropped.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    address: IpAddr,
    progress: Arc<Progress>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// Records that the connection completed a request at `at`.
    pub(crate) fn progressed(&self, at: Instant) {
        self.progress
            .last
            .store(self.slots.millis(at), Ordering::Relaxed);
        self.progress.served.store(true, Ordering::Relaxed);
    }

    /// Ready once the connection has been displaced or the server is shutting down; see
    /// [`Interrupt::poll`].
    pub(crate) fn poll_interrupted(&self, cx: &mut Context<'_>) -> Poll<Interruption> {
        self.progress.interrupt.poll(cx)
    }

    /// Whether the server is shutting down (as far as this connection has been told).
    pub(crate) fn is_shut_down(&self) -> bool {
        self.progress.interrupt.is_raised(Interruption::Shutdown)
    }

    /// Whether a new connection has displaced this one.
    pub(crate) fn is_displaced(&self) -> bool {
        self.progress.interrupt.is_raised(Interruption::Displaced)
    }

    /// Completes once a new connection has displaced this one, or the server shuts down.
    #[cfg(test)]
    async fn interrupted(&self) -> Interruption {
        std::future::poll_fn(|cx| self.poll_interrupted(cx)).await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.table();
        table.held.remove(&self.id);
        if let Some(count) = table.by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                table.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[tokio::test]
    async fn an_address_over_its_limit_is_refused_and_others_are_not() {
        let slots = Slots::new(10, 2);
        let _a1 = slots.take(A).await.unwrap();
        let a2 = slots.take(A).await.unwrap();
        assert_eq!(slots.take(A).await.err(), Some(Refusal::PerAddress));
        let _b = slots.take(B).await.unwrap();
        drop(a2);
        assert!(slots.take(A).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_displaces_the_connection_longest_without_a_request() {
        let slots = Slots::new(2, 0);
        let (stalled, _) = slots.take(A).await.unwrap();
        let (busy, _) = slots.take(B).await.unwrap();
        stalled.progressed(Instant::now());
        busy.progressed(Instant::now());
        // Within the patience nobody who has been served is displaced.
        assert_eq!(slots.take(B).await.err(), Some(Refusal::Full));
        time::advance(DISPLACE_AFTER * 2).await;
        busy.progressed(Instant::now());
        let newcomer = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take(B).await.map(|(_, displaced)| displaced) }
        });
        assert_eq!(stalled.interrupted().await, Interruption::Displaced);
        drop(stalled);
        assert_eq!(newcomer.await.unwrap(), Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_never_served_goes_before_any_that_was() {
        let slots = Slots::new(3, 0);
        let (served, _) = slots.take(A).await.unwrap();
        let (silent, _) = slots.take(A).await.unwrap();
        let (younger_silent, _) = slots.take(B).await.unwrap();
        time::advance(DISPLACE_AFTER * 10).await;
        served.progressed(Instant::now() - DISPLACE_AFTER * 5);
        let newcomer = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take(B).await.map(|(_, displaced)| displaced) }
        });
        // The oldest silent one goes at once, without waiting for any patience.
        assert_eq!(silent.interrupted().await, Interruption::Displaced);
        drop(silent);
        assert_eq!(newcomer.await.unwrap(), Ok(true));
        drop((served, younger_silent));
    }

    #[tokio::test]
    async fn shutdown_reaches_every_connection_and_every_later_one() {
        let slots = Slots::new(10, 0);
        let (open, _) = slots.take(A).await.unwrap();
        assert!(!open.is_shut_down());
        // A handler already waiting when the signal comes is woken by it.
        let waiting = tokio::spawn(async move { (open.interrupted().await, open) });
        tokio::task::yield_now().await;
        slots.shut_down();
        let woken = time::timeout(Duration::from_secs(10), waiting).await;
        let (why, open) = woken.expect("shutdown woke the waiting handler").unwrap();
        assert_eq!(why, Interruption::Shutdown);
        assert!(!open.is_displaced());
        let (later, _) = slots.take(B).await.unwrap();
        assert!(later.is_shut_down());
        assert_eq!(later.interrupted().await, Interruption::Shutdown);
    }
}
