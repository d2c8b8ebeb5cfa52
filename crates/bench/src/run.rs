//! Running a workload: connecting, one pipelined loop per connection, the warm-up and
//! measuring phases, progress, and collecting the results.
//!
//! A run has up to two stages: an optional prefill (every key written once, in order), then
//! the measured stage, which is either the operation mix or, for `--load`, the ordered
//! writes themselves. A stage opens every connection first, then starts one task per
//! connection; the coordinator moves the shared phase from warm-up to measuring to stopped
//! on its timers, prints progress, and gives up on connections if the server stops
//! answering altogether.
//!
//! Each task keeps `pipeline` requests in flight: whenever replies arrive it sends as many
//! new requests as were answered, so the window never drains between batches. Reading and
//! writing are interleaved on one task, by polling the stream for both in one future rather
//! than a write-then-read sequence, so a deep pipeline of large values cannot deadlock
//! against a server that stops reading until its replies are read. The stream is plain TCP
//! or TLS; the same loop drives both, so their numbers compare the servers, not two
//! drivers.
//!
//! Under `--rate` ([`crate::pace`]) a task sends each request when it is due instead, up to
//! the same window, and waits for whichever comes first: a reply, or the next due time.
//!
//! With several nodes (`--addr a,b,c`, [`crate::nodes`]) every node gets the connections of
//! its own, and each connection sends only the keys the client's placement puts on its
//! node; the report adds a line per node to the aggregate.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write as _};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use sessiond_client::transport::Stream;
use tokio::io::AsyncWrite;
use tokio::task::JoinSet;
use tokio::time::{self, Instant, MissedTickBehavior};

use crate::config::{Config, Stop, Work};
use crate::connect::{self, ConnectError};
use crate::nodes::Nodes;
use crate::pace::{Pacer, Schedule};
use crate::protocol::{memcached_ttl_secs, Memcached, Native, Protocol, Reply, Resp, Target};
use crate::report::{latency_histogram, Failures, Latency, NodeReport, Recorder, Report, RunInfo};
use crate::workload::{KeySpace, Mix, OpKind, Rng};

/// Bytes requested from the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Error messages printed (and kept for the report); the rest are only counted.
const PRINTED_ERRORS: u64 = 5;

/// If no reply at all arrives for this long, the server is taken to be stuck and the
/// remaining connections are given up, so that a run always ends.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a run could not be carried out at all (as opposed to requests that failed, which are
/// counted in the report).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A connection could not be opened (or authenticated).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: ConnectError,
    },
    /// The configuration cannot be carried out.
    #[error("{0}")]
    Setup(String),
}

