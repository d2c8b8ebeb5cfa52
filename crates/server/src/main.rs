//! The `sessiond` binary: parses arguments, loads the configuration, and runs the server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sessiond::aof::check::{check, Verdict};
use sessiond::aof::{Aof, AofSettings, FsyncPolicy};
use sessiond::auth::{hash_password, Authenticator};
use sessiond::clock::Clock;
use sessiond::metrics::{self, export::Source, Metrics};
use sessiond::server::{self, Context, Settings, TlsListeners};
use sessiond::slowlog::SlowLog;
use sessiond::stats::Stats;
use sessiond::tls::Tls;
use sessiond::{logging, Config, Store};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// mimalloc instead of the system allocator: with glibc's malloc, freeing a large expired
/// batch can trim the heap inside a single `free` and hold a shard lock for over 100 ms
/// (measured with `examples/entry_memory`: longest sweep step 159 ms with glibc, 95 µs with
/// mimalloc, for 1M entries expiring at once).
///
/// Its 2.x line (the `v2` feature), not 3.x: 3.x rounds a 79-byte allocation up to 96 bytes
/// where 2.x uses its 80-byte class, and 79 bytes is what a slot with a 51-byte key takes
/// (`store/slot.rs`): 15 bytes more per session at 1M sessions (70 B of overhead per session
/// instead of 57 B in `scripts/bench-compare memory`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A session-store daemon.
#[derive(Debug, Parser)]
#[command(
    name = "sessiond",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Configuration file (TOML). Without it, the defaults documented in
    /// config/sessiond.toml apply.
    #[arg(long, value_name = "FILE", env = "SESSIOND_CONFIG")]
    config: Option<PathBuf>,

    /// Listen address, overriding `server.listen`.
    #[arg(long, value_name = "ADDR", env = "SESSIOND_LISTEN")]
    listen: Option<SocketAddr>,

    /// Address of the RESP (Redis protocol) listener, overriding `resp.listen`.
    #[arg(long, value_name = "ADDR", env = "SESSIOND_RESP_LISTEN")]
    resp_listen: Option<SocketAddr>,

    /// Address of the metrics and health listener (HTTP), overriding `metrics.listen`.
    #[arg(long, value_name = "ADDR", env = "SESSIOND_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    /// Address of the native-protocol TLS listener, overriding `server.tls_listen`.
    #[arg(long, value_name = "ADDR", env = "SESSIOND_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,

    /// Address of the RESP TLS listener, overriding `resp.tls_listen`.
    #[arg(long, value_name = "ADDR", env = "SESSIOND_RESP_TLS_LISTEN")]
    resp_tls_listen: Option<SocketAddr>,

    /// Data directory, overriding `server.data_dir`.
    #[arg(long, value_name = "DIR", env = "SESSIOND_DATA_DIR")]
    data_dir: Option<PathBuf>,

    /// Fsync policy of the append-only file, overriding `aof.fsync`.
    #[arg(long, value_name = "always|everysec|no", env = "SESSIOND_FSYNC")]
    fsync: Option<FsyncPolicy>,

    /// If the append-only file is corrupt in the middle, truncate it at the first damaged
    /// record instead of refusing to start. Every record from there on is lost.
    #[arg(long)]
    repair_aof: bool,

    /// Validate this configuration file, and the TLS certificate and key it names, and exit:
    /// 0 if they are valid, 1 if not. The overrides above are ignored: it checks the file
    /// alone.
    // No `conflicts_with_all` with the overrides: clap counts a value from an environment
    // variable as given, so in a container configured through SESSIOND_* variables
    // `sessiond --check-config FILE` would be refused.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify an append-only file. Exits 0 if it is valid (or was repaired), 1 if it is
    /// damaged, 2 if it cannot be read.
    CheckAof {
        /// The file, e.g. data/appendonly.aof.
        file: PathBuf,
        /// Truncate the file at the first damaged record.
        #[arg(long)]
        repair: bool,
    },
    /// Read a password from standard input (one line) and print its argon2id hash, for
    /// `password_hash` in `[[auth.users]]`. Type it without echo with
    /// `read -rs PW && printf '%s\n' "$PW" | sessiond hash-password`.
    HashPassword,
    /// Ask the metrics listener whether the server is ready (`GET /health/ready` over plain
    /// HTTP): exits 0 on 200, 1 otherwise, printing the answer. For container health checks,
    /// which cannot count on curl being in the image.
    Health {
        /// The metrics listener (`metrics.listen`).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9187")]
        addr: SocketAddr,
        /// The path to ask for (`/health/live` to ask only whether the process answers).
        #[arg(long, default_value = "/health/ready")]
        path: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match &args.command {
        Some(Command::CheckAof { file, repair }) => return check_aof(file, *repair),
        Some(Command::HashPassword) => return print_password_hash(),
        Some(Command::Health {
            addr,
            path,
            timeout,
        }) => return health(*addr, path, *timeout),
        None => {}
    }
    if let Some(path) = &args.check_config {
        return match check_config(path) {
            Ok(()) => {
                println!("config OK: {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sessiond: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `sessiond health`.
fn health(addr: SocketAddr, path: &str, timeout: std::time::Duration) -> ExitCode {
    match metrics::http::probe(addr, path, timeout) {
        Ok((200, body)) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprint!("sessiond: {addr}{path}: {status} {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sessiond: {addr}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sessiond hash-password`: one line from stdin (without its line ending) to a PHC string.
fn print_password_hash() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("sessiond: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("sessiond: empty password (give it on stdin, one line)");
        return ExitCode::FAILURE;
    }
    match hash_password(password.as_bytes()) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sessiond: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: the file, and the TLS files it names. A certificate and key that do
/// not load would stop the start or fail a SIGHUP reload, so checking them before either is
/// what this option is for.
fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if let Some(files) = config.tls_certificate() {
        Tls::load(files)?;
    }
    Ok(())
}

fn check_aof(file: &std::path::Path, repair: bool) -> ExitCode {
    let name = file.display();
    match check(file, repair) {
        Ok(Verdict::Valid { records, bytes }) => {
            println!("{name}: valid, {records} records, {bytes} bytes");
            ExitCode::SUCCESS
        }
        Ok(Verdict::Damaged {
            records,
            offset,
            dropped,
            torn,
            reason,
            repaired,
        }) => {
            let kind = if torn { "torn tail" } else { "corrupt record" };
            println!("{name}: {records} valid records, then a {kind} at offset {offset}: {reason}");
            if repaired {
                println!("{name}: repaired: truncated at offset {offset}, {dropped} bytes dropped");
                ExitCode::SUCCESS
            } else {
                println!("{name}: run with --repair to truncate at offset {offset} ({dropped} bytes would be dropped)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sessiond: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(addr) = args.resp_listen {
        config.resp.listen = Some(addr);
    }
    if let Some(addr) = args.metrics_listen {
        config.metrics.listen = Some(addr);
    }
    if let Some(addr) = args.tls_listen {
        config.server.tls_listen = Some(addr);
    }
    if let Some(addr) = args.resp_tls_listen {
        config.resp.tls_listen = Some(addr);
    }
    if let Some(dir) = args.data_dir {
        config.server.data_dir = dir;
    }
    if let Some(fsync) = args.fsync {
        config.aof.fsync = fsync;
    }
    config.validate()?;
    logging::init(&config.log);
    protected_mode(&config)?;
    let auth = Arc::new(Authenticator::from_config(&config)?);

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        runtime.worker_threads(config.server.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, auth, args.repair_aof))
}

/// Protected mode: a listener reachable from the network without authentication would let
/// anyone who can reach it read every session id, and a session id is a login. Refuses to
/// start unless `auth.allow_unauthenticated_network` says the operator means it, in which
/// case every start says so.
fn protected_mode(config: &Config) -> anyhow::Result<()> {
    for (key, addr) in config.exposed_without_auth() {
        if key == "metrics.listen" {
            anyhow::ensure!(
                config.auth.allow_unauthenticated_network,
                "refusing to serve metrics on {addr} (metrics.listen) without a token: set \
                 metrics.token_file, bind a loopback address, or set \
                 auth.allow_unauthenticated_network = true"
            );
            continue;
        }
        if !config.auth.allow_unauthenticated_network {
            anyhow::bail!(
                "refusing to listen on {addr} ({key}) without authentication: define users in \
                 [auth] (see `sessiond hash-password`), bind a loopback address, or set \
                 auth.allow_unauthenticated_network = true"
            );
        }
        tracing::warn!(
            %addr,
            key,
            "listening on a non-loopback address WITHOUT AUTHENTICATION \
             (auth.allow_unauthenticated_network = true): anyone who can reach it can read, \
             write and delete every session"
        );
    }
    Ok(())
}

/// Holds the sessions replayed from the file to `limits.max_session_lifetime` (store's
/// `lifetime_cap` says how and why), a shard at a time, letting the AOF writer take the
/// records between shards so that a large store does not queue them all in memory.
async fn cap_existing_lifetimes(store: &Store, aof: Option<&Aof>, max_lifetime_ms: Option<u64>) {
    let Some(max_lifetime_ms) = max_lifetime_ms else {
        return;
    };
    let started_ms = store.clock().now_ms();
    let mut capped = 0;
    for shard in 0..store.shard_count() {
        capped += store.cap_lifetime_in_shard(shard, max_lifetime_ms, started_ms);
        if let Some(aof) = aof {
            aof.relieve_backlog().await;
        }
    }
    tracing::info!(
        capped,
        max_lifetime_ms,
        "sessions that existed at start held to limits.max_session_lifetime"
    );
}

async fn serve(config: Config, auth: Arc<Authenticator>, repair_aof: bool) -> anyhow::Result<()> {
    let shutdown = shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
    // Before the listeners, like the other handlers: a SIGHUP must never kill the daemon.
    let hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    if config.tls_unused() {
        tracing::warn!(
            "[tls] is configured but no listener uses it: set server.tls_listen or \
             resp.tls_listen (or --tls-listen / --resp-tls-listen); nothing is served over TLS"
        );
    }
    // Certificates are read before anything is replayed or bound, so a bad file stops the
    // start at once with its name.
    let tls = match config.tls_files() {
        Some(files) => Some(Arc::new(Tls::load(files)?)),
        None => None,
    };
    tokio::spawn(reload_on_hangup(hangup, tls.clone()));
    // Before the replay, so that a probe can tell a long replay (503 on /health/ready)
    // from a process that does not answer at all.
    let metrics = Arc::new(Metrics::new(config.metrics.listen.is_some()));
    let source = Source::new(metrics.clone());
    let metrics_listener = match config.metrics.listen {
        Some(addr) => {
            let settings = metrics::http::Settings {
                tls: tls.clone().filter(|_| config.metrics.tls),
                token: match &config.metrics.token_file {
                    Some(path) => Some(metrics::http::read_token(path)?),
                    None => None,
                },
            };
            let running = metrics::http::start(addr, settings, source.clone())
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
            tracing::info!(addr = %running.addr, "metrics listening");
            println!("metrics listening on {}", running.addr);
            std::io::stdout().flush()?;
            Some(running)
        }
        None => None,
    };
    let data_dir = config.server.data_dir.clone();
    // Owner-only: the append-only file holds session ids, which are bearer credentials.
    let mut dir_builder = std::fs::DirBuilder::new();
    dir_builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir_builder, 0o700);
    dir_builder
        .create(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;

    // Replay finishes before the listener is bound: no client sees a half-loaded store.
    let replay_started = std::time::Instant::now();
    let (store, aof) = if config.aof.enabled {
        let settings = AofSettings {
            dir: data_dir.clone(),
            fsync: config.aof.fsync,
            rewrite_min_bytes: config.aof.rewrite_min_bytes,
            rewrite_growth_percent: config.aof.rewrite_growth_percent,
        };
        let (store, aof) = tokio::task::spawn_blocking(move || {
            Aof::open_and_load(settings, Clock::new(), repair_aof)
        })
        .await??;
        (store, Some(aof))
    } else {
        let store = Store::new();
        store.seed_versions_from_wall_clock();
        (store, None)
    };
    metrics.replayed(replay_started.elapsed());
    // The cap applies from here on: replay above never refuses an accepted session.
    let max_memory = config.limits.max_memory.resolve();
    store
        .memory()
        .set_limit(max_memory, config.limits.memory_policy);
    // Session lifetime and per-owner limit (limits.max_session_lifetime,
    // max_sessions_per_owner): after replay, which restores sessions as they were.
    store.set_session_defaults(config.session_defaults());
    cap_existing_lifetimes(
        &store,
        aof.as_ref(),
        config.session_defaults().max_lifetime_ms,
    )
    .await;
    tracing::info!(
        limit = ?max_memory,
        policy = config.limits.memory_policy.name(),
        "memory limit (limits.max_memory)"
    );
    let _sweeper = store.start_sweeper(config.expiry.sweep_interval, config.expiry.sweep_budget);
    let ctx = Arc::new(Context {
        store,
        stats: Arc::new(Stats::new()),
        limits: config.limits(),
        aof: aof.clone(),
        auth,
        slowlog: Arc::new(SlowLog::new(
            config.slowlog.threshold,
            config.slowlog.max_len,
        )),
        metrics: metrics.clone(),
    });
    let settings = Settings {
        max_connections: config.server.max_connections,
        max_connections_per_address: config.server.max_connections_per_address,
        idle_timeout: (!config.server.idle_timeout.is_zero()).then_some(config.server.idle_timeout),
        frame_timeout: (!config.server.frame_timeout.is_zero())
            .then_some(config.server.frame_timeout),
        write_timeout: (!config.server.write_timeout.is_zero())
            .then_some(config.server.write_timeout),
        max_pending_output: config.server.max_pending_output_bytes,
        shutdown_timeout: config.server.shutdown_timeout,
    };

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        data_dir = %data_dir.display(),
        aof = aof.as_ref().map_or("off", |a| a.policy().name()),
        version = sessiond::SERVER_VERSION,
        "listening"
    );
    let resp = match config.resp.listen {
        Some(resp_addr) => {
            let listener = TcpListener::bind(resp_addr)
                .await
                .with_context(|| format!("cannot listen on {resp_addr} (resp.listen)"))?;
            Some((listener, config.resp_settings()))
        }
        None => None,
    };
    let tls = match tls {
        Some(tls) => Some(TlsListeners {
            tls,
            native: bind_optional(config.server.tls_listen, "server.tls_listen").await?,
            resp: bind_optional(config.resp.tls_listen, "resp.tls_listen")
                .await?
                .map(|listener| (listener, config.resp_settings())),
        }),
        None => None,
    };
    // Every listener is bound: ready, before anyone can read the line below and ask.
    source.serving(ctx.clone());
    // Scripts and tests wait for these lines (the ports may have been chosen by the OS).
    println!("listening on {addr}");
    if let Some((listener, _)) = &resp {
        let resp_addr = listener.local_addr()?;
        tracing::info!(addr = %resp_addr, "RESP listening");
        println!("resp listening on {resp_addr}");
    }
    if let Some(tls) = &tls {
        if let Some(listener) = &tls.native {
            let tls_addr = listener.local_addr()?;
            tracing::info!(addr = %tls_addr, "TLS listening");
            println!("tls listening on {tls_addr}");
        }
        if let Some((listener, _)) = &tls.resp {
            let tls_addr = listener.local_addr()?;
            tracing::info!(addr = %tls_addr, "RESP TLS listening");
            println!("resp tls listening on {tls_addr}");
        }
    }
    std::io::stdout().flush()?;

    let listeners = server::Listeners {
        native: listener,
        resp,
        tls,
    };
    // Readiness goes first: a load balancer stops sending clients while the connections
    // drain, and the metrics listener keeps answering until they have.
    let shutdown = async move {
        shutdown.await;
        metrics.health.shutting_down();
    };
    server::run(listeners, ctx, settings, shutdown).await;
    if let Some(aof) = aof {
        tokio::task::spawn_blocking(move || aof.close()).await?;
    }
    if let Some(running) = metrics_listener {
        running.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Binds `addr` if it is set; the error names the configuration key.
async fn bind_optional(addr: Option<SocketAddr>, key: &str) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key})"))?;
    Ok(Some(listener))
}

/// On every SIGHUP, reads the TLS certificate, key and client CA again. New connections get
/// the new ones; established connections are not touched. A reload that fails keeps the
/// previous certificates and logs why (the daemon keeps serving: an operator who copied in a
/// broken file fixes it and sends SIGHUP again).
async fn reload_on_hangup(mut hangup: tokio::signal::unix::Signal, tls: Option<Arc<Tls>>) {
    while hangup.recv().await.is_some() {
        let Some(tls) = tls.clone() else {
            tracing::info!("SIGHUP: no TLS listener, nothing to reload");
            continue;
        };
        // Reading files blocks; keep it off the threads that serve connections.
        match tokio::task::spawn_blocking(move || tls.reload()).await {
            Ok(Ok(())) => tracing::info!("SIGHUP: TLS certificates reloaded"),
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "SIGHUP: TLS reload failed; still serving the previous certificates"
            ),
            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed"),
        }
    }
}

/// Registers for SIGINT and SIGTERM and returns a future that completes on either.
///
/// Registration happens here, synchronously, at the start of [`serve`]: until a handler is
/// registered a SIGTERM has its default action and kills the process, skipping the final
/// flush and fsync of the append-only file. Registering lazily, when the future is first
/// polled, left that window open after `listening on` was printed.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// The error and its causes, each once: `{:#}` would repeat a cause whose message the one
/// before it already quotes (as `cannot read FILE: {source}` messages do).
fn error_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .fold(String::new(), |out, cause| match out.as_str() {
            "" => cause,
            s if s.ends_with(&cause) => out,
            _ => format!("{out}: {cause}"),
        })
}
