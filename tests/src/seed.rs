//! Seeds for randomized tests: taken from an environment variable to replay a run, else from
//! the clock, and printed either way so that a failing run can be replayed.

use std::time::{SystemTime, UNIX_EPOCH};

/// The seed in the environment variable `var`, or a new one from the clock; prints
/// `VAR=SEED` (shown with `--nocapture` and for a failing test).
pub fn seed_from_env(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text:?} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    println!("{var}={seed}");
    seed
}
