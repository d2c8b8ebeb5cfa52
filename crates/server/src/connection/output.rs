//! The server-wide bound on what connections hold for clients that do not read
//! (`server.max_pending_output_bytes`).
//!
//! The write timeout and the per-connection flush threshold bound one connection: at most
//! [`super::FLUSH_THRESHOLD`] of responses plus one, for at most `write_timeout`. Ten thousand
//! connections that each send requests and never read the answers still hold ten thousand
//! times that until their timeouts pass (measured: 368 MiB of resident memory for 1 MiB of
//! unread responses each). So the connections waiting for their clients to take output are
//! also counted together, and when their total passes the budget, those holding the most are
//! closed first, until the total is back under three quarters of it (so that a flood of
//! waiting connections walks the table once per quarter of the budget, not once per
//! connection). A client that reads keeps its pending output near zero and is the last to go.
//!
//! Only a flush that has to wait is counted: most complete at once (the kernel's socket
//! buffer takes them), and those touch nothing shared. A connection that waits counts both
//! its buffers, the responses it cannot send and the requests behind them, since it holds
//! both only because its client does not read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The error a flush fails with when its connection was closed to bring the server's
/// pending output back under the budget.
#[derive(Debug, thiserror::Error)]
#[error("the server's pending output passed max_pending_output_bytes ({0} bytes), and this connection held the most")]
pub(crate) struct OverBudget(pub(crate) u64);

impl OverBudget {
    /// Whether `error` is a flush cut off by the budget.
    pub(crate) fn is(error: &std::io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<OverBudget>())
    }
}

/// The budget, shared by every connection.
#[derive(Debug)]
pub(crate) struct OutputBudget {
    /// In bytes; 0: no budget.
    limit: u64,
    /// Bytes held by the connections waiting now.
    total: AtomicU64,
    /// Of those, bytes held by connections already told to close: their handlers let go
    /// shortly, and until then they are not counted against the budget again, so that a
    /// flood of waiting connections does not walk the table once per connection.
    cut: AtomicU64,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    by_id: HashMap<u64, (u64, CancellationToken)>,
    next_id: u64,
}

impl OutputBudget {
    /// A budget of `limit` bytes (0: none).
    pub(crate) fn new(limit: u64) -> Arc<OutputBudget> {
        Arc::new(OutputBudget {
            limit,
            total: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// A std mutex: nothing awaits while it is held, and it is taken only by flushes that
    /// have to wait. A panic while holding it leaves the table as consistent as any other
    /// moment, so poisoning is ignored.
    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes held by the connections waiting for their clients now.
    #[cfg(test)]
    fn pending(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts a connection that waits for its client while holding `bytes`, until the
    /// returned [`Wait`] is dropped. If that takes the total past the budget, closes the
    /// connections holding the most (possibly this one) first.
    pub(crate) fn wait(self: &Arc<Self>, bytes: usize) -> Wait {
        let bytes = bytes as u64;
        let cut = CancellationToken::new();
        let cancelled = Box::pin(cut.clone().cancelled_owned());
        if self.limit == 0 {
            return Wait {
                budget: None,
                id: 0,
                bytes,
                cut,
                cancelled,
            };
        }
        let id = {
            let mut waiting = self.waiting();
            let id = waiting.next_id;
            waiting.next_id += 1;
            waiting.by_id.insert(id, (bytes, cut.clone()));
            id
        };
        let total = self.total.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total.saturating_sub(self.cut.load(Ordering::Relaxed)) > self.limit {
            self.shed();
        }
        Wait {
            budget: Some(self.clone()),
            id,
            bytes,
            cut,
            cancelled,
        }
    }

    /// Closes the waiting connections that hold the most until those left hold at most
    /// three quarters of the budget. Connections already told to close are not counted:
    /// their bytes go once their handlers have noticed.
    fn shed(&self) {
        let waiting = self.waiting();
        let mut open: Vec<(u64, &CancellationToken)> = waiting
            .by_id
            .values()
            .filter(|(_, cut)| !cut.is_cancelled())
            .map(|(bytes, cut)| (*bytes, cut))
            .collect();
        let mut held: u64 = open.iter().map(|(bytes, _)| bytes).sum();
        let target = self.limit / 4 * 3;
        if held <= self.limit {
            return;
        }
        open.sort_unstable_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        for (bytes, cut) in open {
            if held <= target {
                break;
            }
            cut.cancel();
            self.cut.fetch_add(bytes, Ordering::Relaxed);
            held -= bytes;
        }
    }

    /// The budget in bytes (0: none).
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

/// A connection counted as waiting for its client; see [`OutputBudget::wait`].
pub(crate) struct Wait {
    budget: Option<Arc<OutputBudget>>,
    id: u64,
    bytes: u64,
    cut: CancellationToken,
    cancelled: std::pin::Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Wait {
    /// Completes once the connection must close to bring the total back under the budget.
    pub(crate) async fn cut(&mut self) {
        self.cancelled.as_mut().await;
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            let mut waiting = budget.waiting();
            waiting.by_id.remove(&self.id);
            // Under the lock `shed` cancels and counts under: the two stay in step.
            if self.cut.is_cancelled() {
                budget.cut.fetch_sub(self.bytes, Ordering::Relaxed);
            }
            budget.total.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// Whether `wait` has been cut, without waiting.
    fn is_cut(wait: &mut Wait) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::pin!(wait.cut()).poll(&mut cx).is_ready()
    }

    #[test]
    fn past_the_budget_the_largest_waiters_are_cut_first() {
        let budget = OutputBudget::new(1000);
        let mut small = budget.wait(100);
        let mut large = budget.wait(600);
        assert_eq!(budget.pending(), 700);
        assert!(!is_cut(&mut large));
        // 700 + 350 passes 1000: the largest goes, which leaves 450, under 750.
        let mut medium = budget.wait(350);
        assert!(is_cut(&mut large));
        assert!(!is_cut(&mut small));
        assert!(!is_cut(&mut medium));
        // Its bytes count until its handler lets go.
        assert_eq!(budget.pending(), 1050);
        drop(large);
        assert_eq!(budget.pending(), 450);
        drop((small, medium));
        assert_eq!(budget.pending(), 0);
    }

    #[test]
    fn a_connection_already_cut_is_not_counted_again() {
        let budget = OutputBudget::new(1000);
        let mut first = budget.wait(900);
        let mut second = budget.wait(500);
        assert!(is_cut(&mut first));
        assert!(!is_cut(&mut second));
        // 900 (going) + 500 + 400 is past the budget, but what stays open is not.
        let mut third = budget.wait(400);
        assert!(!is_cut(&mut second) && !is_cut(&mut third));
        // 500 + 400 + 200 is: the largest of those goes.
        let mut fourth = budget.wait(200);
        assert!(is_cut(&mut second));
        assert!(!is_cut(&mut third) && !is_cut(&mut fourth));
    }

    #[test]
    fn no_budget_counts_nothing() {
        let budget = OutputBudget::new(0);
        let mut wait = budget.wait(1 << 30);
        assert_eq!(budget.pending(), 0);
        assert!(!is_cut(&mut wait));
    }
}
