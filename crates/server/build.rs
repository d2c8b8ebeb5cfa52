//! Sets `SESSIOND_GIT_SHA`, the commit the metrics' `sessiond_build_info` reports.
//!
//! From the environment if it is set (the container build, which has no `.git`, passes it
//! as a build argument), else from `git rev-parse HEAD` in the source tree, else
//! `unknown`: a build from a source archive must still work.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SESSIOND_GIT_SHA");
    let from_env = std::env::var("SESSIOND_GIT_SHA")
        .ok()
        .filter(|sha| !sha.trim().is_empty());
    let sha = from_env
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SESSIOND_GIT_SHA={}", sha.trim());
}

/// The commit checked out, and tells cargo to run this again when it changes.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let sha = git(&["rev-parse", "HEAD"])?;
    // HEAD names a branch whose ref file (or packed-refs) moves with each commit. Only
    // files that exist: a missing one would make cargo run this script on every build.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = Path::new(&dir);
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(dir.join(head_ref));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(sha)
}
