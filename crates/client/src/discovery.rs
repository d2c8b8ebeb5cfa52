//! Where the nodes come from: a node list in configuration or the environment, or the
//! stable DNS names of a Kubernetes StatefulSet.
//!
//! A node list is comma-separated entries, each `NAME=HOST:PORT` or just `HOST:PORT` (then
//! the name is the host): `SESSIOND_NODES=sessiond-0=10.0.0.5:7878,sessiond-1=10.0.0.6:7878`.
//! Names decide placement and must stay the same for as long as the node holds sessions;
//! addresses may change freely.
//!
//! Host names are not resolved here: every connection attempt resolves its node's host
//! again (`mux.rs`), so a node that comes back at another address (a rescheduled pod
//! behind its headless-service name) is found by the first reconnection after it fails.

use crate::placement::{Node, Topology, TopologyError};

/// The environment variable [`from_env`] reads.
pub const NODES_VAR: &str = "SESSIOND_NODES";

/// Why a node list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// An entry is not `NAME=HOST:PORT` or `HOST:PORT`.
    #[error("node entry {0:?}: expected NAME=HOST:PORT or HOST:PORT")]
    BadEntry(String),
    /// The entries do not make a topology (none, or a name twice).
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The environment variable is not set.
    #[error("{NODES_VAR} is not set")]
    NotSet,
}

/// The topology of a node list (see the module docs).
///
/// ```
/// use sessiond_client::discovery::parse_nodes;
///
/// let topology = parse_nodes("a=10.0.0.1:7878, sessiond-1.sessiond:7878")?;
/// assert_eq!(topology.nodes()[0].name(), "a");
/// assert_eq!(topology.nodes()[1].name(), "sessiond-1.sessiond");
/// assert_eq!(topology.nodes()[1].addr(), "sessiond-1.sessiond:7878");
/// # Ok::<(), sessiond_client::discovery::DiscoveryError>(())
/// ```
pub fn parse_nodes(list: &str) -> Result<Topology, DiscoveryError> {
    let mut nodes = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = match entry.split_once('=') {
            Some((name, addr)) => (name.trim(), addr.trim()),
            None => {
                let host = entry
                    .rsplit_once(':')
                    .map(|(host, _)| host)
                    .filter(|host| !host.is_empty())
                    .ok_or_else(|| DiscoveryError::BadEntry(entry.to_string()))?;
                (host, entry)
            }
        };
        let has_port = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            return Err(DiscoveryError::BadEntry(entry.to_string()));
        }
        nodes.push(Node::new(name, addr)?);
    }
    Ok(Topology::new(nodes)?)
}

/// The topology in the `SESSIOND_NODES` environment variable.
pub fn from_env() -> Result<Topology, DiscoveryError> {
    match std::env::var(NODES_VAR) {
        Ok(list) => parse_nodes(&list),
        Err(_) => Err(DiscoveryError::NotSet),
    }
}

/// The nodes of a StatefulSet `set` of `replicas` pods behind the headless service
/// `service`: pod `i` is named `{set}-{i}` and reached at `{set}-{i}.{service}:{port}`,
/// names that Kubernetes keeps stable across restarts and rescheduling.
///
/// ```
/// use sessiond_client::discovery::statefulset;
///
/// let topology = statefulset("sessiond", "sessiond", 3, 7878)?;
/// assert_eq!(topology.nodes()[2].name(), "sessiond-2");
/// assert_eq!(topology.nodes()[2].addr(), "sessiond-2.sessiond:7878");
/// # Ok::<(), sessiond_client::discovery::DiscoveryError>(())
/// ```
pub fn statefulset(
    set: &str,
    service: &str,
    replicas: usize,
    port: u16,
) -> Result<Topology, DiscoveryError> {
    let nodes = (0..replicas)
        .map(|i| Node::new(format!("{set}-{i}"), format!("{set}-{i}.{service}:{port}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Topology::new(nodes)?)
}

/// `topology` as the topology file `sessiond-cli rebalance` reads: one TOML `[[node]]`
/// table per node, with its `name` and `addr`.
///
/// ```
/// use sessiond_client::discovery::{parse_nodes, topology_toml};
///
/// let topology = parse_nodes("a=10.0.0.1:7878")?;
/// assert_eq!(topology_toml(&topology), "[[node]]\nname = \"a\"\naddr = \"10.0.0.1:7878\"\n");
/// # Ok::<(), sessiond_client::discovery::DiscoveryError>(())
/// ```
pub fn topology_toml(topology: &Topology) -> String {
    topology
        .nodes()
        .iter()
        .map(|n| {
            let (name, addr) = (toml_string(n.name()), toml_string(n.addr()));
            format!("[[node]]\nname = {name}\naddr = {addr}\n")
        })
        .collect()
}

/// `text` as a TOML basic string: quoted, with quotes, backslashes and control characters
/// escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lists_are_refused_with_the_entry() {
        for (list, bad) in [
            ("a=10.0.0.1", "a=10.0.0.1"),
            ("10.0.0.1", "10.0.0.1"),
            ("a=:7878", "a=:7878"),
            ("x=h:1,y=h:port", "y=h:port"),
        ] {
            assert_eq!(
                parse_nodes(list).unwrap_err(),
                DiscoveryError::BadEntry(bad.into())
            );
        }
        assert_eq!(
            parse_nodes(" , "),
            Err(DiscoveryError::Topology(TopologyError::Empty))
        );
        assert!(matches!(
            parse_nodes("a=h:1,a=h:2"),
            Err(DiscoveryError::Topology(TopologyError::DuplicateName(_)))
        ));
    }

    #[test]
    fn ipv6_addresses_keep_their_brackets() {
        let topology = parse_nodes("n=[::1]:7878").unwrap();
        assert_eq!(topology.nodes()[0].addr(), "[::1]:7878");
    }
}
