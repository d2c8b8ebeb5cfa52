//! The crash test: concurrent clients write while the real daemon is killed with `SIGKILL`
//! at a random moment; after each restart on the same data directory, every acknowledged
//! write must be there and no acknowledged delete may have come back.
//!
//! Each cycle:
//!
//! 1. Several connections send batches of SETs (upsert, create-only, if-version) and DELs
//!    (plain and if-version) to a small shared key space, logging for every request when it
//!    was sent and, if a reply came, when and what it was. Every value is unique, so a value
//!    read back names the request that wrote it.
//! 2. After a random delay the daemon is killed with requests in flight.
//! 3. It restarts on the same data directory and every key is read back and judged against
//!    the log (see [`check_key`]). What was read is the starting state of the next cycle.
//!
//! Requests on different connections overlap, so their order is not known; the judgement
//! only relies on what real time proves. A request whose reply arrived before another was
//! sent was applied first ("precedes"); per key, the server hands out versions in the order
//! it applies SETs. A request without a reply may or may not have been applied.
//!
//! With `fsync = "always"` every acknowledged operation must survive. With `everysec` (or
//! `no`) the documented bound is that only about the last second is at risk, so only
//! operations acknowledged more than [`LOSS_WINDOW`] before the kill must survive; the rest
//! are judged like requests without a reply.
//!
//! A small `rewrite_min_bytes` makes the daemon compact its file every few hundred writes,
//! so kills also land in the middle of rewrites.
//!
//! The CI runs [`crash_with_fsync_always`] and [`crash_with_fsync_everysec`];
//! `scripts/crash-test` runs [`crash_from_env`] for as many cycles as asked.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sessiond_proto::command::{Del, DelOutcome, GetReply, SetMode, SetOutcome};
use sessiond_proto::{Request, ResponseFrame, Status};
use sessiond_tests::{bounded, get_request, set_request, Conn, Daemon, Rng};

/// What `everysec` may lose on a crash: "about the last second" of acknowledged writes,
/// with slack for a loaded machine.
const LOSS_WINDOW: Duration = Duration::from_millis(1_500);

/// TTL of every write: far longer than any run, so nothing expires under the test.
const TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// How long the workers may take to notice the kill and return their logs.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The parameters of a run.
#[derive(Debug, Clone)]
struct Settings {
    cycles: u32,
    /// `always`, `everysec` or `no`.
    fsync: String,
    seed: u64,
    keys: usize,
    connections: usize,
    rewrite_min_bytes: u64,
    /// Each cycle's kill comes after a random delay in this range (milliseconds).
    run_ms: (u64, u64),
}

impl Settings {
    fn new(cycles: u32, fsync: &str) -> Settings {
        // Long enough under `everysec` that part of each run is older than the loss window.
        let run_ms = if fsync == "always" {
            (30, 600)
        } else {
            (100, 2 * LOSS_WINDOW.as_millis() as u64)
        };
        Settings {
            cycles,
            fsync: fsync.to_string(),
            seed: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            keys: 32,
            connections: 4,
            rewrite_min_bytes: 32 * 1024,
            run_ms,
        }
    }

    /// The settings `scripts/crash-test` passes in the environment.
    fn from_env() -> Settings {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            let raw = std::env::var(name).ok()?;
            Some(
                raw.parse()
                    .unwrap_or_else(|_| panic!("{name}={raw:?} is not valid")),
            )
        }
        let fsync = var::<String>("SESSIOND_CRASH_FSYNC").unwrap_or_else(|| "always".into());
        assert!(
            ["always", "everysec", "no"].contains(&fsync.as_str()),
            "SESSIOND_CRASH_FSYNC must be always, everysec or no, not {fsync:?}"
        );
        let mut settings = Settings::new(var("SESSIOND_CRASH_CYCLES").unwrap_or(100), &fsync);
        if let Some(seed) = var("SESSIOND_CRASH_SEED") {
            settings.seed = seed;
        }
        if let Some(keys) = var("SESSIOND_CRASH_KEYS") {
            settings.keys = keys;
        }
        if let Some(connections) = var("SESSIOND_CRASH_CONNECTIONS") {
            settings.connections = connections;
        }
        if let Some(bytes) = var("SESSIOND_CRASH_REWRITE_MIN_BYTES") {
            settings.rewrite_min_bytes = bytes;
        }
        settings
    }

    /// Acknowledgements before this moment must survive a kill at `killed_at`.
    fn durable_before(&self, killed_at: Instant) -> Instant {
        if self.fsync == "always" {
            killed_at
        } else {
            killed_at.checked_sub(LOSS_WINDOW).unwrap_or(killed_at)
        }
    }
}

