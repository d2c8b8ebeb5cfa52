//! Three sessiond nodes behind twemproxy (Debian's `nutcracker`), configured by
//! `deploy/twemproxy/nutcracker.yml` itself (ketama on node names, `auto_eject_hosts: false`,
//! `redis_auth`), with only its addresses and password replaced:
//!
//! - Flask-Session 0.8, the seed app of `tests/python/test_flask_session.py`, logs in, reads,
//!   regenerates and logs out through the proxy with redis-py 5 and with redis-py 8
//!   (`tests/python/test_twemproxy.py`), its sessions spread over all three nodes; and the
//!   client settings twemproxy needs (no CLIENT SETINFO, RESP2, the password alone) are
//!   pinned down: without them the proxy closes the connection;
//! - a stopped node fails closed: its keys answer an error through the proxy, are never
//!   written to another node, the other nodes' keys carry on, and after a restart (its
//!   append-only file) its sessions are back.
//!
//! `.ci/run` installs nutcracker and the Python environments (`tests/python/setup-venvs.sh`).
//! Without them the tests fail with the command that installs them, or, with
//! `SESSIOND_TESTS_ALLOW_MISSING=1`, skip.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sessiond_tests::certs::free_port;
use sessiond_tests::clients::{assert_success, python, run_client, tool, workspace};
use sessiond_tests::resp::{RespConn, Value};
use sessiond_tests::{Daemon, Deadline};

/// The password twemproxy and the nodes share (the nodes' user "default").
const PROXY_PASSWORD: &str = "proxy-password-7";
/// The nodes' admin, for looking at where keys landed without the proxy.
const ADMIN_PASSWORD: &str = "admin-password-8";

/// A nutcracker process, killed and reaped on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes with RESP listeners on fixed ports (a restarted node must come back where
/// the proxy looks for it) and nutcracker in front of them.
struct Cluster {
    nodes: Vec<Daemon>,
    resp: Vec<SocketAddr>,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let nutcracker = tool("nutcracker", "apt-get install nutcracker")?;
        let dir = tempfile::tempdir().expect("temporary directory");
        let passwords = dir.path().join("passwords");
        std::fs::create_dir(&passwords).expect("passwords directory");
        for (user, password) in [("default", PROXY_PASSWORD), ("admin", ADMIN_PASSWORD)] {
            std::fs::write(passwords.join(user), password).expect("write a password file");
        }
        let mut nodes = Vec::new();
        let mut resp = Vec::new();
        for _ in 0..3 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let config = format!(
                "[resp]\nlisten = \"{addr}\"\n\
                 [[auth.users]]\nname = \"default\"\nrole = \"app\"\npassword_file = {:?}\n\
                 [[auth.users]]\nname = \"admin\"\nrole = \"admin\"\npassword_file = {:?}\n",
                passwords.join("default"),
                passwords.join("admin"),
            );
            nodes.push(Daemon::start_with_config(&config));
            resp.push(addr);
        }

        // The shipped file, with this run's addresses and password.
        let template = std::fs::read_to_string(workspace().join("deploy/twemproxy/nutcracker.yml"))
            .expect("read deploy/twemproxy/nutcracker.yml");
        let proxy_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut config = template.clone();
        let mut replacements = vec![
            (
                "listen: 127.0.0.1:6390".to_string(),
                format!("listen: {proxy_addr}"),
            ),
            (
                "redis_auth: change-me".into(),
                format!("redis_auth: {PROXY_PASSWORD}"),
            ),
        ];
        for (i, addr) in resp.iter().enumerate() {
            replacements.push((
                format!("- 127.0.0.1:{}:1 sessiond-{i}", 6380 + i),
                format!("- {addr}:1 sessiond-{i}"),
            ));
        }
        for (from, to) in replacements {
            assert!(
                config.contains(&from),
                "nutcracker.yml no longer has {from:?}"
            );
            config = config.replace(&from, &to);
        }
        let config_path = dir.path().join("nutcracker.yml");
        std::fs::write(&config_path, config).expect("write nutcracker.yml");

        let mut check = Command::new(&nutcracker);
        check.arg("-t").arg("-c").arg(&config_path);
        assert_success(&run_client(check, b""), "nutcracker -t");
        let child = Command::new(&nutcracker)
            .arg("-c")
            .arg(&config_path)
            // Its statistics port, on loopback and free (the default 22222 may be taken).
            .args(["-a", "127.0.0.1", "-s", &free_port().to_string()])
            .arg("-o")
            .arg(dir.path().join("nutcracker.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nutcracker");
        let proxy = Proxy {
            child,
            addr: proxy_addr,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(proxy_addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nutcracker did not listen on {proxy_addr} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Cluster {
            nodes,
            resp,
            proxy,
            _dir: dir,
        })
    }

    /// A connection through the proxy, authenticated with the shared password.
    async fn proxy_conn(&self) -> RespConn {
        let mut conn = RespConn::connect(self.proxy.addr).await;
        let reply = conn.call(&["AUTH", PROXY_PASSWORD]).await;
        assert_eq!(reply, Value::Simple("OK".into()), "AUTH through nutcracker");
        conn
    }

    /// A direct connection to node `i` as its admin.
    async fn node_conn(&self, i: usize) -> RespConn {
        let mut conn = RespConn::connect(self.resp[i]).await;
        let reply = conn.call(&["AUTH", "admin", ADMIN_PASSWORD]).await;
        assert_eq!(reply, Value::Simple("OK".into()), "AUTH admin on node {i}");
        conn
    }
}