/// Runs `config` and reports the measured stage.
pub async fn run(config: &Config) -> Result<Report, RunError> {
    let keys =
        KeySpace::new(&config.key_prefix, config.id_len, config.keys).map_err(RunError::Setup)?;
    let histogram = latency_histogram().map_err(|e| RunError::Setup(e.to_string()))?;
    let nodes = Nodes::new(&config.addr, &keys).map_err(RunError::Setup)?;
    let owner_ops = match &config.work {
        Work::Mix { mix, .. } => mix.kinds().any(OpKind::needs_owners),
        Work::Load(_) => false,
    };
    if nodes.len() > 1 && owner_ops {
        // The owner operations need all of an owner's sessions on one node, which takes
        // session ids that carry the owner's routing tag; the bench's keys carry none.
        return Err(RunError::Setup(
            "login, devices and end_all need one node: the bench's keys carry no routing tag"
                .into(),
        ));
    }
    let runner = Runner {
        config,
        keys,
        nodes,
        value: make_value(config.value_size),
        histogram,
    };

    let (source, warmup, duration, mut prefilled) = match &config.work {
        Work::Load(count) => (Source::Sequential(*count), Duration::ZERO, None, None),
        Work::Mix {
            mix,
            stop,
            warmup,
            prefill,
        } => {
            let (limit, duration) = match *stop {
                Stop::Ops(n) => (Some(n), None),
                Stop::Duration(d) => (None, Some(d)),
            };
            let source = Source::Mix {
                mix: mix.clone(),
                limit,
            };
            (source, *warmup, duration, prefill.then_some(0))
        }
    };

    // Errors of the prefill are reported with the measured stage's, as unmeasured ones.
    let mut earlier = Failures::default();
    if prefilled.is_some() {
        let count = runner.keys.len();
        let stage = runner
            .stage(
                "prefill",
                Source::Sequential(count),
                Duration::ZERO,
                None,
                None,
            )
            .await?;
        if !config.json {
            eprintln!(
                "prefilled {} keys in {:.2}s",
                stage.recorder.ops(),
                stage.elapsed_s
            );
        }
        prefilled = Some(stage.recorder.ops());
        earlier.unmeasured =
            stage.op_errors + stage.failures.connections + stage.failures.unmeasured;
        earlier.first = stage.failures.first;
    }

    let mix_text = match &source {
        Source::Mix { mix, .. } => mix.to_string(),
        Source::Sequential(_) => "set=1".to_string(),
    };
    let stage = runner
        .stage("measure", source, warmup, duration, config.rate)
        .await?;
    let mut failures = stage.failures;
    failures.unmeasured += earlier.unmeasured;
    earlier.first.append(&mut failures.first);
    earlier.first.truncate(PRINTED_ERRORS as usize);
    failures.first = earlier.first;

    let info = RunInfo {
        target: config.target.name(),
        addr: config.addr.clone(),
        mode: match config.work {
            Work::Load(_) => "load",
            Work::Mix { .. } => "mix",
        },
        connections: config.connections,
        pipeline: config.pipeline,
        value_size: config.value_size,
        keys: config.keys,
        key_size: runner.keys.key_len(),
        ttl_ms: config.ttl_ms,
        mix: mix_text,
        warmup_s: warmup.as_secs_f64(),
        duration_s: duration.map(|d| d.as_secs_f64()),
        ops_requested: match config.work {
            Work::Mix {
                stop: Stop::Ops(n), ..
            } => Some(n),
            _ => None,
        },
        prefilled,
        seed: config.seed,
        threads: config.threads,
        tls: config.connector.is_tls(),
        reconnect: config.reconnect,
        user: config.credentials.as_ref().map(|c| c.user().to_string()),
        connects_per_sec: stage.connects_per_sec,
        rate: config.rate,
    };
    let merging = |e| RunError::Setup(format!("merging latency histograms: {e}"));
    let mut report =
        Report::new(info, &stage.recorder, stage.elapsed_s, failures).map_err(merging)?;
    report.send_lag_us = stage.send_lag.as_ref().map(Latency::of);
    if runner.nodes.len() > 1 {
        for (i, node) in stage.by_node.iter().enumerate() {
            let n = runner.nodes.node(i);
            report.nodes.push(
                NodeReport::new(
                    n.name(),
                    n.addr(),
                    runner.nodes.share_len(i),
                    &node.recorder,
                    node.elapsed_s,
                    node.connections_lost,
                )
                .map_err(merging)?,
            );
        }
    }
    Ok(report)
}

