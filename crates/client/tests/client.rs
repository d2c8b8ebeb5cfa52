//! The client against the real `sessiond` binary (and, for failures a real server does not
//! produce, against listeners that misbehave on purpose): every command, every error type,
//! multiplexing, reconnection after a restart, and timeouts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sessiond_client::{Client, Error, SetMode, Status};
use sessiond_proto::command::{HelloReply, PingReply};
use sessiond_proto::{Inbound, Limits, Request, ResponseFrame, ServerCodec};
use sessiond_tests::{Daemon, Deadline};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

const TTL: Duration = Duration::from_secs(60);

async fn client(daemon: &Daemon) -> Client {
    Client::builder(daemon.addr().to_string())
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_command_round_trips() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    client.ping().await.unwrap();
    assert_eq!(client.limits().await.unwrap(), Limits::default());

    assert_eq!(client.get("k").await.unwrap(), None);
    let v1 = client
        .set("k", "one", TTL, SetMode::CreateOnly)
        .await
        .unwrap();
    let entry = client.get("k").await.unwrap().unwrap();
    assert_eq!((&entry.value[..], entry.version), (&b"one"[..], v1));
    assert!(entry.ttl_ms <= 60_000);

    let v2 = client
        .set("k", "two", TTL, SetMode::UpdateOnly)
        .await
        .unwrap();
    let v3 = client
        .set("k", "three", TTL, SetMode::IfVersion(v2))
        .await
        .unwrap();
    let v4 = client.set("k", "four", TTL, SetMode::Upsert).await.unwrap();
    assert!(v1 < v2 && v2 < v3 && v3 < v4);

    // Touches change the TTL, not the version.
    assert_eq!(
        client.touch("k", Duration::from_secs(3600)).await.unwrap(),
        v4
    );
    let touched = client
        .get_and_touch("k", Duration::from_secs(7200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.version, v4);
    assert!(touched.ttl_ms > 3_600_000);

    assert!(client.del("k").await.unwrap());
    assert!(!client.del("k").await.unwrap());
    let v5 = client.set("k", "five", TTL, SetMode::Upsert).await.unwrap();
    client.del_if_version("k", v5).await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), None);

    let stats = client.stats().await.unwrap();
    assert!(stats.get("server_version").is_some());
    assert_eq!(stats.get("set_stored"), Some("5"));
}

#[tokio::test]
async fn declined_conditional_writes_are_typed_errors() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;

    // not found
    let missing = client.set("absent", "v", TTL, SetMode::UpdateOnly).await;
    assert!(matches!(missing, Err(Error::NotFound)), "{missing:?}");
    let missing = client.set("absent", "v", TTL, SetMode::IfVersion(1)).await;
    assert!(matches!(missing, Err(Error::NotFound)), "{missing:?}");
    assert!(matches!(
        client.touch("absent", TTL).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        client.del_if_version("absent", 1).await,
        Err(Error::NotFound)
    ));

    // exists
    let v1 = client
        .set("k", "v", TTL, SetMode::CreateOnly)
        .await
        .unwrap();
    let exists = client.set("k", "w", TTL, SetMode::CreateOnly).await;
    assert!(matches!(exists, Err(Error::Exists)), "{exists:?}");

    // version conflict, on SET and DEL, reporting the current version
    let v2 = client.set("k", "w", TTL, SetMode::Upsert).await.unwrap();
    let stale = client.set("k", "x", TTL, SetMode::IfVersion(v1)).await;
    assert!(
        matches!(stale, Err(Error::VersionMismatch { current }) if current == v2),
        "{stale:?}"
    );
    let stale = client.del_if_version("k", v1).await;
    assert!(
        matches!(stale, Err(Error::VersionMismatch { current }) if current == v2),
        "{stale:?}"
    );
    for declined in [
        Error::NotFound,
        Error::Exists,
        Error::VersionMismatch { current: 1 },
    ] {
        assert!(declined.is_declined() && !declined.is_transient());
    }
    // Nothing declined was applied.
    assert_eq!(&client.get("k").await.unwrap().unwrap().value[..], b"w");
}

