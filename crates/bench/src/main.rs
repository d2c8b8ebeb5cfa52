//! The `sessiond-bench` binary: parses the flags, runs the workload, prints the report.
//!
//! Exit status: 0 if every request succeeded, 1 if the run finished with failed requests or
//! lost connections, 2 if it could not run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use sessiond_bench::Args;

fn main() -> ExitCode {
    let config = match Args::parse().into_config(std::io::stderr().is_terminal()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sessiond-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sessiond-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(sessiond_bench::run(&config)) {
        Ok(report) => {
            if config.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            if report.failed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("sessiond-bench: {e}");
            ExitCode::from(2)
        }
    }
}