/// The value every write stores: printable bytes, as a serialized session would be.
fn make_value(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Where a stage's operations come from.
#[derive(Debug, Clone)]
enum Source {
    /// Random kinds from the mix on random keys; with a limit, that many measured in all.
    Mix { mix: Mix, limit: Option<u64> },
    /// `set` on keys 0, 1, 2, ... up to the count, each once across all connections.
    Sequential(u64),
}

impl Source {
    fn kinds(&self) -> Vec<OpKind> {
        match self {
            Source::Mix { mix, .. } => mix.kinds().collect(),
            Source::Sequential(_) => vec![OpKind::Set],
        }
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What the connection tasks of one stage share with each other and the coordinator.
/// Everything on the per-request path is a relaxed atomic: the counters are independent,
/// and the phase only has to be seen eventually (a request sent just after a phase change
/// is counted in the phase it saw).
struct Stage {
    source: Source,
    keys: KeySpace,
    depth: usize,
    phase: AtomicU8,
    /// Tickets handed out: measured requests with a limit, or keys of a sequential stage.
    issued: AtomicU64,
    /// Replies to measured requests, for the progress line.
    measured_replies: AtomicU64,
    /// Every reply, for the progress line and to notice a stuck server.
    replies: AtomicU64,
    errors: AtomicU64,
    unmeasured_errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    measure_start: OnceLock<Instant>,
    /// With `--reconnect`: how to open the new connection each request gets.
    reopen: Option<Config>,
    /// The nodes, and the keys each one holds.
    nodes: Nodes,
    /// Per node, the keys of a sequential stage handed out so far.
    issued_by_node: Vec<AtomicU64>,
    /// Under `--rate`: when the schedule starts, the requests per second of all
    /// connections together, and how many connections share them.
    pacing: Option<(Instant, f64, usize)>,
    /// Under `--rate`: what wakes connections at their due times.
    pacer: Option<Arc<Pacer>>,
}

impl Stage {
    /// Counts an error; prints and keeps the first few.
    fn error(&self, message: String) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < PRINTED_ERRORS {
            eprintln!("sessiond-bench: error: {message}");
            let mut first = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
            first.push(message);
        } else if n == PRINTED_ERRORS {
            eprintln!("sessiond-bench: more errors are counted but not printed");
        }
    }
}

/// What one connection task hands back.
struct ConnOutcome {
    /// The node the connection was to.
    node: usize,
    recorder: Recorder,
    last_reply: Option<Instant>,
    /// Under `--rate`: how late after their due times measured requests were sent.
    send_lag: Option<Histogram<u64>>,
    /// Why the connection ended early, if it did.
    failure: Option<String>,
}

/// What a stage measured.
struct StageResult {
    recorder: Recorder,
    elapsed_s: f64,
    failures: Failures,
    /// Error replies to measured requests (also in the recorder).
    op_errors: u64,
    /// Connections opened per second at the start of the stage.
    connects_per_sec: f64,
    /// The same, node by node.
    by_node: Vec<NodeResult>,
    /// Under `--rate`: how late after their due times measured requests were sent.
    send_lag: Option<Histogram<u64>>,
}

/// What one node's connections measured.
struct NodeResult {
    recorder: Recorder,
    /// From the start of measuring to this node's last measured reply.
    elapsed_s: f64,
    connections_lost: u64,
}

struct Runner<'a> {
    config: &'a Config,
    keys: KeySpace,
    nodes: Nodes,
    value: Bytes,
    histogram: Histogram<u64>,
}

impl Runner<'_> {
    async fn stage(
        &self,
        label: &'static str,
        source: Source,
        warmup: Duration,
        duration: Option<Duration>,
        rate: Option<f64>,
    ) -> Result<StageResult, RunError> {
        let config = self.config;
        // Every connection is open before any request is sent, so connection setup is
        // never part of the measurement.
        // They are opened all at once, which also measures how fast the server accepts
        // them (with TLS: its handshake rate). The connector turns Nagle off: requests are
        // written in batches already.
        let opening = Instant::now();
        let nodes = &self.nodes;
        let streams = futures_util::future::try_join_all((0..nodes.len()).flat_map(|i| {
            (0..config.connections).map(move |_| async move {
                let addr = nodes.node(i).addr();
                match connect::open(config, addr).await {
                    Ok(stream) => Ok((i, stream)),
                    Err(source) => Err(RunError::Connect {
                        addr: addr.to_string(),
                        source,
                    }),
                }
            })
        }))
        .await?;
        let connects_per_sec = streams.len() as f64 / opening.elapsed().as_secs_f64().max(1e-9);

        let kinds = source.kinds();
        // The schedule starts a moment after the tasks are spawned, so that the first due
        // requests do not find some tasks not yet running.
        let started = Instant::now();
        let schedule_start = started + Duration::from_millis(1);
        let stage = Arc::new(Stage {
            source,
            keys: self.keys.clone(),
            depth: config.pipeline,
            phase: AtomicU8::new(if warmup.is_zero() { MEASURE } else { WARMUP }),
            issued: AtomicU64::new(0),
            measured_replies: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unmeasured_errors: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
            measure_start: OnceLock::new(),
            reopen: config.reconnect.then(|| config.clone()),
            nodes: self.nodes.clone(),
            issued_by_node: (0..self.nodes.len()).map(|_| AtomicU64::new(0)).collect(),
            pacing: rate.map(|rate| (schedule_start, rate, streams.len())),
            pacer: rate.map(|_| Pacer::new(schedule_start, streams.len())),
        });
        let pacer = stage.pacer.clone().map(|pacer| tokio::spawn(pacer.run()));
        if warmup.is_zero() {
            let _ = stage.measure_start.set(if rate.is_some() {
                schedule_start
            } else {
                started
            });
        }

        let mut tasks = JoinSet::new();
        for (n, (node, stream)) in streams.into_iter().enumerate() {
            let value = self.value.clone();
            let ttl_ms = config.ttl_ms;
            let conn = (n, node, stream);
            match config.target {
                Target::Native => self.spawn(&mut tasks, &stage, conn, Native::new(value, ttl_ms)),
                Target::Resp => self.spawn(&mut tasks, &stage, conn, Resp::new(value, ttl_ms)),
                Target::Memcached => {
                    let secs = memcached_ttl_secs(ttl_ms).map_err(RunError::Setup)?;
                    self.spawn(&mut tasks, &stage, conn, Memcached::new(value, secs));
                }
            }
        }

        let progress = config
            .progress
            .then(|| Progress::new(label, std::io::stderr().is_terminal(), started));
        let outcomes = coordinate(&stage, tasks, warmup, duration, progress).await;
        if let (Some(pacer), Some(running)) = (&stage.pacer, pacer) {
            pacer.stop();
            let _ = running.await;
        }

        let merging = |e| RunError::Setup(format!("merging latency histograms: {e}"));
        let mut recorder = Recorder::new(kinds.iter().copied(), &self.histogram);
        let mut by_node: Vec<(Recorder, Option<Instant>, u64)> = (0..self.nodes.len())
            .map(|_| {
                (
                    Recorder::new(kinds.iter().copied(), &self.histogram),
                    None,
                    0,
                )
            })
            .collect();
        let mut last_reply: Option<Instant> = None;
        let mut failures = Failures::default();
        let mut send_lag: Option<Histogram<u64>> = None;
        for outcome in outcomes {
            recorder.merge(&outcome.recorder).map_err(merging)?;
            match (&mut send_lag, &outcome.send_lag) {
                (Some(all), Some(lag)) => all.add(lag).map_err(merging)?,
                (all @ None, Some(lag)) => *all = Some(lag.clone()),
                (_, None) => {}
            }
            last_reply = last_reply.max(outcome.last_reply);
            let node = &mut by_node[outcome.node];
            node.0.merge(&outcome.recorder).map_err(merging)?;
            node.1 = node.1.max(outcome.last_reply);
            if let Some(failure) = outcome.failure {
                failures.connections += 1;
                node.2 += 1;
                stage.error(failure);
            }
        }
        let since_start = |end: Option<Instant>| match (stage.measure_start.get(), end) {
            (Some(start), Some(end)) => end.saturating_duration_since(*start).as_secs_f64(),
            _ => 0.0,
        };
        let elapsed_s = since_start(last_reply);
        let by_node = by_node
            .into_iter()
            .map(|(recorder, last, connections_lost)| NodeResult {
                recorder,
                elapsed_s: since_start(last),
                connections_lost,
            })
            .collect();
        failures.unmeasured = stage.unmeasured_errors.load(Ordering::Relaxed);
        failures.first =
            std::mem::take(&mut *stage.first_errors.lock().unwrap_or_else(|e| e.into_inner()));
        let op_errors = stage
            .errors
            .load(Ordering::Relaxed)
            .saturating_sub(failures.connections + failures.unmeasured);
        Ok(StageResult {
            recorder,
            elapsed_s,
            failures,
            op_errors,
            connects_per_sec,
            by_node,
            send_lag,
        })
    }
}

