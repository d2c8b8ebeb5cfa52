//! A scrape: reads every number at the moment `/metrics` is asked for and encodes it.
//!
//! Nothing here runs per request. Each value is an atomic load (or, for the per-request
//! counters, a sum over one shard per thread), so a scrape takes the same time whatever the
//! number of sessions: `store.len()` is the map's own count, not a walk.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::registry::Registry;
use sessiond_proto::Opcode;

use super::defs::{self, Def};
use super::requests::{Outcome, Protocol, NATIVE_SLOTS, RESP_SLOTS};
use super::{Listener, Metrics, Rejection};
use crate::aof::Aof;
use crate::histogram::Snapshot;
use crate::memory::Part;
use crate::server::Context;

/// The version and commit the binary was built from (`build.rs` sets the commit: from git,
/// or from `SESSIOND_GIT_SHA` where there is no `.git`, as in the container build).
pub const GIT_SHA: &str = env!("SESSIOND_GIT_SHA");

/// What a scrape reads: the metrics recorded here, and once the AOF replay is over, the
/// server's context (store, counters, AOF).
pub struct Source {
    metrics: Arc<Metrics>,
    ctx: OnceLock<Arc<Context>>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("metrics", &self.metrics)
            .field("serving", &self.ctx.get().is_some())
            .finish()
    }
}

impl Source {
    /// A source that knows only `metrics` until [`Source::serving`].
    pub fn new(metrics: Arc<Metrics>) -> Arc<Source> {
        Arc::new(Source {
            metrics,
            ctx: OnceLock::new(),
        })
    }

    /// The replay is over and `ctx` is what is served: its numbers are exported from now
    /// on, and the server is ready.
    pub fn serving(&self, ctx: Arc<Context>) {
        let _ = self.ctx.set(ctx);
        self.metrics.health.serving();
    }

    /// The metrics recorded outside the context.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether `/health/ready` answers 200, and if not why.
    pub fn ready(&self) -> Result<(), super::NotReady> {
        let aof_failed = self
            .ctx
            .get()
            .and_then(|ctx| ctx.aof.as_ref())
            .is_some_and(Aof::is_failed);
        self.metrics.health.ready(aof_failed)
    }
}

