//! Sessions spread over several real `sessiond` processes: placement by owner, failing
//! closed while a node is down, and recovery from its append-only file.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sessiond_client::discovery::topology_toml;
use sessiond_client::placement::{Node, Topology};
use sessiond_client::{Client, Error, SessionConfig, SessionError, SessionId, Sessions, SetMode};
use sessiond_tests::Daemon;

/// Every acknowledged write is on disk before its reply, so a `kill -9` loses nothing.
const CONFIG: &str = "[aof]\nfsync = \"always\"\n";

/// A node on a fixed port and data directory, so that it can be stopped and started again
/// where the client expects it.
struct TestNode {
    name: String,
    port: u16,
    data: PathBuf,
    daemon: Option<Daemon>,
}

impl TestNode {
    fn start(name: &str, root: &Path) -> TestNode {
        // A port the OS just handed out and released: free unless something takes it in the
        // moment before the daemon binds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = root.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let mut node = TestNode {
            name: name.to_string(),
            port,
            data,
            daemon: None,
        };
        node.run();
        node
    }

    fn run(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let data = self.data.display().to_string();
        let args = ["--listen", &listen, "--data-dir", &data];
        self.daemon = Some(Daemon::start_with_exact_args(CONFIG, &self.data, &args));
    }

    fn kill9(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill9();
        }
    }

    fn node(&self) -> Node {
        Node::new(&self.name, format!("127.0.0.1:{}", self.port)).unwrap()
    }
}

fn topology(nodes: &[TestNode]) -> Topology {
    Topology::new(nodes.iter().map(TestNode::node)).unwrap()
}

fn cluster(topology: Topology) -> (Client, Sessions) {
    let client = Client::cluster(topology)
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .retry_interval(Duration::from_millis(300))
        .build();
    let sessions = Sessions::new(client.clone(), SessionConfig::default()).unwrap();
    (client, sessions)
}

/// The `Cookie` header a browser sends back for a `Set-Cookie`.
fn cookie_header(set_cookie: &sessiond_client::SetCookie) -> String {
    let value = set_cookie.as_str().split(';').next().unwrap();
    value.to_string()
}

/// The node that holds the session of `cookie`.
fn node_of(client: &Client, sessions: &Sessions, cookie: &str) -> String {
    let id = SessionId::parse(cookie.split_once('=').unwrap().1).unwrap();
    let key = sessions.key(&id);
    let topology = client.topology().unwrap();
    topology.node_for_key(key.as_bytes()).name().to_string()
}

/// What a browser holds: its cookie, the user (if logged in), and what it stored.
struct Browser {
    cookie: String,
    user: Option<String>,
    n: u64,
}

async fn anonymous(sessions: &Sessions, n: u64) -> Browser {
    let mut session = sessions.load(None).await.unwrap();
    session.insert("n", n).unwrap();
    let cookie = cookie_header(&sessions.save(&mut session).await.unwrap().unwrap());
    Browser {
        cookie,
        user: None,
        n,
    }
}

async fn logged_in(sessions: &Sessions, user: &str, n: u64) -> Browser {
    let mut session = sessions.load(None).await.unwrap();
    session.insert("n", n).unwrap();
    let cookie = cookie_header(&sessions.login(&mut session, user).await.unwrap());
    Browser {
        cookie,
        user: Some(user.to_string()),
        n,
    }
}