impl Runner<'_> {
    /// Starts the task for connection `n`, to node `node`.
    fn spawn<P: Protocol>(
        &self,
        tasks: &mut JoinSet<ConnOutcome>,
        stage: &Arc<Stage>,
        (n, node, stream): (usize, usize, Stream),
        proto: P,
    ) {
        let schedule = stage.pacing.map(|(start, rate, connections)| {
            (
                Schedule::new(start, rate, n, connections),
                self.histogram.clone(),
            )
        });
        let driver = Driver {
            proto,
            stream,
            schedule,
            stage: stage.clone(),
            rng: Rng::new(self.config.seed, n as u64),
            conn: n,
            node,
            recorder: Recorder::new(stage.source.kinds().into_iter(), &self.histogram),
            last_reply: None,
        };
        tasks.spawn(driver.run());
    }
}

/// Drives the phases, prints progress, and collects every task's outcome.
async fn coordinate(
    stage: &Stage,
    mut tasks: JoinSet<ConnOutcome>,
    warmup: Duration,
    duration: Option<Duration>,
    mut progress: Option<Progress>,
) -> Vec<ConnOutcome> {
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let start = Instant::now();
    let mut stop_at = match (warmup.is_zero(), duration) {
        (true, Some(d)) => Some(start + d),
        _ => None,
    };
    let mut warmup_until = (!warmup.is_zero()).then(|| start + warmup);
    let mut tick = time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut last_replies, mut quiet_since) = (0, Instant::now());
    let mut outcomes = Vec::new();
    let mut gave_up = 0usize;

    loop {
        let next_event = warmup_until.or(stop_at).unwrap_or(far);
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(outcome)) => outcomes.push(outcome),
                Some(Err(e)) if e.is_cancelled() => {}
                // A panicked task's node is unknown: it counts against the first.
                Some(Err(e)) => outcomes.push(ConnOutcome {
                    node: 0,
                    recorder: Recorder::empty(),
                    last_reply: None,
                    send_lag: None,
                    failure: Some(format!("connection task failed: {e}")),
                }),
            },
            () = time::sleep_until(next_event) => {
                let now = Instant::now();
                if warmup_until.take().is_some() {
                    stage.phase.store(MEASURE, Ordering::Relaxed);
                    let _ = stage.measure_start.set(now);
                    stop_at = duration.map(|d| now + d);
                } else if stop_at.take().is_some() {
                    stage.phase.store(STOP, Ordering::Relaxed);
                }
            }
            _ = tick.tick() => {
                let replies = stage.replies.load(Ordering::Relaxed);
                if replies != last_replies {
                    (last_replies, quiet_since) = (replies, Instant::now());
                } else if quiet_since.elapsed() >= STALL_TIMEOUT {
                    gave_up = tasks.len();
                    tasks.abort_all();
                }
                if let Some(progress) = &mut progress {
                    progress.print(stage);
                }
            }
        }
    }
    if let Some(progress) = &progress {
        progress.finish();
    }
    for _ in 0..gave_up {
        outcomes.push(ConnOutcome {
            node: 0,
            recorder: Recorder::empty(),
            last_reply: None,
            send_lag: None,
            failure: Some(format!(
                "no reply from the server for {}s; connection given up",
                STALL_TIMEOUT.as_secs()
            )),
        });
    }
    outcomes
}

