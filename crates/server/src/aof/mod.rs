//! Durability: the append-only file (AOF).
//!
//! Every mutation the store applies reaches [`Aof`] through the
//! [`MutationSink`](crate::store::MutationSink) seam, in per-key order, while the key's shard
//! lock is held. [`Aof::record`] only encodes the record into an in-memory buffer; a dedicated
//! writer thread ([`writer`]) appends the buffer to the file and calls `fdatasync` as the
//! [`FsyncPolicy`] says, so request handling never waits on the disk unless the policy is
//! `always`.
//!
//! With `always`, a connection handler that applied mutations calls [`Aof::wait_synced`]
//! before it sends the responses: they go out only once an fsync covering the records has
//! completed. Every handler waiting at the same moment is covered by the same fsync (group
//! commit), so throughput grows with concurrency instead of being one fsync per write.
//!
//! The file format is specified in `proto/AOF.md` and implemented in [`record`]; [`reader`]
//! reads a file and classifies damage; [`replay`] loads a file into the store at startup;
//! [`rewrite`] compacts the file into a snapshot of the live entries.
//!
//! # When the disk fails
//!
//! If a write or an fsync fails (ENOSPC, EIO), or a rewrite fails after its rename, the AOF
//! enters the *failed* state:
//!
//! - Writes (a `GET` with touch included) are refused with `PERSISTENCE_FAILED` before they are
//!   applied; reads are served. A `DEL` (a logout) is applied, but answered
//!   `PERSISTENCE_FAILED` until the file has recovered, which makes its record durable.
//! - With `always`, writes that were applied but whose fsync failed are answered
//!   `PERSISTENCE_FAILED`, never `OK`. They are in memory, so the outcome is like a timeout:
//!   the write may or may not survive; clients retry with the same conditions.
//! - A write that found no room is retried by appending the records kept since, as soon as
//!   they fit. Anything else is recovered only by rewriting the whole file from memory: after
//!   an fsync error Linux may have dropped the dirty pages and cleared the error
//!   ("fsyncgate"), so a second fsync can report success for data that is gone. The
//!   [`writer`] module says how each recovery works; once one succeeds, everything in memory
//!   is in the file again, the failed state is cleared, and writes resume.

pub mod check;
pub mod header;
pub mod reader;
pub mod record;
pub mod replay;
pub mod rewrite;
pub mod timings;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::Deserialize;
use tokio::sync::watch;

use crate::memory::{Charge, Part};
use crate::store::{Mutation, MutationSink, Store};

/// Name of the append-only file inside the data directory.
pub const FILE_NAME: &str = "appendonly.aof";
/// Name of the file a rewrite writes before it replaces [`FILE_NAME`].
pub const REWRITE_FILE_NAME: &str = "appendonly.aof.rewrite";

/// When the writer calls `fdatasync`, and so what a crash can lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every batch of records, before any write in it is acknowledged. Nothing that
    /// was acknowledged is lost, even on power loss or an OS crash.
    Always,
    /// About once per second. A process crash loses nothing that reached the writer; a power
    /// loss or OS crash loses at most about the last second of acknowledged writes.
    Everysec,
    /// Never: the OS decides when to write back (typically within 30 s on Linux). A process
    /// crash loses nothing that reached the writer; a power loss or OS crash loses whatever
    /// the OS had not yet written.
    No,
}

impl FsyncPolicy {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Everysec => "everysec",
            FsyncPolicy::No => "no",
        }
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::Everysec),
            "no" => Ok(FsyncPolicy::No),
            other => Err(format!(
                "unknown fsync policy {other:?} (expected always, everysec or no)"
            )),
        }
    }
}

/// Settings of the AOF.
#[derive(Debug, Clone)]
pub struct AofSettings {
    /// The data directory holding the file.
    pub dir: PathBuf,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// No automatic rewrite below this file size.
    pub rewrite_min_bytes: u64,
    /// Rewrite when the file has grown by this percentage over its size after the last
    /// rewrite (or load).
    pub rewrite_growth_percent: u64,
}

