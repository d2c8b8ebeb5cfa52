//! Times the owner operations against owners of different sizes: listing an owner's
//! sessions (`sessions_of`) and ending all of them (`end_all`), with 10 and 10,000 sessions
//! per owner, among 100,000 sessions of other owners. Also times a login (`set_session`
//! with an owner and a limit that ends the least recently used session).
//!
//! ```sh
//! cargo run --release -p sessiond --example owner_ops -- [ROUNDS]
//! ```
//!
//! Each figure is the median of ROUNDS (default 21) runs.

use std::time::{Duration, Instant};

/// The same allocator as the `sessiond` binary, so the figures match the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sessiond::store::{Expiry, LimitPolicy, OwnerLimit, SessionOptions};
use sessiond::Store;
use sessiond_proto::command::SetMode;

const VALUE: &[u8] = &[b'x'; 256];
const TTL: Expiry = Expiry::In(3_600_000);

fn create(store: &Store, owner: &str, count: usize, round: usize) {
    let options = SessionOptions {
        owner: Some(owner.as_bytes()),
        ..SessionOptions::default()
    };
    for i in 0..count {
        let key = format!("session:{owner}:{round}:{i:0>30}");
        if let Err(e) = store.set_session(key.as_bytes(), VALUE, TTL, SetMode::Upsert, &options) {
            panic!("cannot create a session: {e}");
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(21);
    let store = Store::new();
    // Other owners' sessions, so that the map is not just the owner measured.
    for owner in 0..25_000 {
        create(&store, &format!("other{owner}"), 4, 0);
    }
    for count in [10, 10_000] {
        let owner = format!("owner{count}");
        create(&store, &owner, count, 0);
        let list = median(
            (0..rounds)
                .map(|_| {
                    let started = Instant::now();
                    let listed = store.sessions_of(owner.as_bytes());
                    let elapsed = started.elapsed();
                    assert_eq!(listed.len(), count);
                    elapsed
                })
                .collect(),
        );
        let end_all = median(
            (0..rounds)
                .map(|round| {
                    create(&store, &owner, count, round + 1);
                    let started = Instant::now();
                    let ended = store.end_all(owner.as_bytes(), None);
                    let elapsed = started.elapsed();
                    assert!(ended as usize >= count);
                    elapsed
                })
                .collect(),
        );
        println!(
            "{count:>6} sessions: sessions_of {list:>10.2?} ({:.0} ns/session), end_all {end_all:>10.2?} ({:.0} ns/session)",
            list.as_nanos() as f64 / count as f64,
            end_all.as_nanos() as f64 / count as f64,
        );
    }
    // Logins of one user at a limit of 3 that ends the least recently used session.
    let limit = SessionOptions {
        owner: Some(b"login-user"),
        owner_limit: Some(OwnerLimit {
            max: 3,
            policy: LimitPolicy::EndLeastRecentlyUsed,
        }),
        ..SessionOptions::default()
    };
    let logins = 100_000;
    let started = Instant::now();
    for i in 0..logins {
        let key = format!("login:{i:0>40}");
        if let Err(e) = store.set_session(key.as_bytes(), VALUE, TTL, SetMode::CreateOnly, &limit) {
            panic!("cannot log in: {e}");
        }
    }
    println!(
        "login at a limit of 3 (ends the oldest): {:.0} ns each",
        started.elapsed().as_nanos() as f64 / logins as f64
    );
}