/// The once-a-second progress line on stderr.
struct Progress {
    label: &'static str,
    /// Rewrite one line in place rather than print a line each second.
    terminal: bool,
    started: Instant,
    last_replies: u64,
    printed: bool,
}

impl Progress {
    fn new(label: &'static str, terminal: bool, started: Instant) -> Progress {
        Progress {
            label,
            terminal,
            started,
            last_replies: 0,
            printed: false,
        }
    }

    fn print(&mut self, stage: &Stage) {
        let replies = stage.replies.load(Ordering::Relaxed);
        let rate = replies - self.last_replies;
        self.last_replies = replies;
        let phase = match (self.label, stage.phase.load(Ordering::Relaxed)) {
            ("prefill", _) => "prefill",
            (_, WARMUP) => "warm-up",
            (_, MEASURE) => "measuring",
            _ => "draining",
        };
        let line = format!(
            "{:>5}s  {phase:<9}  {rate:>9} ops/s  {:>11} measured  {} errors",
            self.started.elapsed().as_secs(),
            stage.measured_replies.load(Ordering::Relaxed),
            stage.errors.load(Ordering::Relaxed),
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.printed = true;
    }

    fn finish(&self) {
        if self.terminal && self.printed {
            eprint!("\r\x1b[K");
        }
    }
}

/// A request sent and not yet answered.
struct Pending {
    kind: OpKind,
    sent: Instant,
    measured: bool,
}

/// One connection's loop.
struct Driver<P> {
    proto: P,
    stream: Stream,
    /// Under `--rate`: when this connection's requests are due, and how late after that
    /// the measured ones were sent.
    schedule: Option<(Schedule, Histogram<u64>)>,
    stage: Arc<Stage>,
    rng: Rng,
    conn: usize,
    /// The node this connection is to: it sends only that node's keys.
    node: usize,
    recorder: Recorder,
    last_reply: Option<Instant>,
}

impl<P: Protocol> Driver<P> {
    async fn run(mut self) -> ConnOutcome {
        let failure = self.drive().await.err();
        ConnOutcome {
            node: self.node,
            recorder: self.recorder,
            last_reply: self.last_reply,
            send_lag: self.schedule.map(|(_, lag)| lag),
            failure: failure.map(|f| format!("connection {}: {f}", self.conn)),
        }
    }

