//! Measurements of the multi-node client (docs/SCALING.md, "Measurements"), against
//! sessiond servers that are already running (build everything with `--release`).
//!
//! ```text
//! scaling overhead ADDR [REQUESTS] [CONCURRENCY]
//!     The same GET workload through a single-node client and through a multi-node client
//!     of a one-node topology on the same server, alternating, three rounds each: what
//!     routing (hashing, breaker, dispatch) adds per request.
//! scaling rebalance CLI OLD_ADDRS NEW_ADDR SESSIONS RATE SECONDS [CLI_ARGS...]
//!     Fills SESSIONS sessions into the nodes OLD_ADDRS (comma-separated), runs an
//!     application load of RATE requests/s through a migration-window client for SECONDS
//!     (steady state), then runs `CLI rebalance` to NEW_ADDR's topology under the same load,
//!     and reports its duration and the load's latency percentiles in both phases.
//!     CLI_ARGS go to `rebalance` (e.g. `--rate 100000 --concurrency 8`).
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond_client::discovery::topology_toml;
use sessiond_client::placement::{Node, Topology};
use sessiond_client::{Client, Error, SetMode};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TTL: Duration = Duration::from_secs(3600);

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.to_string());
    match args.first().map(String::as_str) {
        Some("overhead") => {
            let requests = arg(2, "200000").parse()?;
            let concurrency = arg(3, "32").parse()?;
            overhead(&arg(1, "127.0.0.1:7878"), requests, concurrency).await
        }
        Some("rebalance") => {
            rebalance(
                &arg(1, "sessiond-cli"),
                &arg(2, ""),
                &arg(3, ""),
                arg(4, "1000000").parse()?,
                arg(5, "2000").parse()?,
                arg(6, "10").parse()?,
                args.get(7..).unwrap_or_default(),
            )
            .await
        }
        _ => Err("usage: scaling overhead ADDR [REQUESTS] [CONCURRENCY] | scaling rebalance CLI OLD_ADDRS NEW_ADDR SESSIONS RATE SECONDS".into()),
    }
}

/// Latencies in microseconds, and the percentiles of them.
#[derive(Default)]
struct Latencies(Vec<u32>);

impl Latencies {
    fn percentile(&mut self, p: f64) -> u32 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i]
    }
}

/// CPU time this process has used (user + system), from /proc/self/stat: the client's own
/// cost, which a busy shared machine does not blur the way it blurs throughput.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in
    // clock ticks of 1/100 s on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// `requests` GETs over `concurrency` tasks; returns requests per second, latencies and
/// the client's CPU time per request.
async fn gets(
    client: &Client,
    requests: usize,
    concurrency: usize,
) -> Result<(f64, Latencies, Duration)> {
    let cpu = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests / concurrency);
            for i in 0..requests / concurrency {
                let key = format!("bench:{}", (t * 7919 + i) % 10_000);
                let sent = Instant::now();
                client.get(&key).await?;
                latencies.push(sent.elapsed().as_micros() as u32);
            }
            Ok::<_, Error>(latencies)
        }));
    }
    let mut all = Latencies::default();
    for task in tasks {
        all.0.extend(task.await??);
    }
    let rate = all.0.len() as f64 / started.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu) / all.0.len().max(1) as u32;
    Ok((rate, all, cpu))
}

async fn overhead(addr: &str, requests: usize, concurrency: usize) -> Result<()> {
    let single = Client::builder(addr).connect().await?;
    let topology = Topology::new([Node::new("sessiond-0", addr)?])?;
    let cluster = Client::cluster(topology).connect().await?;
    for i in 0..10_000 {
        single
            .set(format!("bench:{i}"), [b'v'; 200], TTL, SetMode::Upsert)
            .await?;
    }
    // Warm both up, then alternate so that drift of a shared machine hits both alike.
    gets(&single, requests / 4, concurrency).await?;
    gets(&cluster, requests / 4, concurrency).await?;
    // What routing itself costs: the placement of one key.
    let started = Instant::now();
    let topology = cluster.topology().ok_or("not a cluster")?;
    let mut sum = 0usize;
    for i in 0..1_000_000u32 {
        sum += topology.index_for(&i.to_be_bytes());
    }
    println!(
        "placement of one key (1 node): {:.0} ns ({sum})",
        started.elapsed().as_nanos() as f64 / 1e6
    );
    println!("client  round  req/s  p50_us  p99_us  client_cpu_ns/req");
    let (mut single_total, mut cluster_total) = (0.0, 0.0);
    let (mut single_cpu, mut cluster_cpu) = (Duration::ZERO, Duration::ZERO);
    for round in 1..=3 {
        for (name, client) in [("single", &single), ("cluster", &cluster)] {
            let (rate, mut lat, cpu) = gets(client, requests, concurrency).await?;
            let (p50, p99) = (lat.percentile(0.5), lat.percentile(0.99));
            let ns = cpu.as_nanos();
            println!("{name:7} {round:5}  {rate:6.0}  {p50:6}  {p99:6}  {ns:6}");
            match name {
                "single" => (single_total += rate, single_cpu += cpu),
                _ => (cluster_total += rate, cluster_cpu += cpu),
            };
        }
    }
    println!(
        "cluster/single throughput: {:.3} (overhead {:.1}%); client CPU per request: {:.3}x",
        cluster_total / single_total,
        (1.0 - cluster_total / single_total) * 100.0,
        cluster_cpu.as_secs_f64() / single_cpu.as_secs_f64().max(1e-12)
    );
    Ok(())
}