#[tokio::test]
async fn server_errors_and_invalid_arguments_are_typed_errors() {
    let daemon = Daemon::start_with_config("[limits]\nmax_ttl = \"1h\"\nmax_key_bytes = 64\n");
    let client = client(&daemon).await;
    assert_eq!(
        client.limits().await.unwrap().max_ttl_ms,
        3_600_000,
        "HELLO reports the configured limits"
    );

    let too_long = client
        .set("k", "v", Duration::from_secs(7200), SetMode::Upsert)
        .await;
    assert!(
        matches!(&too_long, Err(Error::Server { status: Status::InvalidArgument, message }) if message.contains("ttl")),
        "{too_long:?}"
    );
    let big_key = client.get([b'k'; 100]).await;
    assert!(
        matches!(
            big_key,
            Err(Error::Server {
                status: Status::TooLarge,
                ..
            })
        ),
        "{big_key:?}"
    );
    let empty_key = client.get("").await;
    assert!(
        matches!(
            empty_key,
            Err(Error::Server {
                status: Status::InvalidArgument,
                ..
            })
        ),
        "{empty_key:?}"
    );

    // Refused before sending: the frame could not carry them.
    let huge_key = client.get(vec![b'k'; 70_000]).await;
    assert!(
        matches!(huge_key, Err(Error::InvalidArgument(_))),
        "{huge_key:?}"
    );
    let no_ttl = client.set("k", "v", Duration::ZERO, SetMode::Upsert).await;
    assert!(
        matches!(no_ttl, Err(Error::InvalidArgument(_))),
        "{no_ttl:?}"
    );

    // None of that hurt the connection.
    client.ping().await.unwrap();
    assert_eq!(daemon.stats().await.get("connections_total"), Some("2"));
}

