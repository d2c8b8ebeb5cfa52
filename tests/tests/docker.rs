//! The container deployment, tested for real: runs `docker/test.sh`, which builds the images
//! from static binaries (nothing is pulled), makes passwords and certificates
//! (`scripts/compose-secrets`), brings up `docker/compose.yaml` (sessiond with authentication
//! and TLS, and two replicas of the example app that log in over TLS), creates a session
//! through one replica and reads it through the other, checks from the compose network that
//! clients without credentials, with a wrong password, without the CA or without TLS are
//! refused and that each role is refused what it may not run, that the healthcheck passes as
//! the monitor user and that no password is logged, stops sessiond gracefully and starts it
//! again, kills it with SIGKILL under `fsync = "always"`, and checks each time that the
//! sessions survived. Then it brings up `docker/compose.cluster.yaml` (three sessiond nodes
//! and two app replicas placing users by rendezvous hashing), stops one node and checks that
//! only its users get the "store unavailable" answer and that they are back after its
//! restart. The script tears everything down, even when it fails.
//!
//! Without a Docker engine (or without compose) the script exits 77 and this test passes
//! with a `SKIPPED: ...` line on stderr; `SESSIOND_SKIP_DOCKER=1` skips it the same way,
//! for runs that should not spend minutes on the static release build. The full output of
//! the last run is in `target/docker/test.log`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds the whole run. A cold static release build of the three binaries takes a few
/// minutes on a two-core machine; the compose test itself well under a minute.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// After the timeout, how long the script gets to tear down before it is killed.
const TEARDOWN_GRACE: Duration = Duration::from_secs(120);

/// The exit status with which the script says it skipped (automake's convention).
const SKIPPED: i32 = 77;

/// Writes a line straight to the process's stderr. libtest captures `println!` and
/// `eprintln!` of a passing test, and whether this test ran or skipped must be seen.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "docker deployment test: {line}");
}

#[test]
fn compose_deployment_authenticates_over_tls_shares_sessions_and_keeps_them_across_restarts() {
    if std::env::var("SESSIOND_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        announce("SKIPPED: SESSIOND_SKIP_DOCKER=1");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace");
    let script = root.join("docker/test.sh");
    // One stream, so that the log reads in order: compose reports progress on stderr.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(r#"exec "$0" 2>&1"#)
        .arg(&script)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", script.display()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });

    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for docker/test.sh") {
            break status;
        }
        let elapsed = started.elapsed();
        if !timed_out && elapsed > TIMEOUT {
            // SIGTERM, not SIGKILL: the script's trap then removes what it created.
            timed_out = true;
            terminate(child.id());
        }
        if timed_out && elapsed > TIMEOUT + TEARDOWN_GRACE {
            let _ = child.kill();
            break child.wait().expect("wait for docker/test.sh");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = reader.join().expect("output reader");
    let log = root.join("target/docker/test.log");
    if std::fs::create_dir_all(root.join("target/docker")).is_ok() {
        let _ = std::fs::write(&log, &output);
    }
    let seconds = started.elapsed().as_secs();

    if status.code() == Some(SKIPPED) {
        let reason = output
            .lines()
            .find(|l| l.starts_with("SKIPPED"))
            .unwrap_or("SKIPPED (no reason printed)");
        announce(reason);
        return;
    }
    assert!(
        !timed_out,
        "docker/test.sh did not finish within {TIMEOUT:?}; output:\n{output}"
    );
    assert!(
        status.success(),
        "docker/test.sh failed ({status}) after {seconds} s; output:\n{output}"
    );
    let summary = output
        .lines()
        .rfind(|l| l.starts_with("== PASSED"))
        .unwrap_or("passed");
    announce(&format!(
        "{} (whole run {seconds} s; log: {})",
        summary.trim_start_matches("== "),
        log.display()
    ));
}

/// Sends SIGTERM to `pid`, with kill(1): `libc::kill` would need `unsafe`, which the
/// workspace denies.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