    /// The next request to send: its kind, key number, and whether it is measured; `None`
    /// once the stage has no more work for this connection.
    fn next_op(&mut self) -> Option<(OpKind, u64, bool)> {
        let stage = &*self.stage;
        match &stage.source {
            // Each node's connections write that node's keys below `count`, each once.
            Source::Sequential(count) => {
                let n = stage.issued_by_node[self.node].fetch_add(1, Ordering::Relaxed);
                let share = stage.nodes.share_len(self.node);
                let key = (n < share).then(|| stage.nodes.key(self.node, n));
                key.filter(|key| key < count)
                    .map(|key| (OpKind::Set, key, true))
            }
            Source::Mix { mix, limit } => {
                let measured = match stage.phase.load(Ordering::Relaxed) {
                    WARMUP => false,
                    MEASURE => true,
                    _ => return None,
                };
                if let (true, Some(limit)) = (measured, limit) {
                    if stage.issued.fetch_add(1, Ordering::Relaxed) >= *limit {
                        return None;
                    }
                }
                let kind = mix.pick(self.rng.below(mix.total()));
                let key = stage.nodes.pick(self.node, &mut self.rng);
                Some((kind, key, measured))
            }
        }
    }

    /// Closes the connection (with TLS, sending close_notify, so the server sees a clean end)
    /// and opens a new one.
    async fn reopen(&mut self) -> Result<(), String> {
        let Some(config) = &self.stage.reopen else {
            return Ok(());
        };
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
        self.stream = connect::open(config, self.stage.nodes.node(self.node).addr())
            .await
            .map_err(|e| format!("reconnecting: {e}"))?;
        Ok(())
    }

