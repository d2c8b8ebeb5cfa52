//! Clients that try to make the server grow or to starve it of connection slots, against the
//! real binary. Each test measures the daemon's resident set size (`/proc/PID/status`) while
//! the hostile clients do their worst, fails if it grows past a bound, and checks that a
//! client that behaves, on connections of its own, keeps being served (its latency is
//! printed; run with `--nocapture` to see the figures).
//!
//! The hostile connections come from `127.0.0.2` and up, the good client from `127.0.0.1`:
//! every `127/8` address reaches the loopback interface on Linux, and the per-address limit
//! then sees them as different clients.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sessiond_proto::command::SetMode;
use sessiond_proto::header::HEADER_LEN;
use sessiond_proto::{ClientCodec, Status};
use sessiond_tests::resp::{command, Value};
use sessiond_tests::{get_request, ping_request, rss_of, set_request, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::Decoder;

const MIB: u64 = 1024 * 1024;
const HOUR_MS: u64 = 60 * 60 * 1000;

/// The tests that open ten thousand connections take turns: two at once would need twice
/// the open-file limit that [`connections`] fits one of them into.
static FLOOD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Connections a test may open: what it asks for, or fewer if the open-file limit (which the
/// daemon inherits) is too low for both ends.
fn connections(wanted: usize) -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1024);
    let n = wanted.min(soft.saturating_sub(200));
    if n < wanted {
        eprintln!("open-file limit {soft}: {n} connections instead of {wanted}");
    }
    n
}

/// Connects to `addr` from `from` (any free port).
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    // Long enough for the kernel's third SYN (after 1 + 2 + 4 s), should an attack fill the
    // listen backlog for a moment.
    tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// The `n`th hostile address: `127.0.0.2` and up, `per_address` connections each.
fn hostile_address(n: usize, per_address: usize) -> Ipv4Addr {
    let i = u32::try_from(n / per_address.max(1)).expect("few addresses");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i)
}

/// One `PING` on a new connection from `127.0.0.1`: its round trip, or why it failed.
async fn ping_once(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut bytes = Vec::new();
    ping_request(b"good").to_frame(7).encode(&mut bytes);
    stream
        .write_all(&bytes)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut codec = ClientCodec::new();
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            if let Some(frame) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
                return Ok(frame);
            }
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("closed without an answer".to_string());
            }
        }
    };
    let frame = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "no answer within 5 s".to_string())??;
    if frame.opaque != 7 || frame.status() != Some(Status::Ok) {
        return Err(format!("answered {frame:?}"));
    }
    Ok(started.elapsed())
}

/// `count` pings from a client that behaves, `gap` apart, each on a new connection (the
/// hardest case: it needs a free slot every time). Panics unless every one succeeds; prints
/// their latencies.
async fn good_client(addr: SocketAddr, count: usize, gap: Duration) {
    let mut latencies = Vec::with_capacity(count);
    let mut failures = Vec::new();
    for _ in 0..count {
        match ping_once(addr).await {
            Ok(latency) => latencies.push(latency),
            Err(why) => failures.push(why),
        }
        tokio::time::sleep(gap).await;
    }
    latencies.sort();
    if let (Some(median), Some(max)) = (latencies.get(latencies.len() / 2), latencies.last()) {
        eprintln!(
            "good client: {}/{count} pings answered, median {median:?}, max {max:?}",
            latencies.len()
        );
    }
    assert!(failures.is_empty(), "pings failed: {failures:?}");
}

/// Samples the daemon's RSS every 50 ms until `stop`; returns the largest seen.
fn watch_rss(daemon: &Daemon, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let pid = daemon.pid();
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(rss_of(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        max.max(rss_of(pid).unwrap_or(0))
    })
}

fn stat(stats: &sessiond_proto::command::StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("STATS has no {name}"))
}

