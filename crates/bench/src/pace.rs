//! The open-loop schedule of `--rate`: when each connection's requests are due, and waiting
//! for a due time precisely enough to measure replies of a few tens of microseconds.
//!
//! A closed loop (each connection sends its next request when a reply comes back) lets a slow
//! server slow the load down: during a stall no requests are sent, so the stall shows up as
//! one slow request instead of all the requests that would have been waiting for it
//! (coordinated omission). Under `--rate` every request has a due time fixed before the run,
//! and its latency is measured from that due time, so time spent waiting for room in the
//! window counts, as it would for a real client whose users keep arriving.
//!
//! The total rate is divided evenly over the connections, and connection `n` of `N` starts
//! `n / N` of an interval after the others, so that the server sees requests spread evenly
//! over time rather than all connections firing together.
//!
//! Tokio's timers have millisecond resolution and round a deadline up, which would make
//! requests leave up to a millisecond late, longer than the replies being measured. So one
//! task per run, the [`Pacer`], keeps the time instead: each connection that waits for its
//! next due time leaves it in its slot, and the pacer, yielding to the runtime between
//! rounds, wakes every connection whose time has come. It sleeps on a timer only while no
//! connection is due within the next millisecond or so. One task spinning costs the load
//! generator CPU (it is busy all the time at any useful rate), far less than every
//! connection spinning on its own would. How late requests actually left is reported
//! (`send_lag_us`), so a run shows whether its schedule was kept.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::{self, Instant};

/// How long before a due time the pacer stops sleeping and starts spinning: tokio's timer
/// wheel resolution, plus a little for the wake-up itself.
const SPIN: Duration = Duration::from_micros(1_200);

/// A slot with no connection waiting in it.
const IDLE: u64 = u64::MAX;

/// One connection's schedule: request `i` is due at `start + offset + i * interval`.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    offset_ns: f64,
    interval_ns: f64,
    /// The index of the next request to send.
    next: u64,
}

impl Schedule {
    /// The schedule of connection `n` of `connections`, which together send `rate`
    /// requests per second from `start`.
    pub fn new(start: Instant, rate: f64, n: usize, connections: usize) -> Schedule {
        let interval_ns = 1e9 * connections as f64 / rate;
        Schedule {
            start,
            offset_ns: interval_ns * n as f64 / connections as f64,
            interval_ns,
            next: 0,
        }
    }

    /// When the next request is due.
    pub fn due(&self) -> Instant {
        // Computed from the start each time rather than by adding intervals, so rounding
        // to whole nanoseconds does not accumulate into a drift over a long run.
        let ns = self.offset_ns + self.interval_ns * self.next as f64;
        self.start + Duration::from_nanos(ns as u64)
    }

    /// Moves on to the request after the next.
    pub fn advance(&mut self) {
        self.next += 1;
    }
}

/// One connection's place in the [`Pacer`].
struct Slot {
    /// When the connection waiting here is due, in nanoseconds since the pacer's start;
    /// [`IDLE`] if none is waiting.
    due_ns: AtomicU64,
    waker: AtomicWaker,
}

/// Wakes connections at their due times; see the module documentation.
pub struct Pacer {
    start: Instant,
    slots: Vec<Slot>,
    stopped: AtomicBool,
    /// While the pacer sleeps, when it means to wake (nanoseconds since the start; [`IDLE`]
    /// for not until someone asks); 0 while it spins. A connection due earlier than that
    /// wakes it through `wake`.
    sleeping_until: AtomicU64,
    wake: Notify,
}