#[test]
fn flask_session_works_through_twemproxy_with_redis_py_5_and_8() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let nodes: Vec<String> = cluster.resp.iter().map(|a| a.to_string()).collect();
    for flavour in ["redis5", "redis8"] {
        let Some(python) = python(flavour) else {
            return;
        };
        let mut command = Command::new(python);
        command
            .args([
                "-m",
                "pytest",
                "-v",
                "-p",
                "no:cacheprovider",
                "test_twemproxy.py",
            ])
            .current_dir(workspace().join("tests/python"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("SESSIOND_TWEMPROXY_ADDR", cluster.proxy.addr.to_string())
            .env("SESSIOND_TWEMPROXY_PASSWORD", PROXY_PASSWORD)
            .env("SESSIOND_TWEMPROXY_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SESSIOND_TWEMPROXY_NODES", nodes.join(","));
        let out = run_client(command, b"");
        println!("{flavour}:\n{}", out.stdout);
        assert_success(&out, &format!("pytest test_twemproxy.py with {flavour}"));
        // Every test ran: redis-py 8 runs the RESP3 one too, redis-py 5 skips it.
        let want = if flavour == "redis8" {
            "5 passed"
        } else {
            "4 passed, 1 skipped"
        };
        assert!(out.stdout.contains(want), "{flavour}: {}", out.stdout);
    }
}

#[tokio::test]
async fn a_stopped_node_fails_closed_through_twemproxy_and_comes_back_with_its_sessions() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let mut proxy = cluster.proxy_conn().await;
    let keys: Vec<String> = (0..60).map(|i| format!("session:twem:{i}")).collect();
    for key in &keys {
        let reply = proxy.call(&["SET", key, key, "EX", "600"]).await;
        assert_eq!(reply, Value::Simple("OK".into()), "SET {key}");
    }
    // Where each key landed: on exactly one node.
    let mut home = Vec::new();
    for key in &keys {
        let mut holders = Vec::new();
        for i in 0..3 {
            if cluster.node_conn(i).await.call(&["EXISTS", key]).await == Value::Integer(1) {
                holders.push(i);
            }
        }
        assert_eq!(holders.len(), 1, "{key} is on nodes {holders:?}");
        home.push(holders[0]);
    }
    let down = 1;
    let on_down = home.iter().filter(|&&h| h == down).count();
    assert!(on_down >= 5, "node {down} holds only {on_down} of 60 keys");

    cluster.nodes[down].terminate(Duration::from_secs(10));
    let mut proxy = cluster.proxy_conn().await;
    for (key, &h) in keys.iter().zip(&home) {
        let reply = proxy.call(&["GET", key]).await;
        if h == down {
            // An error at once, not a miss (a miss would log the user out) and not another
            // node's answer.
            assert!(
                reply.is_error("ERR"),
                "GET {key} with its node down: {reply:?}"
            );
        } else {
            assert_eq!(reply, Value::Bulk(key.clone().into_bytes()), "GET {key}");
        }
    }
    // A write for the down node is refused, and lands nowhere else.
    let (key, _) = keys
        .iter()
        .zip(&home)
        .find(|(_, &h)| h == down)
        .expect("a key");
    let reply = proxy.call(&["SET", key, "overwritten", "EX", "600"]).await;
    assert!(
        reply.is_error("ERR"),
        "SET {key} with its node down: {reply:?}"
    );
    for i in (0..3).filter(|&i| i != down) {
        let exists = cluster.node_conn(i).await.call(&["EXISTS", key]).await;
        assert_eq!(exists, Value::Integer(0), "{key} was written to node {i}");
    }

    // Back from its append-only file (SIGTERM flushed it), at the same address: twemproxy
    // reconnects after server_retry_timeout (2 s) and the sessions are there.
    let stopped = cluster.nodes.remove(down);
    cluster.nodes.insert(down, stopped.restart());
    let deadline = Deadline::after(Duration::from_secs(15), "twemproxy reaches the node again");
    let probe = key.clone();
    loop {
        let reply = cluster.proxy_conn().await.call(&["GET", &probe]).await;
        if reply == Value::Bulk(probe.clone().into_bytes()) {
            break;
        }
        deadline.tick().await;
    }
    let mut proxy = cluster.proxy_conn().await;
    for key in &keys {
        let reply = proxy.call(&["GET", key]).await;
        assert_eq!(
            reply,
            Value::Bulk(key.clone().into_bytes()),
            "GET {key} after restart"
        );
    }
}