impl AofSettings {
    /// The path of the append-only file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }
}

/// Why a write could not be made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the append-only file cannot be written: {0}")]
pub struct PersistenceError(pub String);

/// The handle to the AOF: the store's mutation sink, and what connections wait on.
#[derive(Clone)]
pub struct Aof {
    shared: Arc<Shared>,
}

/// Records waiting for the writer, and the rewrite side buffer.
struct Pending {
    /// Encoded records not yet handed to the writer.
    buf: Vec<u8>,
    /// Sequence number of the last record appended to `buf` (records are numbered from 1).
    appended: u64,
    /// While a rewrite runs, a copy of every record since it started: they are appended to
    /// the new file before it replaces the old one, so no write is lost to the switch.
    rewrite: RewriteTail,
    /// Set when the writer must finish and exit.
    closing: bool,
    /// The capacity of `buf` and of the rewrite's side buffer, as the memory limit counts
    /// them ([`crate::memory::Part::Aof`]).
    counted: Charge,
}

impl Pending {
    /// Counts the buffers at their current capacity. Called where they grow or are swapped;
    /// the count is set whole each time, so a site that shrinks them without calling this is
    /// corrected at the next record.
    fn recount(&mut self) {
        let tail = match &self.rewrite {
            RewriteTail::Collecting(tail) => tail.capacity(),
            _ => 0,
        };
        self.counted.set(self.buf.capacity() + tail);
    }
}

/// The side buffer of a running rewrite.
#[derive(Debug, Default)]
enum RewriteTail {
    /// No rewrite is running.
    #[default]
    Off,
    /// A rewrite is running; every record since it started.
    Collecting(Vec<u8>),
    /// More than [`MAX_REWRITE_TAIL_BYTES`] arrived while the snapshot was being written:
    /// the copy was dropped, and the rewrite must be abandoned rather than finished.
    Overflowed,
}

/// Most bytes of records kept for a running rewrite. Writes faster than the snapshot can be
/// written would otherwise grow the side buffer without bound; past this the rewrite is
/// abandoned (the old file stays complete) and tried again once the file has grown further.
pub const MAX_REWRITE_TAIL_BYTES: usize = 256 * 1024 * 1024;

/// What the writer has made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Durable {
    /// Every record up to this sequence number is on disk under the policy.
    synced: u64,
    /// Set while the file cannot be written; the reason.
    failure: Option<String>,
}

/// How many versions one reservation covers (`store::versions`). The writer reserves the next
/// block when half of the current one is used, so a write waits for the disk only if it outruns
/// an fsync by half a block; a restart skips at most a block.
pub const VERSION_BLOCK: u64 = 1 << 20;

/// Bytes of records waiting for the writer above which connections stop to let it catch up.
/// Without a bound, clients writing faster than the disk accepts would grow the buffer until
/// memory ran out; with it, they are slowed to the disk's pace.
pub const MAX_BACKLOG_BYTES: usize = 64 * 1024 * 1024;

