//! Replay at startup: the input is written as the append-only file of a data directory and
//! loaded into an empty store (`aof::replay::load`), the way `sessiond` starts; and checked
//! the way `sessiond check-aof` does (`aof::check::check`).
//!
//! Input: the file.
//!
//! Properties:
//! - nothing panics, whatever the bytes;
//! - a load either fails (a file that is not ours, or corruption in the middle) or leaves a
//!   file that loads again cleanly: the same length (nothing more to truncate or convert)
//!   and no more sessions;
//! - corruption is the only failure a repair fixes, and after a repair the file loads;
//! - the check and the load agree on whether the file is corrupt.

use std::path::Path;

use sessiond::aof::check::{check as check_aof, Verdict};
use sessiond::aof::replay::{load, LoadError};
use sessiond::aof::{AofSettings, FsyncPolicy};
use sessiond::Store;
use tempfile::TempDir;

/// One data directory per thread for the whole run: making one per input would cost more
/// than the load, and the tests that run this check run it on several threads at once. On
/// tmpfs when there is one, since every load syncs the file.
fn settings() -> AofSettings {
    thread_local! {
        static DIR: TempDir = {
            let shm = Path::new("/dev/shm");
            let made = if shm.is_dir() {
                tempfile::tempdir_in(shm)
            } else {
                tempfile::tempdir()
            };
            made.unwrap_or_else(|e| panic!("cannot make a data directory: {e}"))
        };
    }
    AofSettings {
        dir: DIR.with(|dir| dir.path().to_path_buf()),
        fsync: FsyncPolicy::No,
        rewrite_min_bytes: u64::MAX,
        rewrite_growth_percent: 100,
    }
}

/// Loads the file into a new store: the file's length after loading and the sessions
/// loaded.
fn load_once(repair: bool) -> Result<(u64, usize), LoadError> {
    let store = Store::new();
    let (_file, len, _salt) = load(&settings(), &store, repair)?;
    Ok((len, store.len()))
}

/// Checks the properties above on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let path = settings().path();
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));

    let verdict = check_aof(&path, false);
    let first = match load_once(false) {
        Err(LoadError::Corrupt(_)) => {
            assert!(
                matches!(verdict, Ok(Verdict::Damaged { torn: false, .. })),
                "load found corruption, check said {verdict:?}"
            );
            match load_once(true) {
                Ok(loaded) => loaded,
                Err(e) => panic!("a repair did not make the file load: {e}"),
            }
        }
        Err(LoadError::Unreadable(_)) => {
            assert!(
                verdict.is_err(),
                "load could not read the file, check said {verdict:?}"
            );
            return;
        }
        Err(e) => panic!("{e}"),
        Ok(loaded) => {
            assert!(
                !matches!(verdict, Ok(Verdict::Damaged { torn: false, .. })),
                "check found corruption that load accepted"
            );
            loaded
        }
    };
    match load_once(false) {
        Ok((len, sessions)) => {
            assert_eq!(len, first.0, "the second load changed the file");
            assert!(sessions <= first.1, "the second load found more sessions");
        }
        Err(e) => panic!("a file that loaded once does not load again: {e}"),
    }
    let _ = std::fs::remove_file(&path);
}
