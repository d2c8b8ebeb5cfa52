//! Telling connection handlers that the server is shutting down.

use tokio::sync::broadcast;

/// Listens for the server's shutdown broadcast (mini-redis's `Shutdown`).
///
/// Each connection handler owns one. Once the signal has been seen it is remembered, so a
/// handler can check [`Shutdown::is_shutdown`] without awaiting again.
#[derive(Debug)]
pub(crate) struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub(crate) fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// Whether the shutdown signal has been received.
    pub(crate) fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for the shutdown signal, returning at once if it was already seen.
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Only one value is ever sent, and a lagged or closed channel means the same thing.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
