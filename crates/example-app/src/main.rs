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
//! sessiond-example-app [--listen ADDR] [--sessiond ADDR | --sessiond-nodes NAME=ADDR,...]
//!                      [--secret-key KEY]
//!                      [--sessiond-user NAME [--sessiond-password-file FILE]]
//!                      [--sessiond-tls-ca FILE [--sessiond-tls-cert FILE --sessiond-tls-key FILE]
//!                       [--sessiond-tls-server-name NAME]]
//! ```
//!
//! Every option falls back to an environment variable (`EXAMPLE_APP_LISTEN`,
//! `SESSIOND_ADDR`, `SESSIOND_NODES`, `SESSION_SECRET_KEY`, `SESSIOND_USER`, `SESSIOND_PASSWORD_FILE`,
//! `SESSIOND_TLS_CA`, ...); the password of `SESSIOND_USER` is read from
//! `SESSIOND_PASSWORD_FILE` (a compose or Kubernetes secret) or else from
//! `SESSIOND_PASSWORD`, never from an argument. A CA turns TLS on. Once it accepts
//! connections it prints `listening on ADDR` on stdout. SIGINT or SIGTERM stops it
//! gracefully.
//!
//! Besides the Flask example's `/` and `/get` (and `/logout`), it shows what sessiond knows
//! about users: `/login/<user>` binds the session to the user and moves it to a new id,
//! `/devices` lists the user's sessions, `/logout-everywhere` ends them all (see [`app`]).
//!
//! Since the sessions live in sessiond, not in the process, any number of instances
//! pointed at one sessiond serve the same sessions: set on one, read on another, and log
//! out everywhere from any.
//!
//! [`app`] is the web application; this file only parses arguments and wires it up.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod app;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

use sessiond_client::{discovery, Client, Credentials, SessionConfig, Sessions, TlsOptions};
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
    /// Many sessiond nodes instead of one, `NAME=HOST:PORT,...` (docs/SCALING.md): each
    /// session lives on the node its key is placed on. Overrides --sessiond.
    #[arg(long, env = "SESSIOND_NODES")]
    sessiond_nodes: Option<String>,
    /// With --sessiond-nodes: the node list before the last change, while
    /// `sessiond-cli rebalance` moves sessions (the migration window).
    #[arg(long, env = "SESSIOND_PREVIOUS_NODES", requires = "sessiond_nodes")]
    sessiond_previous_nodes: Option<String>,
    /// With --sessiond-nodes: the secret routing tags of users are made with; the same on
    /// every instance.
    #[arg(long, env = "SESSIOND_ROUTING_SECRET", hide_env_values = true)]
    sessiond_routing_secret: Option<String>,
    /// Sign session cookies with HMAC-SHA256 under this key (at least 32 bytes), like
    /// Flask-Session's SESSION_USE_SIGNER. Every instance sharing sessions needs the same key.
    #[arg(long, env = "SESSION_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Authenticate to sessiond as this user; the password comes from
    /// --sessiond-password-file or SESSIOND_PASSWORD.
    #[arg(long, env = "SESSIOND_USER")]
    sessiond_user: Option<String>,
    /// File holding the password of --sessiond-user (e.g. a compose secret).
    #[arg(long, env = "SESSIOND_PASSWORD_FILE", requires = "sessiond_user")]
    sessiond_password_file: Option<PathBuf>,
    /// Connect to sessiond with TLS, trusting the CA in this PEM file.
    #[arg(long, env = "SESSIOND_TLS_CA")]
    sessiond_tls_ca: Option<PathBuf>,
    /// PEM client certificate for sessiond (mutual TLS).
    #[arg(long, env = "SESSIOND_TLS_CERT", requires_all = ["sessiond_tls_ca", "sessiond_tls_key"])]
    sessiond_tls_cert: Option<PathBuf>,
    /// PEM private key of --sessiond-tls-cert.
    #[arg(long, env = "SESSIOND_TLS_KEY", requires = "sessiond_tls_cert")]
    sessiond_tls_key: Option<PathBuf>,
    /// The name sessiond's certificate must carry, if not the host of --sessiond.
    #[arg(long, env = "SESSIOND_TLS_SERVER_NAME", requires = "sessiond_tls_ca")]
    sessiond_tls_server_name: Option<String>,
}

impl Args {
    /// The sessiond client these arguments describe (lazy: see `main`).
    fn client(&self) -> anyhow::Result<Client> {
        let mut builder = match &self.sessiond_nodes {
            Some(nodes) => Client::cluster(discovery::parse_nodes(nodes)?),
            None => Client::builder(&self.sessiond),
        };
        if let Some(previous) = &self.sessiond_previous_nodes {
            builder = builder.previous_topology(discovery::parse_nodes(previous)?);
        }
        if let Some(secret) = &self.sessiond_routing_secret {
            builder = builder.owner_tag_key(secret.as_bytes());
        }
        if let Some(user) = &self.sessiond_user {
            let credentials = Credentials::from_file_or_env(
                user,
                self.sessiond_password_file.as_deref(),
                "SESSIOND_PASSWORD",
            )?;
            builder = builder.with_credentials(credentials);
        }
        if let Some(ca) = &self.sessiond_tls_ca {
            let client_cert = self
                .sessiond_tls_cert
                .as_deref()
                .zip(self.sessiond_tls_key.as_deref());
            let tls =
                TlsOptions::from_files(ca, client_cert, self.sessiond_tls_server_name.as_deref())?;
            builder = builder.tls(tls);
        }
        Ok(builder.build())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Lazy: the app may start before sessiond; requests then wait for it (within their
    // timeout) instead of the app refusing to start.
    let client = args.client()?;
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
