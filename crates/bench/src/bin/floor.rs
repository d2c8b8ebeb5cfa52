//! `sessiond-floor`: the floor server of `sessiond_bench::floor`, which answers the load
//! generator's requests with canned replies, for `scripts/bench-compare cost`.
//!
//! It takes sessiond's `--config`, `--listen` and `--data-dir` so that the script can start
//! it as it starts sessiond (the config and data directory are ignored), and like sessiond
//! it prints `listening on ADDR` once it accepts connections.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use sessiond_bench::floor::{self, Replies};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Io {
    /// Readiness through epoll: a recv and a send per request, like sessiond and memcached.
    Epoll,
    /// Submission through io_uring: the receives and sends of a whole turn in one system call.
    Uring,
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Answers sessiond-bench's requests with canned replies, storing nothing"
)]
struct Args {
    /// How the I/O is done.
    #[arg(long, value_enum, default_value = "epoll")]
    io: Io,
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Bytes of value in each GET reply (the load generator's --value-size).
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Ignored: accepted so that the floor server starts where sessiond would.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Ignored, as --config.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(&args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("sessiond-floor: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sessiond-floor: {e}");
            return ExitCode::from(2);
        }
    };
    let replies = Replies::new(args.value_size);
    let ready = || {
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
    };
    let served = match args.io {
        Io::Epoll => floor::epoll::serve(listener, &replies, ready),
        #[cfg(target_os = "linux")]
        Io::Uring => floor::uring::serve(listener, &replies, ready),
        #[cfg(not(target_os = "linux"))]
        Io::Uring => Err(std::io::Error::other("io_uring exists only on Linux")),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond-floor: {e}");
            ExitCode::from(2)
        }
    }
}