#[tokio::test]
async fn a_stopped_node_fails_only_its_sessions_fast_and_returns_them_from_its_aof() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes: Vec<TestNode> = (0..3)
        .map(|i| TestNode::start(&format!("sessiond-{i}"), root.path()))
        .collect();
    let (client, sessions) = cluster(topology(&nodes));

    // Users with two devices each, and anonymous visitors.
    let mut browsers = Vec::new();
    for i in 0..30 {
        let user = format!("user-{i}");
        browsers.push(logged_in(&sessions, &user, i).await);
        browsers.push(logged_in(&sessions, &user, 100 + i).await);
        browsers.push(anonymous(&sessions, 200 + i).await);
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for browser in &browsers {
        *per_node
            .entry(node_of(&client, &sessions, &browser.cookie))
            .or_default() += 1;
    }
    assert_eq!(
        per_node.len(),
        3,
        "sessions spread over every node: {per_node:?}"
    );

    // A user's devices are on one node, and listed and ended there in one request.
    for i in 0..30 {
        let user = format!("user-{i}");
        let devices = sessions.sessions_of(&user).await.unwrap();
        assert_eq!(devices.len(), 2, "{user}");
    }

    // Sessions on the node about to stop: one user logs out everywhere, one visitor logs
    // out; after the restart neither may come back.
    let victim = nodes[1].name.clone();
    let on_victim = |b: &Browser| node_of(&client, &sessions, &b.cookie) == victim;
    let ended_user = browsers
        .iter()
        .find(|b| b.user.is_some() && on_victim(b))
        .and_then(|b| b.user.clone())
        .expect("a user on the victim node");
    assert_eq!(sessions.end_all(&ended_user, None).await.unwrap(), 2);
    let logged_out = browsers
        .iter()
        .position(|b| b.user.is_none() && on_victim(b))
        .expect("a visitor on the victim node");
    let mut session = sessions
        .load([browsers[logged_out].cookie.as_str()])
        .await
        .unwrap();
    sessions.destroy(&mut session).await.unwrap();
    let gone = |b: &Browser| {
        b.user.as_deref() == Some(ended_user.as_str()) || b.cookie == browsers[logged_out].cookie
    };

    nodes[1].kill9();

    // The first request for the dead node pays for finding out; the rest fail at once.
    let mut first = true;
    for browser in &browsers {
        let started = Instant::now();
        let loaded = sessions.load([browser.cookie.as_str()]).await;
        let took = started.elapsed();
        if on_victim(browser) {
            match loaded {
                Err(SessionError::Unavailable(Error::Unavailable { node, .. })) => {
                    assert_eq!(&*node, victim.as_str());
                }
                other => panic!("expected unavailable, got {other:?}"),
            }
            if !first {
                assert!(took < Duration::from_millis(50), "{took:?}");
            }
            first = false;
        } else {
            let session = loaded.unwrap();
            assert_eq!(session.get::<u64>("n").unwrap(), Some(browser.n));
        }
    }
    // Owner operations for users elsewhere keep working; those on the dead node fail closed.
    for browser in browsers.iter().filter(|b| b.user.is_some()) {
        let user = browser.user.as_deref().unwrap();
        let listed = sessions.sessions_of(user).await;
        if on_victim(browser) {
            assert!(matches!(listed, Err(e) if e.is_unavailable()));
        } else {
            assert_eq!(listed.unwrap().len(), 2);
        }
    }

    // Back from its append-only file: every session it had, none that had ended.
    nodes[1].run();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for browser in &browsers {
        let session = sessions.load([browser.cookie.as_str()]).await.unwrap();
        if gone(browser) {
            assert!(session.is_new(), "an ended session came back");
        } else {
            assert_eq!(session.get::<u64>("n").unwrap(), Some(browser.n));
        }
    }
    assert!(sessions.sessions_of(&ended_user).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_login_moves_the_session_to_its_owners_node_and_kills_the_old_id() {
    let root = tempfile::tempdir().unwrap();
    let nodes: Vec<TestNode> = (0..3)
        .map(|i| TestNode::start(&format!("n{i}"), root.path()))
        .collect();
    let (client, sessions) = cluster(topology(&nodes));

    // Enough logins that some anonymous sessions start on another node than their user's.
    let mut moved = 0;
    for i in 0..20 {
        let user = format!("mover-{i}");
        let before = anonymous(&sessions, i).await;
        let mut session = sessions.load([before.cookie.as_str()]).await.unwrap();
        let after = cookie_header(&sessions.login(&mut session, &user).await.unwrap());
        let (from, to) = (
            node_of(&client, &sessions, &before.cookie),
            node_of(&client, &sessions, &after),
        );
        moved += usize::from(from != to);
        let tag = client.owner_tag(&user);
        assert!(after.contains(&format!("={tag}~")), "{after}");
        assert!(!after.contains(&user));
        // The old id is dead, the new one holds the data and is the owner's.
        assert!(sessions
            .load([before.cookie.as_str()])
            .await
            .unwrap()
            .is_new());
        let session = sessions.load([after.as_str()]).await.unwrap();
        assert_eq!(session.get::<u64>("n").unwrap(), Some(i));
        assert_eq!(session.owner(), Some(user.as_str()));
        assert_eq!(sessions.sessions_of(&user).await.unwrap().len(), 1);
    }
    assert!(moved > 5, "only {moved} logins crossed nodes");

    // With an absolute lifetime configured, a login that crosses nodes keeps one: counted
    // from the login, since the copy cannot carry the old deadline.
    let config = SessionConfig::default().absolute_lifetime(Duration::from_secs(3600));
    let bounded = Sessions::new(client.clone(), config).unwrap();
    let mut crossed = 0;
    for i in 0..20 {
        let user = format!("bounded-{i}");
        let before = anonymous(&bounded, i).await;
        let mut session = bounded.load([before.cookie.as_str()]).await.unwrap();
        let after = cookie_header(&bounded.login(&mut session, &user).await.unwrap());
        crossed += usize::from(
            node_of(&client, &bounded, &before.cookie) != node_of(&client, &bounded, &after),
        );
        let devices = bounded.sessions_of(&user).await.unwrap();
        assert!(
            devices[0].absolute_deadline.is_some(),
            "{user} lost its deadline"
        );
    }
    assert!(crossed > 0);

    // Every key is on exactly one node: the three nodes' key counts add up.
    let mut keys = HashSet::new();
    for (node, node_client) in client.nodes() {
        let stats = node_client.stats().await.unwrap();
        let count = stats
            .get("entries")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap();
        keys.insert((node.name().to_string(), count));
    }
    let total: u64 = keys.iter().map(|(_, c)| c).sum();
    assert_eq!(total, 40, "{keys:?}");
}

/// What one load task knows of the sessions it alone uses: the value of each acknowledged
/// write, or that it deleted the session.
#[derive(Default)]
struct Model {
    sessions: Vec<(String, Option<u64>)>,
    acknowledged: u64,
}

impl Model {
    /// Checks that the store shows what the model says for session `i`.
    async fn check(&self, sessions: &Sessions, i: usize) {
        let (cookie, expected) = &self.sessions[i];
        let session = sessions.load([cookie.as_str()]).await.unwrap();
        match expected {
            Some(n) => assert_eq!(
                session.get::<u64>("n").unwrap(),
                Some(*n),
                "an acknowledged write was lost"
            ),
            None => assert!(session.is_new(), "a deleted session came back"),
        }
    }
}

/// Logs users in, reads, updates and logs out until `stop`, checking every read against
/// what it wrote. Each task uses only its own sessions, so its model is exact.
async fn load(sessions: Sessions, task: u64, stop: tokio::sync::watch::Receiver<bool>) -> Model {
    let mut model = Model::default();
    let mut step = 0u64;
    while !*stop.borrow() {
        step += 1;
        let pick = (step.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize;
        match step % 8 {
            0 | 1 => {
                let browser = if step.is_multiple_of(3) {
                    anonymous(&sessions, step).await
                } else {
                    logged_in(&sessions, &format!("load-{task}-{}", step % 50), step).await
                };
                model.sessions.push((browser.cookie, Some(step)));
            }
            2 if !model.sessions.is_empty() => {
                let i = pick % model.sessions.len();
                let (cookie, state) = &mut model.sessions[i];
                if state.is_some() {
                    let mut session = sessions.load([cookie.as_str()]).await.unwrap();
                    sessions.destroy(&mut session).await.unwrap();
                    *state = None;
                }
            }
            3..=5 if !model.sessions.is_empty() => {
                let i = pick % model.sessions.len();
                let (cookie, state) = &mut model.sessions[i];
                if state.is_some() {
                    // `modify` loads again when a move changed the version under it.
                    let saved = sessions
                        .modify([cookie.as_str()], |s| s.insert("n", step))
                        .await;
                    saved.unwrap();
                    *state = Some(step);
                }
            }
            _ if !model.sessions.is_empty() => {
                model.check(&sessions, pick % model.sessions.len()).await;
            }
            _ => {}
        }
        model.acknowledged += 1;
    }
    model
}

#[tokio::test]
async fn adding_a_fourth_node_under_load_loses_and_resurrects_nothing() {
    let root = tempfile::tempdir().unwrap();
    let nodes: Vec<TestNode> = (0..4)
        .map(|i| TestNode::start(&format!("sessiond-{i}"), root.path()))
        .collect();
    let three = topology(&nodes[..3]);
    let four = topology(&nodes);

    // Sessions made while there were three nodes.
    let (_, before) = cluster(three.clone());
    let mut existing = Model::default();
    for i in 0..1500 {
        let browser = match i % 2 {
            0 => anonymous(&before, i).await,
            _ => logged_in(&before, &format!("early-{}", i % 300), i).await,
        };
        existing.sessions.push((browser.cookie, Some(i)));
    }

    // The application switches to four nodes, reading the old placement too.
    let window = Client::cluster(four.clone())
        .previous_topology(three.clone())
        .request_timeout(Duration::from_secs(10))
        .build();
    let sessions = Sessions::new(window, SessionConfig::default()).unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..6)
        .map(|task| tokio::spawn(load(sessions.clone(), task, stop.clone())))
        .collect();

    // The rebalance, interrupted once and resumed from its progress file.
    let (old_file, new_file) = (root.path().join("old.toml"), root.path().join("new.toml"));
    std::fs::write(&old_file, topology_toml(&three)).unwrap();
    std::fs::write(&new_file, topology_toml(&four)).unwrap();
    let progress = root.path().join("progress");
    let rebalance = {
        let (old_file, new_file, progress) = (old_file.clone(), new_file.clone(), progress.clone());
        move || {
            let mut command = std::process::Command::new(sessiond_tests::binary("sessiond-cli"));
            command
                .args(["rebalance", "--from"])
                .arg(&old_file)
                .arg("--to")
                .arg(&new_file)
                .arg("--progress")
                .arg(&progress)
                .args(["--rate", "1500", "--report-every", "100ms"]);
            command
        }
    };
    let mut first = rebalance().spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        progress.exists(),
        "no progress was recorded before the interruption"
    );
    let again = rebalance.clone();
    let resumed = tokio::task::spawn_blocking(move || {
        sessiond_tests::run_command(again(), b"", Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert!(resumed.status.success(), "{resumed:?}");
    assert!(
        resumed.stderr.contains("resuming pass"),
        "{}",
        resumed.stderr
    );
    assert!(
        resumed.stdout.starts_with("done passes"),
        "{}",
        resumed.stdout
    );

    // Every write the load generators saw acknowledged is there, through the window.
    stop_tx.send(true).unwrap();
    let mut models = Vec::new();
    for task in tasks {
        models.push(task.await.unwrap());
    }
    let acknowledged: u64 = models.iter().map(|m| m.acknowledged).sum();
    assert!(
        acknowledged > 500,
        "the load did little: {acknowledged} operations"
    );

    // The old placement can be dropped: a client of the four nodes alone sees everything,
    // and every node holds only keys that belong to it.
    let (after_client, after) = cluster(four.clone());
    for model in models.iter().chain([&existing]) {
        for i in 0..model.sessions.len() {
            model.check(&after, i).await;
        }
    }
    let mut moved_to_new = 0;
    for (node, client) in after_client.nodes() {
        let mut cursor = 0;
        loop {
            let batch = client.scan(cursor, 0).await.unwrap();
            for entry in &batch.entries {
                let home = four.node_for_key(&entry.key);
                assert_eq!(home.name(), node.name(), "a key left on its old node");
                moved_to_new += usize::from(node.name() == "sessiond-3");
            }
            cursor = batch.next_cursor;
            if cursor == 0 {
                break;
            }
        }
    }
    assert!(moved_to_new > 0);
}

#[tokio::test]
async fn only_an_admin_may_scan_and_a_scan_returns_every_session_field() {
    use sessiond_client::SessionOptions;
    use sessiond_tests::users::{TestUsers, ADMIN_PASSWORD, APP_PASSWORD};

    let users = TestUsers::standard();
    let daemon = Daemon::start_with_config(users.config());
    let as_user = |user: &str, password: &str| {
        Client::builder(daemon.addr().to_string())
            .credentials(user, password)
            .build()
    };
    let app = as_user("app", APP_PASSWORD);
    assert!(matches!(app.scan(0, 0).await, Err(Error::NoPermission(_))));

    // A session with an owner and an absolute lifetime, and a plain entry.
    let options = SessionOptions::new()
        .owner("u7")
        .absolute_lifetime(Duration::from_secs(3600));
    let ttl = Duration::from_secs(600);
    let mode = SetMode::CreateOnly;
    let written = app
        .set_session("s:1", "hi", ttl, mode, &options)
        .await
        .unwrap();
    app.set("plain", "p", ttl, mode).await.unwrap();

    let admin = as_user("admin", ADMIN_PASSWORD);
    let (mut cursor, mut seen) = (0, Vec::new());
    loop {
        let batch = admin.scan(cursor, 1).await.unwrap();
        seen.extend(batch.entries);
        cursor = batch.next_cursor;
        if cursor == 0 {
            break;
        }
    }
    seen.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(seen.len(), 2);
    let (plain, session) = (&seen[0], &seen[1]);
    assert_eq!(
        (&plain.key[..], plain.owner.as_deref()),
        (&b"plain"[..], None)
    );
    assert_eq!((plain.created_ms, plain.deadline_ms), (0, None));
    assert_eq!(&session.value[..], b"hi");
    assert_eq!(session.owner.as_deref(), Some(&b"u7"[..]));
    assert_eq!(session.version, written.version);
    assert!(session.ttl_ms <= 600_000 && session.ttl_ms > 590_000);
    let lifetime = session.deadline_ms.unwrap() - session.created_ms;
    assert!((3_599_000..=3_600_000).contains(&lifetime), "{lifetime}");
}

#[tokio::test]
async fn a_node_that_accepts_but_never_answers_costs_one_timeout_then_fails_fast() {
    // A peer that accepts connections and never answers: the case a breaker is for, since
    // every request to it would otherwise wait out its whole timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let daemon = Daemon::start();
    let topology = Topology::new([
        Node::new("silent", silent_addr.to_string()).unwrap(),
        Node::new("alive", daemon.addr().to_string()).unwrap(),
    ])
    .unwrap();
    let client = Client::cluster(topology.clone())
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_millis(300))
        .retry_interval(Duration::from_secs(5))
        .build();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let on = |name: &str| -> Vec<&String> {
        let on_node = |k: &&String| topology.node_for_key(k.as_bytes()).name() == name;
        keys.iter().filter(on_node).collect()
    };
    let (silent_keys, alive_keys) = (on("silent"), on("alive"));
    assert!(silent_keys.len() > 5 && alive_keys.len() > 5);

    let started = Instant::now();
    let first = client.get(silent_keys[0]).await;
    assert!(matches!(first, Err(Error::Unavailable { .. })), "{first:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let started = Instant::now();
    for key in &silent_keys[1..] {
        let err = client.get(key).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }
    let fast = started.elapsed();
    assert!(fast < Duration::from_millis(50), "{fast:?} for the rest");
    for key in &alive_keys {
        let ttl = Duration::from_secs(60);
        client.set(key, "v", ttl, SetMode::Upsert).await.unwrap();
        assert!(client.get(key).await.unwrap().is_some());
    }
    held.abort();
}

/// A proxy in front of a node: it holds the first write (`SET`, `SET_SESSION`) that comes
/// through until released, and cuts the connection at the first `DEL` after that, then lets
/// everything through. In front of a rebalance's new node, that is a rebalance that scans a
/// session, waits while the user logs out, copies it, and loses the new node before it can
/// remove the copy again.
struct CuttingProxy {
    addr: std::net::SocketAddr,
    arrived: std::sync::Arc<tokio::sync::Notify>,
    release: std::sync::Arc<tokio::sync::Notify>,
}

impl CuttingProxy {
    async fn start(target: std::net::SocketAddr) -> CuttingProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(tokio::sync::Notify::new());
        let (held, cut) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (a, r) = (arrived.clone(), release.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (arrived, release, held, cut) =
                    (a.clone(), r.clone(), held.clone(), cut.clone());
                tokio::spawn(async move {
                    let upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_node, mut to_node) = upstream.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_node, &mut to_client).await;
                    });
                    loop {
                        // One request frame (PROTOCOL.md 3.2): a 16-byte header, then key,
                        // extras and value.
                        let mut frame = vec![0u8; 16];
                        if from_client.read_exact(&mut frame).await.is_err() {
                            break;
                        }
                        let body = usize::from(u16::from_be_bytes([frame[8], frame[9]]))
                            + usize::from(frame[10])
                            + u32::from_be_bytes(frame[12..16].try_into().unwrap()) as usize;
                        frame.resize(16 + body, 0);
                        if from_client.read_exact(&mut frame[16..]).await.is_err() {
                            break;
                        }
                        let opcode = frame[2];
                        if matches!(opcode, 0x03 | 0x10) && !held.swap(true, Ordering::SeqCst) {
                            arrived.notify_one();
                            release.notified().await;
                        }
                        if opcode == 0x05
                            && held.load(Ordering::SeqCst)
                            && !cut.swap(true, Ordering::SeqCst)
                        {
                            // The connection is lost with the request unsent.
                            back.abort();
                            break;
                        }
                        if to_node.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CuttingProxy {
            addr,
            arrived,
            release,
        }
    }
}

#[tokio::test]
async fn a_rebalance_cut_off_between_copy_and_cleanup_does_not_resurrect_a_logged_out_session() {
    let (old_node, new_node) = (Daemon::start(), Daemon::start());
    let proxy = CuttingProxy::start(new_node.addr()).await;
    let old = Topology::new([Node::new("a", old_node.addr().to_string()).unwrap()]).unwrap();
    let node = |name: &str, addr: std::net::SocketAddr| Node::new(name, addr.to_string()).unwrap();
    // The rebalance reaches the new node through the proxy; the application directly.
    let through_proxy = Topology::new([node("a", old_node.addr()), node("b", proxy.addr)]).unwrap();
    let direct = Topology::new([node("a", old_node.addr()), node("b", new_node.addr())]).unwrap();
    let key = (0..)
        .map(|i| format!("session-{i}"))
        .find(|k| direct.node_for_key(k.as_bytes()).name() == "b")
        .unwrap();
    let at = |addr: std::net::SocketAddr| Client::builder(addr.to_string()).build();
    let (at_old, at_new) = (at(old_node.addr()), at(new_node.addr()));
    let ttl = Duration::from_secs(600);
    at_old
        .set(&key, "alice", ttl, SetMode::CreateOnly)
        .await
        .unwrap();

    let root = tempfile::tempdir().unwrap();
    let (old_file, new_file) = (root.path().join("old.toml"), root.path().join("new.toml"));
    std::fs::write(&old_file, topology_toml(&old)).unwrap();
    std::fs::write(&new_file, topology_toml(&through_proxy)).unwrap();
    let progress = root.path().join("progress");
    let rebalance = move || {
        let mut command = std::process::Command::new(sessiond_tests::binary("sessiond-cli"));
        command
            .args(["rebalance", "--timeout", "10s", "--from"])
            .arg(&old_file)
            .arg("--to")
            .arg(&new_file)
            .arg("--progress")
            .arg(&progress);
        command
    };
    let first = {
        let command = rebalance();
        tokio::task::spawn_blocking(move || {
            sessiond_tests::run_command(command, b"", Duration::from_secs(60))
        })
    };

    // The rebalance has scanned the session and is about to copy it: the user logs out,
    // through the migration window (old node: deleted; new node: nothing there yet).
    tokio::time::timeout(Duration::from_secs(30), proxy.arrived.notified())
        .await
        .expect("the rebalance never wrote to the new node");
    let window = Client::cluster(direct.clone())
        .previous_topology(old.clone())
        .build();
    assert!(window.del(&key).await.unwrap());
    proxy.release.notify_one();

    // The copy is made, the old node says the session is gone, and the removal of the copy
    // is cut off: the run fails, and says the move is still pending.
    let first = first.await.unwrap();
    assert!(!first.status.success(), "{first:?}");
    assert!(first.stderr.contains("left pending"), "{}", first.stderr);
    assert!(
        at_new.get(&key).await.unwrap().is_some(),
        "no copy was left"
    );

    // The next run settles the pending move before anything else.
    let command = rebalance();
    let second = tokio::task::spawn_blocking(move || {
        sessiond_tests::run_command(command, b"", Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert!(second.status.success(), "{second:?}");
    assert!(
        second.stderr.contains("settled 1 moves") && second.stderr.contains("1 copies removed"),
        "{}",
        second.stderr
    );
    for (name, client) in [("old", &at_old), ("new", &at_new)] {
        assert!(
            client.get(&key).await.unwrap().is_none(),
            "the logged-out session is back on the {name} node"
        );
    }
    assert!(window.get(&key).await.unwrap().is_none());
}

/// Node `a` alone, growing to `a` and `b`, and two keys that move to `b`.
struct Growing {
    a: Daemon,
    b: Daemon,
    old: Topology,
    new: Topology,
    leaving: [String; 2],
}

impl Growing {
    fn start() -> Growing {
        let (a, b) = (Daemon::start(), Daemon::start());
        let node = |name: &str, d: &Daemon| Node::new(name, d.addr().to_string()).unwrap();
        let old = Topology::new([node("a", &a)]).unwrap();
        let new = Topology::new([node("a", &a), node("b", &b)]).unwrap();
        let mut leaving = (0..)
            .map(|i| format!("k{i}"))
            .filter(|k| new.node_for_key(k.as_bytes()).name() == "b");
        let leaving = [leaving.next().unwrap(), leaving.next().unwrap()];
        Growing {
            a,
            b,
            old,
            new,
            leaving,
        }
    }
}

#[tokio::test]
async fn an_upsert_in_the_migration_window_is_not_lost_when_the_old_topology_is_dropped() {
    use sessiond_client::migration::Rebalance;

    let Growing {
        a,
        b,
        old,
        new,
        leaving: [moved, unmoved],
    } = Growing::start();
    let (at_a, at_b) = (
        Client::builder(a.addr().to_string()).build(),
        Client::builder(b.addr().to_string()).build(),
    );
    let ttl = Duration::from_secs(600);
    at_a.set(&moved, "1", ttl, SetMode::CreateOnly)
        .await
        .unwrap();

    // The rebalancer moves `moved`; `unmoved` is created only afterwards, on the old node,
    // by a client that has not switched yet.
    let rebalance = Rebalance::new(old.clone(), new.clone(), |n| {
        Client::builder(n.addr()).build()
    });
    let scanned = rebalance.scan("a", 0, 100).await.unwrap();
    let (tally, pending, error) = rebalance.run(scanned.moves, |_| {}).await;
    assert_eq!((tally.moved, pending.len(), error.is_none()), (1, 0, true));
    at_a.set(&unmoved, "1", ttl, SetMode::CreateOnly)
        .await
        .unwrap();

    let window = Client::cluster(new.clone())
        .previous_topology(old.clone())
        .build();
    for key in [&moved, &unmoved] {
        window.set(key, "2", ttl, SetMode::Upsert).await.unwrap();
    }
    // A moved key is written where it now lives, not created again on the node it left; a
    // key its old node still holds is updated there, for the rebalancer to move.
    assert!(at_a.get(&moved).await.unwrap().is_none());
    assert_eq!(&at_b.get(&moved).await.unwrap().unwrap().value[..], b"2");
    assert_eq!(&at_a.get(&unmoved).await.unwrap().unwrap().value[..], b"2");
    assert!(at_b.get(&unmoved).await.unwrap().is_none());

    // The rebalance finishes, the previous topology is dropped: both writes are there.
    let scanned = rebalance.scan("a", 0, 100).await.unwrap();
    let (tally, _, error) = rebalance.run(scanned.moves, |_| {}).await;
    assert_eq!((tally.moved, error.is_none()), (1, true));
    let after = Client::cluster(new).build();
    for key in [&moved, &unmoved] {
        assert_eq!(
            &after.get(key).await.unwrap().unwrap().value[..],
            b"2",
            "{key}"
        );
    }
}

#[tokio::test]
async fn scan_replies_stay_within_the_value_limit_and_cover_every_entry() {
    // A small value limit, and many more entries than one reply can hold.
    const LIMIT: usize = 1024;
    let daemon = Daemon::start_with_config(&format!("[limits]\nmax_value_bytes = {LIMIT}\n"));
    let client = Client::builder(daemon.addr().to_string()).build();
    let ttl = Duration::from_secs(600);
    let keys: HashSet<String> = (0..2000).map(|i| format!("k{i:04}")).collect();
    for key in &keys {
        let value = format!("value of {key} ...........");
        client
            .set(key, value, ttl, SetMode::CreateOnly)
            .await
            .unwrap();
    }
    let (mut cursor, mut seen, mut replies) = (0, HashSet::new(), 0);
    loop {
        // Every reply decodes (the client checked it), and holds at most the limit: shards
        // here hold a few entries each, far less than the limit.
        let batch = client.scan(cursor, 0).await.unwrap();
        let bytes: usize = batch.entries.iter().map(|e| e.encoded_len()).sum();
        assert!(bytes <= LIMIT, "a reply of {bytes} bytes");
        for entry in batch.entries {
            let key = String::from_utf8(entry.key.to_vec()).unwrap();
            assert!(seen.insert(key), "an entry returned twice");
        }
        replies += 1;
        cursor = batch.next_cursor;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen, keys);
    assert!(replies > 100, "{replies} replies");
}

#[tokio::test]
async fn a_window_client_asks_the_old_node_no_more_for_a_key_it_found_moved() {
    use sessiond_client::migration::Rebalance;

    let Growing {
        a,
        b: _b,
        old,
        new,
        leaving: [seen, unseen],
    } = Growing::start();
    let at_a = Client::builder(a.addr().to_string()).build();
    let ttl = Duration::from_secs(600);
    for key in [&seen, &unseen] {
        at_a.set(key, "v", ttl, SetMode::CreateOnly).await.unwrap();
    }
    let rebalance = Rebalance::new(old.clone(), new.clone(), |n| {
        Client::builder(n.addr()).build()
    });
    let scanned = rebalance.scan("a", 0, 100).await.unwrap();
    let (tally, _, error) = rebalance.run(scanned.moves, |_| {}).await;
    assert_eq!((tally.moved, error.is_none()), (2, true));

    let window = Client::cluster(new)
        .previous_topology(old)
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_millis(300))
        .build();
    assert!(window.get(&seen).await.unwrap().is_some());
    // With the old node gone, the key seen moved is still served, from its new node alone;
    // a key not seen yet still needs the old node's word.
    drop(a);
    for _ in 0..3 {
        assert!(window.get(&seen).await.unwrap().is_some());
        let version = window.touch(&seen, ttl).await.unwrap();
        let written = window
            .set(&seen, "w", ttl, SetMode::IfVersion(version))
            .await;
        written.unwrap();
    }
    let unseen = window.get(&unseen).await;
    assert!(
        matches!(unseen, Err(Error::Unavailable { .. })),
        "{unseen:?}"
    );
}