/// A request one worker sent.
#[derive(Debug, Clone)]
enum Action {
    Set { value: Vec<u8>, mode: SetMode },
    Del { if_version: Option<u64> },
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Set(SetOutcome),
    Del(DelOutcome),
    /// An error status (e.g. `PERSISTENCE_FAILED`).
    Error(u16),
}

/// One logged request.
#[derive(Debug, Clone)]
struct Op {
    key: usize,
    action: Action,
    /// Taken before the request was queued.
    sent: Instant,
    /// The answer and when it was read; `None` if the connection died first.
    reply: Option<(Answer, Instant)>,
    /// Which worker sent it, for reports.
    worker: usize,
}

impl Op {
    /// The version an acknowledged SET stored.
    fn stored(&self) -> Option<u64> {
        match self.reply {
            Some((Answer::Set(SetOutcome::Stored { version }), _)) => Some(version),
            _ => None,
        }
    }

    /// Whether the reply proves this request was applied before `other` was.
    fn precedes(&self, other: &Op) -> bool {
        self.reply.is_some_and(|(_, at)| at < other.sent)
    }

    /// Acknowledged (with any answer) before `cutoff`: its effect, if any, must survive.
    fn answered_before(&self, cutoff: Instant) -> bool {
        self.reply.is_some_and(|(_, at)| at < cutoff)
    }

    /// Whether the request may have changed the store: it succeeded, or its fate is unknown.
    /// An error other than `PERSISTENCE_FAILED` and a refused condition change nothing.
    fn may_have_applied(&self) -> bool {
        match self.reply {
            None => true,
            Some((
                Answer::Set(SetOutcome::Stored { .. }) | Answer::Del(DelOutcome::Deleted),
                _,
            )) => true,
            Some((Answer::Error(status), _)) => status == Status::PersistenceFailed as u16,
            Some(_) => false,
        }
    }

    fn describe(&self, origin: Instant) -> String {
        let ms = |at: Instant| at.saturating_duration_since(origin).as_secs_f64() * 1000.0;
        let action = match &self.action {
            Action::Set { value, mode } => {
                format!("SET {mode:?} {:?}", String::from_utf8_lossy(value))
            }
            Action::Del { if_version } => format!("DEL if_version={if_version:?}"),
        };
        let reply = match self.reply {
            Some((answer, at)) => format!("{answer:?} at {:.3} ms", ms(at)),
            None => "no reply".into(),
        };
        format!(
            "w{} sent {:.3} ms: {action} -> {reply}",
            self.worker,
            ms(self.sent)
        )
    }
}

/// What a key held when it was read back after a restart.
type Held = Option<(Vec<u8>, u64)>;