#[tokio::test]
async fn a_server_at_its_connection_limit_answers_busy() {
    let daemon = Daemon::start_with_config("[server]\nmax_connections = 1\n");
    let first = client(&daemon).await;
    let second = Client::connect(daemon.addr().to_string()).await;
    assert!(
        matches!(
            second,
            Err(Error::Server {
                status: Status::Busy,
                ..
            })
        ),
        "{second:?}"
    );
    first.ping().await.unwrap();
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    // A port nothing listens on: bind one, then free it.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    match &err {
        Error::Connection { addr: a, source } => {
            assert_eq!(&**a, addr.to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(err.is_transient());
    // A lazy client reports it on the first request instead.
    let lazy = Client::builder(addr.to_string()).build();
    assert!(matches!(lazy.ping().await, Err(Error::Connection { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_tasks_share_one_multiplexed_connection() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                // Released together, so the requests really are in flight at once.
                barrier.wait().await;
                let key = format!("task:{i}");
                let mut last = 0;
                for round in 0..20 {
                    let value = format!("{i}:{round}");
                    let mode = if round == 0 {
                        SetMode::CreateOnly
                    } else {
                        SetMode::IfVersion(last)
                    };
                    last = client.set(&key, &value, TTL, mode).await.unwrap();
                    let entry = client.get(&key).await.unwrap().unwrap();
                    // Each task gets its own replies, never another task's.
                    assert_eq!(entry.value, value.as_bytes());
                    assert_eq!(entry.version, last);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(
        stats.get("connections_total"),
        Some("1"),
        "one connection carried it all"
    );
    assert_eq!(stats.get("set_stored"), Some("2000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_spreads_requests_over_its_connections() {
    let daemon = Daemon::start();
    let client = Client::builder(daemon.addr().to_string())
        .connections(3)
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let key = format!("k{i}");
                let v = client
                    .set(&key, "v", TTL, SetMode::CreateOnly)
                    .await
                    .unwrap();
                assert_eq!(client.get(&key).await.unwrap().unwrap().version, v);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.get("connections_current"), Some("3"));
    assert_eq!(stats.get("connections_total"), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_restarts() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let mut first = Daemon::start_with_exact_args(
        "",
        data.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", &data_dir],
    );
    let addr = first.addr().to_string();
    let client = Client::builder(&addr)
        .request_timeout(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let v1 = client
        .set("k", "kept", TTL, SetMode::CreateOnly)
        .await
        .unwrap();

    first.terminate(Duration::from_secs(20));
    // While the server is down, requests fail with connection errors (they do not hang).
    let down = client.get("k").await;
    assert!(matches!(down, Err(Error::Connection { .. })), "{down:?}");
    assert!(down.unwrap_err().is_transient());

    // Same address, same data directory: a restart.
    let second = Daemon::start_with_exact_args(
        "",
        data.path(),
        &["--listen", &addr, "--data-dir", &data_dir],
    );
    assert_eq!(second.addr().to_string(), addr);

    // The same client recovers on its own within its backoff.
    let deadline = Deadline::after(Duration::from_secs(10), "the client reconnects");
    let entry = loop {
        match client.get("k").await {
            Ok(entry) => break entry,
            Err(e) if e.is_transient() => deadline.tick().await,
            Err(e) => panic!("unexpected error after the restart: {e}"),
        }
    };
    // The data survived the restart (append-only file), and so did its version.
    let entry = entry.unwrap();
    assert_eq!((&entry.value[..], entry.version), (&b"kept"[..], v1));
    let v2 = client
        .set("k", "new", TTL, SetMode::IfVersion(v1))
        .await
        .unwrap();
    assert!(v2 > v1);
}

/// A listener that accepts connections and holds them open without ever writing.
async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A listener that completes the `HELLO` handshake properly and then never answers again.
/// Returns its address and a count of the connections it accepted.
async fn server_that_stops_answering_after_hello() -> (SocketAddr, Arc<AtomicUsize>) {
    // Every other request is read and ignored.
    scripted_server(|_, _| Vec::new()).await
}

/// A listener that answers `HELLO` properly and every other request with what `answer`
/// returns for it and its opaque. Returns its address and a count of the connections it
/// accepted.
async fn scripted_server(
    answer: fn(Request, u32) -> Vec<ResponseFrame>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut framed = Framed::new(socket, ServerCodec::new(Limits::default()));
                while let Some(Ok(Inbound::Request(frame))) = framed.next().await {
                    let opaque = frame.opaque;
                    let replies = match Request::parse(frame, &Limits::default()) {
                        Ok(Request::Hello(_)) => vec![HelloReply {
                            version: 1,
                            flags: 0,
                            limits: Limits::default(),
                            server: "scripted/0".into(),
                        }
                        .to_frame(opaque)],
                        Ok(request) => answer(request, opaque),
                        Err(_) => Vec::new(),
                    };
                    for reply in replies {
                        framed.send(reply).await.unwrap();
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Regression: the client took any frame with opcode 0xFF and opaque 0 for an unsolicited
/// one and closed the connection, failing every pending request. Unsolicited frames are
/// opcode 0xFF with a *fatal* status (PROTOCOL.md 4.4); with a non-fatal status such a
/// frame is the answer to a request that carried opcode 0xFF, which this client never
/// sends, so it is dropped and the connection goes on.
#[tokio::test]
async fn a_non_fatal_frame_with_opcode_0xff_does_not_close_the_connection() {
    let (addr, accepted) = scripted_server(|request, opaque| match request {
        Request::Ping(ping) => vec![
            ResponseFrame::error(0xFF, 0, Status::UnknownOpcode, "unknown opcode 0xff"),
            PingReply {
                payload: ping.payload,
            }
            .to_frame(opaque),
        ],
        _ => Vec::new(),
    })
    .await;
    let client = Client::builder(addr.to_string())
        .request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    client.ping().await.unwrap();
    client.ping().await.unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the connection was reopened"
    );
}

#[tokio::test]
async fn requests_time_out_against_a_server_that_never_answers() {
    let (addr, accepted) = server_that_stops_answering_after_hello().await;
    let timeout = Duration::from_millis(300);
    let client = Client::builder(addr.to_string())
        .request_timeout(timeout)
        .connect()
        .await
        .unwrap();
    let results = futures_util::future::join_all((0..10).map(|_| client.ping())).await;
    for result in results {
        assert!(
            matches!(result, Err(Error::Timeout { after }) if after == timeout),
            "{result:?}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "all ten shared one connection"
    );

    // Nothing at all arrived within a request timeout, so that connection was abandoned as
    // dead: the next request opens a new one rather than waiting on a stuck socket.
    let err = client.get("k").await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. }) && err.is_transient(),
        "{err}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_handshake_is_bounded_by_the_connect_timeout() {
    let addr = silent_server().await;
    // Connect timeout shorter than the request timeout: a connection error that says so.
    let err = Client::builder(addr.to_string())
        .connect_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_err();
    match &err {
        Error::Connection { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{err}")
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    // Request timeout shorter: the request as a whole times out.
    let client = Client::builder(addr.to_string())
        .connect_timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_millis(200))
        .build();
    assert!(matches!(client.ping().await, Err(Error::Timeout { .. })));
}

#[tokio::test]
async fn a_server_speaking_another_protocol_is_a_protocol_error() {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    let err = Client::connect(addr.to_string()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(message) if message.contains("magic")),
        "{err:?}"
    );
}
