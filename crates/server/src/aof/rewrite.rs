//! Compaction: replacing the file with a snapshot of the live entries.
//!
//! A rewrite happens in two parts, so that requests never wait for it:
//!
//! 1. [`write_snapshot`], on its own thread: every live entry as a SET record (a
//!    SESSION_SET for a session with an owner or an absolute deadline), then a
//!    LAST_VERSION record with the versions reserved so far (read after every entry was
//!    visited, so it covers them all) and a CLOCK record, into `appendonly.aof.rewrite`.
//!    Meanwhile the writer keeps appending to the old file, and every new record is also
//!    copied to a side buffer.
//! 2. [`finish`], on the writer thread once the snapshot is written and the writer has taken
//!    the side buffer: append it, fsync, rename over `appendonly.aof`, fsync the directory.
//!
//! Replaying the side buffer after the snapshot gives the right state even though the
//! snapshot was taken while writes continued: records hold absolute state (a value with its
//! version and deadline, a deadline, a deletion), so whatever the snapshot saw for a key,
//! the key's later records in the side buffer overwrite it in order.
//!
//! A crash at any point leaves a loadable state: before the rename the old file is complete
//! and the temporary file is ignored (and deleted) at startup; after it the new file is
//! complete. [`RewriteStep`] names the points between the steps, and [`finish`] and
//! [`write_snapshot`] call a hook at each, which is how the tests stop a rewrite there.
//!
//! A failure after the rename is different from one before it: the name already points to
//! the new file, so the old file handle must not be written again. [`finish`] says which
//! side of the rename it failed on ([`FinishError`]), and the writer treats a failure after
//! the rename as a disk failure (AOF.md sections 9.1 and 10).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use super::record::{
    encode_clock, encode_file_header, encode_last_version, encode_session, encode_set, Salt,
};
use super::{sync_dir, FILE_NAME, REWRITE_FILE_NAME};
use crate::store::Store;

/// The points between the steps of a rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteStep {
    /// On the writer thread: the snapshot is written and the writer is about to take the side
    /// buffer and its unwritten records (section 9.1 step 3). The files are as after
    /// [`RewriteStep::SnapshotWritten`], so this point is not in [`RewriteStep::ALL`].
    Switching,
    /// The temporary file has been created and holds part of the snapshot.
    SnapshotStarted,
    /// The snapshot is written (not yet fsynced).
    SnapshotWritten,
    /// The records that arrived during the snapshot are appended.
    TailAppended,
    /// The temporary file is fsynced.
    Synced,
    /// The temporary file has been renamed over the live file.
    Renamed,
    /// The directory is fsynced: the rewrite is complete.
    DirSynced,
}

impl RewriteStep {
    /// Every point at which the files differ, in order.
    pub const ALL: [RewriteStep; 6] = [
        RewriteStep::SnapshotStarted,
        RewriteStep::SnapshotWritten,
        RewriteStep::TailAppended,
        RewriteStep::Synced,
        RewriteStep::Renamed,
        RewriteStep::DirSynced,
    ];
}

/// Called at each [`RewriteStep`]; an error stops the rewrite there, leaving the files as a
/// crash at that point would.
pub type Hook<'a> = &'a (dyn Fn(RewriteStep) -> io::Result<()> + Sync);

/// A [`Hook`] the writer thread owns and lends to each rewrite it starts.
pub type SharedHook = Arc<dyn Fn(RewriteStep) -> io::Result<()> + Send + Sync>;

/// The hook used in production: every step proceeds.
pub fn no_hook(_: RewriteStep) -> io::Result<()> {
    Ok(())
}

