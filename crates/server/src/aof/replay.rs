//! Loading the append-only file into the store at startup.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::reader::{read_file, read_header, ReadError, ReadSummary};
use super::record::{encode_file_header, Format, Record, Salt, FORMAT_VERSION};
use super::rewrite::{finish, no_hook, write_snapshot};
use super::{sync_dir, AofSettings, REWRITE_FILE_NAME};
use crate::store::sweep::SweepCursor;
use crate::store::Store;

/// Why the file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A record in the middle of the file is damaged, and repair was not asked for.
    #[error("{0} (start with --repair-aof to truncate the file at the damage, losing every record from there on)")]
    Corrupt(ReadError),
    /// The file cannot be read at all (I/O error, or not an append-only file of this version);
    /// repair cannot help.
    #[error("{0}")]
    Unreadable(ReadError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl From<ReadError> for LoadError {
    fn from(error: ReadError) -> LoadError {
        match error {
            ReadError::Corrupt { .. } => LoadError::Corrupt(error),
            ReadError::Io { .. } | ReadError::Header { .. } => LoadError::Unreadable(error),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the file into `store` and opens it for appending; returns it with its length and
/// the salt its records carry. Creates it if absent; removes a rewrite's leftover temporary
/// file; truncates a torn tail, and with `repair` a corrupt record and everything after it;
/// converts a file of format version 1 to the current version.
pub fn load(
    settings: &AofSettings,
    store: &Store,
    repair: bool,
) -> Result<(File, u64, Salt), LoadError> {
    let dir = &settings.dir;
    let path = settings.path();
    let leftover = dir.join(REWRITE_FILE_NAME);
    if leftover.exists() {
        warn!(file = %leftover.display(), "removing the temporary file of an unfinished rewrite");
        std::fs::remove_file(&leftover).map_err(io_error(&leftover))?;
    }
    if !path.exists() {
        return create(dir, &path);
    }
    let format = read_header(&path)?;

    let started = Instant::now();
    let mut last_log = Instant::now();
    let result = read_file(
        &path,
        |record| apply(store, record),
        |progress| {
            if last_log.elapsed() >= Duration::from_secs(1) {
                last_log = Instant::now();
                log_progress(
                    "replaying",
                    progress.records,
                    progress.bytes,
                    progress.file_len,
                    started,
                );
            }
        },
    );
    let summary = match result {
        Ok(summary) => summary,
        Err(ReadError::Corrupt { offset, reason, .. }) if repair => {
            warn!(file = %path.display(), offset, %reason, "repairing: truncating the file at the corrupt record");
            truncate(&path, offset)?;
            ReadSummary {
                valid_len: offset,
                file_len: offset,
                ..ReadSummary::default()
            }
        }
        Err(e) => return Err(e.into()),
    };
    if let Some((offset, reason)) = &summary.torn_tail {
        warn!(
            file = %path.display(),
            offset,
            dropped_bytes = summary.file_len - offset,
            %reason,
            "truncating a torn tail (an incomplete last write, as a crash leaves)"
        );
        truncate(&path, *offset)?;
    }

    // Entries that expired while the daemon was down are dropped now, in one full sweep.
    let loaded = store.len();
    let mut cursor = SweepCursor::default();
    store.sweep(&mut cursor, Duration::MAX);
    log_progress(
        "replayed",
        summary.records,
        summary.valid_len,
        summary.valid_len,
        started,
    );
    info!(
        live_sessions = store.len(),
        expired_while_down = loaded - store.len(),
        elapsed = ?started.elapsed(),
        "append-only file loaded"
    );

    let Format::V2(salt) = format else {
        return convert(dir, &path, store);
    };
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    let len = file.metadata().map_err(io_error(&path))?.len();
    Ok((file, len, salt))
}

/// Replaces a file of an older format with one of the current format holding what was just
/// loaded, the way a rewrite does (temporary file, fsync, rename, fsync of the directory), so
/// that a crash at any point leaves one whole file. Appending records of the current format
/// to the old file would make it unreadable.
fn convert(dir: &Path, path: &Path, store: &Store) -> Result<(File, u64, Salt), LoadError> {
    let salt = Salt::random().map_err(io_error(path))?;
    // If this fails before the rename, the old file is still complete (and the temporary
    // one is removed at the next start); after it, the new one is.
    let (file, len) = write_snapshot(dir, store, salt, &no_hook)
        .and_then(|(file, len)| finish(dir, file, len, &[], &no_hook).map_err(io::Error::from))
        .map_err(io_error(path))?;
    info!(
        file = %path.display(),
        format_version = FORMAT_VERSION,
        bytes = len,
        "converted the append-only file to the current format"
    );
    Ok((file, len, salt))
}

fn apply(store: &Store, record: Record) {
    match record {
        Record::Set {
            key,
            value,
            expires_at_ms,
            version,
        } => store.restore_set(&key, &value, expires_at_ms, version),
        Record::Touch { key, expires_at_ms } => store.restore_touch(&key, expires_at_ms),
        Record::Del { key } => store.restore_del(&key),
        Record::SessionSet(session) => store.restore_session(&session.state()),
        Record::SessionTouch {
            key,
            expires_at_ms,
            last_access_ms,
        } => store.restore_session_touch(&key, expires_at_ms, last_access_ms),
        Record::Rotate { old_key, new } => store.restore_rotate(&old_key, &new.state()),
        Record::LastVersion { version } => store.restore_last_version(version),
        Record::Clock { now_ms } => store.restore_clock(now_ms),
        Record::Batch(records) => {
            for record in records {
                apply(store, record);
            }
        }
    }
}

/// Creates the file with its header the way a rewrite replaces it: under the temporary name,
/// fsynced, then renamed. Created in place, a crash before the header reached the disk would
/// leave an empty file, which no later start could load.
fn create(dir: &Path, path: &Path) -> Result<(File, u64, Salt), LoadError> {
    let temp = dir.join(REWRITE_FILE_NAME);
    let salt = Salt::random().map_err(io_error(&temp))?;
    let mut file = super::private_file_options()
        .truncate(true)
        .open(&temp)
        .map_err(io_error(&temp))?;
    let mut header = Vec::new();
    encode_file_header(salt, &mut header);
    file.write_all(&header).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    std::fs::rename(&temp, path).map_err(io_error(path))?;
    sync_dir(dir).map_err(io_error(dir))?;
    info!(file = %path.display(), "created a new append-only file");
    Ok((file, header.len() as u64, salt))
}

/// Cuts the file at `len` and makes the cut durable.
pub fn truncate(path: &Path, len: u64) -> Result<(), LoadError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(len).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

fn log_progress(what: &str, records: u64, bytes: u64, file_len: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let percent = if file_len == 0 {
        100.0
    } else {
        bytes as f64 * 100.0 / file_len as f64
    };
    info!(
        records,
        bytes,
        percent = format_args!("{percent:.1}"),
        records_per_sec = (records as f64 / secs) as u64,
        mib_per_sec = format_args!("{:.1}", bytes as f64 / secs / 1048576.0),
        "{what} append-only file"
    );
}