/// Judges one key: `held` is what it holds after the restart, `ops` every request of the
/// cycle on it (from every worker), `baseline` what it held when the cycle began, and
/// acknowledgements before `durable_before` must have survived.
fn check_key(
    baseline: &Held,
    ops: &[&Op],
    held: &Held,
    durable_before: Instant,
    cycle_start: Instant,
) -> Result<(), String> {
    // The starting value acts as a SET acknowledged before the cycle began.
    let origin = cycle_start
        .checked_sub(Duration::from_millis(1))
        .unwrap_or(cycle_start);
    let base_op = baseline.as_ref().map(|(value, version)| Op {
        key: 0,
        action: Action::Set {
            value: value.clone(),
            mode: SetMode::Upsert,
        },
        sent: origin,
        reply: Some((
            Answer::Set(SetOutcome::Stored { version: *version }),
            origin,
        )),
        worker: usize::MAX,
    });
    let all: Vec<&Op> = base_op.iter().chain(ops.iter().copied()).collect();

    // The last SET that must have survived: per key, versions follow the order of
    // application, so it is the one with the highest version.
    let last_durable_set = all
        .iter()
        .filter(|op| op.answered_before(durable_before))
        .filter_map(|op| op.stored().map(|v| (v, *op)))
        .max_by_key(|(v, _)| *v);
    let durable_deletes = all.iter().filter(|op| {
        op.answered_before(durable_before)
            && matches!(op.reply, Some((Answer::Del(DelOutcome::Deleted), _)))
    });

    match held {
        Some((value, version)) => {
            if let Some((v, _)) = last_durable_set {
                if *version < v {
                    return Err(format!(
                        "acknowledged version {v} lost: holds older version {version}"
                    ));
                }
            }
            let Some(writer) = all
                .iter()
                .find(|op| matches!(&op.action, Action::Set { value: sent, .. } if sent == value))
            else {
                return Err(format!("holds a value no one wrote: {value:?}"));
            };
            match (writer.reply, writer.stored()) {
                (_, Some(v)) if v != *version => {
                    return Err(format!(
                        "holds the value written as version {v} with version {version}"
                    ));
                }
                (Some(_), None) if !writer.may_have_applied() => {
                    return Err(format!(
                        "holds the value of a refused write: {}",
                        writer.describe(cycle_start)
                    ));
                }
                _ => {}
            }
            for del in durable_deletes {
                let Action::Del { if_version } = del.action else {
                    unreachable!()
                };
                if if_version.is_some_and(|deleted| *version <= deleted) || writer.precedes(del) {
                    return Err(format!(
                        "an acknowledged delete came back: version {version} survived {}",
                        del.describe(cycle_start)
                    ));
                }
            }
            Ok(())
        }
        None => {
            let Some((v, last)) = last_durable_set else {
                return Ok(());
            };
            // Absence needs a delete that may have been applied after that SET.
            let justified = all.iter().any(|op| match op.action {
                Action::Del { if_version } => {
                    op.may_have_applied()
                        && !op.precedes(last)
                        && if_version.is_none_or(|deleted| deleted >= v)
                }
                Action::Set { .. } => false,
            });
            if justified {
                Ok(())
            } else {
                Err(format!(
                    "acknowledged version {v} lost: the key is absent and no delete could \
                     have followed {}",
                    last.describe(cycle_start)
                ))
            }
        }
    }
}

/// One worker's loop: batches of random writes until the connection dies.
async fn worker(
    mut conn: Conn,
    id: usize,
    cycle: u32,
    mut known: Vec<Option<u64>>,
    seed: u64,
) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut ops: Vec<Op> = Vec::new();
    let mut counter = 0u64;
    loop {
        let first = ops.len();
        let batch = 1 + rng.below(4) as usize;
        let sent = Instant::now();
        let mut alive = true;
        for _ in 0..batch {
            let key = rng.below(known.len() as u64) as usize;
            let roll = rng.below(100);
            let action = if roll < 70 {
                counter += 1;
                let pad = "p".repeat(rng.below(120) as usize);
                let value = format!("c{cycle}-w{id}-n{counter}-{pad}").into_bytes();
                let mode = match (roll, known[key]) {
                    (0..40, _) => SetMode::Upsert,
                    (40..60, Some(v)) => SetMode::IfVersion(v),
                    _ => SetMode::CreateOnly,
                };
                Action::Set { value, mode }
            } else {
                let if_version = if roll < 85 { None } else { known[key] };
                Action::Del { if_version }
            };
            let request = match &action {
                Action::Set { value, mode } => set_request(&key_name(key), value, TTL_MS, *mode),
                Action::Del { if_version } => Request::Del(Del {
                    key: Bytes::from(key_name(key)),
                    if_version: *if_version,
                }),
            };
            let opaque = ops.len() as u32;
            ops.push(Op {
                key,
                action,
                sent,
                reply: None,
                worker: id,
            });
            if !conn.feed_lossy(request.to_frame(opaque)).await {
                alive = false;
                break;
            }
        }
        if !alive || !conn.flush_lossy().await {
            return ops;
        }
        for index in first..ops.len() {
            let Some(frame) = conn.recv_lossy().await else {
                return ops;
            };
            let at = Instant::now();
            assert_eq!(
                frame.opaque, index as u32,
                "replies out of order: {frame:?}"
            );
            let op = &mut ops[index];
            let answer = answer(&op.action, &frame);
            op.reply = Some((answer, at));
            // Keep a view of versions so that conditional requests are often right.
            match answer {
                Answer::Set(SetOutcome::Stored { version })
                | Answer::Set(SetOutcome::VersionMismatch { current: version })
                | Answer::Del(DelOutcome::VersionMismatch { current: version }) => {
                    known[op.key] = Some(version)
                }
                Answer::Set(SetOutcome::NotFound)
                | Answer::Del(DelOutcome::Deleted | DelOutcome::NotFound) => known[op.key] = None,
                _ => {}
            }
        }
    }
}

