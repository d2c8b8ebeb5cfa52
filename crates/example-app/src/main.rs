//! `sessiond-example-app`: the example of Flask-Session's documentation, as an axum app that
//! keeps its sessions in sessiond.
//!
//! ```python
//! app = Flask(__name__)
//! app.config["SESSION_TYPE"] = "redis"
//! Session(app)
//!
//! @app.route("/")
//! def set():
//!     session["username"] = "Alice"
//!     return "Session data set!"
//!
//! @app.route("/get")
//! def get():
//!     return f"Username: {session.get('username', 'not set')}"
//! ```
//!
//! ```text
//! sessiond-example-app [--listen ADDR] [--sessiond ADDR] [--secret-key KEY]
//! ```
//!
//! Every option falls back to an environment variable (`EXAMPLE_APP_LISTEN`,
//! `SESSIOND_ADDR`, `SESSION_SECRET_KEY`). Once it accepts connections it prints
//! `listening on ADDR` on stdout. SIGINT or SIGTERM stops it gracefully.
//!
//! Since the sessions live in sessiond, not in the process, any number of instances
//! pointed at one sessiond serve the same sessions: set on one, read on another.
//!
//! [`app`] is the web application; this file only parses arguments and wires it up.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod app;

use anyhow::Context;
use clap::Parser;
use sessiond_client::{Client, SessionConfig, Sessions};
use tokio::net::TcpListener;

/// Flask-Session's documentation example, with its sessions in sessiond.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "EXAMPLE_APP_LISTEN", default_value = "127.0.0.1:8000")]
    listen: String,
    /// The sessiond server (HOST:PORT).
    #[arg(long, env = "SESSIOND_ADDR", default_value = "127.0.0.1:7878")]
    sessiond: String,
    /// Sign session cookies with HMAC-SHA256 under this key (at least 32 bytes), like
    /// Flask-Session's SESSION_USE_SIGNER. Every instance sharing sessions needs the same key.
    #[arg(long, env = "SESSION_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Lazy: the app may start before sessiond; requests then wait for it (within their
    // timeout) instead of the app refusing to start.
    let client = Client::builder(&args.sessiond).build();
    let mut config = SessionConfig::default();
    if let Some(key) = &args.secret_key {
        config = config.signing_key(key.as_bytes())?;
    }
    let sessions = Sessions::new(client, config)?;

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app::router(sessions))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