/// Regression: one RESP `MGET` naming a 1 MiB key 1,500 times (a 13.5 KB request) made the
/// server build a 1.5 GiB reply and abort (`memory allocation of 2147563520 bytes failed`).
/// Now the reply is refused once it passes `resp.max_reply_bytes`, and the server barely
/// grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_of_one_large_value_many_times_is_refused_not_built() {
    let daemon = Daemon::start_with_args(
        "[resp]\nmax_reply_bytes = 16777216\n",
        &["--resp-listen", "127.0.0.1:0"],
    );
    let mut conn = daemon.resp_connect().await;
    let big = vec![b'v'; 1024 * 1024];
    let reply = conn.call_bytes(&[b"SET", b"big", &big]).await;
    assert_eq!(reply, Value::Simple("OK".into()));
    let before = daemon.rss_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(&daemon, stop.clone());
    let good = tokio::spawn(good_client(daemon.addr(), 20, Duration::from_millis(50)));
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 1500));
    for _ in 0..3 {
        let reply = conn.call_bytes(&args).await;
        assert!(reply.is_error("ERR reply too large"), "{reply:?}");
    }
    // Within the budget, MGET works as before.
    let reply = conn.call_bytes(&[b"MGET", b"big", b"missing"]).await;
    assert_eq!(reply.items().len(), 2);
    good.await.expect("good client");
    stop.store(true, Ordering::Relaxed);
    let max = rss.join().expect("rss watcher");
    eprintln!(
        "MGET x1500 of 1 MiB: RSS {} MiB before, {} MiB at most during",
        before / MIB,
        max / MIB
    );
    assert!(max < before + 64 * MIB, "RSS grew from {before} to {max}");
    assert_eq!(stat(&daemon.stats().await, "replies_too_large"), 3);
}

/// Regression: a frame header alone made the server reserve the length it declared, on both
/// protocols, before any of those bytes arrived: 1,000 connections that each sent one
/// 49-byte header announcing 1 MiB took RSS from 17 MiB to 1.5 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_announcing_a_megabyte_reserve_nothing() {
    let daemon = Daemon::start_with_args("", &["--resp-listen", "127.0.0.1:0"]);
    let n = connections(1000);
    let mut native = Vec::new();
    set_request(
        b"session:1",
        &vec![b'v'; 1024 * 1024 - 64],
        HOUR_MS,
        SetMode::Upsert,
    )
    .to_frame(1)
    .encode(&mut native);
    native.truncate(49);
    let resp_header = b"*3\r\n$3\r\nSET\r\n$9\r\nsession:1\r\n$1048000\r\n".to_vec();
    // Let the daemon settle before the baseline.
    assert!(ping_once(daemon.addr()).await.is_ok());
    let before = daemon.rss_bytes();

    let mut open = Vec::with_capacity(2 * n);
    for i in 0..n {
        for (addr, bytes) in [(daemon.addr(), &native), (daemon.resp_addr(), &resp_header)] {
            let stream = connect_from(hostile_address(i, 500), addr)
                .await
                .expect("connect");
            open.push((stream, bytes));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = daemon.rss_bytes();
    for (stream, bytes) in &mut open {
        stream.write_all(bytes).await.expect("send a header");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = daemon.rss_bytes();
    good_client(daemon.addr(), 10, Duration::from_millis(20)).await;
    eprintln!(
        "{} connections each holding a header that announces 1 MiB: RSS {} MiB before, {} MiB connected, {} MiB once the headers arrived",
        2 * n,
        before / MIB,
        connected / MIB,
        during / MIB
    );
    // A header costs the read buffer it arrived in (a page or two of it are touched), not
    // the megabyte it announces.
    let bound = connected + (2 * n as u64) * 24 * 1024;
    assert!(during < bound, "RSS grew from {connected} to {during}");
    drop(open);
}

/// Regression: buffers never shrank after one large frame, so connections that each sent
/// one 1 MiB value kept a megabyte apiece for as long as they stayed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_shrink_after_a_large_value() {
    let daemon = Daemon::start_with_config("[aof]\nenabled = false\n");
    let n = connections(300);
    let value = vec![b'v'; 1024 * 1024 - 64];
    assert!(ping_once(daemon.addr()).await.is_ok());
    let before = daemon.rss_bytes();
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut conn = daemon.connect().await;
        // The same key every time: the store holds one value, the connections hold the rest.
        let key = b"shared";
        let reply = conn
            .call(set_request(key, &value, HOUR_MS, SetMode::Upsert).to_frame(1))
            .await;
        assert_eq!(
            reply.status(),
            Some(Status::Ok),
            "connection {i}: {reply:?}"
        );
        let reply = conn.call(get_request(key).to_frame(2)).await;
        assert_eq!(reply.value.len(), value.len());
        open.push(conn);
    }
    // mimalloc returns freed pages to the system after a short delay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = daemon.rss_bytes();
    eprintln!(
        "{n} connections that each sent and read a 1 MiB value: RSS {} MiB before, {} MiB after",
        before / MIB,
        during / MIB
    );
    let bound = before + 16 * MIB + (n as u64) * 64 * 1024;
    assert!(during < bound, "RSS grew from {before} to {during}");
    drop(open);
}

