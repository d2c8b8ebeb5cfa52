//! Sessions spread over several real `sessiond` processes: placement by owner, failing
//! closed while a node is down, and recovery from its append-only file.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sessiond_client::placement::{Node, Topology};
use sessiond_client::{Client, Error, SessionConfig, SessionError, SessionId, Sessions};
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
        assert!(after.contains(&format!("={tag}.")), "{after}");
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
    assert_eq!(total, 20, "{keys:?}");
}
