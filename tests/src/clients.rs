//! Finding and running the real clients that the RESP tests drive: programs on `PATH`
//! (`redis-cli`, `php`), the Python virtual environments that `tests/python/setup-venvs.sh`
//! builds under `target/pyenv`, and the pytest files in `tests/python`.
//!
//! `.ci/run` installs every client. A missing one fails its test with the command that
//! installs it, unless `SESSIOND_TESTS_ALLOW_MISSING=1`, which skips the test instead (the
//! helpers then return `None` and the test returns early).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{run_command, Finished};

/// Bounds every client run: a hang fails the test instead of blocking CI.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `command` with `input` on its stdin, killing it after [`CLIENT_TIMEOUT`].
pub fn run_client(command: Command, input: &[u8]) -> Finished {
    run_command(command, input, CLIENT_TIMEOUT)
}

/// Checks that a client exited successfully, showing what it printed if not.
pub fn assert_success(output: &Finished, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
}

/// Whether missing clients skip their tests instead of failing them.
pub fn allow_missing() -> bool {
    std::env::var("SESSIOND_TESTS_ALLOW_MISSING").is_ok_and(|v| v == "1")
}

/// Fails (or, with `SESSIOND_TESTS_ALLOW_MISSING=1`, skips by returning `None`) when a
/// client is not installed; `hint` says how to install it.
pub fn missing(what: &str, hint: &str) -> Option<PathBuf> {
    if allow_missing() {
        eprintln!("skipped: {what} is not installed ({hint})");
        return None;
    }
    panic!(
        "{what} is not installed. Install it with: {hint}\n\
         (or set SESSIOND_TESTS_ALLOW_MISSING=1 to skip the tests that need it)"
    );
}

/// The path of `name` on `PATH`; if there is none, [`missing`] with `hint`.
pub fn tool(name: &str, hint: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    found.or_else(|| missing(name, hint))
}

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// The Python of the virtual environment `flavour` (`redis5` or `redis8`), under
/// `SESSIOND_PYENV_DIR` if set, else `target/pyenv`.
pub fn python(flavour: &str) -> Option<PathBuf> {
    let root = std::env::var_os("SESSIOND_PYENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/pyenv"));
    let python = root.join(flavour).join("bin/python");
    if python.is_file() {
        Some(python)
    } else {
        missing(
            &format!("the Python environment {}", root.join(flavour).display()),
            "tests/python/setup-venvs.sh",
        )
    }
}

/// What a pytest run is pointed at.
#[derive(Debug, Clone, Copy)]
pub struct PytestTarget {
    /// The RESP listener (`SESSIOND_RESP_ADDR`).
    pub resp: SocketAddr,
    /// The native listener (`SESSIOND_ADDR`), for the tests that cross protocols; `None`
    /// for a server that has none (redis-server, when validating a test against it).
    pub native: Option<SocketAddr>,
}

/// Runs `files` of `tests/python` (`.` for all of them) with the Python of `flavour`
/// against `target`, with `env` added (credentials, TLS), and asserts that pytest passed.
/// Returns `false` if the environment is missing and may be.
pub fn pytest(flavour: &str, target: PytestTarget, files: &[&str], env: &[(&str, &str)]) -> bool {
    let Some(python) = python(flavour) else {
        return false;
    };
    let mut command = Command::new(python);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(files)
        .current_dir(workspace().join("tests/python"))
        .env("SESSIOND_RESP_ADDR", target.resp.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied());
    if let Some(native) = target.native {
        command.env("SESSIOND_ADDR", native.to_string());
    }
    let out = run_client(command, b"");
    // Shown with --nocapture, and on failure.
    println!("{}", out.stdout);
    assert_success(&out, &format!("pytest {files:?} with {flavour}"));
    assert!(out.stdout.contains(" passed"), "{}", out.stdout);
    true
}