/// What a slowloris attack left behind.
struct Aftermath {
    stats: sessiond_proto::command::StatsReply,
    attempts: u64,
    rss_before: u64,
    rss_max: u64,
}

/// Starts a daemon with `server_config`, runs a slowloris attack of `n` connections
/// (`per_address` from each hostile address) against it while a good client sends 40 pings
/// on new connections, all of which must be answered.
async fn under_slowloris(server_config: &str, n: usize, per_address: usize) -> Aftermath {
    let daemon = Daemon::start_with_config(&format!("[server]\n{server_config}"));
    let rss_before = daemon.rss_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(&daemon, stop.clone());
    let attack = slowloris(daemon.addr(), n, per_address, per_address < n);
    tokio::time::sleep(Duration::from_secs(2)).await;
    good_client(daemon.addr(), 40, Duration::from_millis(100)).await;
    let stats = daemon.stats().await;
    let attempts = attack.stop().await;
    stop.store(true, Ordering::Relaxed);
    let rss_max = rss.join().expect("rss watcher");
    Aftermath {
        stats,
        attempts,
        rss_before,
        rss_max,
    }
}

/// Regression (slowloris): 10,000 connections that each sent one byte every few seconds
/// held every slot, and 0 of 40 pings from a legitimate client succeeded in 20 s. From one
/// address they now stop at `max_connections_per_address`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_from_one_address_cannot_take_the_table() {
    let n = connections(3000);
    let after = under_slowloris(
        "max_connections = 1000\nmax_connections_per_address = 100\nframe_timeout = \"60s\"\n",
        n,
        n,
    )
    .await;
    let rejected = stat(&after.stats, "connections_rejected_per_address");
    eprintln!(
        "slowloris, {n} connections from one address: {rejected} refused, RSS {} MiB before, {} MiB at most",
        after.rss_before / MIB,
        after.rss_max / MIB
    );
    assert!(rejected >= (n - 100) as u64, "{rejected}");
    assert!(stat(&after.stats, "connections_current") <= 102);
    assert!(after.rss_max < after.rss_before + 64 * MIB);
}

/// Slowloris from many addresses, each under its limit, reconnecting whenever closed: the
/// table fills, and every new connection displaces the oldest that has not completed a
/// request, so a client that completes its requests is always served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_from_many_addresses_is_displaced() {
    let n = connections(3000);
    let after = under_slowloris(
        "max_connections = 500\nmax_connections_per_address = 100\nframe_timeout = \"3s\"\n",
        n,
        60,
    )
    .await;
    let displaced = stat(&after.stats, "connections_displaced");
    eprintln!(
        "slowloris, {n} connections from {} addresses ({} attempts): {displaced} displaced, {} frame timeouts, RSS {} MiB before, {} MiB at most",
        n.div_ceil(60),
        after.attempts,
        stat(&after.stats, "frame_timeouts"),
        after.rss_before / MIB,
        after.rss_max / MIB
    );
    assert!(displaced > 0);
    assert!(
        after.rss_max < after.rss_before + 64 * MIB,
        "RSS grew from {} to {}",
        after.rss_before,
        after.rss_max
    );
}

