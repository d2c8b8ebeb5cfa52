//! A small fixed pool of multiplexed connections.
//!
//! One multiplexed connection carries many concurrent requests, so a pool is only for
//! throughput: the server processes one connection's requests one at a time, in order
//! (PROTOCOL.md 2.2), and spreading requests over a few connections lets a multi-threaded
//! server work on them in parallel. Requests go round-robin, skipping a connection that is
//! down while another is up, so that one failed connection does not fail every Nth request.
//!
//! With more than one connection, two requests sent concurrently may be applied in either
//! order. A task that awaits each reply before sending its next request still sees its own
//! writes, whichever connections carry them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::mux::{Mux, Settings};

/// The connections of one client.
pub(crate) struct Pool {
    addr: Arc<str>,
    muxes: Box<[Mux]>,
    next: AtomicUsize,
}

impl Pool {
    /// A pool of `size` (at least 1) connections to `addr`, none opened yet.
    pub(crate) fn new(addr: Arc<str>, settings: Settings, size: usize) -> Pool {
        let settings = Arc::new(settings);
        let muxes = (0..size.max(1))
            .map(|_| Mux::new(addr.clone(), settings.clone()))
            .collect();
        Pool {
            addr,
            muxes,
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn size(&self) -> usize {
        self.muxes.len()
    }

    pub(crate) fn all(&self) -> &[Mux] {
        &self.muxes
    }

    /// The connection for the next request.
    pub(crate) fn pick(&self) -> &Mux {
        let n = self.muxes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Prefer the next live connection; if none is live, the chosen one reconnects.
        (0..n)
            .map(|i| &self.muxes[(start + i) % n])
            .find(|mux| mux.is_live())
            .unwrap_or(&self.muxes[start])
    }
}