fn answer(action: &Action, frame: &ResponseFrame) -> Answer {
    let status = frame.status();
    if !matches!(
        status,
        Some(Status::Ok | Status::NotFound | Status::Exists | Status::VersionMismatch)
    ) {
        return Answer::Error(frame.status);
    }
    match action {
        Action::Set { .. } => Answer::Set(SetOutcome::from_frame(frame).expect("SET reply")),
        Action::Del { .. } => Answer::Del(DelOutcome::from_frame(frame).expect("DEL reply")),
    }
}

fn key_name(key: usize) -> Vec<u8> {
    format!("session:{key:04}").into_bytes()
}

/// Reads every key back.
async fn read_all(daemon: &Daemon, keys: usize) -> Vec<Held> {
    let mut conn = daemon.connect().await;
    let frames = (0..keys)
        .map(|key| get_request(&key_name(key)).to_frame(key as u32))
        .collect();
    let replies = conn.pipeline(frames).await;
    replies
        .iter()
        .enumerate()
        .map(|(key, frame)| {
            assert_eq!(frame.opaque, key as u32);
            match GetReply::from_frame(frame).expect("GET reply") {
                GetReply::Hit(entry) => Some((entry.value.to_vec(), entry.version)),
                GetReply::Miss => None,
            }
        })
        .collect()
}

fn stat(stats: &sessiond_proto::command::StatsReply, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("stat {name} missing or not a number: {stats:?}"))
}

