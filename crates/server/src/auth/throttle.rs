//! Slowing down failed authentication attempts, per client address.
//!
//! Redis learned after CVE-2021-32675 that an unauthenticated peer must not get the server's
//! full attention. Here each client IP address may fail `AUTH` a few times a minute at full
//! speed; beyond that each further failure is answered only after [`THROTTLE_DELAY`]. The
//! delay holds only that connection (other clients, even from the same address, are served
//! meanwhile), and a client that keeps guessing on one connection is held to one guess per
//! delay.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How long a throttled failure waits before its answer.
pub const THROTTLE_DELAY: Duration = Duration::from_secs(1);

/// Forget addresses whose bucket is full again after this many failures, so that the map
/// does not grow with every address that ever failed once.
const PRUNE_EVERY: u64 = 1024;

/// The per-address budget of failures.
pub(crate) struct Throttle {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    failures: AtomicU64,
}

impl Throttle {
    /// A budget of `per_minute` failures per address and minute (at least 1).
    pub(crate) fn new(per_minute: u32) -> Throttle {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Throttle {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            failures: AtomicU64::new(0),
        }
    }

    /// Records a failure from `ip`; true if `ip` is over its budget, so that the answer must
    /// wait [`THROTTLE_DELAY`].
    pub(crate) fn failed(&self, ip: IpAddr) -> bool {
        if self.failures.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_address_over_its_budget_is_throttled() {
        let throttle = Throttle::new(3);
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert!(!throttle.failed(a));
        assert!(!throttle.failed(a));
        assert!(!throttle.failed(a));
        assert!(throttle.failed(a));
        assert!(!throttle.failed(b));
    }
}