/// The frame deadline is independent of the idle timeout: a connection that sends a byte
/// of its request every 200 ms is never idle, and is closed once `frame_timeout` has passed
/// since the request began. A connection that completes its requests at the same pace is
/// kept.
#[tokio::test]
async fn a_request_trickled_byte_by_byte_is_cut_off_at_the_frame_timeout() {
    let daemon =
        Daemon::start_with_config("[server]\nidle_timeout = \"1s\"\nframe_timeout = \"2s\"\n");
    let mut frame = Vec::new();
    set_request(b"slow", &[b'v'; 100], HOUR_MS, SetMode::Upsert)
        .to_frame(1)
        .encode(&mut frame);
    let mut slow = TcpStream::connect(daemon.addr()).await.expect("connect");
    let mut steady = daemon.connect().await;
    let started = Instant::now();
    let mut cut_after = None;
    for byte in &frame {
        steady.ping(b"").await;
        if slow.write_all(&[*byte]).await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(200), slow.read(&mut probe)).await
        {
            assert!(!matches!(read, Ok(n) if n > 0), "answered {probe:?}");
            cut_after = Some(started.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the trickled request was never cut off");
    eprintln!("trickled request closed after {cut_after:?}");
    assert!(cut_after >= Duration::from_millis(1900), "{cut_after:?}");
    assert!(cut_after < Duration::from_secs(5), "{cut_after:?}");
    steady.ping(b"still served").await;
    assert_eq!(stat(&daemon.stats().await, "frame_timeouts"), 1);
}

/// A running slowloris attack.
struct Attack {
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Attack {
    /// Stops it and returns how many connections it attempted.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        self.attempts.load(Ordering::Relaxed)
    }
}

/// `n` connections from `127.0.0.2` and up (`per_address` each) that each start a frame and
/// send one more byte of it every second, never completing it; with `reconnect`, a closed
/// one connects again.
fn slowloris(addr: SocketAddr, n: usize, per_address: usize, reconnect: bool) -> Attack {
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut frame = Vec::new();
    set_request(b"slow", &[b'v'; 4096], HOUR_MS, SetMode::Upsert)
        .to_frame(1)
        .encode(&mut frame);
    let frame: Arc<[u8]> = frame.into();
    for i in 0..n {
        let (stop, attempts, frame) = (stop.clone(), attempts.clone(), frame.clone());
        let from = hostile_address(i, per_address);
        tasks.spawn(async move {
            // Spread the connects over the first second, as an attacker's would be.
            tokio::time::sleep(Duration::from_micros((i as u64 * 331) % 1_000_000)).await;
            while !stop.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut stream) = connect_from(from, addr).await {
                    for byte in frame.iter().take(HEADER_LEN + 100) {
                        if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).await.is_err()
                        {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if !reconnect {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    Attack {
        stop,
        attempts,
        tasks,
    }
}

/// Regression: responses were flushed with no write timeout, so a client that sent
/// requests and never read the answers kept its slot and its buffers forever, and held up
/// shutdown. Thousands of such clients now cost a bounded amount, are cut off at the write
/// timeout (freeing their slots), and do not hold up shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_read_are_cut_off_and_do_not_hold_up_shutdown() {
    let _flood = FLOOD.lock().await;
    let n = connections(10_000);
    // Without the output budget, which would cut most of them off sooner (tested below).
    let (mut daemon, requests) =
        daemon_for_non_readers("write_timeout = \"3s\"\nmax_pending_output_bytes = 0").await;
    let before = daemon.rss_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(&daemon, stop.clone());
    let open = open_non_readers(&daemon, n, &requests).await;
    good_client(daemon.addr(), 10, Duration::from_millis(50)).await;
    // Past the write timeout those the server could not write to have been cut off; the
    // others' responses all fit in the kernel's buffers, and they are merely idle.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = daemon.stats().await;
        let settled = stat(&stats, "connections_current") + stat(&stats, "write_timeouts");
        if settled >= open.len() as u64 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let max = rss.join().expect("rss watcher");
    let cut = stat(&stats, "write_timeouts");
    eprintln!(
        "{} clients that do not read: {cut} cut off at the write timeout, RSS {} MiB before, {} MiB at most, {} MiB after; connection buffers counted {} MiB",
        open.len(),
        before / MIB,
        max / MIB,
        daemon.rss_bytes() / MIB,
        stats
            .get("memory_connections_bytes")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / MIB
    );
    assert!(cut > 0, "no connection was cut off");
    // Each costs at most its write buffer (flushed at 64 KiB, plus one 16 KiB response), its
    // read buffer and its task.
    assert!(
        max < before + (open.len() as u64) * 128 * 1024,
        "RSS grew from {before} to {max}"
    );

    // A second wave, still unread at shutdown: the server exits within its timeout.
    let second = open_non_readers(&daemon, n, &requests).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_timeout(Duration::from_secs(8))
        .expect("the daemon exits within its shutdown timeout");
    eprintln!(
        "shutdown with {} unread clients took {:?}",
        second.len(),
        started.elapsed()
    );
    assert!(status.success(), "{status}");
    drop((open, second));
}

/// A daemon for thousands of clients that do not read, with `server` added to its `[server]`
/// section and a 16 KiB session stored, and the requests each such client sends: 64 GETs of
/// it, 1 MiB of responses nobody reads, more than the kernel's socket buffers take once
/// thousands of connections share them.
async fn daemon_for_non_readers(server: &str) -> (Daemon, Vec<u8>) {
    let daemon = Daemon::start_with_config(&format!(
        "[server]\nmax_connections = 20000\nmax_connections_per_address = 0\n\
         shutdown_timeout = \"2s\"\n{server}\n[aof]\nenabled = false\n"
    ));
    let mut conn = daemon.connect().await;
    let value = vec![b'v'; 16 * 1024];
    let reply = conn
        .call(set_request(b"page", &value, HOUR_MS, SetMode::Upsert).to_frame(1))
        .await;
    assert_eq!(reply.status(), Some(Status::Ok));
    let mut requests = Vec::new();
    for opaque in 0..64 {
        get_request(b"page").to_frame(opaque).encode(&mut requests);
    }
    (daemon, requests)
}

/// Connects `n` clients from the hostile addresses, each sending `requests` and never
/// reading; returns the connections the daemon accepted.
async fn open_non_readers(daemon: &Daemon, n: usize, requests: &[u8]) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(mut stream) = connect_from(hostile_address(i, 1000), daemon.addr()).await else {
            continue;
        };
        if stream.write_all(requests).await.is_ok() {
            open.push(stream);
        }
    }
    open
}

/// Without a server-wide bound, 10,000 clients that never read their responses held 368 MiB
/// of resident memory until the write timeout freed them (each connection's buffers are
/// bounded, not their sum). With `max_pending_output_bytes`, the connections holding the
/// most are cut off as soon as those waiting for their clients hold more than it together,
/// long before the write timeout, so the resident set stays near the budget; a client that
/// reads keeps being served, and shutdown is not held up by those still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_read_are_cut_off_at_the_output_budget() {
    const BUDGET: u64 = 16 * MIB;
    let _flood = FLOOD.lock().await;
    let n = connections(10_000);
    let (mut daemon, requests) = daemon_for_non_readers(&format!(
        "write_timeout = \"60s\"\nmax_pending_output_bytes = {BUDGET}"
    ))
    .await;
    let before = daemon.rss_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(&daemon, stop.clone());
    // The client that reads is served all through the flood.
    let good = tokio::spawn(good_client(daemon.addr(), 40, Duration::from_millis(100)));
    let started = Instant::now();
    let open = open_non_readers(&daemon, n, &requests).await;
    let flood = started.elapsed();
    good.await.expect("good client");
    let stats = daemon.stats().await;
    stop.store(true, Ordering::Relaxed);
    let max = rss.join().expect("rss watcher");
    let cut = stat(&stats, "write_timeouts");
    eprintln!(
        "{} clients that do not read, in {flood:?}: {cut} cut off at the output budget, {} still \
         open; RSS {} MiB before, {} MiB at most; connection buffers counted {} MiB",
        open.len(),
        stat(&stats, "connections_current"),
        before / MIB,
        max / MIB,
        stat(&stats, "memory_connections_bytes") / MIB,
    );
    // Nothing else could have cut them off: the write timeout is a minute away.
    assert!(flood < Duration::from_secs(50), "the flood took {flood:?}");
    assert!(cut > 0, "no connection was cut off at the budget");
    // The budget, what those still open hold while not waiting (a read buffer and
    // a task each), and the allocator's share of what the cut-off ones freed: 12 KiB per
    // connection (a CI run on a fresh machine peaked at 137 MiB, 8.5 KiB per connection
    // beyond twice the budget; without the budget the same flood held 368 to 426 MiB).
    let bound = before + 2 * BUDGET + (open.len() as u64) * 12 * 1024;
    assert!(max < bound, "RSS grew from {before} to {max}, past {bound}");

    // Those still waiting do not hold up shutdown.
    let started = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_timeout(Duration::from_secs(8))
        .expect("the daemon exits within its shutdown timeout");
    eprintln!("shutdown took {:?}", started.elapsed());
    assert!(status.success(), "{status}");
    drop(open);
}

/// RESP bulk strings too grow the buffer only as bytes arrive, and a RESP command split
/// over many reads still completes.
#[tokio::test]
async fn a_resp_value_sent_in_pieces_is_stored() {
    let daemon = Daemon::start_with_args("", &["--resp-listen", "127.0.0.1:0"]);
    let mut conn = daemon.resp_connect().await;
    let value = vec![b'x'; 300_000];
    let bytes = command(&[b"SET", b"k", &value]);
    for piece in bytes.chunks(7000) {
        conn.send_raw(piece).await;
    }
    assert_eq!(conn.recv().await, Some(Value::Simple("OK".into())));
    let reply = conn.call(&["GET", "k"]).await;
    assert_eq!(reply, Value::Bulk(value));
}

/// TLS connections are held to the same bounds: a request trickled inside a TLS stream is
/// cut off at the frame timeout, like one on a plain socket.
#[tokio::test]
async fn a_tls_connection_that_trickles_a_request_is_cut_off_too() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let certs = sessiond_tests::certs::TestCerts::new("hostile");
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", sessiond_tests::certs::free_port())
        .parse()
        .expect("address");
    let daemon = Daemon::start_with_config(&format!(
        "[server]\ntls_listen = \"{tls_addr}\"\nframe_timeout = \"1s\"\n{}",
        certs.server_config(false)
    ));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.ca()).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(tls_addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");

    let mut frame = Vec::new();
    ping_request(b"slow").to_frame(1).encode(&mut frame);
    let started = Instant::now();
    tls.write_all(&frame[..3]).await.expect("first bytes");
    tls.flush().await.expect("flush");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    let closed_after = started.elapsed();
    assert!(read.is_ok(), "still open after 5 s");
    assert!(rest.is_empty(), "answered {rest:?}");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "{closed_after:?}"
    );
    assert_eq!(stat(&daemon.stats().await, "frame_timeouts"), 1);
}
