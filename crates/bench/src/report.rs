//! Counting replies and latencies, and printing the result.
//!
//! Each connection counts into its own [`Recorder`], with no sharing on the hot path; the
//! recorders are merged once the run is over into a [`Report`], which prints either as a
//! table or as one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::protocol::Reply;
use crate::workload::{OpKind, KINDS};

/// Longest latency the histograms tell apart: one minute, in nanoseconds. Slower replies
/// are recorded as one minute.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A histogram of latencies in nanoseconds, three significant digits (0.1 % resolution).
///
/// About 220 KiB each; one per operation kind in the mix per connection.
pub fn latency_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
}

/// Counts for one operation kind.
#[derive(Debug, Clone)]
struct KindStats {
    hits: u64,
    misses: u64,
    errors: u64,
    latency_ns: Histogram<u64>,
}

impl KindStats {
    fn count(&self) -> u64 {
        self.hits + self.misses + self.errors
    }
}

/// Replies and latencies of the measured requests of one connection (or, merged, of all).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// `None` for kinds outside the mix.
    kinds: [Option<KindStats>; KINDS],
}

impl Recorder {
    /// An empty recorder for `kinds`, each with a copy of `histogram` (empty).
    pub fn new(kinds: impl Iterator<Item = OpKind>, histogram: &Histogram<u64>) -> Recorder {
        let mut recorder = Recorder {
            kinds: Default::default(),
        };
        for kind in kinds {
            recorder.kinds[kind.index()] = Some(KindStats {
                hits: 0,
                misses: 0,
                errors: 0,
                latency_ns: histogram.clone(),
            });
        }
        recorder
    }

    /// A recorder for no kinds at all (of a connection that never got to run).
    pub fn empty() -> Recorder {
        Recorder {
            kinds: Default::default(),
        }
    }

    /// Counts one reply to a request of `kind` that took `latency_ns`.
    pub fn record(&mut self, kind: OpKind, reply: &Reply, latency_ns: u64) {
        // A kind outside the mix is never sent, so there is always a slot.
        let Some(stats) = &mut self.kinds[kind.index()] else {
            return;
        };
        match reply {
            Reply::Hit => stats.hits += 1,
            Reply::Miss => stats.misses += 1,
            Reply::Error(_) => stats.errors += 1,
        }
        stats.latency_ns.saturating_record(latency_ns.max(1));
    }