struct Shared {
    policy: FsyncPolicy,
    /// The file's salt, which every record's checks include (AOF.md section 4.1).
    salt: record::Salt,
    pending: Mutex<Pending>,
    /// Wakes the writer when records arrive or it must close.
    wake: Condvar,
    durable: watch::Sender<Durable>,
    /// Sequence number of the last record the writer has taken off the buffer (written to
    /// the file, or dropped because the file has failed and a rewrite will cover it).
    taken: watch::Sender<u64>,
    /// Bytes in `pending.buf`, readable without the lock.
    backlog: std::sync::atomic::AtomicUsize,
    /// Mirrors `durable.failure.is_some()` for a lock-free check on every write request.
    failed: AtomicBool,
    /// Current file size, for STATS.
    file_len: AtomicU64,
    /// Completed rewrites, for STATS.
    rewrites: AtomicU64,
    /// Failed writes or fsyncs, for STATS.
    write_errors: AtomicU64,
    /// Fsync and rewrite durations, for the metrics.
    timings: timings::Timings,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Aof {
    /// Starts the writer on an open, loaded file. `store` is the store whose sink this `Aof`
    /// becomes; rewrites snapshot it.
    fn start(
        settings: AofSettings,
        store: Store,
        file: std::fs::File,
        file_len: u64,
        salt: record::Salt,
        hook: rewrite::SharedHook,
    ) -> std::io::Result<Aof> {
        let (durable, _) = watch::channel(Durable::default());
        let (taken, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            policy: settings.fsync,
            salt,
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 * 1024),
                appended: 0,
                rewrite: RewriteTail::Off,
                closing: false,
                counted: store.memory().charge(Part::Aof),
            }),
            wake: Condvar::new(),
            durable,
            taken,
            backlog: std::sync::atomic::AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            file_len: AtomicU64::new(file_len),
            rewrites: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            timings: timings::Timings::default(),
            writer: Mutex::new(None),
        });
        let aof = Aof { shared };
        let handle = writer::spawn(aof.clone(), settings, store, file, file_len, hook)?;
        *lock(&aof.shared.writer) = Some(handle);
        Ok(aof)
    }

    /// Loads the AOF in `settings.dir` (creating it if absent) into a new store whose
    /// mutations are then appended to it, and starts the writer. `repair` truncates a file
    /// that is corrupt in the middle at the first damaged record instead of refusing.
    pub fn open_and_load(
        settings: AofSettings,
        clock: crate::clock::Clock,
        repair: bool,
    ) -> Result<(Store, Aof), replay::LoadError> {
        Aof::open_and_load_with_hook(settings, clock, repair, Arc::new(rewrite::no_hook))
    }

    /// [`Aof::open_and_load`] with a hook that the writer calls at each step of its rewrites
    /// ([`rewrite::RewriteStep`]): the tests use it to fail or pause a rewrite at one step.
    pub fn open_and_load_with_hook(
        settings: AofSettings,
        clock: crate::clock::Clock,
        repair: bool,
        hook: rewrite::SharedHook,
    ) -> Result<(Store, Aof), replay::LoadError> {
        let sink = Arc::new(LateSink::default());
        let store = Store::with_parts(clock, Some(sink.clone()));
        let (file, file_len, salt) = replay::load(&settings, &store, repair)?;
        // No version above what the file already covers until the writer's first reservation
        // is durable (store::versions).
        store.require_version_reservations();
        let path = settings.path();
        let aof = Aof::start(settings, store.clone(), file, file_len, salt, hook)
            .map_err(|source| replay::LoadError::Io { path, source })?;
        sink.set(aof.clone());
        Ok((store, aof))
    }

    /// The fsync policy.
    pub fn policy(&self) -> FsyncPolicy {
        self.shared.policy
    }

    /// Whether writes must be refused because the file cannot be written.
    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Sequence number of the last record handed to the AOF. A handler that applied
    /// mutations reads it after applying them and waits for it with [`Aof::wait_synced`].
    pub fn appended(&self) -> u64 {
        lock(&self.shared.pending).appended
    }

    /// Waits until every record up to `seq` is durable under the policy, or fails if the
    /// file cannot be written. With a policy other than `always` this returns at once.
    pub async fn wait_synced(&self, seq: u64) -> Result<(), PersistenceError> {
        if self.shared.policy != FsyncPolicy::Always {
            return Ok(());
        }
        let mut rx = self.shared.durable.subscribe();
        let state = rx
            .wait_for(|d| d.synced >= seq || d.failure.is_some())
            .await
            .map_err(|_| PersistenceError("the writer has stopped".into()))?;
        if state.synced >= seq {
            return Ok(());
        }
        Err(PersistenceError(state.failure.clone().unwrap_or_default()))
    }

    /// If more than [`MAX_BACKLOG_BYTES`] of records are waiting for the writer, waits until
    /// the writer has taken everything recorded so far. Connection handlers call this after
    /// each batch of requests, which is what slows writers down to the disk's pace.
    pub async fn relieve_backlog(&self) {
        if self.shared.backlog.load(Ordering::Relaxed) <= MAX_BACKLOG_BYTES {
            return;
        }
        let target = self.appended();
        let mut rx = self.shared.taken.subscribe();
        // An error means the writer has stopped (shutdown); nothing is left to wait for.
        let _ = rx.wait_for(|taken| *taken >= target).await;
    }

    /// Bytes of records waiting for the writer.
    pub fn backlog_bytes(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// Current size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.shared.file_len.load(Ordering::Relaxed)
    }

    /// Completed rewrites since start.
    pub fn rewrites(&self) -> u64 {
        self.shared.rewrites.load(Ordering::Relaxed)
    }

    /// Failed writes or fsyncs since start.
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// How long fsyncs and rewrites take.
    pub fn timings(&self) -> &timings::Timings {
        &self.shared.timings
    }

    /// Writes out and fsyncs everything recorded, then stops the writer. Called once, at
    /// shutdown, after connections have stopped.
    pub fn close(&self) {
        {
            let mut pending = lock(&self.shared.pending);
            pending.closing = true;
        }
        self.shared.wake.notify_all();
        if let Some(handle) = lock(&self.shared.writer).take() {
            if handle.join().is_err() {
                tracing::error!("the AOF writer thread panicked");
            }
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.shared.pending)
    }
}