/// Runs the crash cycles; panics with a report of every violation found.
async fn run(settings: Settings) {
    println!(
        "crash test: {} cycles, fsync = {}, seed {} ({} keys, {} connections, rewrite_min_bytes {})",
        settings.cycles,
        settings.fsync,
        settings.seed,
        settings.keys,
        settings.connections,
        settings.rewrite_min_bytes
    );
    let config = format!(
        "[aof]\nfsync = \"{}\"\nrewrite_min_bytes = {}\n",
        settings.fsync, settings.rewrite_min_bytes
    );
    let mut rng = Rng::new(settings.seed);
    let mut daemon = Daemon::start_with_config(&config);
    let mut state: Vec<Held> = vec![None; settings.keys];
    // Versions a new SET must exceed: every version any reply carried before the last kill,
    // durable or not (PROTOCOL.md section 6.1: a version is never handed out twice).
    let mut seen_max = 0u64;
    let mut seen = std::collections::HashSet::new();
    let (mut total_acked, mut total_lost_in_flight) = (0usize, 0usize);

    for cycle in 0..settings.cycles {
        let known: Vec<Option<u64>> = state.iter().map(|h| h.as_ref().map(|(_, v)| *v)).collect();
        // Connect before any worker starts, so that the kill cannot come before a connect.
        let mut conns = Vec::new();
        for _ in 0..settings.connections {
            conns.push(daemon.connect().await);
        }
        let cycle_start = Instant::now();
        let workers: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(id, conn)| tokio::spawn(worker(conn, id, cycle, known.clone(), rng.next_u64())))
            .collect();

        let (lo, hi) = settings.run_ms;
        tokio::time::sleep(Duration::from_millis(lo + rng.below(hi - lo + 1))).await;
        let killed_at = Instant::now();
        daemon.kill9();

        let mut ops = Vec::new();
        for handle in workers {
            let log = bounded(JOIN_TIMEOUT, "a worker notices the kill", handle)
                .await
                .expect("worker panicked");
            ops.extend(log);
        }
        let acked = ops.iter().filter(|op| op.reply.is_some()).count();
        total_acked += acked;
        total_lost_in_flight += ops.len() - acked;

        daemon = daemon.restart();
        let held = read_all(&daemon, settings.keys).await;
        let stats = daemon.stats().await;

        let durable_before = settings.durable_before(killed_at);
        let mut violations = Vec::new();
        for op in &ops {
            if let Some((Answer::Error(status), _)) = op.reply {
                violations.push(format!(
                    "unexpected error status 0x{status:04x}: {}",
                    op.describe(cycle_start)
                ));
            }
            if let Some(version) = op.stored() {
                if version <= seen_max || !seen.insert(version) {
                    violations.push(format!(
                        "{:?}: version {version} handed out twice (clients had seen up to {seen_max} before the last kill): {}",
                        String::from_utf8_lossy(&key_name(op.key)),
                        op.describe(cycle_start)
                    ));
                }
            }
        }
        for key in 0..settings.keys {
            let key_ops: Vec<&Op> = ops.iter().filter(|op| op.key == key).collect();
            if let Err(problem) = check_key(
                &state[key],
                &key_ops,
                &held[key],
                durable_before,
                cycle_start,
            ) {
                let mut report = format!(
                    "{:?}: {problem}\n  held before: {:?}\n  held after: {:?}\n",
                    String::from_utf8_lossy(&key_name(key)),
                    state[key],
                    held[key]
                );
                for op in &key_ops {
                    let _ = writeln!(report, "  {}", op.describe(cycle_start));
                }
                violations.push(report);
            }
        }
        let present = held.iter().filter(|h| h.is_some()).count() as u64;
        if stat(&stats, "entries") != present {
            violations.push(format!(
                "STATS entries is {} but {present} keys are present",
                stat(&stats, "entries")
            ));
        }
        if !violations.is_empty() {
            panic!(
                "crash test cycle {cycle} (seed {}, fsync {}, killed {:.3} ms into the cycle): {} violation(s):\n{}\ndaemon log after the restart:\n{}",
                settings.seed,
                settings.fsync,
                killed_at.duration_since(cycle_start).as_secs_f64() * 1000.0,
                violations.len(),
                violations.join("\n"),
                daemon.logs().join("\n")
            );
        }
        daemon.assert_no_panic();

        seen_max = seen_max
            .max(held.iter().flatten().map(|(_, v)| *v).max().unwrap_or(0))
            .max(ops.iter().filter_map(Op::stored).max().unwrap_or(0));
        println!(
            "cycle {}/{}: killed after {} ms with {} of {} requests unanswered; {present} keys present, file {} bytes",
            cycle + 1,
            settings.cycles,
            killed_at.duration_since(cycle_start).as_millis(),
            ops.len() - acked,
            ops.len(),
            stat(&stats, "aof_file_bytes")
        );
        state = held;
    }
    println!(
        "crash test passed: {} cycles, {total_acked} acknowledged requests checked, {total_lost_in_flight} in flight at kills",
        settings.cycles
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_with_fsync_always() {
    run(Settings::new(20, "always")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_with_fsync_everysec() {
    run(Settings::new(8, "everysec")).await;
}

/// The long-running form, driven by `scripts/crash-test` through `SESSIOND_CRASH_*`
/// environment variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long-running; run through scripts/crash-test"]
async fn crash_from_env() {
    run(Settings::from_env()).await;
}

/// The judge itself, on hand-made histories: it must flag what it exists to catch.
mod judge {
    use super::*;

    /// An op on key 0 sent `sent` ms and answered `answered` ms after `t0`.
    fn op(t0: Instant, action: Action, sent: u64, answer: Option<(Answer, u64)>) -> Op {
        let at = |ms| t0 + Duration::from_millis(ms);
        Op {
            key: 0,
            action,
            sent: at(sent),
            reply: answer.map(|(a, ms)| (a, at(ms))),
            worker: 0,
        }
    }

    fn set(value: &str) -> Action {
        Action::Set {
            value: value.as_bytes().to_vec(),
            mode: SetMode::Upsert,
        }
    }

    fn stored(version: u64) -> Answer {
        Answer::Set(SetOutcome::Stored { version })
    }

    const PLAIN_DEL: Action = Action::Del { if_version: None };
    const DELETED: Answer = Answer::Del(DelOutcome::Deleted);

    fn held(value: &str, version: u64) -> Held {
        Some((value.as_bytes().to_vec(), version))
    }

    fn judge(baseline: Held, ops: &[Op], after: Held, t0: Instant) -> Result<(), String> {
        let refs: Vec<&Op> = ops.iter().collect();
        check_key(&baseline, &refs, &after, t0 + Duration::from_secs(60), t0)
    }

    #[test]
    fn a_lost_acknowledged_write_is_flagged() {
        let t0 = Instant::now();
        let ops = [
            op(t0, set("a"), 1, Some((stored(5), 2))),
            op(t0, set("b"), 3, Some((stored(6), 4))),
        ];
        assert!(judge(None, &ops, held("a", 5), t0).is_err());
        assert!(judge(None, &ops, None, t0).is_err());
        assert!(judge(None, &ops, held("b", 6), t0).is_ok());
    }

    #[test]
    fn an_acknowledged_delete_that_came_back_is_flagged() {
        let t0 = Instant::now();
        let ops = [
            op(t0, set("a"), 1, Some((stored(5), 2))),
            op(t0, PLAIN_DEL, 3, Some((DELETED, 4))),
        ];
        assert!(judge(None, &ops, held("a", 5), t0).is_err());
        assert!(judge(None, &ops, None, t0).is_ok());
        // The starting value too.
        let ops = [op(t0, PLAIN_DEL, 3, Some((DELETED, 4)))];
        assert!(judge(held("old", 3), &ops, held("old", 3), t0).is_err());
        // An if-version delete names the version it removed.
        let ops = [
            op(t0, set("a"), 1, Some((stored(5), 2))),
            op(
                t0,
                Action::Del {
                    if_version: Some(5),
                },
                3,
                Some((DELETED, 4)),
            ),
        ];
        assert!(judge(None, &ops, held("a", 5), t0).is_err());
    }

    #[test]
    fn in_flight_requests_may_or_may_not_have_landed() {
        let t0 = Instant::now();
        let ops = [
            op(t0, set("a"), 1, Some((stored(5), 2))),
            op(t0, set("b"), 3, None),
            op(t0, PLAIN_DEL, 3, None),
        ];
        assert!(judge(None, &ops, held("a", 5), t0).is_ok());
        assert!(judge(None, &ops, held("b", 7), t0).is_ok());
        assert!(judge(None, &ops, None, t0).is_ok());
        // But a version lower than an acknowledged one is not a landing.
        assert!(judge(None, &ops, held("b", 4), t0).is_err());
    }

    #[test]
    fn overlapping_requests_may_apply_in_either_order() {
        let t0 = Instant::now();
        // The delete was sent before the SET was answered: it may have come second.
        let ops = [
            op(t0, set("a"), 1, Some((stored(5), 4))),
            op(t0, PLAIN_DEL, 3, Some((DELETED, 5))),
        ];
        assert!(judge(None, &ops, held("a", 5), t0).is_ok());
        assert!(judge(None, &ops, None, t0).is_ok());
    }

    #[test]
    fn values_no_one_wrote_or_of_refused_writes_are_flagged() {
        let t0 = Instant::now();
        let ops = [
            op(t0, set("a"), 1, Some((stored(5), 2))),
            op(t0, set("b"), 3, Some((Answer::Set(SetOutcome::Exists), 4))),
        ];
        assert!(judge(None, &ops, held("zzz", 9), t0).is_err());
        assert!(judge(None, &ops, held("b", 9), t0).is_err());
        // And an acknowledged value under another version.
        assert!(judge(None, &ops, held("a", 6), t0).is_err());
    }

    #[test]
    fn only_acknowledgements_older_than_the_loss_window_must_survive_everysec() {
        let t0 = Instant::now();
        let ops = [
            op(t0, set("a"), 1, Some((stored(5), 2))),
            op(t0, set("b"), 3000, Some((stored(6), 3001))),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        let durable_before = t0 + Duration::from_millis(1000);
        assert!(check_key(&None, &refs, &held("a", 5), durable_before, t0).is_ok());
        assert!(check_key(&None, &refs, &None, durable_before, t0).is_err());
    }
}