fn topology(addrs: &[&str]) -> Result<Topology> {
    let nodes = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| Node::new(format!("sessiond-{i}"), *addr))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Topology::new(nodes)?)
}

/// An application load of `rate` requests per second (GET with touch, and one update in
/// five) over `sessions` keys until `stop`; the latencies go into `out`.
fn start_load(
    client: Client,
    sessions: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Latencies>>,
) -> Vec<tokio::task::JoinHandle<Result<()>>> {
    const TASKS: u64 = 16;
    (0..TASKS)
        .map(|t| {
            let (client, stop, out) = (client.clone(), stop.clone(), out.clone());
            tokio::spawn(async move {
                let interval = Duration::from_secs_f64(TASKS as f64 / rate as f64);
                let mut next = Instant::now();
                let mut i = t as usize;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 6364136223846793005 + 1442695040888963407) % sessions.max(1);
                    let key = format!("session:{i}");
                    let sent = Instant::now();
                    if i.is_multiple_of(5) {
                        match client
                            .set(&key, [b'u'; 200], TTL, SetMode::UpdateOnly)
                            .await
                        {
                            Ok(_) | Err(Error::NotFound) => {}
                            Err(e) => return Err(e.into()),
                        }
                    } else {
                        client.get_and_touch(&key, TTL).await?;
                    }
                    let took = sent.elapsed().as_micros() as u32;
                    out.lock().unwrap_or_else(|e| e.into_inner()).0.push(took);
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                Ok(())
            })
        })
        .collect()
}

async fn rebalance(
    cli: &str,
    old: &str,
    new: &str,
    sessions: usize,
    rate: u64,
    seconds: u64,
    cli_args: &[String],
) -> Result<()> {
    let old_addrs: Vec<&str> = old.split(',').collect();
    let mut new_addrs = old_addrs.clone();
    new_addrs.push(new);
    let (from, to) = (topology(&old_addrs)?, topology(&new_addrs)?);

    let filler = Client::cluster(from.clone()).connections(2).build();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let filler = filler.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..sessions).step_by(64) {
                let key = format!("session:{i}");
                filler.set(&key, [b'v'; 200], TTL, SetMode::Upsert).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "filled {sessions} sessions in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let window = Client::cluster(to.clone())
        .previous_topology(from.clone())
        .build();
    let stop = Arc::new(AtomicBool::new(false));
    let steady = Arc::new(Mutex::new(Latencies::default()));
    let load = start_load(window.clone(), sessions, rate, stop.clone(), steady.clone());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await??;
    }

    let dir = tempfile::tempdir()?;
    let (old_file, new_file) = (dir.path().join("old.toml"), dir.path().join("new.toml"));
    std::fs::write(&old_file, topology_toml(&from))?;
    std::fs::write(&new_file, topology_toml(&to))?;
    let during = Arc::new(Mutex::new(Latencies::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(window, sessions, rate, stop.clone(), during.clone());
    let started = Instant::now();
    let mut command = std::process::Command::new(cli);
    command
        .arg("rebalance")
        .arg("--from")
        .arg(&old_file)
        .arg("--to")
        .arg(&new_file)
        .arg("--progress")
        .arg(dir.path().join("progress"))
        .arg("--report-every")
        .arg("10s")
        .args(cli_args);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await??;
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    println!("rebalance took {:.1}s", took.as_secs_f64());
    for (phase, latencies) in [("steady", &steady), ("rebalance", &during)] {
        let mut l = latencies.lock().unwrap_or_else(|e| e.into_inner());
        let n = l.0.len();
        let (p50, p99, p999) = (l.percentile(0.5), l.percentile(0.99), l.percentile(0.999));
        println!("{phase:9} requests {n:8} p50 {p50:6}us p99 {p99:6}us p99.9 {p999:6}us");
    }
    Ok(())
}
