//! The command line itself, without a server: help and usage errors.
//!
//! Besides checking the interface, having an integration test here makes
//! `cargo test --workspace` build the `sessiond-cli` binary, which the end-to-end tests in
//! `tests/` run (cargo builds a package's binaries only for its own integration tests).

use std::process::Command;

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sessiond-cli"))
        .args(args)
        .env_remove("SESSIOND_ADDR")
        .output()
        .expect("run sessiond-cli")
}

#[test]
fn help_lists_every_command() {
    let out = cli(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "ping", "set", "get", "touch", "del", "stats", "sessions", "end-all", "rotate",
    ] {
        assert!(
            help.contains(command),
            "--help does not mention {command}:\n{help}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["set", "k", "v"][..],
        &["set", "k", "v", "--ttl", "soon"],
        &["set", "k", "v", "--ttl", "1m", "--nx", "--xx"],
        &["get"],
        &["frobnicate"],
    ] {
        let out = cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