    /// Adds `other`'s counts and latencies to this one.
    pub fn merge(&mut self, other: &Recorder) -> Result<(), hdrhistogram::AdditionError> {
        for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
            match (mine, theirs) {
                (Some(mine), Some(theirs)) => {
                    mine.hits += theirs.hits;
                    mine.misses += theirs.misses;
                    mine.errors += theirs.errors;
                    mine.latency_ns.add(&theirs.latency_ns)?;
                }
                (mine @ None, Some(theirs)) => *mine = Some(theirs.clone()),
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// Replies counted so far.
    pub fn ops(&self) -> u64 {
        self.kinds.iter().flatten().map(KindStats::count).sum()
    }

    /// Error replies counted so far.
    fn errors(&self) -> u64 {
        self.kinds.iter().flatten().map(|k| k.errors).sum()
    }

    /// The latencies of every kind together, if any kind is counted.
    fn all_latencies(&self) -> Result<Option<Histogram<u64>>, hdrhistogram::AdditionError> {
        let mut all: Option<Histogram<u64>> = None;
        for stats in self.kinds.iter().flatten() {
            match &mut all {
                Some(all) => all.add(&stats.latency_ns)?,
                None => all = Some(stats.latency_ns.clone()),
            }
        }
        Ok(all)
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest reply.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `h`, a histogram in nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The results for one operation kind.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// Replies received (`hits + misses + errors`).
    pub count: u64,
    /// Found / stored / deleted / touched.
    pub hits: u64,
    /// Not found (or a conditional write refused). Not an error.
    pub misses: u64,
    /// Error replies.
    pub errors: u64,
    /// Latency of this kind.
    pub latency_us: Latency,
}

/// What was run against what, as the report restates it.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `native`, `resp` or `memcached`.
    pub target: &'static str,
    /// Server address.
    pub addr: String,
    /// `mix`, or `load` for `--load`.
    pub mode: &'static str,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Number of distinct keys.
    pub keys: u64,
    /// Bytes per key.
    pub key_size: usize,
    /// TTL in milliseconds.
    pub ttl_ms: u64,
    /// The operation mix (`set=1` for a load).
    pub mix: String,
    /// Warm-up, in seconds.
    pub warmup_s: f64,
    /// Requested measuring time, if the run was timed.
    pub duration_s: Option<f64>,
    /// Requested operation count, if the run was counted.
    pub ops_requested: Option<u64>,
    /// Keys written before the warm-up (`--prefill`).
    pub prefilled: Option<u64>,
    /// Random seed.
    pub seed: u64,
    /// Runtime worker threads of the load generator.
    pub threads: usize,
    /// Whether connections used TLS.
    pub tls: bool,
    /// Whether every request had a new connection of its own (`--reconnect`): ops/s is then
    /// new connections per second.
    pub reconnect: bool,
    /// The user connections authenticated as, if any.
    pub user: Option<String>,
    /// Connections of the measured stage opened per second, all at once: TCP connect, the
    /// TLS handshake and `AUTH` when they apply.
    pub connects_per_sec: f64,
    /// Under `--rate`, the requests per second that were scheduled in all (`ops_per_sec`
    /// is what was achieved); absent for a closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The configuration.
    #[serde(flatten)]
    pub run: RunInfo,
    /// Seconds from the start of measuring to the last measured reply.
    pub elapsed_s: f64,
    /// Measured replies (the sum of `by_op[*].count`).
    pub ops: u64,
    /// `ops / elapsed_s`.
    pub ops_per_sec: f64,
    /// Sum of the hits of every kind.
    pub hits: u64,
    /// Sum of the misses of every kind.
    pub misses: u64,
    /// Error replies to measured requests, plus connections lost.
    pub errors: u64,
    /// Connections lost (each also counts once in `errors`).
    pub connection_errors: u64,
    /// Error replies during warm-up or prefill, not in the other counts.
    pub unmeasured_errors: u64,
    /// Latency of all measured requests: under `--rate`, from when each was due.
    pub latency_us: Latency,
    /// Under `--rate`, how long after its due time each measured request was sent: the load
    /// generator's own lateness plus any wait for room in the window (a slow server). Absent
    /// for a closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Latency>,
    /// Per operation kind in the mix.
    pub by_op: BTreeMap<&'static str, OpReport>,
    /// The first few errors, as printed during the run.
    pub first_errors: Vec<String>,
    /// With several nodes (`--addr a,b,c`), what each one served; the fields above are
    /// their sum. Absent for a single server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeReport>,
}

/// What one node of a multi-node run served.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The node's name, which placement hashes.
    pub name: String,
    /// Where it was reached.
    pub addr: String,
    /// How many of the key space's keys placement puts on it.
    pub keys: u64,
    /// Measured replies from it.
    pub ops: u64,
    /// `ops` over the time from the start of measuring to its last measured reply.
    pub ops_per_sec: f64,
    /// Error replies from it, plus its connections lost.
    pub errors: u64,
    /// Latency of its measured requests.
    pub latency_us: Latency,
}

impl NodeReport {
    /// The report of node `name` at `addr`, holding `keys` keys, from its connections'
    /// merged `recorder`.
    pub fn new(
        name: &str,
        addr: &str,
        keys: u64,
        recorder: &Recorder,
        elapsed_s: f64,
        connections_lost: u64,
    ) -> Result<NodeReport, hdrhistogram::AdditionError> {
        let ops = recorder.ops();
        Ok(NodeReport {
            name: name.to_string(),
            addr: addr.to_string(),
            keys,
            ops,
            ops_per_sec: per_sec(ops, elapsed_s),
            errors: recorder.errors() + connections_lost,
            latency_us: recorder
                .all_latencies()?
                .as_ref()
                .map(Latency::of)
                .unwrap_or_default(),
        })
    }
}

/// `ops` per second over `elapsed_s`, 0 for a run that measured nothing.
fn per_sec(ops: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        ops as f64 / elapsed_s
    } else {
        0.0
    }
}

/// Failures counted outside the recorders.
#[derive(Debug, Clone, Default)]
pub struct Failures {
    /// Connections lost.
    pub connections: u64,
    /// Error replies to unmeasured requests.
    pub unmeasured: u64,
    /// The first few error messages.
    pub first: Vec<String>,
}

impl Report {
    /// Builds the report from the merged recorder.
    pub fn new(
        run: RunInfo,
        recorder: &Recorder,
        elapsed_s: f64,
        failures: Failures,
    ) -> Result<Report, hdrhistogram::AdditionError> {
        let mut by_op = BTreeMap::new();
        let all = recorder.all_latencies()?;
        let (mut hits, mut misses, mut op_errors) = (0, 0, 0);
        for kind in OpKind::ALL {
            let Some(stats) = &recorder.kinds[kind.index()] else {
                continue;
            };
            hits += stats.hits;
            misses += stats.misses;
            op_errors += stats.errors;
            by_op.insert(
                kind.name(),
                OpReport {
                    count: stats.count(),
                    hits: stats.hits,
                    misses: stats.misses,
                    errors: stats.errors,
                    latency_us: Latency::of(&stats.latency_ns),
                },
            );
        }
        let ops = recorder.ops();
        Ok(Report {
            run,
            elapsed_s,
            ops,
            ops_per_sec: per_sec(ops, elapsed_s),
            hits,
            misses,
            errors: op_errors + failures.connections,
            connection_errors: failures.connections,
            unmeasured_errors: failures.unmeasured,
            latency_us: all.as_ref().map(Latency::of).unwrap_or_default(),
            send_lag_us: None,
            by_op,
            first_errors: failures.first,
            nodes: Vec::new(),
        })
    }