    async fn drive(&mut self) -> Result<(), String> {
        let depth = self.stage.depth;
        let mut read_buf = BytesMut::with_capacity(READ_CHUNK);
        let mut write_buf = BytesMut::with_capacity(READ_CHUNK);
        let mut in_flight: VecDeque<Pending> = VecDeque::with_capacity(depth);
        let mut exhausted = false;
        // With --reconnect, whether the current connection has carried its request.
        let mut used = false;
        loop {
            // Top the window up: one request for each reply taken off since last time.
            if !exhausted && in_flight.len() < depth {
                let now = Instant::now();
                // The clock started above, so with --reconnect the request's latency
                // includes opening its connection.
                if self.stage.reopen.is_some() && std::mem::replace(&mut used, true) {
                    self.reopen().await?;
                    read_buf.clear();
                }
                while in_flight.len() < depth {
                    // Open loop: only what is due, timed from when it was due.
                    let sent = match &mut self.schedule {
                        None => now,
                        Some((schedule, _)) if schedule.due() > now => break,
                        Some((schedule, _)) => {
                            let due = schedule.due();
                            schedule.advance();
                            due
                        }
                    };
                    let Some((kind, key, measured)) = self.next_op() else {
                        exhausted = true;
                        break;
                    };
                    if let (Some((_, lag)), true) = (&mut self.schedule, measured) {
                        let late = now.saturating_duration_since(sent).as_nanos() as u64;
                        lag.saturating_record(late.max(1));
                    }
                    self.proto
                        .encode(kind, &self.stage.keys.key(key), &mut write_buf);
                    in_flight.push_back(Pending {
                        kind,
                        sent,
                        measured,
                    });
                }
            }
            // Under `--rate`, the next due time while the window has room for it.
            let next_due = match &self.schedule {
                Some((schedule, _)) if !exhausted && in_flight.len() < depth => {
                    Some(schedule.due())
                }
                _ => None,
            };
            if in_flight.is_empty() && next_due.is_none() {
                return Ok(());
            }

            if read_buf.capacity() - read_buf.len() < READ_CHUNK / 4 {
                read_buf.reserve(READ_CHUNK);
            }
            let exchanged = exchange(&mut self.stream, &mut write_buf, &mut read_buf);
            let read = match next_due {
                None => exchanged.await?,
                // Dropping the exchange when the due time comes first loses nothing: what it
                // wrote or read has already been taken off or added to the buffers.
                Some(due) => {
                    let pacer = self.stage.pacer.as_ref().ok_or("--rate without a pacer")?;
                    tokio::select! {
                        read = exchanged => read?,
                        () = pacer.until(self.conn, due) => continue,
                    }
                }
            };
            if read == 0 {
                return Err(format!(
                    "the server closed the connection with {} requests unanswered",
                    in_flight.len()
                ));
            }

            // Every reply in this read arrived at the same moment, as far as the client
            // can tell; one clock read serves them all.
            let now = Instant::now();
            let (mut replies, mut measured) = (0, 0);
            while let Some(front) = in_flight.front() {
                let Some(reply) = self
                    .proto
                    .decode(front.kind, &mut read_buf)
                    .map_err(|e| e.to_string())?
                else {
                    break;
                };
                let Some(request) = in_flight.pop_front() else {
                    break;
                };
                replies += 1;
                if let Reply::Error(message) = &reply {
                    if !request.measured {
                        self.stage.unmeasured_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    self.stage.error(format!(
                        "connection {}: {}: {message}",
                        self.conn, request.kind
                    ));
                }
                if request.measured {
                    let latency = now.saturating_duration_since(request.sent);
                    self.recorder
                        .record(request.kind, &reply, latency.as_nanos() as u64);
                    measured += 1;
                }
            }
            if replies > 0 {
                self.stage.replies.fetch_add(replies, Ordering::Relaxed);
            }
            if measured > 0 {
                self.last_reply = Some(now);
                self.stage
                    .measured_replies
                    .fetch_add(measured, Ordering::Relaxed);
            }
        }
    }
}

/// Writes what it can of `write_buf` (and flushes it: TLS keeps records it could not send
/// yet) while waiting for replies, and returns once bytes have been read into `read_buf`:
/// their count, 0 at end of stream.
///
/// Both directions are polled in one future, so whatever the socket accepts is written
/// while the read waits; a future per direction (`select!`) would need the stream split in
/// two halves behind a lock.
async fn exchange(
    stream: &mut Stream,
    write_buf: &mut BytesMut,
    read_buf: &mut BytesMut,
) -> Result<usize, String> {
    let mut unflushed = !write_buf.is_empty();
    std::future::poll_fn(|cx| {
        while !write_buf.is_empty() {
            match tokio_util::io::poll_write_buf(Pin::new(&mut *stream), cx, write_buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err("write failed: closed".into())),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(format!("write failed: {e}"))),
                Poll::Pending => break,
            }
        }
        if unflushed && write_buf.is_empty() {
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(format!("write failed: {e}"))),
                Poll::Pending => {}
            }
        }
        // Every direction that is not done has registered for a wake-up, so waiting for
        // the read here cannot strand a write.
        tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, read_buf)
            .map_err(|e| format!("read failed: {e}"))
    })
    .await
}