impl Pacer {
    /// A pacer for `connections` connections, counting from `start`.
    pub fn new(start: Instant, connections: usize) -> Arc<Pacer> {
        Arc::new(Pacer {
            start,
            slots: (0..connections)
                .map(|_| Slot {
                    due_ns: AtomicU64::new(IDLE),
                    waker: AtomicWaker::new(),
                })
                .collect(),
            stopped: AtomicBool::new(false),
            sleeping_until: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    fn since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// Completes at `due`, connection `n` being woken by [`Pacer::run`].
    pub fn until(&self, n: usize, due: Instant) -> impl Future<Output = ()> + '_ {
        let due_ns = self.since_start(due);
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            if Instant::now() >= due {
                return Poll::Ready(());
            }
            let slot = &self.slots[n];
            // The waker first: the pacer reads the due time and then wakes, so it cannot see
            // the time and find no waker to wake.
            slot.waker.register(cx.waker());
            slot.due_ns.store(due_ns, Ordering::SeqCst);
            // After the due time is stored: either the pacer's second look at the slots (see
            // `run`) finds it, or this finds the pacer asleep.
            let spin_ns = SPIN.as_nanos() as u64;
            if due_ns.saturating_sub(spin_ns) < self.sleeping_until.load(Ordering::SeqCst) {
                self.wake.notify_one();
            }
            Poll::Pending
        })
    }

    /// Wakes the connections whose due time has come; returns the earliest due time of
    /// those still waiting, [`IDLE`] if none is.
    fn wake_due(&self) -> (u64, u64) {
        let now = self.since_start(Instant::now());
        let mut next = IDLE;
        for slot in &self.slots {
            let due = slot.due_ns.load(Ordering::SeqCst);
            if due <= now {
                slot.due_ns.store(IDLE, Ordering::SeqCst);
                slot.waker.wake();
            } else {
                next = next.min(due);
            }
        }
        (now, next)
    }

    /// Wakes the connections as they fall due, until [`Pacer::stop`].
    pub async fn run(self: Arc<Pacer>) {
        let spin_ns = SPIN.as_nanos() as u64;
        while !self.stopped.load(Ordering::Relaxed) {
            let (now, next) = self.wake_due();
            if next <= now + spin_ns {
                // Someone is due within the timer's resolution: spin.
                tokio::task::yield_now().await;
                continue;
            }
            // Say when we mean to wake before looking at the slots once more, so that a
            // connection that asks meanwhile is either seen now or wakes us (see `until`).
            let plan = next.saturating_sub(spin_ns);
            self.sleeping_until.store(plan, Ordering::SeqCst);
            let (now, again) = self.wake_due();
            // Never past the time announced: a connection due after it does not wake us, so
            // sleeping longer (the second look found the first one's earliest gone, perhaps
            // nobody left) could sleep through it for good.
            let next = next.min(again);
            if next <= now + spin_ns {
                self.sleeping_until.store(0, Ordering::SeqCst);
                continue;
            }
            let sleep = async {
                match next {
                    IDLE => std::future::pending().await,
                    next => {
                        time::sleep_until(self.start + Duration::from_nanos(next - spin_ns)).await
                    }
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.wake.notified() => {}
            }
            self.sleeping_until.store(0, Ordering::SeqCst);
        }
    }

    /// Ends [`Pacer::run`].
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_share_the_rate_and_are_staggered() {
        let start = Instant::now();
        // 1000 requests per second over 4 connections: each sends every 4 ms, a quarter of
        // that after the connection before it.
        let mut second = Schedule::new(start, 1000.0, 1, 4);
        assert_eq!(second.due() - start, Duration::from_millis(1));
        second.advance();
        assert_eq!(second.due() - start, Duration::from_millis(5));
        let mut first = Schedule::new(start, 1000.0, 0, 4);
        for _ in 0..1_000_000 {
            first.advance();
        }
        // No drift: the millionth request is due exactly 4000 s in.
        assert_eq!(first.due() - start, Duration::from_secs(4000));
    }

    #[tokio::test]
    async fn the_pacer_wakes_a_connection_once_its_due_time_has_come() {
        let pacer = Pacer::new(Instant::now(), 2);
        let running = tokio::spawn(pacer.clone().run());
        for n in 0..2 {
            let due = Instant::now() + Duration::from_millis(5);
            pacer.until(n, due).await;
            let now = Instant::now();
            assert!(now >= due);
            // Generous for a loaded machine; the point is that it returns at all, since
            // only the pacer wakes it.
            assert!(
                now - due < Duration::from_millis(50),
                "{:?} late",
                now - due
            );
        }
        pacer.stop();
        running.await.unwrap();
    }
}
