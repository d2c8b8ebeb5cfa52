//! Measures what one stored entry costs in resident memory.
//!
//! Loads N entries (default 1,000,000) with 43-byte keys (default: the length of a 256-bit
//! URL-safe session id) and V-byte values (default 1024) into a `Store`, then prints the growth of the
//! process's resident set per entry and how much of it is overhead beyond key and value. It
//! also times a full expiry sweep over the loaded map with nothing to reclaim and with
//! everything to reclaim, and reports the longest single sweep step.
//!
//! With OWNER_BYTES above 0, every session is created bound to an owner of that length
//! (four sessions per owner, as a user with a few devices), so the figure includes the
//! session extension and the owner index.
//!
//! ```sh
//! cargo run --release -p sessiond --example entry_memory -- [N] [VALUE_BYTES] [KEY_BYTES] [OWNER_BYTES]
//! ```

use std::time::{Duration, Instant};

/// The same allocator as the `sessiond` binary, so the figures match the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sessiond::store::sweep::SweepCursor;
use sessiond::store::{Expiry, SessionOptions};
use sessiond::Store;
use sessiond_proto::command::SetMode;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let value_len: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let key_len: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(43);
    let owner_len: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);

    let store = Store::with_parts(sessiond::clock::Clock::following_tokio(), None);
    let value = vec![b'x'; value_len];
    let before = rss_bytes();
    let started = Instant::now();
    for i in 0..n {
        let key = format!("{i:0>width$}", width = key_len);
        if owner_len == 0 {
            store.set(key.as_bytes(), &value, 3_600_000, SetMode::Upsert);
            continue;
        }
        let owner = format!("{:0>width$}", i / 4, width = owner_len);
        let options = SessionOptions {
            owner: Some(owner.as_bytes()),
            ..SessionOptions::default()
        };
        if let Err(e) = store.set_session(
            key.as_bytes(),
            &value,
            Expiry::In(3_600_000),
            SetMode::Upsert,
            &options,
        ) {
            eprintln!("session {i} refused: {e}");
            return;
        }
    }
    let load_time = started.elapsed();
    let after = rss_bytes();
    let per_entry = (after - before) as f64 / n as f64;
    let payload = (key_len + value_len) as f64;
    println!("entries:            {n}");
    println!("key + value bytes:  {key_len} + {value_len}");
    println!("owner bytes:        {owner_len} (0: none)");
    println!("load time:          {load_time:.2?}");
    println!(
        "RSS growth:         {:.1} MiB",
        (after - before) as f64 / 1048576.0
    );
    println!("RSS per entry:      {per_entry:.1} bytes");
    println!("overhead per entry: {:.1} bytes", per_entry - payload);
    println!(
        "STATS estimate:     {:.1} bytes per entry",
        store.memory_estimate() as f64 / n as f64
    );

    // A full sweep cycle when nothing has expired: the steady-state cost of the sweep.
    let (cycle, steps, longest) = sweep_cycle(&store);
    println!("sweep, nothing expired:  full cycle {cycle:.2?} in {steps} steps, longest step {longest:.2?}");

    // Everything expires at once: let the deadlines pass and sweep again.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3601)).await;
    let (cycle, steps, longest) = sweep_cycle(&store);
    println!("sweep, all expired:      full cycle {cycle:.2?} in {steps} steps, longest step {longest:.2?}");
    println!("entries left:            {}", store.len());
}

/// Sweeps the whole map in minimal steps; returns total time, step count, longest step.
fn sweep_cycle(store: &Store) -> (Duration, u64, Duration) {
    let mut cursor = SweepCursor::default();
    let mut steps = 0;
    let mut longest = Duration::ZERO;
    let started = Instant::now();
    loop {
        let step = Instant::now();
        let report = store.sweep(&mut cursor, Duration::ZERO);
        longest = longest.max(step.elapsed());
        steps += 1;
        if report.completed_cycle {
            break;
        }
    }
    (started.elapsed(), steps, longest)
}
