//! Several sessiond nodes in one run: `--addr a,b,c`.
//!
//! Each node is `[NAME=]HOST:PORT`; a node without a name is named by its address. Keys are
//! placed exactly as `sessiond-client` places them ([`sessiond_client::placement`]:
//! rendezvous hashing on the node names), so a run against three nodes sends each node the
//! keys an application's client would. The placement is computed once, before the run,
//! into the list of key numbers each node holds (its *share*): the request loop then picks
//! among its node's keys with no hashing, and measures the servers rather than the
//! placement function (whose cost the client's own benchmark measures).
//!
//! Every node gets `--connections` connections of its own, each a closed loop: a node that
//! answers faster serves more requests, and the aggregate is the sum of what each node
//! sustains under the load generator. With one node and no name, the run is exactly the
//! single-server run: every key, no placement.

use sessiond_client::placement::{routing_key, Node, Topology};

use crate::workload::{KeySpace, Rng};

/// The nodes of a run and the keys each one holds.
#[derive(Debug, Clone)]
pub struct Nodes {
    nodes: Vec<Node>,
    /// The key numbers of each node, in increasing order; `None` for a single node,
    /// which holds them all.
    shares: Option<Vec<Vec<u64>>>,
    /// Keys in the key space.
    keys: u64,
}

impl Nodes {
    /// The nodes of `list` (`--addr`), with the keys of `keys` placed on them.
    pub fn new(list: &str, keys: &KeySpace) -> Result<Nodes, String> {
        let nodes = parse(list)?;
        let count = keys.len();
        if nodes.len() == 1 {
            return Ok(Nodes {
                nodes,
                shares: None,
                keys: count,
            });
        }
        let topology = Topology::new(nodes.iter().cloned()).map_err(|e| format!("--addr: {e}"))?;
        let mut shares = vec![Vec::new(); nodes.len()];
        for n in 0..count {
            let key = keys.key(n);
            shares[topology.index_for(routing_key(&key))].push(n);
        }
        if let Some(empty) = shares.iter().position(Vec::is_empty) {
            return Err(format!(
                "node {} holds none of the {count} keys: use more --keys",
                nodes[empty].name()
            ));
        }
        Ok(Nodes {
            nodes,
            shares: Some(shares),
            keys: count,
        })
    }

    /// Number of nodes (at least one).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes (never true: [`Nodes::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// How many keys node `i` holds.
    pub fn share_len(&self, i: usize) -> u64 {
        match &self.shares {
            Some(shares) => shares[i].len() as u64,
            None => self.keys,
        }
    }

    /// The `n`th key number of node `i` (`n` below [`Nodes::share_len`]).
    pub fn key(&self, i: usize, n: u64) -> u64 {
        match &self.shares {
            Some(shares) => shares[i][n as usize],
            None => n,
        }
    }

    /// A key number of node `i`, uniformly at random among its keys.
    pub fn pick(&self, i: usize, rng: &mut Rng) -> u64 {
        self.key(i, rng.below(self.share_len(i)))
    }
}

/// The nodes of `--addr`: comma-separated `[NAME=]HOST:PORT`.
pub fn parse(list: &str) -> Result<Vec<Node>, String> {
    list.split(',')
        .map(|item| {
            let item = item.trim();
            let (name, addr) = item.split_once('=').unwrap_or((item, item));
            if addr.is_empty() || !addr.contains(':') {
                return Err(format!("--addr: {item:?} is not [NAME=]HOST:PORT"));
            }
            Node::new(name, addr).map_err(|e| format!("--addr: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_addresses_and_must_be_unique() {
        let nodes = parse("a=127.0.0.1:1, 127.0.0.1:2").unwrap();
        assert_eq!((nodes[0].name(), nodes[0].addr()), ("a", "127.0.0.1:1"));
        assert_eq!(nodes[1].name(), "127.0.0.1:2");
        assert!(parse("a=h:1,a=h:2")
            .and_then(|n| Topology::new(n).map_err(|e| e.to_string()))
            .is_err());
        assert!(parse("").is_err());
        assert!(parse("h:1,").is_err());
        assert!(parse("a=").is_err());
        assert!(parse("localhost").is_err());
    }

    #[test]
    fn shares_partition_the_keys_as_the_client_places_them() {
        let keys = KeySpace::new("session:", 43, 3000).unwrap();
        let list = "sessiond-0=h:1,sessiond-1=h:2,sessiond-2=h:3";
        let nodes = Nodes::new(list, &keys).unwrap();
        let topology = Topology::new(parse(list).unwrap()).unwrap();
        let mut seen = 0;
        for i in 0..nodes.len() {
            let share = nodes.share_len(i);
            // About a third each.
            assert!((800..1200).contains(&share), "node {i}: {share}");
            for n in 0..share {
                let key = keys.key(nodes.key(i, n));
                assert_eq!(topology.node_for_key(&key).name(), nodes.node(i).name());
            }
            seen += share;
        }
        assert_eq!(seen, 3000);
        // Re-addressing a node moves nothing: placement is by name.
        let moved = Nodes::new("sessiond-0=h:9,sessiond-1=h:2,sessiond-2=h:3", &keys).unwrap();
        assert_eq!(moved.shares, nodes.shares);
    }

    #[test]
    fn one_unnamed_node_holds_every_key_without_placement() {
        let keys = KeySpace::new("k", 4, 10).unwrap();
        let nodes = Nodes::new("127.0.0.1:7878", &keys).unwrap();
        assert_eq!(
            (nodes.len(), nodes.share_len(0), nodes.key(0, 7)),
            (1, 10, 7)
        );
        assert!(Nodes::new(
            "a=h:1,b=h:2,c=h:3,d=h:4",
            &KeySpace::new("k", 1, 1).unwrap()
        )
        .is_err());
    }
}