impl Aof {
    /// Appends what `encode` writes (whole records) to the buffer the writer takes, and to a
    /// running rewrite's side buffer; returns the sequence number it is known by.
    fn push(&self, encode: impl FnOnce(record::Salt, &mut Vec<u8>)) -> u64 {
        let mut pending = self.pending();
        let start = pending.buf.len();
        encode(self.shared.salt, &mut pending.buf);
        let Pending { buf, rewrite, .. } = &mut *pending;
        if let RewriteTail::Collecting(tail) = rewrite {
            if tail.len() + (buf.len() - start) > MAX_REWRITE_TAIL_BYTES {
                *rewrite = RewriteTail::Overflowed;
            } else {
                tail.extend_from_slice(&buf[start..]);
            }
        }
        pending.appended += 1;
        pending.recount();
        let seq = pending.appended;
        self.shared
            .backlog
            .store(pending.buf.len(), Ordering::Relaxed);
        drop(pending);
        // The writer sleeps only when the buffer is empty (it checks under the same lock), so
        // only the record that makes the buffer non-empty needs to wake it. Waking it for
        // every record cost a context switch per write on a busy core.
        if start == 0 {
            self.shared.wake.notify_one();
        }
        seq
    }
}

impl MutationSink for Aof {
    fn record(&self, mutation: Mutation<'_>) {
        self.push(|salt, buf| record::encode_mutation(&mutation, salt, buf));
    }

    fn record_batch(&self, mutations: &[Mutation<'_>]) {
        self.push(|salt, buf| record::encode_batch(mutations, salt, buf));
    }

    fn versions_exhausted(&self) {
        // The writer reserves more whenever it wakes; a write waiting for versions must not
        // wait for the next unrelated record or timer.
        self.shared.wake.notify_one();
    }
}

/// A sink that forwards to an [`Aof`] set after the store was built: the store must exist
/// (and be loaded) before the writer that snapshots it can start.
#[derive(Default)]
struct LateSink {
    aof: std::sync::OnceLock<Aof>,
}

impl LateSink {
    fn set(&self, aof: Aof) {
        let _ = self.aof.set(aof);
    }
}

impl MutationSink for LateSink {
    fn record(&self, mutation: Mutation<'_>) {
        if let Some(aof) = self.aof.get() {
            aof.record(mutation);
        }
    }

    fn record_batch(&self, mutations: &[Mutation<'_>]) {
        if let Some(aof) = self.aof.get() {
            aof.record_batch(mutations);
        }
    }

    fn versions_exhausted(&self) {
        if let Some(aof) = self.aof.get() {
            aof.versions_exhausted();
        }
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the protected
/// state (byte buffers and counters) stays consistent at every await-free step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Options that create (or open) a file for writing, readable by its owner only: the file
/// holds session ids, which are bearer credentials.
fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Fsyncs a directory, so that a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