    /// Whether anything failed, measured or not.
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.unmeasured_errors > 0
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of numbers and strings into a String cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let r = &self.run;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "target    {} at {}{}{}, {} connections{} x pipeline {}, {} threads",
            r.target,
            r.addr,
            if r.tls { " over TLS" } else { "" },
            r.user
                .as_ref()
                .map(|u| format!(" as {u}"))
                .unwrap_or_default(),
            r.connections,
            if self.nodes.is_empty() {
                ""
            } else {
                " per node"
            },
            r.pipeline,
            r.threads
        );
        let _ = writeln!(
            out,
            "connect   {:.0} connections/s{}",
            r.connects_per_sec,
            if r.reconnect {
                ", then a new connection for every request"
            } else {
                ""
            }
        );
        let _ = write!(
            out,
            "workload  {} {}, {} keys of {} B, values of {} B, ttl {}",
            r.mode,
            r.mix,
            r.keys,
            r.key_size,
            r.value_size,
            humantime::format_duration(std::time::Duration::from_millis(r.ttl_ms))
        );
        if r.mode == "mix" {
            let _ = write!(out, ", warm-up {}s, seed {}", r.warmup_s, r.seed);
        }
        if let Some(n) = r.prefilled {
            let _ = write!(out, ", prefilled {n} keys");
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "result    {} ops in {:.2}s = {:.0} ops/s, {} errors{}",
            self.ops,
            self.elapsed_s,
            self.ops_per_sec,
            self.errors,
            if self.connection_errors > 0 {
                format!(" ({} connections lost)", self.connection_errors)
            } else {
                String::new()
            }
        );
        if let (Some(rate), Some(lag)) = (r.rate, &self.send_lag_us) {
            let _ = writeln!(
                out,
                "schedule  {rate:.0} requests/s due, latency from the due time; sent late by \
                 p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                lag.p50, lag.p99, lag.max
            );
        }
        if self.unmeasured_errors > 0 {
            let _ = writeln!(
                out,
                "          {} more errors outside the measured part",
                self.unmeasured_errors
            );
        }
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "node      {} at {}: {} keys, {} ops = {:.0} ops/s, p50 {:.1} us, p99 {:.1} us, {} errors",
                node.name,
                node.addr,
                node.keys,
                node.ops,
                node.ops_per_sec,
                node.latency_us.p50,
                node.latency_us.p99,
                node.errors
            );
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "{:<6} {:>10} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op",
            "count",
            "hits",
            "misses",
            "errors",
            "mean us",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "max us"
        );
        let mut row = |name: &str, count, hits, misses, errors, l: &Latency| {
            let _ = writeln!(
                out,
                "{name:<6} {count:>10} {hits:>10} {misses:>10} {errors:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                l.mean, l.p50, l.p99, l.p999, l.max
            );
        };
        for kind in OpKind::ALL {
            if let Some(op) = self.by_op.get(kind.name()) {
                row(
                    kind.name(),
                    op.count,
                    op.hits,
                    op.misses,
                    op.errors,
                    &op.latency_us,
                );
            }
        }
        row(
            "all",
            self.ops,
            self.hits,
            self.misses,
            self.errors - self.connection_errors,
            &self.latency_us,
        );
        if !self.first_errors.is_empty() {
            out.push_str("\nfirst errors:\n");
            for e in &self.first_errors {
                let _ = writeln!(out, "  {e}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_counts_add_up() {
        let h = latency_histogram().unwrap();
        let kinds = || [OpKind::Get, OpKind::Set].into_iter();
        let mut a = Recorder::new(kinds(), &h);
        let mut b = Recorder::new(kinds(), &h);
        a.record(OpKind::Get, &Reply::Hit, 1_000);
        a.record(OpKind::Get, &Reply::Miss, 3_000);
        b.record(OpKind::Set, &Reply::Error("x".into()), 2_000);
        a.merge(&b).unwrap();
        assert_eq!(a.ops(), 3);
        let run = RunInfo {
            target: "native",
            addr: "a".into(),
            mode: "mix",
            connections: 1,
            pipeline: 1,
            value_size: 1,
            keys: 1,
            key_size: 1,
            ttl_ms: 1,
            mix: "get=1,set=1".into(),
            warmup_s: 0.0,
            duration_s: None,
            ops_requested: Some(3),
            prefilled: None,
            seed: 1,
            threads: 1,
            tls: false,
            reconnect: false,
            user: None,
            connects_per_sec: 0.0,
            rate: None,
        };
        let report = Report::new(run, &a, 1.5, Failures::default()).unwrap();
        assert_eq!(
            (report.ops, report.hits, report.misses, report.errors),
            (3, 1, 1, 1)
        );
        assert_eq!(report.ops_per_sec, 2.0);
        assert_eq!(report.by_op["get"].count, 2);
        assert_eq!(report.by_op["set"].errors, 1);
        assert!(report.latency_us.max >= 2.99 && report.latency_us.max <= 3.01);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["by_op"]["get"]["misses"], 1);
        assert_eq!(json["target"], "native");
        assert!(report.to_table().contains("all"));
    }
}
