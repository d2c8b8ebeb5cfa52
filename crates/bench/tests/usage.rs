//! The command line itself, without a server: help and usage errors.
//!
//! Besides checking the interface, having an integration test here makes
//! `cargo test --workspace` build the `sessiond-bench` binary, which the end-to-end tests in
//! `tests/tests/bench.rs` run (cargo builds a package's binaries only for its own
//! integration tests).

use std::process::Command;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sessiond-bench"))
        .args(args)
        .output()
        .expect("run sessiond-bench")
}

#[test]
fn help_lists_the_targets_and_workload_flags() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--target",
        "--connections",
        "--pipeline",
        "--value-size",
        "--mix",
        "--json",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--target", "gopher"][..],
        &["--mix", "get=abc"],
        &["--connections", "0"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