/// Encodes a scrape.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    /// An exporter of `source`.
    pub fn new(source: Arc<Source>) -> Exporter {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(source)));
        Exporter { registry }
    }

    /// The Prometheus text format (0.0.4), or OpenMetrics if `openmetrics`.
    pub fn render(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct Scrape(Arc<Source>);

/// The descriptor (`# HELP`, `# TYPE`) of `def`, then `samples` to encode its values.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    def: &Def,
    samples: impl FnOnce(&mut MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    let unit = def.unit();
    let mut metric =
        encoder.encode_descriptor(def.stem, def.help, unit.as_ref(), def.metric_type())?;
    samples(&mut metric)
}

/// One unlabelled counter.
fn counter(encoder: &mut DescriptorEncoder<'_>, def: &Def, value: u64) -> fmt::Result {
    family(encoder, def, |m| {
        m.encode_counter::<NoLabelSet, _, u64>(&value, None)
    })
}

/// One unlabelled gauge.
fn gauge(encoder: &mut DescriptorEncoder<'_>, def: &Def, value: f64) -> fmt::Result {
    family(encoder, def, |m| m.encode_gauge(&value))
}

/// A counter's value with `labels`.
fn labelled_counter(
    m: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    value: u64,
) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A histogram's buckets, sum and count, with `labels`.
fn histogram(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, h: &Snapshot) -> fmt::Result {
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(
        h.sum_ns as f64 / 1e9,
        h.count(),
        &h.buckets_seconds(),
        None,
    )
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The `command` label of a native slot: the opcode's name, lower case like RESP's.
fn native_command(slot: usize) -> String {
    match u8::try_from(slot).ok().and_then(Opcode::from_u8) {
        Some(op) if slot < NATIVE_SLOTS - 1 => op.name().to_ascii_lowercase(),
        _ => "unknown".to_string(),
    }
}

/// The `command` label of a RESP slot: its name in the command table.
fn resp_command(slot: usize) -> String {
    match crate::resp::command_name(slot) {
        Some(name) if slot < RESP_SLOTS - 1 => name.to_string(),
        _ => "unknown".to_string(),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let source = &self.0;
        let metrics = &source.metrics;
        let e = &mut encoder;
        if let Some(requests) = &metrics.requests {
            let totals = requests.totals();
            let protocols = [Protocol::Native, Protocol::Resp];
            let name = |protocol: Protocol, slot: usize| match protocol {
                Protocol::Native => native_command(slot),
                Protocol::Resp => resp_command(slot),
            };
            family(e, &defs::REQUESTS, |m| {
                for protocol in protocols {
                    for (slot, counts, _) in totals.served(protocol) {
                        let command = name(protocol, slot);
                        for (outcome, &count) in Outcome::ALL.iter().zip(counts) {
                            if count > 0 {
                                let labels = [
                                    ("protocol", protocol.name()),
                                    ("command", command.as_str()),
                                    ("outcome", outcome.name()),
                                ];
                                labelled_counter(m, &labels, count)?;
                            }
                        }
                    }
                }
                Ok(())
            })?;
            family(e, &defs::REQUEST_DURATION, |m| {
                for protocol in protocols {
                    for (slot, _, latency) in totals.served(protocol) {
                        let command = name(protocol, slot);
                        let labels = [("protocol", protocol.name()), ("command", command.as_str())];
                        histogram(m, &labels, latency)?;
                    }
                }
                Ok(())
            })?;
        }
        let c = &metrics.connections;
        family(e, &defs::CONNECTIONS, |m| {
            for listener in Listener::ALL {
                let value = super::Connections::load(&c.current[listener as usize]);
                m.encode_family(&[("listener", listener.name())])?
                    .encode_gauge(&value)?;
            }
            Ok(())
        })?;
        family(e, &defs::CONNECTIONS_ACCEPTED, |m| {
            for listener in Listener::ALL {
                let value = super::Connections::load(&c.accepted[listener as usize]);
                labelled_counter(m, &[("listener", listener.name())], value)?;
            }
            Ok(())
        })?;
        family(e, &defs::CONNECTIONS_REJECTED, |m| {
            for listener in Listener::ALL {
                for reason in Rejection::ALL {
                    let value =
                        super::Connections::load(&c.rejected[listener as usize][reason as usize]);
                    let labels = [("listener", listener.name()), ("reason", reason.name())];
                    labelled_counter(m, &labels, value)?;
                }
            }
            Ok(())
        })?;
        if let Some(ctx) = source.ctx.get() {
            encode_context(e, ctx)?;
        }
        gauge(
            e,
            &defs::AOF_REPLAY_DURATION,
            seconds(metrics.replay_duration()),
        )?;
        gauge(e, &defs::READY, f64::from(u8::from(source.ready().is_ok())))?;
        if let Some(rss) = crate::memory::resident_set() {
            gauge(e, &defs::RESIDENT_MEMORY, rss as f64)?;
        }
        family(e, &defs::BUILD, |m| {
            m.encode_info(&[("version", env!("CARGO_PKG_VERSION")), ("git_sha", GIT_SHA)])
        })?;
        let started = metrics
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        gauge(e, &defs::START_TIME, seconds(started))
    }
}

/// The numbers that exist once the store is loaded.
fn encode_context(e: &mut DescriptorEncoder<'_>, ctx: &Context) -> fmt::Result {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &ctx.stats;
    let memory = ctx.store.memory();
    counter(e, &defs::SLOW_REQUESTS, ctx.slowlog.recorded_total())?;
    counter(
        e,
        &defs::PROTOCOL_ERRORS,
        stats.protocol_errors.load(Relaxed),
    )?;
    gauge(e, &defs::SESSIONS, ctx.store.len() as f64)?;
    // One lock per owner-index shard, not a walk of the sessions.
    gauge(e, &defs::OWNERS, ctx.store.owner_count() as f64)?;
    counter(e, &defs::SESSIONS_STORED, stats.set_stored.load(Relaxed))?;
    counter(e, &defs::SESSIONS_EXPIRED, ctx.store.expired_reclaimed())?;
    counter(e, &defs::SESSIONS_DELETED, stats.del_deleted.load(Relaxed))?;
    counter(e, &defs::SESSIONS_EVICTED, memory.evicted())?;
    counter(e, &defs::SESSIONS_REFUSED, memory.refused())?;
    family(e, &defs::MEMORY_USED, |m| {
        for part in Part::ALL {
            m.encode_family(&[("part", part.name())])?
                .encode_gauge(&memory.used_by(part))?;
        }
        Ok(())
    })?;
    gauge(e, &defs::MEMORY_LIMIT, memory.limit().unwrap_or(0) as f64)?;
    counter(e, &defs::AUTH_FAILURES, stats.auth_failures.load(Relaxed))?;
    let Some(aof) = &ctx.aof else { return Ok(()) };
    let timings = aof.timings();
    gauge(e, &defs::AOF_SIZE, aof.file_len() as f64)?;
    gauge(
        e,
        &defs::AOF_WRITABLE,
        f64::from(u8::from(!aof.is_failed())),
    )?;
    gauge(
        e,
        &defs::AOF_LAST_FSYNC_AGE,
        seconds(timings.last_fsync_age()),
    )?;
    family(e, &defs::AOF_FSYNC_DURATION, |m| {
        let h = timings.fsync_latency();
        m.encode_histogram::<NoLabelSet>(
            h.sum_ns as f64 / 1e9,
            h.count(),
            &h.buckets_seconds(),
            None,
        )
    })?;
    counter(e, &defs::AOF_REWRITES, aof.rewrites())?;
    let (took, ok) = timings.last_rewrite();
    gauge(e, &defs::AOF_LAST_REWRITE_DURATION, seconds(took))?;
    gauge(e, &defs::AOF_LAST_REWRITE_SUCCESS, f64::from(u8::from(ok)))?;
    counter(e, &defs::AOF_WRITE_ERRORS, aof.write_errors())
}