/// Why [`finish`] failed, and on which side of the rename: that decides which file is live.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Before the rename: the old file is still the live one and complete; the temporary
    /// file can be deleted.
    #[error("rewrite failed before its rename: {0}")]
    BeforeRename(#[source] io::Error),
    /// After the rename (the directory fsync): the name now points to the new file, which is
    /// complete and fsynced, but the rename itself may not survive a power loss. The old
    /// file handle must never be written again.
    #[error("rewrite failed after its rename: {source}")]
    AfterRename {
        /// The new file, now the one under the live name.
        file: File,
        /// Its length.
        len: u64,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

impl From<FinishError> for io::Error {
    fn from(e: FinishError) -> io::Error {
        match e {
            FinishError::BeforeRename(source) | FinishError::AfterRename { source, .. } => source,
        }
    }
}

/// Writes every live entry of `store` into a new temporary file in `dir`, returning it open
/// and positioned at its end, with its length. `salt` is the data directory's: the records
/// encoded before the switch are appended to the new file as they are.
pub fn write_snapshot(
    dir: &Path,
    store: &Store,
    salt: Salt,
    hook: Hook<'_>,
) -> io::Result<(File, u64)> {
    let path = dir.join(REWRITE_FILE_NAME);
    let file = super::private_file_options().truncate(true).open(&path)?;
    let mut out = BufWriter::with_capacity(1024 * 1024, file);
    let mut header = Vec::new();
    encode_file_header(salt, &mut header);
    out.write_all(&header)?;
    let mut len = header.len() as u64;
    // Each shard is encoded into memory under its read lock and written after the lock is
    // released, so a slow disk never holds up requests to the shard.
    let mut records = Vec::new();
    for shard in 0..store.shard_count() {
        records.clear();
        store.visit_live_sessions_in_shard(shard, |entry, is_session| {
            if is_session {
                // Owner, timestamps and absolute deadline travel with the session, so the
                // owner index is rebuilt exactly on replay.
                encode_session(None, entry, salt, &mut records);
            } else {
                let (key, value) = (entry.key, entry.value);
                encode_set(
                    key,
                    value,
                    entry.expires_at_ms,
                    entry.version,
                    salt,
                    &mut records,
                );
            }
        });
        out.write_all(&records)?;
        len += records.len() as u64;
        if shard == 0 {
            out.flush()?;
            hook(RewriteStep::SnapshotStarted)?;
        }
    }
    // Read after every entry was visited, so it is at least every version in the snapshot.
    // Versions of deleted and expired entries are not in the snapshot, yet must never be
    // handed out again after a restart. It is the reserved ceiling, not the last version:
    // versions up to it may be handed out before this file replaces the old one, whose
    // reservation records the snapshot drops (later reservations are in the tail).
    records.clear();
    encode_last_version(store.versions_reserved_up_to(), salt, &mut records);
    // The time the snapshot was taken: expired entries are not in it, and replay must never
    // run the clock back to before they expired (AOF.md section 4.7).
    encode_clock(store.clock().now_ms(), salt, &mut records);
    out.write_all(&records)?;
    len += records.len() as u64;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    hook(RewriteStep::SnapshotWritten)?;
    Ok((file, len))
}

/// Appends `tail` to the snapshot, makes it durable and moves it into place. Returns the
/// file, now the live one, and its length.
pub fn finish(
    dir: &Path,
    mut file: File,
    snapshot_len: u64,
    tail: &[u8],
    hook: Hook<'_>,
) -> Result<(File, u64), FinishError> {
    let before = |file: &mut File| -> io::Result<()> {
        file.write_all(tail)?;
        hook(RewriteStep::TailAppended)?;
        file.sync_all()?;
        hook(RewriteStep::Synced)?;
        std::fs::rename(dir.join(REWRITE_FILE_NAME), dir.join(FILE_NAME))
    };
    before(&mut file).map_err(FinishError::BeforeRename)?;
    let len = snapshot_len + tail.len() as u64;
    let after = || -> io::Result<()> {
        hook(RewriteStep::Renamed)?;
        sync_dir(dir)?;
        hook(RewriteStep::DirSynced)
    };
    match after() {
        Ok(()) => Ok((file, len)),
        Err(source) => Err(FinishError::AfterRename { file, len, source }),
    }
}
