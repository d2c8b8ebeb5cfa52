//! Telling connection handlers that the server is shutting down.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Listens for the server's shutdown signal (mini-redis's `Shutdown`, on a cancellation
/// token instead of a broadcast channel).
///
/// The wait is created once per connection and kept: a handler awaits it in the `select!` of
/// every turn of its loop, and a future re-created per turn (as a broadcast `recv` is) took
/// the channel's single lock, shared by all connections, twice per request. Once the signal
/// has been seen it is remembered, so [`Shutdown::is_shutdown`] needs no await.
pub(crate) struct Shutdown {
    is_shutdown: bool,
    signal: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The server's `shutdown_timeout`: how long a connection may take to finish once it
    /// has seen the signal.
    timeout: Duration,
}

impl Shutdown {
    pub(crate) fn new(token: CancellationToken, timeout: Duration) -> Shutdown {
        Shutdown {
            is_shutdown: token.is_cancelled(),
            signal: Box::pin(token.cancelled_owned()),
            timeout,
        }
    }

    /// Whether the shutdown signal has been received.
    pub(crate) fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// When a connection that sees the signal now must be closed at the latest. Counted
    /// from the moment the connection sees it, a few milliseconds after the server does:
    /// the server's own wait for its connections ends first, and the process exits then.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Waits for the shutdown signal, returning at once if it was already seen.
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        self.signal.as_mut().await;
        self.is_shutdown = true;
    }
}
